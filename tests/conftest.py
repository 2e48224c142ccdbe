"""Shared fixtures (the harness itself lives in harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Federation, make_federation


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    """A fresh, running federation (no ceremony or epoch yet)."""
    fed = make_federation(tmp_path / "fed")
    try:
        yield fed
    finally:
        fed.stop()


@pytest.fixture(scope="session")
def linked_federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """One federation for the session, after the ceremony and one linkage epoch."""
    fed = make_federation(tmp_path_factory.mktemp("linked") / "fed")
    try:
        with fed.operator() as op:
            op.run_ceremony()
            op.run_linkage()
        yield fed
    finally:
        fed.stop()

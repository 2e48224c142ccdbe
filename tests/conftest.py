"""Shared fixtures (the harness itself lives in harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Federation, make_federation

_HEAVY_DIRS = ("integration", "attack", "browser")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that runs federations or processes (tests/integration,
    tests/attack, tests/browser, or a federation fixture) as ``federation``:
    `make test-fast` leaves them out, `make test` runs everything."""
    for item in items:
        heavy = any(part in _HEAVY_DIRS for part in item.path.parts[-3:-1])
        fixtures = getattr(item, "fixturenames", ())
        if heavy or "federation" in fixtures or "linked_federation" in fixtures:
            item.add_marker(pytest.mark.federation)


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

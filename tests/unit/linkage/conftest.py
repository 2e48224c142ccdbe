"""Fixtures for the linkage tests."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from headcount.linkage.dice import score_pairs


@pytest.fixture(autouse=True, scope="session")
def _compiled() -> Iterator[None]:
    # The kernel is compiled by numba on first use (or loaded from its cache):
    # do that here, not inside a hypothesis example with a deadline.
    ones = np.ones((4, 8), dtype=np.uint8)
    score_pairs(ones, ones, 0.5)
    yield

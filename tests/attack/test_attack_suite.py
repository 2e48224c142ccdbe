"""The runnable attack suite: every attack in it must fail against the defaults."""

from __future__ import annotations

import pytest

from headcount.attacks import attack_names, run_attacks
from headcount.errors import InvalidRequest


def test_every_attack_fails_against_the_defaults() -> None:
    results = run_attacks([], people=2000, seed=3)
    assert [r.name for r in results] == attack_names()
    for r in results:
        assert r.success_rate == 0.0, (r.name, r.outcome)
        assert r.outcome.startswith(("refused", "0 ", "5 of 5")) or "refused" in r.outcome, r


def test_unknown_attack_is_named() -> None:
    with pytest.raises(InvalidRequest, match="unknown attack"):
        run_attacks(["telepathy"])

"""Privacy-budget ledger: composition, refusal, no double charge, persistence, races."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from headcount.errors import BudgetExhausted, InvalidRequest
from headcount.protect.budget import BudgetLedger


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "budget.sqlite"


def _rows(db: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(
            "SELECT epoch_id, query_id, epsilon, at FROM budget_charges ORDER BY at"
        ).fetchall()


def test_spend_until_exhausted_then_refuse_and_record_nothing(db: Path) -> None:
    ledger = BudgetLedger(db, epsilon_per_epoch=1.0)
    assert ledger.remaining("e1") == 1.0
    assert ledger.spend("e1", "q1", 0.4) == pytest.approx(0.6)
    assert ledger.spend("e1", "q2", 0.4) == pytest.approx(0.2)
    with pytest.raises(BudgetExhausted):
        ledger.spend("e1", "q3", 0.3)
    assert ledger.spent("e1") == pytest.approx(0.8)
    assert [r[1] for r in _rows(db)] == ["q1", "q2"]
    # The refused query can still be charged later at a smaller epsilon.
    assert ledger.spend("e1", "q3", 0.2) == pytest.approx(0.0)
    with pytest.raises(BudgetExhausted):
        ledger.spend("e1", "q4", 1e-6)
    assert ledger.remaining("e1") == 0.0


def test_exactly_filling_the_budget_with_float_steps_is_allowed(db: Path) -> None:
    ledger = BudgetLedger(db, epsilon_per_epoch=1.0)
    for i in range(10):
        ledger.spend("e1", f"q{i}", 0.1)  # 0.1 * 10 is not exactly 1.0 in floats
    with pytest.raises(BudgetExhausted):
        ledger.spend("e1", "q10", 0.1)


def test_one_charge_larger_than_the_budget_is_refused(db: Path) -> None:
    ledger = BudgetLedger(db, epsilon_per_epoch=1.0)
    with pytest.raises(BudgetExhausted):
        ledger.spend("e1", "q1", 1.5)
    assert _rows(db) == []


def test_epochs_have_separate_budgets(db: Path) -> None:
    ledger = BudgetLedger(db, epsilon_per_epoch=1.0)
    ledger.spend("e1", "q1", 1.0)
    assert ledger.spend("e2", "q1", 0.25) == pytest.approx(0.75)
    assert ledger.remaining("e1") == 0.0


def test_double_charge_is_refused(db: Path) -> None:
    ledger = BudgetLedger(db, epsilon_per_epoch=1.0)
    ledger.spend("e1", "q1", 0.1)
    with pytest.raises(InvalidRequest, match="already charged"):
        ledger.spend("e1", "q1", 0.1)
    assert ledger.spent("e1") == pytest.approx(0.1)
    assert len(_rows(db)) == 1


def test_one_row_per_charge_with_utc_time(db: Path) -> None:
    ledger = BudgetLedger(db, epsilon_per_epoch=1.0)
    ledger.spend("e1", "q1", 0.125)
    [(epoch, query, epsilon, at)] = _rows(db)
    assert (epoch, query, epsilon) == ("e1", "q1", 0.125)
    assert at.endswith("+00:00")


def test_charges_persist_across_reopening(db: Path) -> None:
    BudgetLedger(db, epsilon_per_epoch=1.0).spend("e1", "q1", 0.7)
    reopened = BudgetLedger(db, epsilon_per_epoch=1.0)
    assert reopened.spent("e1") == pytest.approx(0.7)
    with pytest.raises(BudgetExhausted):
        reopened.spend("e1", "q2", 0.5)
    with pytest.raises(InvalidRequest):
        reopened.spend("e1", "q1", 0.1)


@pytest.mark.parametrize("epsilon", [0.0, -0.1, float("nan"), float("inf"), True, "0.1"])
def test_bad_epsilon_is_refused(db: Path, epsilon: Any) -> None:
    ledger = BudgetLedger(db, epsilon_per_epoch=1.0)
    with pytest.raises(InvalidRequest):
        ledger.spend("e1", "q1", epsilon)
    assert _rows(db) == []


@pytest.mark.parametrize("budget", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_budget_is_refused(db: Path, budget: float) -> None:
    with pytest.raises(InvalidRequest):
        BudgetLedger(db, epsilon_per_epoch=budget)


def test_empty_ids_are_refused(db: Path) -> None:
    ledger = BudgetLedger(db, epsilon_per_epoch=1.0)
    with pytest.raises(InvalidRequest):
        ledger.spend("", "q1", 0.1)
    with pytest.raises(InvalidRequest):
        ledger.spend("e1", "", 0.1)


def test_racing_threads_cannot_overspend(db: Path) -> None:
    # 16 writers, each with its own ledger object (so its own connections, as two
    # processes would have), all try 0.3 of a 1.0 budget at the same moment.
    n = 16
    BudgetLedger(db, epsilon_per_epoch=1.0)
    barrier = threading.Barrier(n)
    outcomes: list[str] = []
    lock = threading.Lock()

    def charge(i: int) -> None:
        ledger = BudgetLedger(db, epsilon_per_epoch=1.0)
        barrier.wait()
        try:
            ledger.spend("e1", f"q{i}", 0.3)
            outcome = "ok"
        except BudgetExhausted:
            outcome = "refused"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=charge, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok"] * 3 + ["refused"] * (n - 3)
    assert BudgetLedger(db, epsilon_per_epoch=1.0).spent("e1") == pytest.approx(0.9)
    assert len(_rows(db)) == 3


def test_racing_retries_of_one_query_charge_once(db: Path) -> None:
    n = 8
    ledger = BudgetLedger(db, epsilon_per_epoch=1.0)
    barrier = threading.Barrier(n)
    errors: list[type[Exception]] = []

    def charge() -> None:
        barrier.wait()
        try:
            ledger.spend("e1", "same-query", 0.1)
        except InvalidRequest as exc:
            errors.append(type(exc))

    threads = [threading.Thread(target=charge) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [InvalidRequest] * (n - 1)
    assert ledger.spent("e1") == pytest.approx(0.1)

"""Per-period privacy ledger: no epochs, periods, refusal, no double charge, races, OpenDP."""

from __future__ import annotations

import inspect
import sqlite3
import threading
from contextlib import closing
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import opendp.prelude as dp
import pytest

from headcount.errors import BudgetExhausted, InvalidRequest
from headcount.privacy.accountant import PERIODS, PeriodLedger, compose, period_of

dp.enable_features("contrib")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "privacy.sqlite"


def _rows(db: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(
            "SELECT query_id, period, epsilon, at FROM privacy_charges ORDER BY at"
        ).fetchall()


@pytest.mark.parametrize(
    ("day", "period", "label"),
    [
        (date(2026, 12, 7), "year", "2026"),
        (date(2026, 12, 7), "quarter", "2026-Q4"),
        (date(2026, 12, 7), "month", "2026-12"),
        (date(2026, 1, 1), "quarter", "2026-Q1"),
        (date(2026, 3, 31), "quarter", "2026-Q1"),
        (date(2026, 4, 1), "quarter", "2026-Q2"),
        (date(2027, 2, 28), "month", "2027-02"),
        (datetime(2026, 12, 31, 23, 59, tzinfo=UTC), "year", "2026"),
    ],
)
def test_period_of(day: date, period: str, label: str) -> None:
    assert period_of(day, period) == label


def test_period_of_defaults_to_year_and_refuses_unknown_kinds() -> None:
    assert PERIODS == ("year", "quarter", "month")
    assert period_of(date(2026, 6, 1)) == "2026"
    with pytest.raises(InvalidRequest, match="unknown period"):
        period_of(date(2026, 6, 1), "week")
    with pytest.raises(InvalidRequest):
        period_of("2026-06-01", "year")  # type: ignore[arg-type]


def test_there_is_no_epoch_in_the_api() -> None:
    for name, member in inspect.getmembers(PeriodLedger, inspect.isfunction):
        assert "epoch" not in name
        assert not any("epoch" in p for p in inspect.signature(member).parameters)


def test_charges_across_a_year_accumulate_and_a_new_year_starts_fresh(db: Path) -> None:
    ledger = PeriodLedger(db, epsilon_per_period=1.0)
    assert ledger.spend("q1", 0.4, day=date(2026, 1, 5)) == pytest.approx(0.6)
    # A new linkage epoch is just a later day: the ledger carries on.
    assert ledger.spend("q2", 0.4, day=date(2026, 11, 30)) == pytest.approx(0.2)
    with pytest.raises(BudgetExhausted, match="2026"):
        ledger.spend("q3", 0.3, day=date(2026, 12, 31))
    assert ledger.spend("q3", 0.3, day=date(2027, 1, 1)) == pytest.approx(0.7)
    assert ledger.spent("2026") == pytest.approx(0.8)
    assert ledger.remaining("2026") == pytest.approx(0.2)
    assert ledger.spent("2027") == pytest.approx(0.3)
    assert ledger.spent("2025") == 0.0
    assert [r[:3] for r in _rows(db)] == [
        ("q1", "2026", 0.4),
        ("q2", "2026", 0.4),
        ("q3", "2027", 0.3),
    ]


def test_quarterly_ledger_starts_each_quarter_fresh(db: Path) -> None:
    ledger = PeriodLedger(db, epsilon_per_period=0.5, period="quarter")
    assert ledger.period == "quarter"
    ledger.spend("q1", 0.5, day=date(2026, 3, 31))
    with pytest.raises(BudgetExhausted):
        ledger.spend("q2", 0.1, day=date(2026, 1, 1))
    assert ledger.spend("q2", 0.1, day=date(2026, 4, 1)) == pytest.approx(0.4)
    assert ledger.spent("2026-Q1") == pytest.approx(0.5)


def test_charges_default_to_the_current_utc_period(db: Path) -> None:
    ledger = PeriodLedger(db, epsilon_per_period=1.0, period="month")
    today = datetime.now(UTC).date()
    assert ledger.current_period() == period_of(today, "month")
    ledger.spend("q1", 0.25)
    assert ledger.spent() == pytest.approx(0.25)
    assert ledger.remaining() == pytest.approx(0.75)
    [(_, label, _, at)] = _rows(db)
    assert label == ledger.current_period()
    assert at.endswith("+00:00")


def test_refusal_records_nothing_and_leaves_room_for_a_smaller_charge(db: Path) -> None:
    ledger = PeriodLedger(db, epsilon_per_period=1.0)
    day = date(2026, 6, 1)
    with pytest.raises(BudgetExhausted):
        ledger.spend("q1", 1.5, day=day)
    assert _rows(db) == []
    ledger.spend("q1", 0.9, day=day)
    with pytest.raises(BudgetExhausted):
        ledger.spend("q2", 0.2, day=day)
    assert ledger.spend("q2", 0.1, day=day) == 0.0
    with pytest.raises(BudgetExhausted):
        ledger.spend("q3", 1e-6, day=day)
    assert ledger.remaining("2026") == 0.0
    assert [r[0] for r in _rows(db)] == ["q1", "q2"]


def test_exactly_filling_the_budget_with_float_steps_is_allowed(db: Path) -> None:
    ledger = PeriodLedger(db, epsilon_per_period=1.0)
    for i in range(10):
        ledger.spend(f"q{i}", 0.1, day=date(2026, 6, 1))  # OpenDP composes these to 1.0 + 7e-16
    with pytest.raises(BudgetExhausted):
        ledger.spend("q10", 0.1, day=date(2026, 6, 1))
    assert ledger.remaining("2026") == 0.0


def test_a_query_is_charged_once_in_any_period(db: Path) -> None:
    ledger = PeriodLedger(db, epsilon_per_period=1.0)
    ledger.spend("q1", 0.1, day=date(2026, 6, 1))
    with pytest.raises(InvalidRequest, match="already charged"):
        ledger.spend("q1", 0.1, day=date(2026, 6, 1))
    with pytest.raises(InvalidRequest, match="already charged"):
        ledger.spend("q1", 0.1, day=date(2027, 6, 1))
    assert ledger.charged("q1")
    assert not ledger.charged("q2")
    assert len(_rows(db)) == 1


def test_refund(db: Path) -> None:
    ledger = PeriodLedger(db, epsilon_per_period=1.0)
    ledger.spend("q1", 0.75, day=date(2026, 6, 1))
    assert ledger.refund("q1") == 0.75
    assert ledger.refund("q1") == 0.0
    assert ledger.refund("never") == 0.0
    assert not ledger.charged("q1")
    assert ledger.spent("2026") == 0.0
    assert ledger.spend("q2", 1.0, day=date(2026, 6, 1)) == 0.0


def test_charges_persist_across_reopening(db: Path) -> None:
    PeriodLedger(db, epsilon_per_period=1.0).spend("q1", 0.7, day=date(2026, 6, 1))
    reopened = PeriodLedger(db, epsilon_per_period=1.0)
    assert reopened.spent("2026") == pytest.approx(0.7)
    with pytest.raises(BudgetExhausted):
        reopened.spend("q2", 0.5, day=date(2026, 7, 1))


def test_reopening_with_another_kind_of_period_is_refused(db: Path) -> None:
    PeriodLedger(db, epsilon_per_period=1.0).spend("q1", 0.7, day=date(2026, 6, 1))
    with pytest.raises(InvalidRequest, match="month"):
        PeriodLedger(db, epsilon_per_period=1.0, period="month")


@pytest.mark.parametrize("label", ["2026-Q4", "2026-12", "26", "", 2026])
def test_a_label_of_the_wrong_kind_is_refused(db: Path, label: Any) -> None:
    ledger = PeriodLedger(db, epsilon_per_period=1.0)
    with pytest.raises(InvalidRequest):
        ledger.spent(label)
    with pytest.raises(InvalidRequest):
        ledger.remaining(label)


@pytest.mark.parametrize("epsilon", [0.0, -0.1, float("nan"), float("inf"), True, "0.1"])
def test_bad_epsilon_is_refused(db: Path, epsilon: Any) -> None:
    ledger = PeriodLedger(db, epsilon_per_period=1.0)
    with pytest.raises(InvalidRequest):
        ledger.spend("q1", epsilon)
    assert _rows(db) == []


@pytest.mark.parametrize("budget", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_budget_is_refused(db: Path, budget: float) -> None:
    with pytest.raises(InvalidRequest):
        PeriodLedger(db, epsilon_per_period=budget)


def test_bad_period_kind_and_ids_are_refused(db: Path) -> None:
    with pytest.raises(InvalidRequest):
        PeriodLedger(db, epsilon_per_period=1.0, period="epoch")
    ledger = PeriodLedger(db, epsilon_per_period=1.0)
    for call in (
        lambda: ledger.spend("", 0.1),
        lambda: ledger.refund(""),
        lambda: ledger.charged(""),
        lambda: ledger.spend("q1", 0.1, day="2026-01-01"),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidRequest):
            call()


def test_racing_threads_cannot_overspend(db: Path) -> None:
    # 16 writers, each with its own ledger object (so its own connections, as two
    # processes would have), all try 0.3 of a 1.0 budget at the same moment.
    n = 16
    PeriodLedger(db, epsilon_per_period=1.0)
    barrier = threading.Barrier(n)
    outcomes: list[str] = []
    lock = threading.Lock()

    def charge(i: int) -> None:
        ledger = PeriodLedger(db, epsilon_per_period=1.0)
        barrier.wait()
        try:
            ledger.spend(f"q{i}", 0.3, day=date(2026, 6, 1))
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
    assert PeriodLedger(db, epsilon_per_period=1.0).spent("2026") == pytest.approx(0.9)
    assert len(_rows(db)) == 3


def test_racing_retries_of_one_query_charge_once(db: Path) -> None:
    n = 8
    ledger = PeriodLedger(db, epsilon_per_period=1.0)
    barrier = threading.Barrier(n)
    errors: list[type[Exception]] = []

    def charge() -> None:
        barrier.wait()
        try:
            ledger.spend("same-query", 0.1, day=date(2026, 6, 1))
        except InvalidRequest as exc:
            errors.append(type(exc))

    threads = [threading.Thread(target=charge) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [InvalidRequest] * (n - 1)
    assert ledger.spent("2026") == pytest.approx(0.1)


@pytest.mark.parametrize("epsilons", [[0.5], [0.25, 0.5], [0.1, 0.2, 0.3, 1.4], [3.0, 1e-6]])
def test_compose_is_the_sum(epsilons: list[float]) -> None:
    total = compose(epsilons)
    assert total == pytest.approx(sum(epsilons), rel=1e-12)
    assert total >= sum(epsilons) * (1 - 1e-15)  # OpenDP rounds up, never down


def test_compose_of_nothing_is_zero() -> None:
    assert compose([]) == 0.0


def test_compose_agrees_with_opendp_composing_real_laplace_measurements() -> None:
    # An independent route through OpenDP: compose actual discrete Laplace
    # mechanisms of scale 1/eps each and ask the composite's privacy map.
    epsilons = [0.1] * 10
    domain = dp.vector_domain(dp.atom_domain(T="i64"))
    metric = dp.l1_distance(T="i64")
    laplaces = [dp.m.make_laplace(domain, metric, scale=1 / e) for e in epsilons]
    composite: Any = dp.c.make_composition(laplaces)
    certified = composite.map(1)
    assert compose(epsilons) == pytest.approx(certified, rel=1e-12)
    assert compose(epsilons) == pytest.approx(1.0, abs=1e-12)
    assert compose(epsilons) >= 1.0


@pytest.mark.parametrize(
    "epsilons", [[-0.1], [float("nan")], [float("inf")], [True], ["0.1"], [1e308, 1e308]]
)
def test_compose_refuses_bad_losses(epsilons: list[Any]) -> None:
    with pytest.raises(InvalidRequest):
        compose(epsilons)

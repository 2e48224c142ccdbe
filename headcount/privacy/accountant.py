"""Lifetime privacy ledger: how much epsilon a department has spent per calendar period.

A person's record stays in a department's data across linkage epochs, so the
privacy loss of every query on it adds up for as long as the record is there.
This ledger therefore keys charges by calendar period (a year by default) and
nothing resets when a new linkage epoch starts: there is no epoch in this API.

Why pure DP and basic composition: the noise (``headcount.privacy.noise``) is
discrete Laplace, which gives pure ``epsilon``-DP (max-divergence), and under basic
sequential composition the losses of pure-DP releases simply add. The totals are
therefore auditable as plain sums of the charges anyone can read from the table.
Tighter (advanced, zCDP or Rényi) accounting would only pay off over hundreds of
queries per period, and would make the audit depend on a conversion formula.
``compose`` still asks OpenDP's compositor for the total rather than trusting our
own arithmetic, so the ledger refuses exactly what OpenDP would certify.

One row is written per charge, and a charge is checked and written inside one
``BEGIN IMMEDIATE`` transaction: SQLite then lets only one writer at a time read
the total and add to it, so two processes (or threads) charging at once cannot
both pass the check and overspend.
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from headcount.db import create_database
from headcount.errors import BudgetExhausted, InvalidRequest

log = logging.getLogger(__name__)

PERIODS: tuple[str, ...] = ("year", "quarter", "month")

# What a period label of each kind looks like, so a label of the wrong kind (which
# would silently read as an empty period) is refused.
_PERIOD_LABEL = {
    "year": re.compile(r"\d{4}"),
    "quarter": re.compile(r"\d{4}-Q[1-4]"),
    "month": re.compile(r"\d{4}-(0[1-9]|1[0-2])"),
}

# OpenDP's compositor rounds up (it must never under-report a loss), so ten charges
# of 0.1 compose to 1.0000000000000007; relative for budgets above 1, as in
# headcount.crypto.dp.
_TOLERANCE = 1e-9

# Seconds a writer waits for another's transaction before SQLite gives up.
_BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS privacy_charges (
    query_id TEXT PRIMARY KEY,
    period   TEXT NOT NULL,
    epsilon  REAL NOT NULL CHECK (epsilon > 0),
    at       TEXT NOT NULL
)
"""
# Each entry takes the schema one version further (headcount.db.migrate); append,
# never edit, once released.
SCHEMA_STEPS: tuple[str, ...] = (_SCHEMA,)


def _check_epsilon(name: str, value: object, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{name} must be a number")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidRequest(f"{name} must be finite and {bound}, got {value!r}")
    return float(value)


def _check_kind(period: object) -> str:
    if period not in PERIODS:
        raise InvalidRequest(f"unknown period {period!r}; supported: {', '.join(PERIODS)}")
    return str(period)


def period_of(day: date, period: str = "year") -> str:
    """Label of the ``period`` containing ``day``: "2026", "2026-Q4" or "2026-12".

    ``period`` is one of ``PERIODS``; raises ``InvalidRequest`` otherwise, or if
    ``day`` is not a date.
    """
    kind = _check_kind(period)
    if not isinstance(day, date):
        raise InvalidRequest(f"day must be a date, got {type(day).__name__}")
    if kind == "year":
        return f"{day.year:04d}"
    if kind == "quarter":
        return f"{day.year:04d}-Q{(day.month - 1) // 3 + 1}"
    return f"{day.year:04d}-{day.month:02d}"


def _opendp() -> Any:
    # Imported here, not at module level: opendp is heavy, and LAYOUT.md keeps it out
    # of start-up. enable_features is process-wide and idempotent.
    import opendp.prelude as dp

    dp.enable_features("contrib")
    return dp


def compose(epsilons: Sequence[float]) -> float:
    """Total privacy loss of pure-DP releases with losses ``epsilons`` on the same data.

    Certified by OpenDP's adaptive (sequential, basic) compositor under
    max-divergence, which adds them up rounding upwards. Each epsilon must be finite
    and >= 0; an empty sequence composes to 0.0. Raises ``InvalidRequest`` on a bad
    value or if the total overflows a float.
    """
    values = [_check_epsilon("epsilon", e, allow_zero=True) for e in epsilons]
    if not values:
        return 0.0  # OpenDP's compositor needs at least one release
    dp = _opendp()
    # The compositor's map depends only on d_mids (every release is made at the same
    # d_in), so the integer-vector domain here is a stand-in for any dataset.
    try:
        compositor = dp.c.make_adaptive_composition(
            dp.vector_domain(dp.atom_domain(T="i64")),
            dp.l1_distance(T="i64"),
            dp.max_divergence(),
            d_in=1,
            d_mids=values,
        )
        return float(compositor.map(1))
    except dp.OpenDPException as exc:
        raise InvalidRequest(f"cannot compose {len(values)} privacy losses: {exc}") from exc


class PeriodLedger:
    """One department's epsilon ledger per calendar period, stored at ``db_path``.

    ``epsilon_per_period`` is the total privacy loss the department accepts per
    ``period`` (one of ``PERIODS``), finite and > 0; raises ``InvalidRequest``
    otherwise, or if the file already holds charges labelled for another kind of
    period. The parent directory must exist; the table is created if missing. Each
    call opens and closes its own connection, so one ledger object can be shared
    between threads and several processes can use the same file.
    """

    def __init__(self, db_path: Path, *, epsilon_per_period: float, period: str = "year") -> None:
        self._db_path = Path(db_path)
        self._epsilon_per_period = _check_epsilon("epsilon_per_period", epsilon_per_period)
        self._period = _check_kind(period)
        create_database(self._db_path, "ledger", SCHEMA_STEPS)
        with closing(self._connect()) as conn:
            labels = [row[0] for row in conn.execute("SELECT DISTINCT period FROM privacy_charges")]
        # A yearly file reopened as monthly would start every month from zero.
        foreign = [label for label in labels if not _PERIOD_LABEL[self._period].fullmatch(label)]
        if foreign:
            raise InvalidRequest(
                f"{self._db_path} holds charges for periods {sorted(foreign)!r}, "
                f"not {self._period} periods"
            )

    @property
    def epsilon_per_period(self) -> float:
        return self._epsilon_per_period

    @property
    def period(self) -> str:
        return self._period

    def current_period(self) -> str:
        """Label of the period containing today's date in UTC."""
        return period_of(datetime.now(UTC).date(), self._period)

    def _label(self, label: object) -> str:
        if label is None:
            return self.current_period()
        if not isinstance(label, str) or not _PERIOD_LABEL[self._period].fullmatch(label):
            raise InvalidRequest(f"{label!r} is not a {self._period} period label")
        return label

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions, so BEGIN IMMEDIATE below is
        # the only transaction and its scope is exactly the check-and-insert.
        return sqlite3.connect(self._db_path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)

    @staticmethod
    def _charges(conn: sqlite3.Connection, label: str) -> list[float]:
        # Ordered so the composed total does not depend on row order.
        rows = conn.execute(
            "SELECT epsilon FROM privacy_charges WHERE period = ? ORDER BY epsilon", (label,)
        )
        return [float(row[0]) for row in rows]

    def _exceeds(self, total: float) -> bool:
        return total > self._epsilon_per_period + _TOLERANCE * max(1.0, self._epsilon_per_period)

    def spend(self, query_id: str, epsilon: float, *, day: date | None = None) -> float:
        """Charge ``epsilon`` for ``query_id`` in the period containing ``day``.

        ``day`` defaults to today in UTC. Returns the epsilon left in that period
        afterwards (never below 0). Raises ``BudgetExhausted`` if the period's
        charges plus ``epsilon`` would compose to more than ``epsilon_per_period``
        (recording nothing), and ``InvalidRequest`` if ``epsilon`` is not finite and
        > 0, ``query_id`` is empty, or ``query_id`` was already charged in any
        period (a retry must not be charged twice, nor pass for a fresh query).
        """
        if not isinstance(query_id, str) or not query_id:
            raise InvalidRequest("query_id must be a non-empty string")
        epsilon = _check_epsilon("epsilon", epsilon)
        label = period_of(datetime.now(UTC).date() if day is None else day, self._period)
        at = datetime.now(UTC).isoformat(timespec="microseconds")
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                charged = conn.execute(
                    "SELECT period FROM privacy_charges WHERE query_id = ?", (query_id,)
                ).fetchone()
                if charged is not None:
                    raise InvalidRequest(
                        f"query {query_id!r} was already charged in period {charged[0]!r}"
                    )
                spent = self._charges(conn, label)
                total = compose([*spent, epsilon])
                if self._exceeds(total):
                    raise BudgetExhausted(
                        f"period {label}: charging {epsilon:g} would exceed the budget of "
                        f"{self._epsilon_per_period:g} ({compose(spent):g} already spent)"
                    )
                conn.execute(
                    "INSERT INTO privacy_charges (query_id, period, epsilon, at)"
                    " VALUES (?, ?, ?, ?)",
                    (query_id, label, epsilon, at),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        log.info("period %s: charged %g for query %s", label, epsilon, query_id)
        return max(self._epsilon_per_period - total, 0.0)

    def refund(self, query_id: str) -> float:
        """Remove ``query_id``'s charge; return the epsilon refunded (0.0 if none).

        Only for a query whose results can no longer be released at all: the
        caller must have made sure nothing was, and nothing will be, decrypted.
        """
        if not isinstance(query_id, str) or not query_id:
            raise InvalidRequest("query_id must be a non-empty string")
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT period, epsilon FROM privacy_charges WHERE query_id = ?",
                    (query_id,),
                ).fetchone()
                conn.execute("DELETE FROM privacy_charges WHERE query_id = ?", (query_id,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        if row is None:
            return 0.0
        log.info("period %s: refunded %g for query %s", row[0], row[1], query_id)
        return float(row[1])

    def charged(self, query_id: str) -> bool:
        """Whether ``query_id`` holds a charge in any period."""
        if not isinstance(query_id, str) or not query_id:
            raise InvalidRequest("query_id must be a non-empty string")
        with closing(self._connect()) as conn:
            row = conn.execute(
                "SELECT 1 FROM privacy_charges WHERE query_id = ?", (query_id,)
            ).fetchone()
        return row is not None

    def spent(self, period: str | None = None) -> float:
        """Composed epsilon charged in ``period`` (a label such as "2026"; None: the
        current period). 0.0 for a period with no charges; raises ``InvalidRequest``
        on a label of the wrong kind."""
        label = self._label(period)
        with closing(self._connect()) as conn:
            charges = self._charges(conn, label)
        return compose(charges)

    def remaining(self, period: str | None = None) -> float:
        """Epsilon still available in ``period`` (None: the current one), never below 0."""
        return max(self._epsilon_per_period - self.spent(period), 0.0)

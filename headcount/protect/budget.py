"""Privacy-budget ledger: how much epsilon each epoch has spent, kept in SQLite.

Under basic sequential composition the privacy losses of queries on the same data
add up, so a node keeps one ledger and refuses to take part in a query once the
epoch's total would exceed its budget. One row is written per charge, and a charge
is checked and written inside one ``BEGIN IMMEDIATE`` transaction: SQLite then lets
only one writer at a time read the total and add to it, so two processes (or
threads) charging at once cannot both pass the check and overspend.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from headcount.errors import BudgetExhausted, InvalidRequest

log = logging.getLogger(__name__)

# Slack for float summation: ten charges of 0.1 must fit a budget of 1.0.
_TOLERANCE = 1e-12

# Seconds a writer waits for another's transaction before SQLite gives up.
_BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS budget_charges (
    epoch_id TEXT NOT NULL,
    query_id TEXT NOT NULL,
    epsilon  REAL NOT NULL CHECK (epsilon > 0),
    at       TEXT NOT NULL,
    PRIMARY KEY (epoch_id, query_id)
)
"""


def _check_id(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{name} must be a non-empty string")
    return value


def _check_epsilon(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{name} must be a number")
    if not math.isfinite(value) or value <= 0:
        raise InvalidRequest(f"{name} must be finite and > 0, got {value!r}")
    return float(value)


class BudgetLedger:
    """Per-epoch epsilon ledger stored at ``db_path`` (parent directory must exist).

    ``epsilon_per_epoch`` is the total privacy loss a node accepts per linkage epoch,
    finite and > 0 (raises ``InvalidRequest`` otherwise). The table is created if
    missing; each call opens and closes its own connection, so one ledger object can
    be shared between threads and several processes can use the same file.
    """

    def __init__(self, db_path: Path, *, epsilon_per_epoch: float) -> None:
        self._db_path = Path(db_path)
        self._epsilon_per_epoch = _check_epsilon("epsilon_per_epoch", epsilon_per_epoch)
        with closing(self._connect()) as conn:
            conn.execute(_SCHEMA)

    @property
    def epsilon_per_epoch(self) -> float:
        return self._epsilon_per_epoch

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions, so BEGIN IMMEDIATE below is
        # the only transaction and its scope is exactly the check-and-insert.
        return sqlite3.connect(self._db_path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)

    @staticmethod
    def _spent(conn: sqlite3.Connection, epoch_id: str) -> float:
        rows = conn.execute("SELECT epsilon FROM budget_charges WHERE epoch_id = ?", (epoch_id,))
        # fsum: exact summation, so the total does not depend on row order.
        return math.fsum(row[0] for row in rows)

    def spend(self, epoch_id: str, query_id: str, epsilon: float) -> float:
        """Charge ``epsilon`` for ``query_id`` in ``epoch_id``; return the epsilon left after.

        Raises ``BudgetExhausted`` if the epoch's spend plus ``epsilon`` would exceed
        ``epsilon_per_epoch`` (recording nothing), and ``InvalidRequest`` if
        ``epsilon`` is not finite and > 0, an id is empty, or ``query_id`` was
        already charged in this epoch (a retry must not be charged twice, and must
        not be mistaken for a fresh query either).
        """
        _check_id("epoch_id", epoch_id)
        _check_id("query_id", query_id)
        epsilon = _check_epsilon("epsilon", epsilon)
        at = datetime.now(UTC).isoformat(timespec="microseconds")
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                charged = conn.execute(
                    "SELECT 1 FROM budget_charges WHERE epoch_id = ? AND query_id = ?",
                    (epoch_id, query_id),
                ).fetchone()
                if charged is not None:
                    raise InvalidRequest(
                        f"query {query_id!r} was already charged in epoch {epoch_id!r}"
                    )
                spent = self._spent(conn, epoch_id)
                if spent + epsilon > self._epsilon_per_epoch + _TOLERANCE:
                    raise BudgetExhausted(
                        f"epoch {epoch_id!r}: charging {epsilon:g} would exceed the budget "
                        f"of {self._epsilon_per_epoch:g} ({spent:g} already spent)"
                    )
                conn.execute(
                    "INSERT INTO budget_charges (epoch_id, query_id, epsilon, at)"
                    " VALUES (?, ?, ?, ?)",
                    (epoch_id, query_id, epsilon, at),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        log.info("epoch %s: charged %g for query %s", epoch_id, epsilon, query_id)
        return max(self._epsilon_per_epoch - (spent + epsilon), 0.0)

    def refund(self, epoch_id: str, query_id: str) -> float:
        """Remove ``query_id``'s charge in ``epoch_id``; return the epsilon refunded (0 if none).

        Only for a query whose results can no longer be released at all: the
        caller must have made sure nothing was, and nothing will be, decrypted.
        """
        _check_id("epoch_id", epoch_id)
        _check_id("query_id", query_id)
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT epsilon FROM budget_charges WHERE epoch_id = ? AND query_id = ?",
                    (epoch_id, query_id),
                ).fetchone()
                conn.execute(
                    "DELETE FROM budget_charges WHERE epoch_id = ? AND query_id = ?",
                    (epoch_id, query_id),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        refunded = float(row[0]) if row else 0.0
        if refunded:
            log.info("epoch %s: refunded %g for query %s", epoch_id, refunded, query_id)
        return refunded

    def spent(self, epoch_id: str) -> float:
        """Total epsilon charged in ``epoch_id`` so far (0.0 for an unknown epoch)."""
        _check_id("epoch_id", epoch_id)
        with closing(self._connect()) as conn:
            return self._spent(conn, epoch_id)

    def remaining(self, epoch_id: str) -> float:
        """Epsilon still available in ``epoch_id``, never below 0.0."""
        return max(self._epsilon_per_epoch - self.spent(epoch_id), 0.0)

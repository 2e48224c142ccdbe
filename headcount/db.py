"""SQLite helpers every process's state store uses."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

BUSY_TIMEOUT_S = 30.0


def create_database(path: Path, schema: str, *, owner_only: bool = False) -> None:
    """Create the database file (0600 if ``owner_only``) and its tables if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if owner_only and not path.exists():
        # Created owner-only from the start: it will hold private keys.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    # executescript manages its own transaction, so it runs outside transaction().
    with closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(schema)


@contextmanager
def transaction(path: Path) -> Iterator[sqlite3.Connection]:
    """One write transaction (BEGIN IMMEDIATE): committed on success, rolled back on error."""
    with closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)) as db:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

"""SQLite helpers every process's state store uses, and their schema versions.

One process's state file holds several components' tables (a node's own
store, its audit replica, its privacy ledger). Each component declares its
schema as a list of migration steps; `migrate` records in the file's
``schema_versions`` table how many of them have run, applies the missing ones
on start, and refuses a file a newer Headcount wrote. A file from before
versioning (the tables, no record) is at version 0: its step 1 (the tables,
``IF NOT EXISTS``) leaves its data as it is.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path

from headcount.errors import ConfigError

BUSY_TIMEOUT_S = 30.0
_COMPONENT = re.compile(r"^[a-z_]{1,32}$")


def create_database(
    path: Path, component: str, steps: Sequence[str], *, owner_only: bool = False
) -> int:
    """Create the database file (0600 if ``owner_only``) if missing, and bring
    ``component``'s tables to its latest schema (`migrate`); returns that version."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if owner_only and not path.exists():
        # Created owner-only from the start: it will hold private keys.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    with closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)) as db:
        db.execute("PRAGMA journal_mode=WAL")
    return migrate(path, component, steps)


def schema_version(path: Path, component: str) -> int:
    """The schema version ``component`` last migrated the file at ``path`` to (0: none)."""
    with closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)) as db:
        return _version(db, component)


def _version(db: sqlite3.Connection, component: str) -> int:
    db.execute(_VERSIONS)
    row = db.execute(
        "SELECT version FROM schema_versions WHERE component = ?", (component,)
    ).fetchone()
    return int(row[0]) if row else 0


_VERSIONS = (
    "CREATE TABLE IF NOT EXISTS schema_versions "
    "(component TEXT PRIMARY KEY, version INTEGER NOT NULL CHECK (version >= 0))"
)


def migrate(path: Path, component: str, steps: Sequence[str]) -> int:
    """Apply the steps of ``component``'s schema the file has not had yet.

    ``steps[i]`` is the SQL script taking the schema from version i to i + 1;
    each runs in its own transaction together with the new version number, so
    a crash leaves the file at one version or the next. Returns the version.

    Raises:
        ConfigError: the file was written by a newer Headcount (a higher version
            than ``len(steps)``): reading it could misread or damage it.
    """
    if not _COMPONENT.fullmatch(component):
        raise ValueError("component names are 1-32 characters of a-z and _")
    with closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)) as db:
        current = _version(db, component)
        if current > len(steps):
            raise ConfigError(
                f"{path}: its {component} tables are at schema version {current}, written by"
                f" a newer Headcount; this one reads up to version {len(steps)}. Upgrade"
                " Headcount (or restore the file from before the upgrade)."
            )
        for version in range(current + 1, len(steps) + 1):
            # executescript runs the whole string, BEGIN to COMMIT, as one transaction.
            db.executescript(
                f"BEGIN IMMEDIATE;\n{steps[version - 1]};\n"
                f"INSERT OR REPLACE INTO schema_versions VALUES ('{component}', {version});\n"
                "COMMIT;"
            )
    return len(steps)


@contextmanager
def wal_kept(path: Path) -> Iterator[None]:
    """Keep the WAL's companion files (``-wal``, ``-shm``) in place meanwhile.

    SQLite deletes them when the last connection closes, and opens a WAL
    database read-only only where they exist or it may create them: a reader
    on a read-only mount (the register reading the coordinator's state in
    docker/compose.yaml) gets "unable to open database file" otherwise. One
    idle connection, held for as long as the process serves, keeps them.
    """
    with closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)) as db:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opens the WAL
        yield


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

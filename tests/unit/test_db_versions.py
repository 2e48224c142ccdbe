"""State files carry a schema version per component and migrate on start: a file
from before versioning opens with its data, a newer Headcount's is refused."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from coordinator.store import SCHEMA_STEPS as COORDINATOR_STEPS
from coordinator.store import CoordinatorStore
from headcount.db import migrate, schema_version
from headcount.domain.audit import SCHEMA_STEPS as AUDIT_STEPS
from headcount.domain.audit import AuditLog
from headcount.errors import ConfigError
from headcount.privacy.accountant import SCHEMA_STEPS as LEDGER_STEPS
from headcount.privacy.accountant import PeriodLedger
from party_node.store import SCHEMA_STEPS as NODE_STEPS
from party_node.store import NodeStore


def _previous_version_node_file(path: Path) -> None:
    """A node's state file as the release before versioning wrote it: the same
    tables, no schema_versions table, some data in it."""
    with closing(sqlite3.connect(path)) as db:
        db.executescript(NODE_STEPS[0])
        db.executescript(AUDIT_STEPS[0])
        db.executescript(LEDGER_STEPS[0])
        db.execute("INSERT INTO secrets VALUES ('x25519', x'00112233')")
        db.execute("INSERT INTO privacy_charges VALUES ('q1', '2026', 0.25, '2026-05-01T00:00:00')")
        db.commit()
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "schema_versions" not in tables


def test_a_file_written_before_versioning_opens_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    _previous_version_node_file(path)
    store = NodeStore(path)
    AuditLog(path)
    ledger = PeriodLedger(path, epsilon_per_period=1.0)
    assert store.get_secret("x25519") == bytes.fromhex("00112233")
    assert ledger.spent("2026") == pytest.approx(0.25)
    assert schema_version(path, "party_node") == len(NODE_STEPS)
    assert schema_version(path, "audit") == len(AUDIT_STEPS)
    assert schema_version(path, "ledger") == len(LEDGER_STEPS)
    coordinator = tmp_path / "coordinator.sqlite"
    with closing(sqlite3.connect(coordinator)) as db:
        db.executescript(COORDINATOR_STEPS[0])
    CoordinatorStore(coordinator)
    assert schema_version(coordinator, "coordinator") == len(COORDINATOR_STEPS)


def test_a_file_from_a_newer_headcount_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    NodeStore(path)
    with closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE schema_versions SET version = 99 WHERE component = 'party_node'")
        db.commit()
    with pytest.raises(ConfigError, match="schema version 99, written by a newer Headcount"):
        NodeStore(path)


def test_new_steps_run_once_in_order_and_a_failing_step_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    v1 = ("CREATE TABLE IF NOT EXISTS things (a TEXT)",)
    assert migrate(path, "things", v1) == 1
    with closing(sqlite3.connect(path)) as db:
        db.execute("INSERT INTO things VALUES ('kept')")
        db.commit()
    v2 = (*v1, "ALTER TABLE things ADD COLUMN b INTEGER NOT NULL DEFAULT 7")
    assert migrate(path, "things", v2) == 2
    assert migrate(path, "things", v2) == 2  # already there: nothing runs again
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("SELECT a, b FROM things").fetchall() == [("kept", 7)]
    broken = (*v2, "ALTER TABLE things ADD COLUMN c INTEGER; SELECT * FROM no_such_table")
    with pytest.raises(sqlite3.OperationalError):
        migrate(path, "things", broken)
    assert schema_version(path, "things") == 2
    with closing(sqlite3.connect(path)) as db:
        columns = [r[1] for r in db.execute("PRAGMA table_info(things)")]
    assert columns == ["a", "b"]  # the failed step's first statement was rolled back

"""Bad input and dead nodes get a clear error, and nothing already stored is lost."""

from __future__ import annotations

import sqlite3
from contextlib import closing

import pytest
from harness import Federation

from headcount.domain.query import QuerySpec
from headcount.errors import InvalidInput, PeerUnavailable

PURPOSE = "Count pupils by immigration status to plan school support services."


def _epoch_rows(fed: Federation) -> int:
    with closing(sqlite3.connect(fed.config.coordinator.database)) as db:
        return int(db.execute("SELECT COUNT(*) FROM epochs").fetchone()[0])


def test_a_bad_department_file_fails_the_epoch_and_keeps_the_last_one(
    federation: Federation,
) -> None:
    with federation.operator() as op:
        op.run_ceremony()
        first = op.run_linkage()
    path = federation.config.party("health").data
    lines = path.read_text().splitlines()
    fields = lines[5].split(",")
    fields[3] = "not a date"
    lines[5] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")

    with federation.operator() as op, pytest.raises(InvalidInput) as info:
        op.run_linkage()
    msg = str(info.value)
    assert "health" in msg and "line 6, column 'date_of_birth'" in msg
    assert "not a date" not in msg  # the value itself stays at the node

    assert _epoch_rows(federation) == 1
    coordinator = federation.coordinator.coordinator
    assert coordinator.store.latest_epoch() == first.epoch_id
    assert [e.epoch_id for e in federation.nodes["health"].node.store.epochs()] == [first.epoch_id]
    # The last good epoch still answers queries that do not need the changed file.
    with federation.analyst() as analyst:
        release = analyst.query(
            QuerySpec(PURPOSE, "education", "immigration", "immigration_status")
        )
    assert release.epoch_id == first.epoch_id


def test_a_dead_node_is_named_and_state_survives(federation: Federation) -> None:
    with federation.operator() as op:
        op.run_ceremony()
        first = op.run_linkage()
    federation.nodes["justice"].server.stop(grace=None).wait()
    with federation.operator() as op:
        with pytest.raises(PeerUnavailable, match="justice"):
            op.run_linkage()
        status = op.status()
    assert status.epoch_id == first.epoch_id
    assert {p.party: p.healthy for p in status.parties}["justice"] is False
    assert _epoch_rows(federation) == 1


def test_state_survives_a_restart(federation: Federation) -> None:
    """Processes keep their state: keys, epoch and token map are read back from SQLite."""
    from coordinator.coordinator import Coordinator
    from party_node.node import PartyNode

    with federation.operator() as op:
        op.run_ceremony()
        first = op.run_linkage()
    before = federation.nodes["education"].node
    after = PartyNode(federation.config, "education")
    # Same long-term keys (ECDSA signatures over them are randomised, so compare keys).
    assert after.identity().x25519_public_key == before.identity().x25519_public_key
    assert after.identity().paillier_n == before.identity().paillier_n
    assert after.store.token_rows(first.epoch_id) == before.store.token_rows(first.epoch_id)
    restarted = Coordinator(federation.config)
    try:
        assert restarted.store.latest_epoch() == first.epoch_id
        assert restarted.audit.verify() == federation.coordinator.coordinator.audit.head()
    finally:
        restarted.close()

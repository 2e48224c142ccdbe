"""Every node keeps a verified replica of the signed audit log and takes part only
in work the log announces."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from harness import Federation

from headcount import tls
from headcount.cli import cli
from headcount.domain.events import QueryAnnounced
from headcount.domain.query import QuerySpec
from headcount.errors import InvalidProof
from headcount.wire import party_node_pb2, party_node_pb2_grpc

PURPOSE = "Count pupils by immigration status to plan school support services."


def _coordinator_stub(fed: Federation, party: str) -> party_node_pb2_grpc.PartyNodeStub:
    cfg = fed.config
    channel = grpc.secure_channel(
        cfg.party(party).address,
        tls.channel_credentials(cfg.coordinator.tls.cert, cfg.coordinator.tls.key, cfg.ca_cert),
    )
    return party_node_pb2_grpc.PartyNodeStub(channel)


def test_every_replica_matches_the_coordinator(federation: Federation) -> None:
    with federation.operator() as op:
        op.run_ceremony()
        op.run_linkage()
    with federation.analyst() as analyst:
        analyst.query(QuerySpec(PURPOSE, "education", "immigration", "immigration_status"))
    primary = federation.coordinator.coordinator.audit
    kinds = [e.kind for e in primary.events()]
    assert kinds == ["ceremony", "epoch_started", "epoch", "query", "release"]
    for running in federation.nodes.values():
        assert running.node.audit.verify() == primary.verify()


def test_a_node_refuses_an_unannounced_query(linked_federation: Federation) -> None:
    """Even the coordinator cannot run a hop the public log does not record."""
    epoch_id = linked_federation.coordinator.coordinator.store.latest_epoch()
    stub = _coordinator_stub(linked_federation, "education")
    request = party_node_pb2.EncryptRequest(
        query_id="deadbeef", epoch_id=epoch_id, epsilon=0.1, purpose=PURPOSE
    )
    with pytest.raises(grpc.RpcError) as info:
        list(stub.EncryptIndicators(request, timeout=10))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no signed audit event" in str(info.value.details())


def test_a_node_refuses_a_query_that_differs_from_its_announcement(
    linked_federation: Federation,
) -> None:
    coordinator = linked_federation.coordinator.coordinator
    epoch_id = coordinator.store.latest_epoch()
    coordinator.log(
        QueryAnnounced(
            query_id="q-announced",
            epoch_id=epoch_id,
            purpose=PURPOSE,
            parties=("education", "immigration"),
            epsilon=0.1,
        )
    )
    stub = _coordinator_stub(linked_federation, "education")
    request = party_node_pb2.EncryptRequest(
        query_id="q-announced", epoch_id=epoch_id, epsilon=1.5, purpose=PURPOSE
    )
    with pytest.raises(grpc.RpcError) as info:
        list(stub.EncryptIndicators(request, timeout=10))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


def _tamper(db: Path, sql: str) -> None:
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
        conn.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
        conn.execute(sql)
        conn.commit()


def test_audit_verify_names_the_first_bad_entry(federation: Federation) -> None:
    with federation.operator() as op:
        op.run_ceremony()
        op.run_linkage()
    config = str(federation.directory / "federation.toml")
    runner = CliRunner()
    ok = runner.invoke(cli, ["audit", "verify", "--config", config, "--party", "health"])
    assert ok.exit_code == 0, ok.output
    assert "OK" in ok.output and "3 events" in ok.output

    health_db = federation.config.party("health").database
    _tamper(
        health_db, "UPDATE audit_events SET body = replace(body, 'health', 'hea1th') WHERE seq = 2"
    )
    bad = runner.invoke(cli, ["audit", "verify", "--config", config, "--party", "health"])
    assert bad.exit_code == 1
    assert "seq 2" in bad.output
    # A node verifies its whole replica once when it starts, then each event
    # as it arrives: restarted on the tampered replica, it refuses to take part.
    from party_node.node import PartyNode

    restarted = PartyNode(federation.config, "health")
    try:
        with pytest.raises(InvalidProof, match="seq 2"):
            restarted.abandon_query("q-anything")
    finally:
        restarted.close()

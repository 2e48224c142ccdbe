"""Faults: a node dying mid-upload, a coordinator dying mid-query, a node down at query time.

Each test kills or stops a real gRPC server (or process state) and checks what
survives: nothing received twice, nothing released partially, no budget charged
for work that never ran, and every half-finished job closed in the audit log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from harness import TEST_PEOPLE, TEST_SEED, ClientRecorder, Federation, Recorder, ServerRecorder

import coordinator.epoch as epoch_module
import coordinator.executor as executor_module
from coordinator.coordinator import Coordinator
from headcount.crypto.attest import sign_abandonment
from headcount.domain.events import QueryRefused
from headcount.domain.query import QuerySpec
from headcount.errors import FailedPrecondition, InvalidRequest, PeerUnavailable
from headcount.local import start_local_federation
from headcount.tls import load_private_key
from headcount.wire.node_values import GroupedCiphertexts, HopInput
from party_node import server as node_server

CUT_AFTER = 3  # chunks the dying node sends before it is killed


class _KillMidUpload(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """On the first Encode call only, kill the whole node after a few chunks and
    start a fresh one (new process state, same SQLite store and port)."""

    def __init__(self, restart: Callable[[], None]) -> None:
        self.restart = restart
        self.fired = threading.Event()

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        if handler is None or not details.method.endswith("/Encode") or self.fired.is_set():
            return handler
        self.fired.set()
        inner = handler.unary_stream

        def dying(request: Any, context: Any) -> Iterator[Any]:
            for sent, chunk in enumerate(inner(request, context)):
                if sent == CUT_AFTER:
                    threading.Thread(target=self.restart, daemon=True).start()
                    time.sleep(2.0)  # the server goes away under this call
                    return
                yield chunk

        return grpc.unary_stream_rpc_method_handler(
            dying, handler.request_deserializer, handler.response_serializer
        )


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(epoch_module, "CHUNK_RECORDS", 100)


def test_a_node_killed_mid_upload_resumes_without_resending(
    tmp_path: Path, small_chunks: None
) -> None:
    recorder = Recorder()
    holder: dict[str, Any] = {}

    def restart() -> None:
        fed = holder["fed"]
        fed.nodes["health"].server.stop(grace=None).wait()
        fed.nodes["health"] = node_server.start(
            fed.config, "health", interceptors=[ServerRecorder(recorder, "health-restarted")]
        )

    killer = _KillMidUpload(restart)
    fed = start_local_federation(
        tmp_path / "fed",
        people=TEST_PEOPLE,
        seed=TEST_SEED,
        require_projects=False,
        node_interceptors={"health": [killer]},
        coordinator_interceptors=[ClientRecorder(recorder, "coordinator")],
    )
    holder["fed"] = fed
    try:
        with fed.operator() as op:
            op.run_ceremony()
            summary = op.run_linkage()
        assert killer.fired.is_set()
        resumed = [m for name, m in recorder.of("health-restarted") if name == "Encode"]
        assert len(resumed) == 1
        first_attempt = CUT_AFTER
        assert resumed[0].resume_from_seq == first_attempt  # type: ignore[attr-defined]

        # What the coordinator received from health: every chunk exactly once.
        chunks = [
            m
            for name, m in recorder.of("coordinator")
            if name == "Encode"
            and m.tokens  # type: ignore[attr-defined]
            and m.filter_bytes  # type: ignore[attr-defined]
            and len(m.clks) == len(m.tokens) * m.filter_bytes  # type: ignore[attr-defined]
        ]
        health_node = fed.nodes["health"].node
        tokens, _ = health_node.store.token_rows(summary.epoch_id)
        received = [t for c in chunks for t in c.tokens if t in set(tokens)]  # type: ignore[attr-defined]
        assert sorted(received) == sorted(tokens)  # no duplicates, nothing missing
        stored = fed.coordinator.coordinator.store.tokens(summary.epoch_id, "health")
        assert stored == tokens  # the coordinator kept the node's order
        assert summary.records["health"] == len(tokens)
    finally:
        fed.stop()


def test_resending_an_epoch_gives_the_same_bits(federation: Federation) -> None:
    """A second Encode for the same epoch (even from a restarted node) repeats the
    first bit for bit: repeated requests cannot average away random bit flips."""
    from party_node.node import PartyNode

    with federation.operator() as op:
        op.run_ceremony()
        epoch = op.run_linkage()
    store = federation.coordinator.coordinator.store
    ceremony_id = store.latest_ceremony()
    first = federation.nodes["education"].node.encode(epoch.epoch_id, ceremony_id)
    again = PartyNode(federation.config, "education").encode(epoch.epoch_id, ceremony_id)
    assert again.tokens == first.tokens
    assert (again.clks == first.clks).all()
    assert again.match_keys == first.match_keys
    assert again.households == first.households


def _spec() -> QuerySpec:
    return QuerySpec(
        purpose="Count pupils by immigration status for a fault test.",
        population_party="education",
        group_party="immigration",
        group_by="immigration_status",
    )


def test_a_node_down_at_query_time_charges_nothing(federation: Federation) -> None:
    with federation.operator() as op:
        op.run_ceremony()
        op.run_linkage()
    ledgers = {p: r.node.ledger for p, r in federation.nodes.items()}
    before = {p: ledger.remaining() for p, ledger in ledgers.items()}
    federation.nodes["immigration"].server.stop(grace=None).wait()
    with federation.analyst() as analyst:
        with pytest.raises(PeerUnavailable, match="immigration"):
            analyst.query(_spec())
    assert {p: ledgers[p].remaining() for p in ledgers} == before
    coord = federation.coordinator.coordinator
    assert coord.store.query_count() == 0  # refused before anything was announced
    # The refusal is public, like every refusal, and names no data.
    last = coord.audit.events()[-1]
    assert last.kind == "refusal" and "immigration" in last.body["reason"]
    assert all(coord.budget_remaining(p) == before[p] for p in before)


def test_a_node_dying_mid_query_releases_nothing(
    federation: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The grouping node dies after the origin has encrypted: the query fails as a
    whole, no table is released, the failure is recorded in the audit log, and
    the origin signs that it will never decrypt the query and refunds."""
    with federation.operator() as op:
        op.run_ceremony()
        op.run_linkage()
    coord = federation.coordinator.coordinator
    client = coord.nodes.node("immigration")
    real = client.aggregate_by_group

    def dies_at_the_group_hop(hop: HopInput) -> GroupedCiphertexts:
        """The immigration node's server dies as its group hop begins."""
        federation.nodes["immigration"].server.stop(grace=None).wait()
        return real(hop)

    monkeypatch.setattr(client, "aggregate_by_group", dies_at_the_group_hop)
    with federation.analyst() as analyst:
        with pytest.raises(PeerUnavailable, match="immigration"):
            analyst.query(_spec())
    kinds = [e.kind for e in coord.audit.events()]
    assert "release" not in kinds
    assert kinds[-1] == "refusal"
    failure = coord.audit.events()[-1]
    assert "immigration" in failure.body["reason"]
    assert failure.body["abandonment"]["party"] == "education"
    # The origin had charged its budget when it encrypted; it abandoned the
    # query (it will never decrypt it) and refunded: nothing was released, so
    # nothing was spent, and the coordinator's mirror agrees.
    origin = federation.nodes["education"].node
    assert origin.ledger.spent() == 0.0
    assert coord.budget_spent("education") == 0.0
    with pytest.raises(FailedPrecondition, match="abandoned"):
        origin.store.claim_decryption(failure.body["query_id"])


def test_a_query_failing_after_every_hop_charges_nothing_anywhere(
    federation: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every node of the chain charged, then the query fails before decryption:
    the origin's signed abandonment refunds every ledger, mirror included."""
    with federation.operator() as op:
        op.run_ceremony()
        op.run_linkage()
    coord = federation.coordinator.coordinator

    def fails(*args: Any, **kwargs: Any) -> list[int]:
        raise InvalidRequest("noise could not be drawn")

    monkeypatch.setattr(executor_module, "draw_share", fails)
    with federation.analyst() as analyst:
        with pytest.raises(InvalidRequest, match="noise"):
            analyst.query(_spec())
    failure = coord.audit.events()[-1]
    assert failure.kind == "refusal" and "abandonment" in failure.body
    query_id = failure.body["query_id"]
    for party in ("education", "immigration"):
        ledger = federation.nodes[party].node.ledger
        assert not ledger.charged(query_id), party
        assert ledger.spent() == 0.0
        assert coord.budget_spent(party) == 0.0
    assert coord.store.query_status(query_id) == "refused"


def test_a_forged_abandonment_refunds_nothing(federation: Federation) -> None:
    """A coordinator cannot make nodes refund a query by claiming it failed: the
    abandonment must carry the origin's own signature."""
    with federation.operator() as op:
        op.run_ceremony()
        op.run_linkage()
    coord = federation.coordinator.coordinator
    with federation.analyst() as analyst:
        release = analyst.query(_spec())
    group = federation.nodes["immigration"].node
    assert group.ledger.charged(release.query_id)
    # The coordinator forges a refusal with an abandonment signed by another node.
    health = federation.config.party("health")
    fake = sign_abandonment(
        release.query_id,
        "education",
        load_private_key(health.tls.key),
        health.tls.cert.read_bytes(),
    )
    coord.log(
        QueryRefused(
            query_id=release.query_id,
            analyst="x",
            purpose="forged",
            reason="forged",
            abandonment=fake,
        )
    )
    assert group.ledger.charged(release.query_id)
    assert federation.nodes["education"].node.ledger.charged(release.query_id)


def test_a_coordinator_restarted_mid_query_aborts_it_cleanly(federation: Federation) -> None:
    """A query left running by a coordinator that died is closed on restart: marked
    aborted in SQLite and in the audit log; its budget stays counted (nodes may
    have charged it), and a new query runs."""
    with federation.operator() as op:
        op.run_ceremony()
        epoch = op.run_linkage()
    coord = federation.coordinator.coordinator
    spec = _spec()
    coord.store.save_query(
        "deadbeef" * 4,
        epoch.epoch_id,
        "analyst",
        spec.purpose,
        {"epsilon": 0.1, "parties": ["education", "immigration"]},
    )
    restarted = Coordinator(federation.config)
    try:
        last = restarted.audit.events()[-1]
        assert last.kind == "query_aborted"
        assert last.body["query_id"] == "deadbeef" * 4
        assert restarted.store.query_status("deadbeef" * 4) == "aborted"
        assert restarted.budget_remaining("education") == pytest.approx(
            federation.config.privacy.epsilon_per_period - 0.1
        )
    finally:
        restarted.close()
    with federation.analyst() as analyst:
        assert not analyst.query(_spec()).table.empty

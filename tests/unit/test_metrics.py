"""Prometheus metrics: real servers, scraped over HTTP, carry counts but no record data."""

from __future__ import annotations

import csv
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from coordinator import server as coordinator_server
from headcount import tls
from headcount.client import Client
from headcount.config import FederationConfig
from headcount.domain.query import QuerySpec
from headcount.errors import PolicyRefused
from headcount.federation import InitOptions, init_federation
from headcount.metrics import Metrics, Reading, serve_metrics
from headcount.synth import REFERENCE_DATE, generate_population
from headcount.wire import party_node_pb2, party_node_pb2_grpc
from party_node import server as node_server

PURPOSE = "Zebra-crossing audit of pupils by status for the metrics test."


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as reply:
        assert reply.status == 200
        return str(reply.read().decode("utf-8"))


def value(text: str, name: str, **labels: str) -> float:
    """The sample ``name{labels}`` in a Prometheus text exposition (0.0 if absent)."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        metric, _, number = line.rpartition(" ")
        got_name, _, label_text = metric.partition("{")
        if got_name != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
        if got == labels:
            return float(number)
    return 0.0


# -- the Metrics object on its own ------------------------------------------------------


def test_each_metrics_object_has_its_own_registry() -> None:
    a, b = Metrics("node", ["education"]), Metrics("node", ["education"])
    a.observe_rpc("/headcount.v1.PartyNode/Encode", "OK", 0.2)
    assert a.registry.get_sample_value(
        "headcount_rpc_requests_total", {"method": "PartyNode/Encode", "code": "OK"}
    ) == pytest.approx(1.0)
    assert (
        b.registry.get_sample_value(
            "headcount_rpc_requests_total", {"method": "PartyNode/Encode", "code": "OK"}
        )
        is None
    )
    assert a.registry.get_sample_value(
        "headcount_node_epochs_total", {"outcome": "ok"}
    ) == pytest.approx(1.0)


def test_refusals_and_failures_are_told_apart() -> None:
    m = Metrics("coordinator", ["education", "health"])
    for code in ("OK", "RESOURCE_EXHAUSTED", "PERMISSION_DENIED", "INTERNAL", "UNAVAILABLE"):
        m.observe_rpc("/headcount.v1.Coordinator/SubmitQuery", code, 1.0)
    get = m.registry.get_sample_value
    assert get("headcount_coordinator_queries_total", {"outcome": "ok"}) == 1
    assert get("headcount_coordinator_queries_total", {"outcome": "refused"}) == 2
    assert get("headcount_coordinator_queries_total", {"outcome": "failed"}) == 2


def test_labels_outside_the_known_sets_never_appear() -> None:
    m = Metrics("node", ["education"])
    m.observe_rpc("/headcount.v1.PartyNode/Encode", "not a status code", 0.1)
    m.observe_rpc("/x/children of 12 Acacia Avenue", "OK", 0.1)
    assert m.registry.get_sample_value("headcount_rpc_requests_total", {}) is None
    text = "\n".join(str(s) for fam in m.registry.collect() for s in fam.samples)
    assert "Acacia" not in text
    m.add_state(lambda: [Reading("node_records", "records", 3, "Jane Doe")])
    assert not [s for fam in m.registry.collect() for s in fam.samples if "Jane" in str(s)]


def test_a_failing_state_reader_leaves_the_rest_of_the_scrape() -> None:
    m = Metrics("node", ["education"])

    def broken() -> list[Reading]:
        raise RuntimeError("database is locked")

    m.add_state(broken)
    m.observe_rpc("/grpc.health.v1.Health/Check", "OK", 0.001)
    endpoint = serve_metrics(m, 0)
    try:
        text = scrape(endpoint.url)
    finally:
        endpoint.stop()
    assert value(text, "headcount_rpc_requests_total", code="OK", method="Health/Check") == 1


# -- real servers over mutual TLS ------------------------------------------------------------


@dataclass
class Metered:
    config: FederationConfig
    nodes: dict[str, node_server.RunningNode]
    coordinator: coordinator_server.RunningCoordinator


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Metered]:
    """Four nodes and a coordinator, each with metrics on a free loopback port,
    after a ceremony, one epoch, one released query and one refused one."""
    directory = tmp_path_factory.mktemp("metrics") / "fed"
    cfg = init_federation(
        directory,
        InitOptions(
            paillier_bits=1024,
            insecure_test_keys=True,
            reference_date=REFERENCE_DATE,
            require_projects=False,
        ),
    )
    generate_population(600, 11, directory / "data")
    (directory / "data" / "ground_truth.csv").unlink()
    nodes = {p: node_server.start(cfg, p, metrics_port=0) for p in cfg.party_names}
    coord = coordinator_server.start(cfg, metrics_port=0)
    try:
        with Client(cfg) as op:
            op.run_ceremony()
            op.run_linkage()
        with Client(cfg, analyst=cfg.analysts[0].name) as analyst:
            analyst.query(QuerySpec(PURPOSE, "education", "immigration", "immigration_status"))
            with pytest.raises(PolicyRefused):
                analyst.query(QuerySpec(PURPOSE, "immigration", "education", "absence_rate"))
        yield Metered(cfg, nodes, coord)
    finally:
        coord.server.stop(grace=None)
        coord.coordinator.close()
        for n in nodes.values():
            n.server.stop(grace=None)
        for endpoint in (coord.metrics, *(n.metrics for n in nodes.values())):
            if endpoint is not None:
                endpoint.stop()


def _url(running: node_server.RunningNode | coordinator_server.RunningCoordinator) -> str:
    assert running.metrics is not None
    assert running.metrics.host == "127.0.0.1"  # plain HTTP stays on loopback by default
    return running.metrics.url


def test_coordinator_counts_rpcs_epochs_and_queries(metered: Metered) -> None:
    text = scrape(_url(metered.coordinator))
    rpcs = "headcount_rpc_requests_total"
    assert value(text, rpcs, code="OK", method="Coordinator/RunLinkage") == 1
    assert value(text, rpcs, code="OK", method="Coordinator/SubmitQuery") == 1
    assert value(text, rpcs, code="PERMISSION_DENIED", method="Coordinator/SubmitQuery") == 1
    assert value(text, "headcount_coordinator_queries_total", outcome="ok") == 1
    assert value(text, "headcount_coordinator_queries_total", outcome="refused") == 1
    assert value(text, "headcount_coordinator_epochs_total", outcome="ok") == 1
    assert (
        value(text, "headcount_rpc_duration_seconds_count", method="Coordinator/SubmitQuery") == 2
    )
    for party in metered.config.party_names:
        assert value(text, "headcount_coordinator_epoch_records", party=party) > 0
    left = value(text, "headcount_coordinator_budget_remaining_epsilon", party="education")
    assert left == pytest.approx(
        metered.config.privacy.epsilon_per_period - metered.config.privacy.default_query_epsilon
    )


def test_nodes_count_hops_and_report_their_size_and_budget(metered: Metered) -> None:
    education = scrape(_url(metered.nodes["education"]))
    immigration = scrape(_url(metered.nodes["immigration"]))
    rpcs = "headcount_rpc_requests_total"
    assert value(education, rpcs, code="OK", method="PartyNode/Encode") == 1
    assert value(education, "headcount_node_epochs_total", outcome="ok") == 1
    assert value(education, "headcount_node_query_hops_total", hop="origin", outcome="ok") == 1
    assert value(education, "headcount_node_query_hops_total", hop="decrypt", outcome="ok") == 1
    assert value(immigration, "headcount_node_query_hops_total", hop="group", outcome="ok") == 1
    records = metered.coordinator.coordinator.store.epoch(
        metered.coordinator.coordinator.store.latest_epoch()
    ).records
    assert value(education, "headcount_node_records", party="education") == records["education"]
    assert value(education, "headcount_node_stored_epochs") == 1
    assert value(
        education, "headcount_node_budget_remaining_epsilon", party="education"
    ) == pytest.approx(
        metered.config.privacy.epsilon_per_period - metered.config.privacy.default_query_epsilon
    )


def test_a_caller_without_the_role_is_counted_as_denied(metered: Metered) -> None:
    cfg = metered.config
    analyst = cfg.analysts[0]
    node = metered.nodes["health"]
    creds = tls.channel_credentials(analyst.tls.cert, analyst.tls.key, cfg.ca_cert)
    before = value(
        scrape(_url(node)),
        "headcount_rpc_requests_total",
        code="PERMISSION_DENIED",
        method="PartyNode/GetIdentity",
    )
    with grpc.secure_channel(f"127.0.0.1:{node.port}", creds) as channel:
        stub = party_node_pb2_grpc.PartyNodeStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetIdentity(party_node_pb2.IdentityRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    after = value(
        scrape(_url(node)),
        "headcount_rpc_requests_total",
        code="PERMISSION_DENIED",
        method="PartyNode/GetIdentity",
    )
    assert after == before + 1


def test_no_record_id_purpose_or_job_id_reaches_any_metric(metered: Metered) -> None:
    coord = metered.coordinator.coordinator
    epoch_id = coord.store.latest_epoch()
    forbidden = {PURPOSE, "Zebra", epoch_id, coord.store.latest_ceremony()}
    for party in metered.config.party_names:
        with metered.config.party(party).data.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        forbidden |= {r["record_id"] for r in rows[:50]}
        forbidden |= {r["last_name"] for r in rows[:50] if len(r["last_name"]) > 3}
    texts = [scrape(_url(metered.coordinator))]
    texts += [scrape(_url(n)) for n in metered.nodes.values()]
    for text in texts:
        leaked = sorted(s for s in forbidden if s and s in text)
        assert not leaked, leaked
        # Every label value is a method, status code, outcome, hop, party or bucket.
        for label_value in re.findall(r'="([^"]*)"', text):
            assert re.fullmatch(r"[A-Za-z0-9_/.+-]+|\+Inf", label_value), label_value

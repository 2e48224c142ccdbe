"""Five Safes, safe projects: a query must cite a project every department in
it has approved with its own key; revoked or unapproved projects are refused,
by the coordinator and again by each node from its own audit replica."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import grpc
import pytest
from harness import Federation, make_federation

from headcount import tls
from headcount.client import Client
from headcount.domain.projects import ProjectDecision
from headcount.domain.query import QuerySpec
from headcount.errors import InvalidProof, NotAuthorised, PolicyRefused
from headcount.wire import coordinator_pb2, coordinator_pb2_grpc

PURPOSE = "Count pupils by immigration status to plan school support services."
PROJECT = "school-support-2026"
EXPIRES = dt.date.today() + dt.timedelta(days=60)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    f = make_federation(tmp_path_factory.mktemp("projects") / "fed", require_projects=True)
    try:
        with f.operator() as op:
            op.run_ceremony()
            op.run_linkage()
        yield f
    finally:
        f.stop()


def _spec(project: str = PROJECT) -> QuerySpec:
    return QuerySpec(PURPOSE, "education", "immigration", "immigration_status", project_id=project)


def test_a_query_needs_a_project_approved_by_every_department(fed: Federation) -> None:
    with fed.analyst() as analyst:
        with pytest.raises(PolicyRefused, match="cite an approved project"):
            analyst.query(_spec(""))
        p = analyst.propose_project(
            PROJECT,
            "School support",
            "Plan school support by immigration status.",
            ["education", "immigration"],
            EXPIRES,
        )
        assert p.status == "proposed" and list(p.approved_by) == []
        with pytest.raises(PolicyRefused, match="awaits approval"):
            analyst.query(_spec())
    with Client(fed.config, steward="education") as steward:
        assert list(steward.approve_project(PROJECT).approved_by) == ["education"]
    with (
        fed.analyst() as analyst,
        pytest.raises(PolicyRefused, match=r"awaits approval by \['immigration'\]"),
    ):
        analyst.query(_spec())
    with Client(fed.config, steward="immigration") as steward:
        assert steward.approve_project(PROJECT).status == "approved"
    with fed.analyst() as analyst:
        release = analyst.query(_spec())
    # Cells and margins apart: the cells add up without the total.
    assert "Total" not in set(release.table["group"])
    assert release.margins["group"].iloc[-1] == "Total"
    assert release.total == release.margins["count"].iloc[-1]
    assert release.table.attrs["query_id"] == release.query_id
    assert release.table.attrs["epsilon"] == release.epsilon
    assert release.margins.attrs["noise_scale"] == release.noise_scale
    assert release.table.attrs["interval_coverage"] == 0.95
    assert len(release.frame()) == len(release.table) + len(release.margins)
    kinds = [e.kind for e in fed.coordinator.coordinator.audit.events()]
    assert kinds.count("project_approved") == 2 and "project_proposed" in kinds


def test_a_project_does_not_reach_departments_it_does_not_name(fed: Federation) -> None:
    spec = QuerySpec(PURPOSE, "education", "health", "gp_registered", project_id=PROJECT)
    with fed.analyst() as analyst, pytest.raises(PolicyRefused, match="does not cover"):
        analyst.query(spec)


def test_only_the_department_can_approve_for_itself(fed: Federation) -> None:
    """A forged approval (another key) is refused; another department is refused."""
    cfg = fed.config
    justice = cfg.party("justice").tls
    channel = grpc.secure_channel(
        cfg.coordinator.address, tls.channel_credentials(justice.cert, justice.key, cfg.ca_cert)
    )
    stub = coordinator_pb2_grpc.CoordinatorStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.ApproveProject(
            coordinator_pb2.ProjectDecision(project_id=PROJECT, signature=b"0" * 70), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED  # justice is not in it
    with Client(fed.config, steward="education") as steward, pytest.raises(InvalidProof):
        steward._coordinator.approve_project(ProjectDecision(PROJECT, b"\x30" * 70))
    with fed.analyst() as analyst, pytest.raises(NotAuthorised):
        analyst._coordinator.approve_project(ProjectDecision(PROJECT))


def test_revocation_stops_queries(fed: Federation) -> None:
    with fed.analyst() as analyst:
        analyst.propose_project(
            "short-lived",
            "Short-lived project",
            "A project that a steward revokes again.",
            ["education", "immigration"],
            EXPIRES,
        )
    for party in ("education", "immigration"):
        with Client(fed.config, steward=party) as steward:
            steward.approve_project("short-lived")
    with Client(fed.config, steward="immigration") as steward:
        assert steward.revoke_project("short-lived").status == "revoked"
    with fed.analyst() as analyst, pytest.raises(PolicyRefused, match="revoked"):
        analyst.query(_spec("short-lived"))


def test_a_node_checks_its_own_approval_in_its_replica(fed: Federation) -> None:
    """Even if the coordinator skipped its check, a node refuses a project it
    never approved: the check runs on the node's own replica."""
    node = fed.nodes["health"].node
    with pytest.raises(PolicyRefused, match="has not approved"):
        node.check_project(PROJECT)  # health was never asked
    fed.nodes["education"].node.check_project(PROJECT)  # education approved it


def test_an_analyst_whose_accreditation_ended_is_refused(fed: Federation) -> None:
    """Five Safes, safe people: once the analyst's accreditation has ended, the
    coordinator refuses their proposals and queries, and each node refuses to
    take part in their project even when asked directly."""
    coordinator = fed.coordinator.coordinator
    current = fed.config
    analyst = current.analysts[0]
    assert analyst.accredited_on(dt.date.today())
    lapsed = current.model_copy(
        update={
            "analysts": (
                analyst.model_copy(
                    update={"accredited_until": dt.date.today() - dt.timedelta(days=1)}
                ),
            )
        }
    )
    nodes = [r.node for r in fed.nodes.values()]
    coordinator.use_config(lapsed)
    for node in nodes:
        node.use_config(lapsed)
    try:
        with fed.analyst() as client:
            with pytest.raises(NotAuthorised, match="accreditation"):
                client.query(_spec())
            with pytest.raises(NotAuthorised, match="accreditation"):
                client.propose_project(
                    "another-2026",
                    "Another",
                    "A project proposed after the accreditation ended.",
                    ["education"],
                    EXPIRES,
                )
        with pytest.raises(NotAuthorised, match="safe people"):
            nodes[0].check_project(PROJECT)
    finally:
        coordinator.use_config(current)
        for node in nodes:
            node.use_config(current)
    with fed.analyst() as client:  # restored: the same query runs again
        assert client.query(_spec()).margins["group"].iloc[-1] == "Total"

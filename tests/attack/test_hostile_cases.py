"""The hostile requests an outside review found answered with INTERNAL (or a
misleading status), each replayed against live servers: every one must get a
clean status that names the real cause, and change nothing stored."""

from __future__ import annotations

import json
from collections.abc import Iterator

import grpc
import pytest
from harness import Federation

from headcount import tls
from headcount.domain.audit import AuditEvent
from headcount.errors import InvalidRequest
from headcount.wire import common_pb2, coordinator_pb2, party_node_pb2

PURPOSE = "A purpose long enough to be accepted by the coordinator."


@pytest.fixture(scope="module")
def analyst(linked_federation: Federation) -> Iterator[grpc.Channel]:
    cfg = linked_federation.config
    cred = cfg.analysts[0].tls
    ch = grpc.secure_channel(
        cfg.coordinator.address,
        tls.channel_credentials(cred.cert, cred.key, cfg.ca_cert),
        options=[("grpc.max_send_message_length", 64 * 2**20)],
    )
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def as_coordinator(linked_federation: Federation) -> Iterator[grpc.Channel]:
    cfg = linked_federation.config
    ch = grpc.secure_channel(
        cfg.party("health").address,
        tls.channel_credentials(cfg.coordinator.tls.cert, cfg.coordinator.tls.key, cfg.ca_cert),
        options=[("grpc.max_send_message_length", 64 * 2**20)],
    )
    yield ch
    ch.close()


def _query(ch: grpc.Channel, **fields: object) -> grpc.RpcError | None:
    request = coordinator_pb2.QueryRequest(
        purpose=PURPOSE,
        population_party="education",
        group_party="immigration",
        group_by="immigration_status",
    )
    for name, value in fields.items():
        if name == "population_filters":
            request.population_filters.extend(value)  # type: ignore[arg-type]
        else:
            setattr(request, name, value)
    ident = lambda b: b  # noqa: E731 - raw bytes on the wire
    try:
        ch.unary_unary(
            "/headcount.v1.Coordinator/SubmitQuery",
            request_serializer=ident,
            response_deserializer=ident,
        )(request.SerializeToString(), timeout=60)
    except grpc.RpcError as exc:
        return exc
    return None


def _refusals(fed: Federation) -> list[AuditEvent]:
    return [e for e in fed.coordinator.coordinator.audit.events() if e.kind == "refusal"]


def _events(fed: Federation) -> int:
    return len([e for e in fed.coordinator.coordinator.audit.events() if e.kind != "refusal"])


@pytest.mark.parametrize(
    ("fields", "code", "says"),
    [
        ({"epsilon": 5e-324}, grpc.StatusCode.INVALID_ARGUMENT, "epsilon"),
        ({"epsilon": 1e-300}, grpc.StatusCode.INVALID_ARGUMENT, "epsilon"),
        (
            {"measure": "mean", "measure_attribute": "first_name"},
            grpc.StatusCode.PERMISSION_DENIED,
            "first_name",
        ),
        ({"population_group_by": "first_name"}, grpc.StatusCode.PERMISSION_DENIED, "first_name"),
        ({"group_by": "first_name"}, grpc.StatusCode.PERMISSION_DENIED, "first_name"),
        ({"title": "t" * 1_000_000}, grpc.StatusCode.INVALID_ARGUMENT, "title"),
        (
            {
                "population_filters": [
                    common_pb2.Predicate(
                        attribute="year_group", values=[str(i) for i in range(200_000)]
                    )
                ]
            },
            grpc.StatusCode.INVALID_ARGUMENT,
            "values",
        ),
    ],
    ids=[
        "denormal-epsilon",
        "tiny-epsilon",
        "mean-of-a-name",
        "two-way-by-a-name",
        "group-by-a-name",
        "1MB-title",
        "200k-filter-values",
    ],
)
def test_hostile_query_gets_a_clean_status_naming_the_cause(
    linked_federation: Federation,
    analyst: grpc.Channel,
    fields: dict[str, object],
    code: grpc.StatusCode,
    says: str,
) -> None:
    before = _events(linked_federation)
    refusals = _refusals(linked_federation)
    error = _query(analyst, **fields)
    assert error is not None
    assert error.code() == code, (error.code(), error.details()[:300])
    assert says in (error.details() or ""), error.details()[:300]
    assert "budget" not in (error.details() or "").lower()
    assert _events(linked_federation) == before
    # Every refusal is in the public log, and none quotes what was sent.
    after = _refusals(linked_federation)
    assert len(after) == len(refusals) + 1
    logged = json.dumps(after[-1].body)
    assert "first_name" not in logged or code != grpc.StatusCode.INVALID_ARGUMENT
    assert "t" * 100 not in logged and "199999" not in logged
    assert len(logged) < 2_000


def test_deeply_nested_audit_json_is_invalid_argument(
    linked_federation: Federation, as_coordinator: grpc.Channel
) -> None:
    node = linked_federation.nodes["health"].node
    head = node.audit.next_head()
    deep = "[" * 100_000 + "]" * 100_000
    ident = lambda b: b  # noqa: E731
    with pytest.raises(grpc.RpcError) as caught:
        as_coordinator.unary_unary(
            "/headcount.v1.PartyNode/SyncAudit",
            request_serializer=ident,
            response_deserializer=ident,
        )(party_node_pb2.AuditBatch(events_json=[deep]).SerializeToString(), timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert node.audit.next_head() == head


@pytest.mark.parametrize(
    ("title", "purpose", "says"),
    [
        ("t" * 1_000_000, "A purpose long enough for a project of the federation.", "title"),
        ("A title", "p" * 100_000, "purpose"),
    ],
    ids=["1MB-title", "100k-purpose"],
)
def test_a_project_with_an_enormous_title_or_purpose_is_refused(
    linked_federation: Federation, analyst: grpc.Channel, title: str, purpose: str, says: str
) -> None:
    before = _events(linked_federation)
    proposal = coordinator_pb2.ProjectProposal(
        project_id="enormous",
        title=title,
        purpose=purpose,
        parties=["education"],
        expires="2099-01-01",
    )
    ident = lambda b: b  # noqa: E731
    with pytest.raises(grpc.RpcError) as caught:
        analyst.unary_unary(
            "/headcount.v1.Coordinator/ProposeProject",
            request_serializer=ident,
            response_deserializer=ident,
        )(proposal.SerializeToString(), timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert says in (caught.value.details() or "")
    assert _events(linked_federation) == before


NAME = "Amelia Jones 2013-04-02"  # what an analyst might type where an attribute goes


@pytest.mark.parametrize(
    "fields",
    [
        {"group_by": NAME},
        {"population_group_by": NAME},
        {"measure": "mean", "measure_attribute": NAME},
        {"population_filters": [common_pb2.Predicate(attribute=NAME, values=["Y"])]},
    ],
    ids=["group-by", "two-way", "mean", "filter"],
)
def test_a_refusal_never_publishes_what_the_analyst_typed(
    linked_federation: Federation, analyst: grpc.Channel, fields: dict[str, object]
) -> None:
    """The analyst's reply quotes the string it sent; the public refusal names
    only the department and says the attribute is not in its catalogue."""
    refusals = _refusals(linked_federation)
    error = _query(analyst, **fields)
    assert error is not None and error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert NAME in (error.details() or "")
    after = _refusals(linked_federation)
    assert len(after) == len(refusals) + 1
    logged = json.dumps(after[-1].body)
    assert "Amelia" not in logged and "2013" not in logged
    assert "not in its catalogue" in after[-1].body["reason"]


@pytest.mark.parametrize("threshold", [5e-324, 0.3, 0.5])
def test_a_linkage_threshold_at_or_below_the_candidate_floor_is_refused(
    linked_federation: Federation, threshold: float
) -> None:
    """Below the candidate floor every candidate pair would link: refused before
    anything starts, and no epoch event is written."""
    events = _events(linked_federation)
    with linked_federation.operator() as op, pytest.raises(InvalidRequest, match="floor"):
        op.run_linkage(threshold)
    assert _events(linked_federation) == events

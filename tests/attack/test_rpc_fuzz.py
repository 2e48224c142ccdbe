"""Every Coordinator and PartyNode RPC, driven from outside over real mutual TLS
with hostile requests drawn by hypothesis: denormal, huge, negative and
non-finite numbers, identifying and non-numeric attributes, nested and
oversized JSON, long strings, many list entries, empty and malformed fields,
garbage bytes, and callers of the wrong role.

Each reply must be OK (where the request is valid) or a status that names a
condition the caller can act on (INVALID_ARGUMENT, RESOURCE_EXHAUSTED,
PERMISSION_DENIED, FAILED_PRECONDITION, NOT_FOUND), never INTERNAL or UNKNOWN;
and no request may charge any budget: afterwards every node's ledger and the
coordinator's view of it are what they were. The federation is this module's
own. Its budget is nearly spent before the run (each department has 0.05 of
0.3 left), so a request that is a valid query in every field is refused for
the budget, which charges nothing.

Not driven as the operator: RunCeremony (its request has no fields, and a
valid one starts a new ceremony), and RunLinkage with a threshold in (0, 1]
(a valid one starts a new epoch); both are driven with the wrong roles.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from harness import Federation, make_federation
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headcount import tls
from headcount.departments import ATTRIBUTES, DERIVED
from headcount.domain.query import QuerySpec
from headcount.wire import common_pb2, convert, coordinator_pb2, party_node_pb2

PURPOSE = "Hostile requests must be answered cleanly and charge nothing."
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
}
EXAMPLES = 40  # per RPC; more where the request has many fields
MORE_EXAMPLES = {"SubmitQuery": 150, "ApplyPredicate": 60, "AggregateByGroup": 60}
TALLY: Counter[tuple[str, str]] = Counter()
# One reply text per (RPC, status), shown under the table.
REASONS: dict[tuple[str, str], set[str]] = {}

# -- hostile values ------------------------------------------------------------------------

NUMBERS = [
    math.nan,
    math.inf,
    -math.inf,
    5e-324,
    -5e-324,
    1e-310,
    1e-300,
    2.2250738585072014e-308,
    1e308,
    1.7976931348623157e308,
    -1.0,
    -0.0,
    0.0,
    1e6,
    2.0,
]
FLOATS = st.one_of(st.sampled_from(NUMBERS), st.floats())
UINT32 = st.one_of(st.sampled_from([0, 1, 2, 10_000, 10_001, 2**31, 2**32 - 1]), st.integers(0, 99))
UINT64 = st.one_of(st.sampled_from([0, 1, 2**32, 2**63, 2**64 - 1]), st.integers(0, 5000))
IDENTIFYING = [
    "first_name",
    "last_name",
    "date_of_birth",
    "postcode",
    "address",
    "record_id",
    "nhs_number",
    "token",
]
KNOWN = sorted({a.name for attrs in ATTRIBUTES.values() for a in attrs} | {a.name for a in DERIVED})


def deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


JUNK = [
    "",
    " ",
    "\x00",
    "\ud7ff" * 10,
    "A" * 5_000,
    "Z" * 300_000,
    deep_json(100_000),
    '{"a":' * 2_000 + "1" + "}" * 2_000,
    '{"kind": "query", "seq": 1e400, "body": null}',
    "NaN",
    "-Infinity",
    "1e309",
    "../../etc/passwd",
    "'; DROP TABLE privacy_charges; --",
    "Ω≈ç√∫" * 200,
    "2026-02-30",
]
STRINGS = st.one_of(st.sampled_from(JUNK), st.text(max_size=40))
ATTRIBUTE_NAMES = st.one_of(st.sampled_from(KNOWN + IDENTIFYING), STRINGS)
BYTES = st.one_of(
    st.sampled_from([b"", b"\x00", b"\x01", b"\xff" * 512, b"\x00" * 1_000_000]),
    st.binary(max_size=300),
)


def many(n: int) -> list[str]:
    return [str(i) for i in range(n)]


VALUES = st.one_of(
    st.lists(STRINGS, max_size=4),
    st.lists(st.sampled_from(["1", "2", "yes", "no", "custody", "E09000001"]), max_size=4),
    st.sampled_from([257, 5_000, 200_000]).map(many),
)
PREDICATE = st.builds(
    lambda a, v: common_pb2.Predicate(attribute=a, values=v), ATTRIBUTE_NAMES, VALUES
)
PREDICATES = st.one_of(
    st.lists(PREDICATE, max_size=3),
    st.sampled_from([100, 20_000]).map(
        lambda n: [common_pb2.Predicate(attribute="year_group", values=["1"])] * n
    ),
)


@dataclass
class Scene:
    fed: Federation
    ids: dict[str, list[str]]  # real epoch, ceremony, query and project ids
    identities: list[common_pb2.PartyIdentity]
    event_json: list[str]
    channels: dict[tuple[str, str], grpc.Channel]
    ledgers: dict[str, float]

    def channel(self, role: str, target: str) -> grpc.Channel:
        key = (role, target)
        if key not in self.channels:
            cfg = self.fed.config
            cred = {
                "operator": (cfg.operator.cert, cfg.operator.key),
                "analyst": (cfg.analysts[0].tls.cert, cfg.analysts[0].tls.key),
                "steward": (cfg.party("education").tls.cert, cfg.party("education").tls.key),
                "coordinator": (cfg.coordinator.tls.cert, cfg.coordinator.tls.key),
                "other-node": (cfg.party("health").tls.cert, cfg.party("health").tls.key),
            }[role]
            address = (
                cfg.coordinator.address if target == "coordinator" else cfg.party(target).address
            )
            self.channels[key] = grpc.secure_channel(
                address,
                tls.channel_credentials(cred[0], cred[1], cfg.ca_cert),
                options=[
                    ("grpc.max_send_message_length", 64 * 2**20),
                    ("grpc.max_receive_message_length", 64 * 2**20),
                ],
            )
        return self.channels[key]


def _spent(fed: Federation) -> dict[str, float]:
    """Each department's spent epsilon as its node's ledger has it."""
    return {p: fed.nodes[p].node.ledger.spent() for p in fed.config.party_names}


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    fed = make_federation(
        tmp_path_factory.mktemp("fuzz") / "fed", epsilon_per_period=0.3, default_query_epsilon=0.25
    )
    channels: dict[tuple[str, str], grpc.Channel] = {}
    try:
        with fed.operator() as op:
            ceremony = op.run_ceremony()
            epoch = op.run_linkage()
        fed.approve_project("fuzz-project", "A project to fuzz", PURPOSE)
        queries = []
        with fed.analyst() as analyst:
            for population, group_party, group_by in (
                ("education", "immigration", "immigration_status"),
                ("health", "justice", "sentence"),
            ):
                release = analyst.query(QuerySpec(PURPOSE, population, group_party, group_by))
                queries.append(release.query_id)
        coordinator = fed.coordinator.coordinator
        events = [e.to_json() for e in coordinator.audit.events()]
        identities = []
        for party in fed.config.party_names:
            identities.append(convert.identity_to_pb(fed.nodes[party].node.identity()))
        ids = {
            "epoch": [epoch.epoch_id],
            "ceremony": [ceremony.ceremony_id],
            "query": queries,
            "project": ["fuzz-project"],
        }
        yield Scene(fed, ids, identities, events, channels, _spent(fed))
    finally:
        for ch in channels.values():
            ch.close()
        fed.stop()


# -- one request strategy per RPC ---------------------------------------------------------


def ids(scene: Scene, kind: str) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(scene.ids[kind]), STRINGS)


def maybe(valid: Any, hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The valid value (three times in four) or a hostile one: requests valid
    in all but a few fields reach the checks deepest in."""
    return st.one_of(st.just(valid), st.just(valid), st.just(valid), hostile)


def query_request(scene: Scene) -> st.SearchStrategy[Any]:
    parties = st.sampled_from([*scene.fed.config.party_names, *IDENTIFYING, "", "coordinator"])
    condition = st.builds(
        lambda p, link, f: coordinator_pb2.Condition(party=p, link=link, filters=f),
        parties,
        st.one_of(st.sampled_from(["person", "household"]), STRINGS),
        PREDICATES,
    )
    # Every department has 0.05 left: a valid epsilon at or below that would
    # be charged, so the fuzz never sends one.
    epsilon = FLOATS.filter(lambda x: not 0.001 <= x <= 0.0501)
    return st.builds(
        coordinator_pb2.QueryRequest,
        purpose=maybe(PURPOSE, STRINGS),
        population_party=maybe("education", parties),
        population_filters=maybe([], PREDICATES),
        group_party=maybe("immigration", parties),
        group_by=maybe("immigration_status", ATTRIBUTE_NAMES),
        group_filters=maybe([], PREDICATES),
        epsilon=maybe(0.0, epsilon),
        title=maybe("", STRINGS),
        conditions=maybe([], st.lists(condition, max_size=3)),
        population_group_by=maybe("", ATTRIBUTE_NAMES),
        measure=maybe("count", st.one_of(st.sampled_from(["mean", "sum", "median"]), STRINGS)),
        measure_attribute=maybe("", ATTRIBUTE_NAMES),
        project_id=maybe("", ids(scene, "project")),
    )


def proposal(scene: Scene) -> st.SearchStrategy[Any]:
    return st.builds(
        coordinator_pb2.ProjectProposal,
        project_id=maybe("fuzz-new", ids(scene, "project")),
        title=maybe("A title", STRINGS),
        purpose=maybe(PURPOSE, STRINGS),
        parties=maybe(
            ["education"],
            st.one_of(
                st.lists(st.sampled_from([*scene.fed.config.party_names, *IDENTIFYING])),
                st.lists(STRINGS, max_size=3),
                st.sampled_from([5_000, 100_000]).map(lambda n: ["education"] * n),
            ),
        ),
        expires=maybe(
            "2099-01-01", st.one_of(st.sampled_from(["0001-01-01", "9999-12-31"]), STRINGS)
        ),
    )


def decision(scene: Scene) -> st.SearchStrategy[Any]:
    return st.builds(
        coordinator_pb2.ProjectDecision, project_id=ids(scene, "project"), signature=BYTES
    )


def identity(scene: Scene) -> st.SearchStrategy[Any]:
    def mutate(base: Any, field: str, value: Any) -> Any:
        out = common_pb2.PartyIdentity()
        out.CopyFrom(base)
        setattr(out, field, value)
        return out

    hostile = st.builds(
        common_pb2.PartyIdentity,
        party=STRINGS,
        x25519_public_key=BYTES,
        paillier_n=BYTES,
        certificate_pem=BYTES,
        signature=BYTES,
    )
    fields = ["party", "x25519_public_key", "paillier_n", "certificate_pem", "signature"]
    mutated = st.builds(
        lambda base, field, s, b: mutate(base, field, s if field == "party" else b),
        st.sampled_from(scene.identities),
        st.sampled_from(fields),
        STRINGS,
        BYTES,
    )
    return st.one_of(hostile, mutated, st.sampled_from(scene.identities))


def envelope(scene: Scene) -> st.SearchStrategy[Any]:
    return st.builds(
        party_node_pb2.Envelope,
        ceremony_id=ids(scene, "ceremony"),
        sender=STRINGS,
        recipient=maybe("education", STRINGS),
        nonce=BYTES,
        ciphertext=BYTES,
    )


def commitment() -> st.SearchStrategy[Any]:
    return st.builds(party_node_pb2.Commitment, party=STRINGS, digest=BYTES)


def group_ciphertexts() -> st.SearchStrategy[Any]:
    group = st.builds(common_pb2.GroupCiphertext, group=STRINGS, ciphertext=BYTES)
    return st.one_of(
        st.lists(group, max_size=4),
        st.sampled_from([10_000]).map(
            lambda n: [common_pb2.GroupCiphertext(group="all", ciphertext=b"\x01")] * n
        ),
    )


def attestation() -> st.SearchStrategy[Any]:
    return st.builds(
        party_node_pb2.NoiseAttestation,
        party=STRINGS,
        input_digest=BYTES,
        output_digest=BYTES,
        signature=BYTES,
        certificate_pem=BYTES,
    )


def paillier_n(scene: Scene) -> st.SearchStrategy[bytes]:
    real = [i.paillier_n for i in scene.identities]
    return st.one_of(st.sampled_from(real), BYTES, st.sampled_from([(2**1024 - 1).to_bytes(128)]))


def hop_stream(scene: Scene) -> st.SearchStrategy[Any]:
    header = st.builds(
        party_node_pb2.HopHeader,
        query_id=ids(scene, "query"),
        epoch_id=ids(scene, "epoch"),
        paillier_n=paillier_n(scene),
        group_by=maybe("", ATTRIBUTE_NAMES),
        filters=maybe([], PREDICATES),
        epsilon=FLOATS,
        expected_records=UINT64,
        purpose=maybe(PURPOSE, STRINGS),
    )
    chunk = st.builds(
        party_node_pb2.CiphertextChunk,
        seq=UINT32,
        tokens=st.lists(BYTES, max_size=3),
        ciphertexts=st.one_of(
            st.lists(BYTES, max_size=3),
            st.sampled_from([50_000]).map(lambda n: [b"\x02"] * n),
        ),
        last=st.booleans(),
    )
    items = st.lists(
        st.one_of(
            chunk.map(lambda c: party_node_pb2.HopInput(chunk=c)),
            header.map(lambda h: party_node_pb2.HopInput(header=h)),
        ),
        max_size=4,
    )
    with_header = st.builds(
        lambda h, rest: [party_node_pb2.HopInput(header=h), *rest], header, items
    )
    return st.one_of(with_header, items)


def layout() -> st.SearchStrategy[Any]:
    return st.builds(
        party_node_pb2.SlotLayoutSpec,
        slots=UINT32,
        slot_bits=UINT32,
        max_summands=UINT64,
        max_value=UINT64,
        noise_bound=UINT64,
    )


def encrypt_request(scene: Scene) -> st.SearchStrategy[Any]:
    def build(layout_spec: Any, **fields: Any) -> Any:
        request = party_node_pb2.EncryptRequest(**fields)
        if layout_spec is not None:
            request.layout.CopyFrom(layout_spec)
        return request

    return st.builds(
        build,
        layout_spec=st.one_of(st.none(), layout()),
        query_id=ids(scene, "query"),
        epoch_id=ids(scene, "epoch"),
        filters=maybe([], PREDICATES),
        epsilon=FLOATS,
        chunk_records=UINT32,
        purpose=maybe(PURPOSE, STRINGS),
        per_household=st.booleans(),
        group_by=maybe("", ATTRIBUTE_NAMES),
        measure_attribute=maybe("", ATTRIBUTE_NAMES),
    )


def audit_batch(scene: Scene) -> st.SearchStrategy[Any]:
    def forged(event: str, junk: str) -> str:
        return event.replace('"kind":', f'"kind": {junk!r}, "x":', 1)

    event = st.one_of(
        STRINGS,
        st.sampled_from(scene.event_json),
        st.builds(forged, st.sampled_from(scene.event_json), STRINGS),
    )
    return st.builds(
        party_node_pb2.AuditBatch,
        events_json=st.one_of(
            st.lists(event, max_size=3),
            st.sampled_from([2_000]).map(lambda n: ["{}"] * n),
        ),
    )


@dataclass(frozen=True)
class Rpc:
    service: str  # "Coordinator" or "PartyNode"
    name: str
    kind: str  # unary_unary, unary_stream, stream_unary, stream_stream
    roles: tuple[str, ...]  # allowed callers
    # The request (a message, or a list for a stream) for a caller of an
    # allowed role; None: only callers of other roles are sent.
    request: Callable[[Scene], st.SearchStrategy[Any]] | None

    @property
    def path(self) -> str:
        return f"/headcount.v1.{self.service}/{self.name}"


def empty(message: type) -> Callable[[Scene], st.SearchStrategy[Any]]:
    return lambda scene: st.just(message())


COORDINATOR_ROLES = ("operator", "analyst", "steward", "coordinator")
NODE_ROLES = ("coordinator", "analyst", "operator", "other-node")
RPCS = [
    Rpc("Coordinator", "RunCeremony", "unary_unary", ("operator",), None),
    Rpc(
        "Coordinator",
        "RunLinkage",
        "unary_unary",
        ("operator",),
        lambda scene: st.builds(
            coordinator_pb2.RunLinkageRequest,
            threshold=FLOATS.filter(lambda x: not 0 < x <= 1 and x != 0),
        ),
    ),
    Rpc("Coordinator", "SubmitQuery", "unary_unary", ("analyst",), query_request),
    Rpc(
        "Coordinator",
        "GetStatus",
        "unary_unary",
        ("operator", "analyst"),
        empty(coordinator_pb2.StatusRequest),
    ),
    Rpc(
        "Coordinator",
        "GetAuditLog",
        "unary_unary",
        ("operator", "analyst"),
        empty(coordinator_pb2.AuditLogRequest),
    ),
    Rpc("Coordinator", "ProposeProject", "unary_unary", ("analyst",), proposal),
    Rpc("Coordinator", "ApproveProject", "unary_unary", ("steward",), decision),
    Rpc("Coordinator", "RevokeProject", "unary_unary", ("steward", "operator"), decision),
    Rpc(
        "Coordinator",
        "ListProjects",
        "unary_unary",
        ("operator", "analyst", "steward"),
        empty(coordinator_pb2.ListProjectsRequest),
    ),
    Rpc(
        "PartyNode",
        "GetIdentity",
        "unary_unary",
        ("coordinator",),
        empty(party_node_pb2.IdentityRequest),
    ),
    Rpc(
        "PartyNode",
        "Contribute",
        "unary_unary",
        ("coordinator",),
        lambda scene: st.builds(
            party_node_pb2.ContributeRequest,
            ceremony_id=ids(scene, "ceremony"),
            parties=st.lists(identity(scene), max_size=5),
        ),
    ),
    Rpc(
        "PartyNode",
        "Finish",
        "unary_unary",
        ("coordinator",),
        lambda scene: st.builds(
            party_node_pb2.FinishRequest,
            ceremony_id=ids(scene, "ceremony"),
            envelopes=st.lists(envelope(scene), max_size=4),
            commitments=st.lists(commitment(), max_size=5),
        ),
    ),
    Rpc(
        "PartyNode",
        "Encode",
        "unary_stream",
        ("coordinator",),
        lambda scene: st.builds(
            party_node_pb2.EncodeRequest,
            epoch_id=ids(scene, "epoch"),
            ceremony_id=ids(scene, "ceremony"),
            chunk_records=UINT32,
            resume_from_seq=UINT32,
        ),
    ),
    Rpc("PartyNode", "EncryptIndicators", "unary_stream", ("coordinator",), encrypt_request),
    Rpc("PartyNode", "ApplyPredicate", "stream_stream", ("coordinator",), hop_stream),
    Rpc("PartyNode", "AggregateByGroup", "stream_unary", ("coordinator",), hop_stream),
    Rpc(
        "PartyNode",
        "AddNoise",
        "unary_unary",
        ("coordinator",),
        lambda scene: st.builds(
            party_node_pb2.NoiseRequest,
            query_id=ids(scene, "query"),
            paillier_n=paillier_n(scene),
            groups=group_ciphertexts(),
        ),
    ),
    Rpc(
        "PartyNode",
        "AbandonQuery",
        "unary_unary",
        ("coordinator",),
        lambda scene: st.builds(party_node_pb2.AbandonRequest, query_id=ids(scene, "query")),
    ),
    Rpc(
        "PartyNode",
        "DecryptAggregate",
        "unary_unary",
        ("coordinator",),
        lambda scene: st.builds(
            party_node_pb2.DecryptRequest,
            query_id=ids(scene, "query"),
            groups=group_ciphertexts(),
            noise_scale=FLOATS,
            mechanism=STRINGS,
            attestations=st.one_of(
                st.lists(attestation(), max_size=3),
                st.just([party_node_pb2.NoiseAttestation()] * 65),
            ),
        ),
    ),
    Rpc("PartyNode", "SyncAudit", "unary_unary", ("coordinator",), audit_batch),
]


def _serialise(request: Any) -> Any:
    if isinstance(request, list):
        return [m.SerializeToString() for m in request]
    return request.SerializeToString()


def call(channel: grpc.Channel, rpc: Rpc, payload: Any) -> tuple[grpc.StatusCode, str]:
    """Send ``payload`` (bytes, or a list of bytes for a client stream) raw."""
    ident: Callable[[bytes], bytes] = lambda b: b  # noqa: E731 - raw bytes on the wire
    method = getattr(channel, rpc.kind)(
        rpc.path, request_serializer=ident, response_deserializer=ident
    )
    try:
        reply = method(iter(payload) if rpc.kind.startswith("stream") else payload, timeout=60)
        if rpc.kind.endswith("stream"):
            list(reply)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def _check(rpc: Rpc, role: str, code: grpc.StatusCode, details: str) -> None:
    TALLY[(rpc.name, code.name)] += 1
    REASONS.setdefault((rpc.name, code.name), set()).add(details[:100])
    assert code in ALLOWED, (rpc.name, role, code, details[:300])
    if code != grpc.StatusCode.OK:
        assert details and "internal" not in details.lower(), (rpc.name, details[:300])
    if role not in rpc.roles:
        assert code == grpc.StatusCode.PERMISSION_DENIED, (rpc.name, role, code, details)
        assert "may not call" in details
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        # Only a budget, and only for a query: never a size passed off as one.
        assert rpc.name == "SubmitQuery" and "privacy budget" in details, details[:300]


@pytest.mark.parametrize("rpc", RPCS, ids=lambda r: r.name)
def test_no_request_gets_internal(scene: Scene, rpc: Rpc) -> None:
    target = "coordinator" if rpc.service == "Coordinator" else "education"
    roles = COORDINATOR_ROLES if rpc.service == "Coordinator" else NODE_ROLES
    # Callers of the wrong role, each with a request of the right shape when
    # there is one (garbage otherwise): refused before it is read.
    for role in roles:
        if role in rpc.roles:
            continue
        payload: Any = b"" if rpc.kind.startswith("unary") else [b""]
        code, details = call(scene.channel(role, target), rpc, payload)
        _check(rpc, role, code, details)
    if rpc.request is None:
        return
    strategy = rpc.request(scene)
    # One request in ten is bytes that need not parse as the method's message.
    garbage = st.binary(min_size=1, max_size=64).map(
        lambda b: [b] if rpc.kind.startswith("stream") else b
    )
    sometimes_garbage = st.integers(0, 9).flatmap(lambda n: garbage if n == 0 else st.none())

    @settings(
        max_examples=MORE_EXAMPLES.get(rpc.name, EXAMPLES),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(request=strategy, garbage=sometimes_garbage, role=st.sampled_from(rpc.roles))
    def run(request: Any, garbage: Any, role: str) -> None:
        payload = _serialise(request) if garbage is None else garbage
        code, details = call(scene.channel(role, target), rpc, payload)
        _check(rpc, role, code, details)

    run()


def test_nothing_was_charged_and_every_view_of_the_budgets_agrees(scene: Scene) -> None:
    """After every hostile request: each node's ledger as before the run, and
    the coordinator's view (its store and the status it publishes) the same."""
    fed = scene.fed
    assert _spent(fed) == scene.ledgers
    assert all(v > 0 for v in scene.ledgers.values())  # the setup queries were charged
    coordinator = fed.coordinator.coordinator
    assert coordinator.governance.budgets_spent() == pytest.approx(scene.ledgers)
    published = {p.party: p.epsilon_spent for p in coordinator.status().parties}
    assert published == pytest.approx(scene.ledgers)
    assert coordinator.audit.verify()
    _print_tally()


def _print_tally() -> None:
    codes = sorted({code for _, code in TALLY}, key=lambda c: (c != "OK", c))
    names = [r.name for r in RPCS]
    width = max(len(n) for n in names) + 2
    lines = ["", "RPC".ljust(width) + "".join(c.rjust(21) for c in [*codes, "total"])]
    for name in names:
        row = [TALLY[(name, c)] for c in codes]
        lines.append(name.ljust(width) + "".join(str(n).rjust(21) for n in [*row, sum(row)]))
    totals = [sum(TALLY[(n, c)] for n in names) for c in codes]
    lines.append("total".ljust(width) + "".join(str(n).rjust(21) for n in [*totals, sum(totals)]))
    internal = sum(n for (_, c), n in TALLY.items() if c in ("INTERNAL", "UNKNOWN"))
    lines.append(f"INTERNAL or UNKNOWN: {internal}")
    lines.append("a reply of each kind (RPC, status: up to 3 distinct texts):")
    for (name, code), texts in sorted(REASONS.items()):
        if code != "OK":
            for text in sorted(texts)[:3]:
                lines.append(f"  {name} {code}: {text}")
    sys.stdout.write("\n".join(lines) + "\n")

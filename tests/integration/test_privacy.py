"""What each role actually receives and stores, checked against the input files.

DESIGN.md: the coordinator never sees a raw identifier, the linkage secret, an
attribute value or an unprotected count; a node never receives another party's
records or per-record ciphertexts under its own key. Each test reads what the
recorders captured on the wire, or the coordinator's database file, and checks.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from harness import Federation

from headcount.crypto import signed_sets
from headcount.departments import ATTRIBUTES, DEPARTMENTS
from headcount.domain.query import QuerySpec, unlinked_group

PURPOSE = "Count pupils by immigration status to plan school support services."


@pytest.fixture(scope="module")
def queried(linked_federation: Federation) -> Federation:
    with linked_federation.analyst() as analyst:
        analyst.query(QuerySpec(PURPOSE, "education", "immigration", "immigration_status"))
    return linked_federation


def _raw_identifiers(data_dir: Path) -> set[bytes]:
    """Names, dates of birth, postcodes and addresses as they appear in the files."""
    needles: set[str] = set()
    for dept in DEPARTMENTS:
        frame = pd.read_csv(data_dir / f"{dept}.csv", dtype=str, keep_default_na=False)
        for col in ("first_name", "last_name"):
            for v in frame[col]:
                v = v.strip()
                # Short names occur by chance in base64 certificates and random
                # bytes; six characters make a chance match negligible.
                if len(v) >= 6:
                    needles.update({v, v.lower()})
        needles.update(v.strip() for v in frame["date_of_birth"] if v.strip())
        for v in frame["postcode"]:
            if v.strip():
                needles.update({v.strip(), v.replace(" ", "").upper()})
        needles.update(v.strip() for v in frame["address"] if len(v.strip()) >= 8)
    return {n.encode() for n in needles}


def _truth_dates(truth: Path) -> set[bytes]:
    frame = pd.read_csv(truth, dtype=str, keep_default_na=False)
    return {d.encode() for d in frame["date_of_birth"] if d}


def _coordinator_files(fed: Federation) -> bytes:
    db = fed.config.coordinator.database
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def _strings(message: Message) -> Iterator[str]:
    for field, value in message.ListFields():
        values = value if field.is_repeated else [value]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                for k in value:
                    yield str(k)
                continue
            for v in values:
                yield from _strings(v)
        elif field.type == FieldDescriptor.TYPE_STRING:
            yield from values


def _node_secrets(fed: Federation) -> list[bytes]:
    out = []
    for running in fed.nodes.values():
        with closing(sqlite3.connect(running.node.store.path)) as db:
            out += [bytes(r[0]) for r in db.execute("SELECT secret FROM ceremonies") if r[0]]
    assert out, "the ceremony stored no secret at any node"
    return out


def test_coordinator_receives_no_raw_identifier(queried: Federation) -> None:
    needles = _raw_identifiers(queried.directory / "data") | _truth_dates(queried.ground_truth)
    received = queried.recorder.of("coordinator")
    methods = {m for m, _ in received}
    assert {"GetIdentity", "Contribute", "Finish", "Encode", "EncryptIndicators"} <= methods
    assert {"AggregateByGroup", "DecryptAggregate"} <= methods
    blob = b"\n".join(msg.SerializeToString() for _, msg in received)
    assert len(blob) > 100_000  # encodings and ciphertexts really were captured
    leaked = sorted(n for n in needles if n in blob)
    assert leaked == []


def test_coordinator_stores_no_raw_identifier_and_no_secret(queried: Federation) -> None:
    stored = _coordinator_files(queried)
    needles = _raw_identifiers(queried.directory / "data") | _truth_dates(queried.ground_truth)
    assert sorted(n for n in needles if n in stored) == []
    for secret in _node_secrets(queried):
        assert secret not in stored


def test_coordinator_never_receives_the_linkage_secret(queried: Federation) -> None:
    blob = b"".join(msg.SerializeToString() for _, msg in queried.recorder.of("coordinator"))
    for secret in _node_secrets(queried):
        assert secret not in blob
        # Nor any 8-byte window of it.
        assert not any(secret[i : i + 8] in blob for i in range(len(secret) - 7))


def test_every_text_the_coordinator_receives_is_public_metadata(queried: Federation) -> None:
    """No free text: each string is a party, an id, a public category, or a label."""
    allowed = set(queried.config.party_names)
    for attrs in ATTRIBUTES.values():
        for a in attrs:
            allowed.update(a.categories)
    allowed.update(unlinked_group(p) for p in queried.config.party_names)
    allowed.update({"released", "primary", "secondary", "discrete_laplace"})
    allowed.update(signed_sets.STAGES)  # what a signed hop statement covers
    hexid = re.compile(r"^[0-9a-f]{32}$|^[0-9a-f]{64}$")
    for method, msg in queried.recorder.of("coordinator"):
        for s in _strings(msg):
            assert s in allowed or hexid.match(s), f"{method} carried {s!r}"


def test_coordinator_sees_only_protected_counts(queried: Federation) -> None:
    tables = [msg for m, msg in queried.recorder.of("coordinator") if m == "DecryptAggregate"]
    assert tables
    for table in tables:
        for cell in table.cells:
            if cell.status == "released":
                assert cell.value >= 10 and cell.value % 5 == 0
            else:
                assert cell.value == 0


def test_nodes_receive_only_their_own_tokens_and_foreign_ciphertexts(queried: Federation) -> None:
    for party, running in queried.nodes.items():
        node = running.node
        own_tokens: set[bytes] = set()
        for epoch in node.store.epochs():
            own_tokens.update(node.store.token_rows(epoch.epoch_id)[0])
        own_n = node.identity().paillier_n
        for method, msg in queried.recorder.of(party):
            if method == "AggregateByGroup":
                if msg.HasField("header"):
                    assert msg.header.paillier_n != own_n
                else:
                    assert set(msg.chunk.tokens) <= own_tokens
            if method == "Finish":
                assert all(e.recipient == party for e in msg.envelopes)


def test_a_node_receives_only_the_previous_hops_signed_ciphertexts(queried: Federation) -> None:
    """Every ciphertext the grouping node is handed (at its positions and as
    leftovers) is one the previous hop signed, each once: the coordinator
    only placed them. Fills and records are indistinguishable to the node:
    the set it checks against is sorted hashes."""
    signed: set[bytes] = set()
    for m, msg in queried.recorder.of("coordinator"):
        if m == "EncryptIndicators":
            signed.update(msg.ciphertexts)
            signed.update(msg.fills)
    received = [
        ct
        for m, msg in queried.recorder.of("immigration")
        if m == "AggregateByGroup"
        for ct in (
            list(msg.chunk.ciphertexts)
            if msg.HasField("chunk")
            else list(msg.leftovers.ciphertexts)
        )
    ]
    messages = [
        list(msg.set_hashes.hashes)
        for m, msg in queried.recorder.of("immigration")
        if m == "AggregateByGroup" and msg.HasField("set_hashes")
    ]
    assert signed and received and messages
    assert set(received) <= signed
    assert len(set(received)) == len(received)  # fills too: never one reused
    assert all(part == sorted(part) for part in messages)  # each set is sent sorted
    hashes = {h for part in messages for h in part}
    assert {signed_sets.ciphertext_hash(c) for c in received} <= hashes


def test_nodes_receive_no_raw_identifier(queried: Federation) -> None:
    needles = _raw_identifiers(queried.directory / "data")
    for party in queried.config.party_names:
        blob = b"".join(msg.SerializeToString() for _, msg in queried.recorder.of(party))
        assert blob
        assert sorted(n for n in needles if n in blob) == []


def test_the_decrypting_node_receives_only_aggregates(queried: Federation) -> None:
    """The origin decrypts a handful of cells, never a per-record vector under its key."""
    from headcount.departments import attribute

    cells_max = len(attribute("immigration", "immigration_status").categories) + 1
    # Only what the coordinator sent for real queries (other tests in the
    # session fire hostile messages at the nodes; those are refused).
    with closing(sqlite3.connect(queried.config.coordinator.database)) as db:
        real = {r[0] for r in db.execute("SELECT query_id FROM queries")}
    for party, running in queried.nodes.items():
        own_n = running.node.identity().paillier_n
        for method, msg in queried.recorder.of(party):
            if method == "DecryptAggregate" and msg.query_id in real:
                assert 1 <= len(msg.groups) <= cells_max
            if method in ("AggregateByGroup", "ApplyPredicate") and msg.HasField("header"):
                if msg.header.query_id in real:
                    assert msg.header.paillier_n != own_n, f"{party}: own key's ciphertexts"
    decrypts = [m for m, _ in queried.recorder.of("education") if m == "DecryptAggregate"]
    assert decrypts


# -- every channel is a release: no exact linkage statistic leaves the coordinator -------

# Names under which linkage statistics used to travel (audit log, register).
_LINKAGE_KEYS = {
    "links",
    "clusters",
    "link_quality",
    "key_links",
    "pair_links",
    "est_precision",
    "est_recall",
    "est_f1",
    "estimate_basis",
    "quality",
    "thresholds",
}
# Integer fields a node or an analyst may receive: each is independent of the
# data, a department's own published size, or a protected release.
_PUBLIC_INT_FIELDS = {
    "seq",
    "next_seq",
    "chunk_records",
    "resume_from_seq",
    "expected_records",
    "records",
    "total_records",
    "slots",
    "slot_bits",
    "max_summands",
    "max_value",
    "noise_bound",
    "queries",
    "value",
    "total",
    "interval_low",
    "interval_high",
    "total_low",
    "total_high",
    "total_interval",
    "interval",  # a released cell's 95% interval: DP
    "suppression_threshold",
    "rounding_base",
    "shareholders",
    "sensitivity",
    "match_key_levels",
    "filter_bytes",
}


def _exact_linkage_statistics(fed: Federation) -> set[int]:
    store = fed.coordinator.coordinator.store
    info = store.epoch(store.latest_epoch())
    stats: set[int] = {info.clusters, *info.pair_links.values()}
    stats.update(q.key_links for q in info.quality.values())
    # A department's own size is published by the department itself.
    return {v for v in stats if v >= 20 and v not in set(info.records.values())}


def _json_items(value: object, key: str = "") -> Iterator[tuple[str, object]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k), v
            yield from _json_items(v, str(k))
    elif isinstance(value, list):
        for v in value:
            yield from _json_items(v, key)
    else:
        yield key, value


def _proto_items(message: Message) -> Iterator[tuple[str, object]]:
    for field, value in message.ListFields():
        values = value if field.is_repeated else [value]
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if not field.message_type.GetOptions().map_entry:
                for v in values:
                    yield from _proto_items(v)
            continue
        for v in values:
            yield field.name, v
            if field.name == "events_json":  # audit events relayed to a node
                try:
                    event = json.loads(v)
                except (ValueError, RecursionError):
                    continue  # a hostile test's junk, which the node refused
                yield from _json_items(event)


def _check_no_linkage_statistic(
    where: str, items: Iterator[tuple[str, object]], stats: set[int]
) -> int:
    seen = 0
    for key, value in items:
        seen += 1
        assert key not in _LINKAGE_KEYS, f"{where}: carries {key!r}"
        if isinstance(value, int) and not isinstance(value, bool) and value in stats:
            assert key in _PUBLIC_INT_FIELDS, f"{where}: {key}={value} is a linkage statistic"
    return seen


def test_no_exact_linkage_statistic_leaves_the_coordinator(
    queried: Federation, tmp_path: Path
) -> None:
    """Audit log, register, node-facing messages and analyst responses of a full run
    carry no link count, cluster count or quality estimate (docs/privacy.md)."""
    from headcount.register import build_register

    stats = _exact_linkage_statistics(queried)
    assert stats, "the epoch linked nothing to look for"
    # The coordinator does hold them: they exist, and stay in its store.
    coordinator = queried.coordinator.coordinator
    with queried.analyst() as analyst:
        events, _ = analyst.audit_log()
        status = analyst.status()
    assert {e.kind for e in events} >= {"epoch", "query", "release"}
    for event in events:
        _check_no_linkage_statistic(f"audit {event.kind}", _json_items(event.body), stats)
    assert coordinator.audit.events()[-1].hash == events[-1].hash
    # The client's typed status, as plain JSON values (tuples become lists).
    status_json = json.loads(json.dumps(dataclasses.asdict(status), default=str))
    _check_no_linkage_statistic("status", _json_items(status_json), stats)
    # Every message every node received in the session.
    for party in queried.config.party_names:
        received = queried.recorder.of(party)
        assert received
        for method, msg in received:
            _check_no_linkage_statistic(f"{party} {method}", _proto_items(msg), stats)
    # Every table the analyst was sent (the coordinator forwards the origin's).
    tables = [msg for m, msg in queried.recorder.of("coordinator") if m == "DecryptAggregate"]
    assert tables
    for table in tables:
        _check_no_linkage_statistic("release", _proto_items(table), stats)
    # The public register's pages: no linkage statistic is named on any page.
    index = build_register(queried.config, tmp_path / "register")
    pages = "\n".join(p.read_text() for p in index.parent.glob("*.html"))
    assert "Privacy budget per department per period" in pages
    for label in ("Clusters", "Link quality", "Est. precision", "Est. recall"):
        assert label not in pages


@pytest.mark.parametrize(
    ("attribute", "value"),
    [("first_name", "Philippa-Quenby"), ("local_authority", "14 Quenby Gardens SE17 2QP")],
)
def test_identifying_values_in_a_query_are_refused_before_anything_is_stored(
    linked_federation: Federation, attribute: str, value: str
) -> None:
    """A name, an address or a postcode in a filter is refused at the coordinator
    before the query is stored or announced: it never reaches the store, the
    audit log (so the register) or any node, and the refusal does not quote it."""
    from headcount.domain.query import Predicate
    from headcount.errors import HeadcountError

    coordinator = linked_federation.coordinator.coordinator
    before = coordinator.store.query_count()
    seen = len(linked_federation.recorder.messages)
    spec = QuerySpec(
        PURPOSE,
        "education",
        "immigration",
        "immigration_status",
        population_filters=(Predicate(attribute, (value,)),),
    )
    with linked_federation.analyst() as analyst, pytest.raises(HeadcountError) as info:
        analyst.query(spec)
    assert value not in str(info.value)
    assert coordinator.store.query_count() == before
    assert value.encode() not in _coordinator_files(linked_federation)
    for event in coordinator.audit.events():
        assert value not in event.to_json()
    new = linked_federation.recorder.messages[seen:]
    assert all(value.encode() not in msg.SerializeToString() for _, _, msg in new)


def test_origin_refuses_aggregates_without_every_noise_share(
    linked_federation: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A coordinator that keeps its own noise share as the only noise (it skips
    the share-holding node and forges its statement) gets nothing decrypted:
    the origin checks every announced share-holder's signature first."""
    from headcount.crypto.attest import NoiseAttestation
    from headcount.errors import InvalidProof
    from headcount.wire.node_values import NoisedAggregate

    coordinator = linked_federation.coordinator.coordinator
    client = coordinator.nodes.node("immigration")
    skipped: list[str] = []

    def add_noise(query_id: str, key: Any, groups: Any) -> NoisedAggregate:
        skipped.append(client.party)
        return NoisedAggregate(
            groups,
            NoiseAttestation(
                client.party,
                b"\0" * 32,
                b"\0" * 32,
                b"forged",
                linked_federation.config.party(client.party).tls.cert.read_bytes(),
            ),
        )

    monkeypatch.setattr(client, "add_noise", add_noise)
    releases_before = [e for e in coordinator.audit.events() if e.kind == "release"]
    with linked_federation.analyst() as analyst, pytest.raises(InvalidProof):
        analyst.query(QuerySpec(PURPOSE, "education", "immigration", "immigration_status"))
    assert skipped == ["immigration"]
    assert [e for e in coordinator.audit.events() if e.kind == "release"] == releases_before
    failure = coordinator.audit.events()[-1]
    assert failure.kind == "refusal"
    origin = linked_federation.nodes["education"].node
    assert not origin.ledger.charged(failure.body["query_id"])  # abandoned, never decrypted

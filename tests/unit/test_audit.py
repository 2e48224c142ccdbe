"""Hash-chained audit log: round trip, tamper detection, replicas, persistence."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from headcount.domain.audit import GENESIS_HASH, AuditEvent, AuditLog, event_hash, verify_chain
from headcount.errors import InvalidProof, InvalidRequest

BODIES: list[tuple[str, dict[str, Any]]] = [
    ("ceremony", {"parties": ["education", "health"], "round": 1}),
    ("epoch", {"epoch_id": "e1", "sizes": {"education": 1200, "health": 900}}),
    ("query", {"query_id": "q1", "purpose": "children in education by status"}),
    ("release", {"query_id": "q1", "epsilon": 0.5, "cells": {"a": 25, "b": None}}),
    ("refusal", {"query_id": "q2", "reason": "budget exhausted", "note": "élève"}),
]


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    audit = AuditLog(tmp_path / "audit.sqlite")
    for kind, body in BODIES:
        audit.append(kind, body)
    return audit


def _rehash(event: AuditEvent, **changes: object) -> AuditEvent:
    """An event with ``changes`` and a hash that matches its own new content."""
    changed = dataclasses.replace(event, **changes)  # type: ignore[arg-type]
    return dataclasses.replace(changed, hash=changed.computed_hash())


def test_append_and_verify_round_trip(log: AuditLog) -> None:
    events = log.events()
    assert [e.seq for e in events] == [0, 1, 2, 3, 4]
    assert [(e.kind, dict(e.body)) for e in events] == BODIES
    assert events[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
    assert log.verify() == log.head() == events[-1].hash
    assert all(e.at.endswith("+00:00") for e in events)


def test_empty_log_head_is_genesis(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "empty.sqlite")
    assert audit.head() == GENESIS_HASH
    assert audit.verify() == GENESIS_HASH
    assert audit.events() == []


def test_event_hash_is_sha256_of_canonical_json() -> None:
    # Spelled out independently of the module, so a change of encoding is caught.
    body = {"b": 1, "a": ["x", "é"]}
    at = "2024-01-01T00:00:00.000000+00:00"
    expected = hashlib.sha256(
        '[3,"query",{"a":["x","é"],"b":1},"2024-01-01T00:00:00.000000+00:00","'.encode()
        + b"0" * 64
        + b'"]'
    ).hexdigest()
    assert event_hash(3, "query", body, at, GENESIS_HASH) == expected


def test_hash_covers_every_field(log: AuditLog) -> None:
    event = log.events()[2]
    variants = [
        dataclasses.replace(event, seq=7),
        dataclasses.replace(event, kind="release"),
        dataclasses.replace(event, body={**event.body, "purpose": "other"}),
        dataclasses.replace(event, at="2000-01-01T00:00:00+00:00"),
        dataclasses.replace(event, prev_hash=GENESIS_HASH),
    ]
    assert len({v.computed_hash() for v in variants} | {event.hash}) == len(variants) + 1


def test_edited_body_is_detected_at_its_seq(log: AuditLog) -> None:
    events = log.events()
    events[2] = dataclasses.replace(events[2], body={"query_id": "q1", "purpose": "lookup"})
    with pytest.raises(InvalidProof, match=r"seq 2\b"):
        verify_chain(events)


def test_edited_body_with_recomputed_hash_is_detected_at_the_next_seq(log: AuditLog) -> None:
    events = log.events()
    events[2] = _rehash(events[2], body={"query_id": "q1", "purpose": "lookup"})
    with pytest.raises(InvalidProof, match=r"seq 3\b"):
        verify_chain(events)


def test_deleted_event_is_detected(log: AuditLog) -> None:
    events = log.events()
    del events[1]
    with pytest.raises(InvalidProof, match=r"seq 1\b"):
        verify_chain(events)


def test_deleted_event_with_renumbered_tail_is_detected(log: AuditLog) -> None:
    events = log.events()
    del events[1]
    events[1:] = [dataclasses.replace(e, seq=e.seq - 1) for e in events[1:]]
    with pytest.raises(InvalidProof, match=r"seq 1\b"):
        verify_chain(events)


def test_reordered_events_are_detected(log: AuditLog) -> None:
    events = log.events()
    events[2], events[3] = events[3], events[2]
    with pytest.raises(InvalidProof, match=r"seq 2\b"):
        verify_chain(events)


def test_reordered_events_renumbered_are_detected(log: AuditLog) -> None:
    events = log.events()
    events[2], events[3] = (
        dataclasses.replace(events[3], seq=2),
        dataclasses.replace(events[2], seq=3),
    )
    with pytest.raises(InvalidProof, match=r"seq 2\b"):
        verify_chain(events)


def test_inserted_event_is_detected(log: AuditLog) -> None:
    events = log.events()
    forged = _rehash(
        events[2], kind="release", body={"cells": {"child": 1}}, prev_hash=events[1].hash
    )
    events.insert(2, forged)  # a valid link on its own, so the break is after it
    with pytest.raises(InvalidProof, match=r"seq 3\b"):
        verify_chain(events)


def test_inserted_event_with_renumbered_tail_is_detected(log: AuditLog) -> None:
    events = log.events()
    forged = _rehash(events[2], body={"cells": {"child": 1}}, prev_hash=events[1].hash)
    events = [*events[:2], forged, *(dataclasses.replace(e, seq=e.seq + 1) for e in events[2:])]
    with pytest.raises(InvalidProof, match=r"seq 3\b"):
        verify_chain(events)


def test_truncated_head_verifies_with_a_different_head(log: AuditLog) -> None:
    events = log.events()
    full_head = verify_chain(events)
    assert verify_chain(events[:-1]) != full_head
    assert verify_chain(events[:-1]) == events[-2].hash


def test_a_verified_prefix_is_continued_not_reread(log: AuditLog) -> None:
    events = log.events()
    full_head = verify_chain(events)
    assert log.events(since=3) == events[3:]
    assert log.next_head() == (5, full_head)
    assert verify_chain(events[3:], start=(3, events[2].hash)) == full_head
    # A tail that does not extend the verified head, or starts at another seq, fails.
    with pytest.raises(InvalidProof, match=r"seq 3\b"):
        verify_chain(events[3:], start=(3, events[1].hash))
    with pytest.raises(InvalidProof, match=r"seq 2\b"):
        verify_chain(events[3:], start=(2, events[2].hash))


def test_find_looks_events_up_by_a_body_field(log: AuditLog) -> None:
    (query,) = log.find("query", "$.query_id", "q1")
    assert query.seq == 2
    assert [e.seq for e in log.find("release", "$.query_id", "q1")] == [3]
    assert log.find("query", "$.query_id", "q2") == []
    assert log.find("refusal", "$.query_id", "q2")[0].body["note"] == "élève"


def test_sqlite_refuses_update_and_delete(log: AuditLog, tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / "audit.sqlite")) as conn:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE audit_events SET body = '{}' WHERE seq = 1")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM audit_events WHERE seq = 4")
    assert len(log.events()) == 5


def test_editing_the_file_behind_the_triggers_is_detected(log: AuditLog, tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / "audit.sqlite")) as conn:
        conn.execute("DROP TRIGGER audit_events_no_update")
        conn.execute('UPDATE audit_events SET body = \'{"purpose":"x"}\' WHERE seq = 2')
        conn.commit()
    with pytest.raises(InvalidProof, match=r"seq 2\b"):
        log.verify()


def test_corrupt_stored_row_is_reported_as_a_broken_chain(log: AuditLog, tmp_path: Path) -> None:
    with closing(sqlite3.connect(tmp_path / "audit.sqlite")) as conn:
        conn.execute("DROP TRIGGER audit_events_no_update")
        conn.execute("UPDATE audit_events SET body = 'not json' WHERE seq = 1")
        conn.commit()
    with pytest.raises(InvalidProof, match=r"seq 1\b"):
        log.verify()


def test_persistence_across_reopen(log: AuditLog, tmp_path: Path) -> None:
    head = log.head()
    reopened = AuditLog(tmp_path / "audit.sqlite")
    assert reopened.head() == head
    event = reopened.append("epoch", {"epoch_id": "e2"})
    assert event.seq == 5
    assert event.prev_hash == head
    assert reopened.verify() == event.hash


def test_appended_event_is_insulated_from_later_mutation_of_the_body(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.sqlite")
    body: dict[str, object] = {"n": 1}
    event = audit.append("query", body)
    body["n"] = 2
    assert verify_chain([event]) == event.hash


def test_replica_accepts_a_valid_chain_in_json_and_is_idempotent(
    log: AuditLog, tmp_path: Path
) -> None:
    replica = AuditLog(tmp_path / "replica.sqlite")
    wire = [e.to_json() for e in log.events()]
    for text in wire:
        replica.import_event(AuditEvent.from_json(text))
    replica.import_event(AuditEvent.from_json(wire[2]))  # a resent event is harmless
    assert replica.events() == log.events()
    assert replica.verify() == log.head()


def test_replica_refuses_a_forged_event(log: AuditLog, tmp_path: Path) -> None:
    replica = AuditLog(tmp_path / "replica.sqlite")
    events = log.events()
    replica.import_event(events[0])
    edited = dataclasses.replace(events[1], body={"epoch_id": "forged"})
    with pytest.raises(InvalidProof, match="hash"):
        replica.import_event(edited)  # hash no longer matches
    with pytest.raises(InvalidProof, match="head"):
        replica.import_event(_rehash(events[1], prev_hash=GENESIS_HASH))  # wrong parent
    with pytest.raises(InvalidProof, match="out of order"):
        replica.import_event(events[2])  # skips seq 1
    assert replica.events() == events[:1]


def test_replica_refuses_a_conflicting_event_for_a_stored_seq(
    log: AuditLog, tmp_path: Path
) -> None:
    replica = AuditLog(tmp_path / "replica.sqlite")
    events = log.events()
    replica.import_event(events[0])
    replica.import_event(events[1])
    fork = _rehash(events[1], body={"epoch_id": "other"})
    with pytest.raises(InvalidProof, match="already stored"):
        replica.import_event(fork)
    assert replica.head() == events[1].hash


def test_json_round_trip(log: AuditLog) -> None:
    for event in log.events():
        text = event.to_json()
        assert json.loads(text)["hash"] == event.hash
        assert AuditEvent.from_json(text) == event


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", '{"seq": 0}', '{"seq":0,"kind":"q","body":{},"at":"x","prev_hash":"0"}'],
)
def test_from_json_refuses_malformed_input(text: str) -> None:
    with pytest.raises(InvalidRequest):
        AuditEvent.from_json(text)


@pytest.mark.parametrize(
    "body",
    [{"x": float("nan")}, {"x": (1, 2)}, {"x": {1: "a"}}, {"x": object()}, {"x": b"bytes"}],
)
def test_append_refuses_bodies_that_are_not_plain_json(tmp_path: Path, body: object) -> None:
    audit = AuditLog(tmp_path / "audit.sqlite")
    with pytest.raises(InvalidRequest):
        audit.append("query", body)  # type: ignore[arg-type]
    assert audit.events() == []


@pytest.mark.parametrize(
    "changes",
    [
        {"seq": -1},
        {"kind": ""},
        {"kind": "Has Spaces"},
        {"at": "yesterday"},
        {"at": "2024-01-01T00:00:00"},  # no zone
        {"at": "2024-01-01T01:00:00+01:00"},  # not UTC
        {"prev_hash": "0" * 63},
        {"hash": "G" * 64},
    ],
)
def test_malformed_events_cannot_be_built(log: AuditLog, changes: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        dataclasses.replace(log.events()[0], **changes)  # type: ignore[arg-type]


# -- signatures ---------------------------------------------------------------------


def _signed_log(tmp_path: Path) -> tuple[AuditLog, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    log = AuditLog(tmp_path / "signed.sqlite", signer=key, verifier=key.public_key())
    log.append("epoch", {"epoch_id": "e1", "records": {"health": 100}})
    log.append("query", {"query_id": "q1", "epsilon": 0.5})
    return log, key


def test_signed_events_verify_and_travel(tmp_path: Path) -> None:
    log, key = _signed_log(tmp_path)
    events = log.events()
    assert all(len(e.signature) == 128 for e in events)
    assert verify_chain(events, key.public_key()) == log.head()
    again = [AuditEvent.from_json(e.to_json()) for e in events]
    assert again == events


def test_a_forged_signature_is_named(tmp_path: Path) -> None:
    log, key = _signed_log(tmp_path)
    events = log.events()
    other = Ed25519PrivateKey.generate()
    # A re-hashed forgery is a valid chain, but not signed by the federation's key.
    forged = dataclasses.replace(
        events[1],
        signature=other.sign(b"headcount/audit/v1\x00" + bytes.fromhex(events[1].hash)).hex(),
    )
    with pytest.raises(InvalidProof, match="seq 1: signature does not verify"):
        verify_chain([events[0], forged], key.public_key())
    unsigned = dataclasses.replace(events[0], signature="")
    with pytest.raises(InvalidProof, match="seq 0: event is not signed"):
        verify_chain([unsigned], key.public_key())


def test_replica_refuses_events_not_signed_by_the_federation_key(tmp_path: Path) -> None:
    log, key = _signed_log(tmp_path)
    replica = AuditLog(tmp_path / "replica.sqlite", verifier=key.public_key())
    rogue_key = Ed25519PrivateKey.generate()
    rogue = AuditLog(tmp_path / "rogue.sqlite", signer=rogue_key)
    rogue_event = rogue.append("epoch", {"epoch_id": "e1", "records": {"health": 100}})
    with pytest.raises(InvalidProof, match="signature"):
        replica.import_event(rogue_event)
    for event in log.events():
        replica.import_event(event)
    assert replica.verify() == log.head()

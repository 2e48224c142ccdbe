"""One dataclass per audit event kind: each reads back its own body to the byte,
refuses a malformed one, and a kind this version does not know stays raw."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from headcount.crypto.attest import Abandonment
from headcount.domain.audit import AuditLog, canonical_json
from headcount.domain.events import (
    EVENT_TYPES,
    KINDS,
    CeremonyHeld,
    EpochAborted,
    EpochLinked,
    EpochStarted,
    Event,
    ProjectApproved,
    ProjectProposed,
    ProjectRevoked,
    QueryAborted,
    QueryAnnounced,
    QueryRefused,
    TableReleased,
    UnknownEvent,
    parse_event,
)
from headcount.domain.projects import ProjectDoc
from headcount.errors import InvalidRequest

DOC = ProjectDoc(
    "school-support",
    "School support",
    "Plan school support by immigration status.",
    "commissioner",
    ("education", "immigration"),
    dt.date(2027, 1, 31),
)
ABANDONMENT = Abandonment("q2", "education", bytes(range(64)), b"-----BEGIN CERTIFICATE-----\n")
SAMPLES: list[Event] = [
    CeremonyHeld("c1", ("education", "health"), {"education": "ab" * 32}, True),
    EpochStarted("e1", "c1", ("education", "health")),
    EpochLinked("e1", "c1", {"education": 1200, "health": 950}, {"health": "cd" * 32}, "fp", 0.8),
    EpochLinked("e2", "c1", {}, {}, "fp", 1),  # an int threshold stays an int
    EpochAborted("e3", "schema mismatch"),
    ProjectProposed(DOC, DOC.digest()),
    ProjectApproved("school-support", DOC.digest(), "education", "party", "ee" * 64),
    ProjectRevoked("school-support", DOC.digest(), "operator", "operator", ""),
    QueryAnnounced(
        "q1",
        "e1",
        "Pupils by immigration status",
        ("education", "immigration"),
        0.5,
        project_id="school-support",
        analyst="commissioner",
        role="analyst",
        spec={"population_party": "education", "filters": [], "epsilon": None},
        noise={"sensitivity": 2, "shareholders": ["coordinator", "immigration"]},
        packing={"group_by": "immigration_status", "layout": {"max_summands": 10}},
    ),
    QueryAnnounced("q-hand", "e1", "By hand", ("education", "health"), 1),
    TableReleased(
        "q1",
        "e1",
        "commissioner",
        "Pupils by immigration status",
        ("education", "immigration"),
        0.5,
        "2026",
        {"education": 0.5, "immigration": 1},
        {"title": "Pupils", "cells": [{"group": "settled", "value": 120, "interval": [110, 130]}]},
    ),
    QueryRefused("q2", "commissioner", "One pupil", "project does not cover justice"),
    QueryRefused("q2", "commissioner", "", "internal error", ABANDONMENT),
    QueryAborted("q3", "coordinator restarted"),
]


def _sample(event_type: type[Event]) -> Event:
    return next(e for e in SAMPLES if type(e) is event_type)


def test_every_kind_has_a_sample() -> None:
    assert {type(e) for e in SAMPLES} == set(EVENT_TYPES)
    assert set(KINDS) >= {"ceremony", "epoch", "epoch_aborted", "query", "release", "refusal"}
    assert len(set(KINDS)) == len(EVENT_TYPES)


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.KIND)
def test_a_body_reads_back_as_itself(event: Event, tmp_path: Path) -> None:
    body = event.to_body()
    parsed = parse_event(event.KIND, body)
    assert parsed == event and parsed.kind == event.KIND
    # Through JSON, as a replica reads it: the same canonical bytes.
    stored = json.loads(canonical_json(body))
    assert canonical_json(parse_event(event.KIND, stored).to_body()) == canonical_json(body)
    # And through the log itself.
    log = AuditLog(tmp_path / "audit.sqlite")
    logged = log.log(event)
    assert logged.kind == event.KIND and logged.typed() == event
    assert canonical_json(dict(log.events()[0].body)) == canonical_json(body)


def test_numbers_keep_their_json_type() -> None:
    hand = QueryAnnounced("q", "e", "p", ("a",), 1)
    assert '"epsilon":1,' in canonical_json(hand.to_body())
    assert "project_id" not in hand.to_body()  # absent stays absent, never null
    linked = EpochLinked.from_body(json.loads('{"epoch_id":"e","ceremony_id":"c","records":{},'
                                              '"commitments":{},"schema_fingerprint":"f",'
                                              '"threshold":0.75}'))  # fmt: skip
    assert linked.threshold == 0.75


def _wrong(value: Any) -> Any:
    """A value of another JSON type than ``value``."""
    return 1 if isinstance(value, str) else "x"


@pytest.mark.parametrize("event", SAMPLES, ids=lambda e: e.KIND)
def test_a_malformed_body_is_refused(event: Event) -> None:
    body = event.to_body()
    for key in body:
        missing = {k: v for k, v in body.items() if k != key}
        optional = isinstance(event, QueryAnnounced | QueryRefused) and key in (
            "project_id", "analyst", "role", "spec", "noise", "packing", "abandonment"
        )  # fmt: skip
        if not optional:
            with pytest.raises(InvalidRequest, match="lacks"):
                parse_event(event.KIND, missing)
        with pytest.raises(InvalidRequest):
            parse_event(event.KIND, body | {key: _wrong(body[key])})
    with pytest.raises(InvalidRequest, match="does not name"):
        parse_event(event.KIND, body | {"surprise": "x"})
    for not_an_object in (None, [], "body"):
        with pytest.raises(InvalidRequest):
            parse_event(event.KIND, not_an_object)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("ceremony", {"ceremony_id": "c", "parties": ["a", 2], "commitments": {}, "confirmed": 1}),
        ("ceremony", {"ceremony_id": "c", "parties": [], "commitments": {"a": 1},
                      "confirmed": True}),
        ("epoch", {"epoch_id": "e", "ceremony_id": "c", "records": {"a": 1.5}, "commitments": {},
                   "schema_fingerprint": "f", "threshold": 0.8}),
        ("epoch", {"epoch_id": "e", "ceremony_id": "c", "records": {"a": True}, "commitments": {},
                   "schema_fingerprint": "f", "threshold": 0.8}),
        ("epoch", {"epoch_id": "e", "ceremony_id": "c", "records": {}, "commitments": {},
                   "schema_fingerprint": "f", "threshold": True}),
        ("release", _sample(TableReleased).to_body() | {"budget_remaining": {"education": "lots"}}),
        # A project that would not read back as itself (parties unsorted), or is no project.
        ("project_proposed", {"project": DOC.to_json() | {"parties": ["immigration", "education"]},
                              "digest": "d"}),
        ("project_proposed", {"project": {"project_id": "x"}, "digest": "d"}),
        ("project_proposed", {"project": DOC.to_json() | {"expires": "soon"}, "digest": "d"}),
        ("refusal", _sample(QueryRefused).to_body() | {"abandonment": {"party": "education"}}),
        ("refusal", _sample(QueryRefused).to_body() | {"abandonment": ABANDONMENT.to_json()
                                             | {"signature": "AB" * 64}}),
    ],
)  # fmt: skip
def test_malformed_values_inside_a_body_are_refused(kind: str, body: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        parse_event(kind, body)


def test_an_unknown_kind_keeps_its_raw_body() -> None:
    body = {"x": {"y": [1, "z"]}, "n": None}
    event = parse_event("something.new", body)
    assert isinstance(event, UnknownEvent)
    assert event.kind == "something.new" and event.to_body() == body

"""The register's pages without a federation: each audit event kind's typed
view and page, unknown kinds, escaping of hostile text, and the labels of each
suppression rule."""

from __future__ import annotations

from typing import Any

import pytest
from markupsafe import escape

from headcount.domain.audit import AuditEvent
from headcount.domain.events import UnknownEvent, parse_event
from headcount.errors import InvalidRequest
from headcount.protect.labels import status_label
from headcount.protect.sdc import PRIMARY, RELEASED, SECONDARY, SdcPolicy
from headcount.register import model
from headcount.register.events import KNOWN_KINDS, UnknownDetail, flatten, view_event
from headcount.register.model import Register, Verification
from headcount.register.render import render_event, render_events, render_index, render_query

HOSTILE = '<script>alert("x")</script>'
TABLE = {
    "title": f"Pupils {HOSTILE}",
    "cells": [
        {"group": "settled", "column": "", "value": 120, "status": RELEASED,
         "mean": None, "sum": None, "interval": [110, 130], "mean_interval": None},
        {"group": "no_leave", "column": "", "value": None, "status": PRIMARY,
         "mean": None, "sum": None, "interval": None, "mean_interval": None},
        {"group": "asylum", "column": "", "value": None, "status": SECONDARY,
         "mean": None, "sum": None, "interval": None, "mean_interval": None},
    ],
    "column_attribute": "", "measure_attribute": "", "total": 140,
    "total_interval": [120, 160], "epsilon": 0.5, "noise_scale": 4.0,
}  # fmt: skip
BODIES: dict[str, dict[str, Any]] = {
    "ceremony": {"ceremony_id": "c1", "parties": ["education", "health"],
                 "commitments": {"education": "ab" * 32}, "confirmed": True},
    "epoch_started": {"epoch_id": "e1", "ceremony_id": "c1", "parties": ["education", "health"]},
    "epoch": {"epoch_id": "e1", "ceremony_id": "c1", "records": {"education": 1200, "health": 950},
              "commitments": {"education": "cd" * 32}, "schema_fingerprint": "fp",
              "threshold": 0.8},
    "project_proposed": {"project": {"project_id": "p1", "title": HOSTILE, "purpose": "Plan",
                                     "analyst": "commissioner", "parties": ["education"],
                                     "expires": "2027-01-01"}, "digest": "dd"},
    "project_approved": {"project_id": "p1", "party": "education", "role": "party",
                         "digest": "dd", "signature": "ee"},
    "query": {"query_id": "q1", "epoch_id": "e1", "project_id": "p1", "analyst": "commissioner",
              "role": "analyst", "purpose": HOSTILE, "parties": ["education", "health"],
              "epsilon": 0.5, "spec": {"population_party": "education", "group_party": "health",
                                       "group_by": "gp_registered"},
              "noise": {"sensitivity": 2, "shareholders": ["coordinator", "health"]},
              "packing": {"categories": ["yes", "no"]}},
    "release": {"query_id": "q1", "epoch_id": "e1", "analyst": "commissioner", "purpose": "Plan",
                "parties": ["education", "health"], "epsilon": 0.5, "period": "2026",
                "budget_remaining": {"education": 0.25, "health": 0.5}, "table": TABLE},
    "refusal": {"query_id": "q2", "analyst": "commissioner", "purpose": "One pupil",
                "reason": "project p1 does not cover justice", "surprise": HOSTILE},
    "query_aborted": {"query_id": "q3", "reason": "coordinator restarted"},
    "epoch_aborted": {"epoch_id": "e2", "reason": "schema mismatch"},
    "project_revoked": {"project_id": "p1", "party": "operator", "role": "operator",
                        "digest": "dd", "signature": ""},
    "something.new": {"x": {"y": [1, HOSTILE]}, "n": None},
}  # fmt: skip
# What each kind's page must show, besides its kind.
EXPECTED = {
    "ceremony": ["confirmed: every department derived the same secret", "ab" * 32],
    "epoch_started": ["education, health"],
    "epoch": ["1,200", "950", "2,150", "cd" * 32],
    "project_proposed": [str(escape(HOSTILE)), "2027-01-01"],
    "project_approved": ["approved", "education (party)", "ee"],
    "query": [str(escape(HOSTILE)), "ε = 0.5", "62.2%", "coordinator, health", "gp_registered"],
    "release": ["110 – 130", "rounded to 5", "withheld: &lt; 10",
                "withheld: protects another cell", "scale 4", "0.25", "2026"],
    "refusal": ["project p1 does not cover justice", "Other fields", "surprise"],
    "query_aborted": ["coordinator restarted", "aborted"],
    "epoch_aborted": ["schema mismatch"],
    "project_revoked": ["revoked", "operator (operator)"],
    "something.new": ["x.y[0]", "x.y[1]", str(escape(HOSTILE)), "null"],
}  # fmt: skip


def _register(policy: SdcPolicy | None = None) -> Register:
    events = tuple(
        AuditEvent(seq, kind, body, "2026-05-01T10:00:00+00:00", "0" * 64, f"{seq:064x}", "")
        for seq, (kind, body) in enumerate(BODIES.items())
    )
    ver = Verification(len(events), "f" * 64, "a" * 64)
    return Register(
        "demo",
        "2026-05-01T10:00:00+00:00",
        1.0,
        ver,
        events,
        (),
        epochs=model._epochs(events, ver),
        queries=model._queries(events, ver),
        policy=policy or SdcPolicy(),
    )


def test_every_kind_the_coordinator_writes_has_a_view() -> None:
    assert set(KNOWN_KINDS) == set(BODIES) - {"something.new"}


@pytest.mark.parametrize("index", range(len(BODIES)), ids=list(BODIES))
def test_each_kind_renders_its_fields_typed_and_escaped(index: int) -> None:
    reg = _register()
    event = reg.events[index]
    page = render_event(reg, index)
    body = page.split('id="event-body"', 1)[1]
    assert "<pre" not in page and "{&#34;" not in page  # never raw JSON
    assert "<script" not in page.lower()
    for text in EXPECTED[event.kind]:
        assert text in body, (event.kind, text)
    view = view_event(reg, event)
    if event.kind in KNOWN_KINDS:
        assert view.partial == f"events/{event.kind}.html"
        assert not isinstance(view.detail, UnknownDetail)
    else:
        assert view.partial == "events/unknown.html" and isinstance(view.detail, UnknownDetail)


def _well_formed() -> dict[str, dict[str, Any]]:
    """BODIES as the coordinator writes them: each exactly its kind's body."""
    bodies = {k: v for k, v in BODIES.items() if k in KNOWN_KINDS}
    project = {
        **bodies["project_proposed"]["project"],
        "project_id": "plan-1",
        "purpose": "Plan school places by area",
    }
    bodies["project_proposed"] = {**bodies["project_proposed"], "project": project}
    bodies["refusal"] = {k: v for k, v in bodies["refusal"].items() if k != "surprise"}
    return bodies


@pytest.mark.parametrize("kind", KNOWN_KINDS)
def test_a_well_formed_event_reads_through_its_class_as_field_by_field(kind: str) -> None:
    """A body its kind's dataclass accepts is read through that class; one it
    refuses (here: an unnamed field) field by field. Both show the same."""
    reg = _register()
    body = _well_formed()[kind]
    assert not isinstance(parse_event(kind, body), UnknownEvent)  # the typed reader takes it
    at = "2026-05-01T10:00:00+00:00"
    typed = view_event(reg, AuditEvent(0, kind, body, at, "0" * 64, "1" * 64, ""))
    tampered = {**body, "unnamed": HOSTILE}
    with pytest.raises(InvalidRequest):
        parse_event(kind, tampered)
    raw = view_event(reg, AuditEvent(0, kind, tampered, at, "0" * 64, "1" * 64, ""))
    assert typed.detail == raw.detail and typed.partial == raw.partial
    assert typed.extra == () and [r.key for r in raw.extra] == ["unnamed"]


def test_a_tampered_body_of_the_wrong_types_still_renders() -> None:
    reg = _register()
    broken = AuditEvent(0, "release", {"parties": "education", "epsilon": "lots", "table": [1]},
                        "2026-05-01T10:00:00+00:00", "0" * 64, "1" * 64, "")  # fmt: skip
    reg = Register(reg.federation, reg.built_at, 1.0, reg.verification, (broken,), ())
    page = render_event(reg, 0)
    assert "The event holds no readable table." in page and "—" in page


def test_a_title_holding_a_script_is_escaped_on_every_page() -> None:
    reg = _register()
    pages = [render_index(reg), render_events(reg)]
    pages += [render_query(reg, q) for q in reg.queries]
    pages += [render_event(reg, i) for i in range(len(reg.events))]
    for page in pages:
        assert "<script" not in page.lower()
    assert str(escape(HOSTILE)) in pages[0]  # the project's title on the index


def test_kind_column_never_breaks_a_word() -> None:
    page = render_events(_register())
    assert page.count('<td class="kind">') == len(BODIES)
    css = page.split("<style>", 1)[1].split("</style>", 1)[0]
    assert "td.kind,td.kind code,.nowrap{white-space:nowrap;overflow-wrap:normal}" in css


def test_each_suppression_rule_has_its_own_label() -> None:
    policy = SdcPolicy(threshold=20, rounding_base=10)
    labels = {s: status_label(s, policy) for s in (RELEASED, PRIMARY, SECONDARY, "odd")}
    assert labels[RELEASED].short == "rounded to 10" and not labels[RELEASED].withheld
    assert labels[PRIMARY].short == "withheld: < 20" and "primary" in labels[PRIMARY].long
    assert labels[SECONDARY].short == "withheld: protects another cell"
    assert "< 20" not in labels[SECONDARY].long and "secondary" in labels[SECONDARY].long
    assert labels["odd"].withheld and labels["odd"].short == "withheld"
    # The register uses the federation's policy, and labels the total too.
    page = render_query(_register(policy), _register(policy).queries[0])
    assert "withheld: &lt; 20" in page and "rounded to 10" in page
    assert "unlinked count withheld" not in page


def test_flatten_is_bounded() -> None:
    rows = flatten({"a": list(range(500)), "b": "x" * 10_000})
    assert len(rows) == 201 and rows[-1].key == "…"
    deep: Any = "leaf"
    for _ in range(50):
        deep = {"k": deep}
    (row,) = flatten(deep)
    assert row.key.count("k") == 6  # the rest is shown as JSON text, not walked

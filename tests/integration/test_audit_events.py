"""Every event a federation really logs reads back as its kind's dataclass, and
that dataclass writes the logged body again to the byte (the log is hash-chained
and signed over it)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from harness import make_federation

from headcount.domain.audit import canonical_json
from headcount.domain.events import UnknownEvent, parse_event
from headcount.domain.query import QuerySpec
from headcount.errors import PolicyRefused

PROJECT = "school-support-2026"


def test_logged_bodies_read_back_to_the_byte(tmp_path: Path) -> None:
    fed = make_federation(tmp_path / "fed", require_projects=True)
    try:
        with fed.operator() as op:
            op.run_ceremony()
            op.run_linkage()
        fed.approve_project(
            PROJECT,
            "School support",
            "Plan school support by immigration status and GP registration.",
            parties=["education", "immigration"],
            expires=dt.date.today() + dt.timedelta(days=60),
        )
        with fed.analyst() as analyst:
            analyst.query(
                QuerySpec(
                    "Pupils by immigration status, to plan support",
                    "education",
                    "immigration",
                    "immigration_status",
                    project_id=PROJECT,
                )
            )
            with pytest.raises(PolicyRefused):
                analyst.query(
                    QuerySpec(
                        "Pupils by sentence, outside the project",
                        "education",
                        "justice",
                        "sentence",
                        project_id=PROJECT,
                    )
                )
        with fed.operator() as op:
            op.revoke_project(PROJECT)
        primary = fed.coordinator.coordinator.audit.events()
        replicas = {name: n.node.audit.events() for name, n in fed.nodes.items()}
    finally:
        fed.stop()

    kinds = [e.kind for e in primary]
    assert set(kinds) == {
        "ceremony",
        "epoch_started",
        "epoch",
        "project_proposed",
        "project_approved",
        "query",
        "release",
        "refusal",
        "project_revoked",
    }
    for event in primary:
        typed = event.typed()
        assert not isinstance(typed, UnknownEvent), event.kind
        assert typed.kind == event.kind
        assert canonical_json(typed.to_body()) == canonical_json(dict(event.body)), event.kind
        assert parse_event(event.kind, typed.to_body()) == typed
    for name, events in replicas.items():
        assert [e.typed() for e in events] == [e.typed() for e in primary], name

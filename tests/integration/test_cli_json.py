"""`--json` on every command that prints data: each prints one JSON document
and nothing else, parsed here, with the same facts as the text output."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from harness import Federation

from headcount.cli import cli
from headcount.demo import DEMO_PROJECT

SPEC = Path(__file__).parents[2] / "docs" / "queries" / "children-with-adult-in-custody.yaml"


def _json(fed: Federation, *args: str) -> Any:
    config = ["--config", str(fed.directory / "federation.toml")]
    result = CliRunner().invoke(cli, [*args, *config, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_every_data_command_prints_json(linked_federation: Federation) -> None:
    fed = linked_federation
    fed.approve_project(
        DEMO_PROJECT, "Demo project", "Count children across departments, never name them."
    )
    status = _json(fed, "status", "--analyst", "commissioner")
    assert status["federation"] == fed.config.name
    assert {p["party"] for p in status["parties"]} == set(fed.config.party_names)
    assert all(p["healthy"] and p["epsilon_left"] >= 0 for p in status["parties"])

    projects = _json(fed, "project", "list", "--analyst", "commissioner")
    assert DEMO_PROJECT in {p["project_id"] for p in projects}

    release = _json(fed, "query", "--analyst", "commissioner", "--spec", str(SPEC))
    rows = release["rows"]
    assert rows[-1]["group"] == "Total"
    assert {"group", "count", "status", "low", "high"} <= set(rows[0])
    assert release["epsilon"] > 0 and release["noise_scale"] > 0

    audit = _json(fed, "audit", "show", "--analyst", "commissioner")
    assert audit["verified"] and audit["events"][-1]["hash"].startswith(audit["head"][:16])
    kinds = [e["kind"] for e in audit["events"]]
    assert "release" in kinds
    purposes = {e["purpose"] for e in audit["events"] if e["kind"] in ("query", "release")}
    assert any("custody" in p or len(p) >= 10 for p in purposes)

    # Without --json, audit show lists each event's purpose too.
    text = CliRunner().invoke(
        cli,
        [
            "audit",
            "show",
            "--config",
            str(fed.directory / "federation.toml"),
            "--analyst",
            "commissioner",
        ],
    )
    assert text.exit_code == 0, text.output
    events = fed.coordinator.coordinator.audit.events()
    stated = [e.body["purpose"] for e in events if isinstance(e.body.get("purpose"), str)]
    assert stated and all(p in text.output for p in stated)

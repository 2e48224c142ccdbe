"""`--json` on every command that prints data: each prints one JSON document
and nothing else, parsed here, with the same facts as the text output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from harness import Federation, make_federation

from headcount.cli import cli
from headcount.demo import DEMO_PROJECT

SPEC = Path(__file__).parents[2] / "docs" / "queries" / "children-with-adult-in-custody.yaml"


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """A federation of its own: the query run here must not show up in other
    modules' checks of what the session's shared federation received."""
    federation = make_federation(tmp_path_factory.mktemp("cli-json") / "fed")
    try:
        with federation.operator() as op:
            op.run_ceremony()
            op.run_linkage()
        federation.approve_project(
            DEMO_PROJECT, "Demo project", "Count children across departments, never name them."
        )
        yield federation
    finally:
        federation.stop()


def _json(fed: Federation, *args: str) -> Any:
    config = ["--config", str(fed.directory / "federation.toml")]
    result = CliRunner().invoke(cli, [*args, *config, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_every_data_command_prints_json(fed: Federation) -> None:
    status = _json(fed, "status", "--analyst", "commissioner")
    assert status["federation"] == fed.config.name
    assert {p["party"] for p in status["parties"]} == set(fed.config.party_names)
    assert all(p["healthy"] and p["epsilon_left"] >= 0 for p in status["parties"])

    projects = _json(fed, "project", "list", "--analyst", "commissioner")
    assert DEMO_PROJECT in {p["project_id"] for p in projects}

    release = _json(fed, "query", "--analyst", "commissioner", "--spec", str(SPEC))
    rows, margins = release["rows"], release["margins"]
    assert "Total" not in {r["group"] for r in rows}
    assert margins[-1]["group"] == "Total"
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


def test_the_client_returns_dataclasses_and_dataframes(fed: Federation) -> None:
    """No protobuf reaches the analyst: status, budgets and projects are typed values."""
    import datetime as dt

    from headcount.domain.status import FederationStatus, ProjectView

    with fed.analyst() as client:
        status = client.status()
        budgets = client.budgets()
        projects = client.projects()
    assert isinstance(status, FederationStatus)
    assert isinstance(status.parties, tuple)
    assert list(budgets.columns) == [
        "party",
        "period",
        "epsilon_per_period",
        "epsilon_spent",
        "epsilon_left",
    ]
    assert set(budgets.party) == set(fed.config.party_names)
    spent = dict(zip(budgets.party, budgets.epsilon_spent, strict=True))
    left = dict(zip(budgets.party, budgets.epsilon_left, strict=True))
    for party in fed.config.party_names:
        assert spent[party] + left[party] <= status.epsilon_per_period + 1e-9
        assert left[party] == fed.coordinator.coordinator.budget_remaining(party)
    demo = [p for p in projects if p.project_id == DEMO_PROJECT]
    assert demo and isinstance(demo[0], ProjectView)
    assert isinstance(demo[0].expires, dt.date) and isinstance(demo[0].parties, tuple)


def _run(*args: str) -> Any:
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_node_check_prints_json(fed: Federation) -> None:
    report = _json(fed, "node", "check", "--party", "education")
    assert report["passed"] is True
    assert report["records"] == fed.nodes["education"].node.data().records
    assert report["file"].endswith("education.csv")


def test_synth_and_link_files_print_json(tmp_path: Path) -> None:
    synth = _run("synth", "--people", "600", "--seed", "3", "--out", str(tmp_path / "s"))
    assert synth["people"] == 600 and synth["records"]["education"] > 0
    data = tmp_path / "s"
    linked = _run(
        "link-files",
        str(data / "education.csv"),
        str(data / "health.csv"),
        "--out",
        str(tmp_path / "pairs.csv"),
        "--seed",
        "1",
    )
    assert set(linked["files"]) == {"education", "health"}
    assert linked["files"]["education"]["records"] == synth["records"]["education"]
    (pair,) = linked["pairs"]
    assert pair["links"] > 0 and 0 < pair["threshold"] < 1
    written = (tmp_path / "pairs.csv").read_text().splitlines()
    assert len(written) - 1 == linked["pairs_written"] == pair["links"]
    dedup = _run(
        "link-files", str(data / "health.csv"), "--dedup", "--out", str(tmp_path / "dup.csv")
    )
    assert dedup["people"] <= synth["records"]["health"]
    assert dedup["file"]["health.csv"]["records"] == synth["records"]["health"]


def test_attack_list_prints_json() -> None:
    names = _run("attack", "--list")
    games = _run("attack", "--list", "--games")
    assert names and all(isinstance(n, str) for n in names)
    assert games and all(n.startswith("game-") for n in games)


def test_ceremony_and_link_print_json(fed: Federation) -> None:
    """The operator's commands (run last here: a new ceremony and epoch)."""
    ceremony = _json(fed, "ceremony")
    assert ceremony["confirmed"] is True
    assert set(ceremony["parties"]) == set(fed.config.party_names)
    epoch = _json(fed, "link")
    assert epoch["epoch_id"] == fed.coordinator.coordinator.store.latest_epoch()
    assert set(epoch["records"]) == set(fed.config.party_names)
    assert epoch["clusters"] > 0 and epoch["pairs"]
    assert all(p["links"] >= p["key_links"] >= 0 for p in epoch["pairs"])


def test_audit_verify_prints_json(fed: Federation) -> None:
    copy = _json(fed, "audit", "verify", "--party", "education")
    assert copy["verified"] is True and copy["events"] > 0
    assert copy["head"] == fed.nodes["education"].node.audit.head()

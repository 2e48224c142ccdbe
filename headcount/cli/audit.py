"""``headcount audit``: read and verify the audit log."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from headcount.cli.common import Group, echo_json, json_option, load_config
from headcount.cli.options import config_option
from headcount.errors import HeadcountError


@click.group(cls=Group)
def audit() -> None:
    """Read and verify the hash-chained, signed audit log."""


@audit.command("show")
@config_option
@click.option("--analyst", default=None, help="Ask as this analyst (default: the operator).")
@json_option
def audit_show(config_path: Path | None, analyst: str | None, as_json: bool) -> None:
    """Fetch the coordinator's audit log, verify chain and signatures here, list
    events with the purpose of each query, refusal and release.

    \b
    Example:
      headcount audit show --analyst commissioner --json
    """
    from headcount.client import Client

    with Client(load_config(config_path), analyst=analyst) as c:
        events, head = c.audit_log()
    if as_json:
        echo_json(
            {
                "verified": True,
                "head": head,
                "events": [
                    {
                        "seq": e.seq,
                        "at": e.at,
                        "kind": e.kind,
                        "hash": e.hash,
                        "purpose": _purpose(e.body),
                        "body": e.body,
                    }
                    for e in events
                ],
            }
        )
        return
    for e in events:
        purpose = _purpose(e.body)
        line = f"{e.seq:>4} {e.at} {e.kind:<16} {e.hash[:16]}"
        click.echo(f"{line}  {purpose}" if purpose else line)
    click.echo(f"chain and signatures verified: {len(events)} events, head {head}")


def _purpose(body: Mapping[str, Any]) -> str:
    """The purpose an event states: a query's, a refusal's, a release's or a project's."""
    if isinstance(body.get("purpose"), str):
        return str(body["purpose"])
    project = body.get("project")
    if isinstance(project, Mapping) and isinstance(project.get("purpose"), str):
        return str(project["purpose"])
    return ""


@audit.command("verify")
@config_option
@click.option(
    "--db",
    "db_path",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="A copy of the log: the coordinator's or any node's SQLite state file.",
)
@click.option("--party", default=None, help="Verify this party node's replica (its state file).")
@json_option
def audit_verify(
    config_path: Path | None, db_path: Path | None, party: str | None, as_json: bool
) -> None:
    """Verify any copy of the audit log: the chain, and every signature against the
    federation's audit public key. Names the first bad entry; exit code 1 if any.

    \b
    Example:
      headcount audit verify --config fed/federation.toml
      headcount audit verify --config fed/federation.toml --party education
      headcount audit verify --config fed/federation.toml --json
    """
    from headcount.domain.audit import AuditLog

    cfg = load_config(config_path)
    if db_path is None:
        db_path = cfg.party(party).database if party else cfg.coordinator.database
    log_copy = AuditLog(db_path, verifier=cfg.audit_verifier)
    try:
        head = log_copy.verify()
    except HeadcountError as exc:
        if as_json:
            echo_json({"copy": str(db_path), "verified": False, "error": str(exc)})
        else:
            click.secho(f"FAILED {db_path}: {exc}", fg="red", err=True)
        sys.exit(1)
    events = len(log_copy.events())
    if as_json:
        echo_json({"copy": str(db_path), "verified": True, "events": events, "head": head})
        return
    click.echo(f"OK {db_path}: {events} events, head {head}")

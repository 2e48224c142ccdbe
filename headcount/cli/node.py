"""``headcount node``: serve, probe and check a department's party node."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from headcount.cli.common import (
    Group,
    echo_json,
    json_option,
    load_config,
    log_json,
    log_level,
    metrics_options,
    probe,
    timeout_option,
)
from headcount.cli.options import config_option
from headcount.log import configure


@click.group(cls=Group)
def node() -> None:
    """Run or check a department's party node."""


@node.command("serve")
@config_option
@click.option("--party", required=True, help="Which party this node is (e.g. education).")
@metrics_options
def node_serve(
    config_path: Path | None, party: str, metrics_port: int | None, metrics_host: str | None
) -> None:
    """Serve the PartyNode gRPC service (mutual TLS; only the coordinator may call).

    \b
    Example:
      headcount node serve --config fed/federation.toml --party education
      headcount --log-json node serve --party education --metrics-port 9101
    """
    from party_node.server import serve

    cfg = load_config(config_path)
    configure(log_level("INFO"), json_lines=log_json(), name=party)
    serve(cfg, cfg.party(party).name, metrics_port=metrics_port, metrics_host=metrics_host)


@node.command("health")
@config_option
@click.option("--party", required=True, help="Which party's node to ask.")
@timeout_option
def node_health(config_path: Path | None, party: str, timeout_s: float) -> None:
    """Exit 0 if PARTY's node answers the gRPC health check (a liveness probe,
    e.g. for a container healthcheck; it uses the party's own certificate).

    \b
    Example:
      headcount node health --config fed/federation.toml --party education
    """
    probe(load_config(config_path), party, timeout_s)


@node.command("check")
@config_option
@click.option("--party", required=True, help="Which party's data file to check.")
@click.option(
    "--blank-invalid",
    is_flag=True,
    help="Check as the node reads with blank_invalid = true: unreadable dates, sexes and"
    " postcodes are blanked and counted, not refused.",
)
@json_option
def node_check(config_path: Path | None, party: str, blank_invalid: bool, as_json: bool) -> None:
    """Check the department file against its contract, showing problem values.

    Run this at the node: unlike errors sent to the coordinator, its output
    quotes the offending values. It reads the file as the node does: with the
    linkage schema's date order and postcode style, and the party's
    blank_invalid setting.

    \b
    Example:
      headcount node check --config fed/federation.toml --party education
      headcount node check --party education --json
    """
    from headcount.linkage.schema_file import federation_schema
    from party_node.data import DepartmentFileError, department_options, load_department_file

    cfg = load_config(config_path)
    p = cfg.party(party)
    options = department_options(
        federation_schema(cfg.linkage_schema).input, blank_invalid=blank_invalid or p.blank_invalid
    )
    try:
        data = load_department_file(
            p.data, p.department, p.reference_date or cfg.reference_date, options
        )
    except DepartmentFileError as exc:
        if as_json:
            # The steward's own terminal: the detail may quote values.
            echo_json({"file": str(p.data), "passed": False, "problems": exc.detail})
        else:
            click.echo(exc.detail, err=True)
        sys.exit(1)
    if as_json:
        report = data.report
        echo_json(
            {
                "file": str(p.data),
                "passed": True,
                "records": data.records,
                "date_order": report.date_order.describe() if report else None,
                "blanked": dict(report.blanked) if report else {},
                "nameless": report.nameless if report else 0,
            }
        )
        return
    click.echo(f"{p.data}: {data.records} records, all checks passed")
    if data.report is not None:
        click.echo(f"  dates read {data.report.date_order.describe()}")
        for column, count in data.report.blanked.items():
            click.echo(f"  {count} unreadable values blanked in column {column!r}")
        if data.report.nameless:
            click.echo(f"  {data.report.nameless} records without a name, kept")

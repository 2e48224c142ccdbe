"""The analyst's commands: ``headcount query`` and ``headcount status``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from headcount.cli.common import echo_json, json_option, load_config
from headcount.cli.options import config_option


def _predicate(text: str) -> tuple[str, str, tuple[str, ...]]:
    try:
        target, values = text.split("=", 1)
        party, attribute = target.split(".", 1)
    except ValueError:
        raise click.BadParameter(f"{text!r}: use party.attribute=value[,value...]") from None
    return party, attribute, tuple(v for v in values.split(",") if v)


@click.command()
@config_option
@click.option("--analyst", required=True, help="Analyst name (its certificate is used).")
@click.option(
    "--spec",
    "spec_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A YAML query spec (see docs/analyst-guide.md); replaces the options below.",
)
@click.option("--population", help="Department whose records are counted, e.g. education.")
@click.option(
    "--group-by",
    "group_by",
    help="party.attribute to group by, e.g. immigration.immigration_status.",
)
@click.option("--filter", "filters", multiple=True, help="party.attribute=v1,v2 (repeatable).")
@click.option("--purpose", help="Why this table is needed (recorded in the audit log).")
@click.option(
    "--epsilon", default=0.0, type=float, help="Privacy loss to spend (default: the federation's)."
)
@click.option("--title", default="", help="Title for the released table.")
@click.option("--project", "project_id", default="", help="The approved project this query serves.")
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also write the table to this CSV file.",
)
@json_option
def query(
    config_path: Path | None,
    analyst: str,
    spec_path: Path | None,
    population: str | None,
    group_by: str | None,
    filters: tuple[str, ...],
    purpose: str | None,
    epsilon: float,
    title: str,
    project_id: str,
    csv_path: Path | None,
    as_json: bool,
) -> None:
    """Ask for a protected count: POPULATION's records grouped by another
    department's attribute, optionally with conditions (use --spec for those).
    Only noisy, rounded, small-number-suppressed tables come back.

    \b
    Example:
      headcount query --config fed/federation.toml --analyst commissioner \\
          --spec docs/queries/children-by-immigration-status.yaml --csv table.csv
      headcount query --analyst commissioner --population education \\
          --group-by immigration.immigration_status \\
          --purpose "Children by immigration status" --project commissioner-2026 --json
    """
    from headcount.client import Client
    from headcount.demo import format_release
    from headcount.domain.query import Predicate, QuerySpec
    from headcount.domain.queryfile import load_query_spec

    if spec_path is not None:
        spec = load_query_spec(spec_path)
        if project_id:
            spec = dataclasses.replace(spec, project_id=project_id)
    else:
        missing = [
            name
            for name, value in (
                ("--population", population),
                ("--group-by", group_by),
                ("--purpose", purpose),
            )
            if not value
        ]
        if missing:
            raise click.UsageError(f"give --spec FILE, or all of {', '.join(missing)}")
        assert population and group_by and purpose
        if "." not in group_by:
            raise click.BadParameter("use party.attribute", param_hint="--group-by")
        group_party, group_attr = group_by.split(".", 1)
        pop_filters, grp_filters = [], []
        for f in filters:
            party, attribute, values = _predicate(f)
            if party == population:
                pop_filters.append(Predicate(attribute, values))
            elif party == group_party:
                grp_filters.append(Predicate(attribute, values))
            else:
                raise click.BadParameter(
                    f"filters may name {population} or {group_party}, not {party} "
                    "(use --spec for conditions in other departments)"
                )
        spec = QuerySpec(
            purpose=purpose,
            population_party=population,
            group_party=group_party,
            group_by=group_attr,
            population_filters=tuple(pop_filters),
            group_filters=tuple(grp_filters),
            epsilon=epsilon,
            title=title,
            project_id=project_id,
        )
    with Client(load_config(config_path), analyst=analyst) as c:
        release = c.query(spec)
    if csv_path:
        release.frame().to_csv(csv_path, index=False)
    if as_json:
        echo_json(
            {
                "query_id": release.query_id,
                "epoch_id": release.epoch_id,
                "title": release.title,
                "epsilon": release.epsilon,
                "noise_scale": release.noise_scale,
                "budget_remaining": release.budget_remaining,
                "shareholders": release.shareholders,
                "sensitivity": release.sensitivity,
                # One object per cell, withheld values null; then the margins
                # (row and column totals of a two-way table, the total last).
                "rows": json.loads(release.table.to_json(orient="records")),
                "margins": json.loads(release.margins.to_json(orient="records")),
            }
        )
        return
    click.echo(format_release(release))


@click.command()
@config_option
@click.option("--analyst", default=None, help="Ask as this analyst (default: the operator).")
@json_option
def status(config_path: Path | None, analyst: str | None, as_json: bool) -> None:
    """Show the federation: parties and their health, current epoch, queries, audit head.

    \b
    Example:
      headcount status --analyst commissioner --json
    """
    from headcount.client import Client

    with Client(load_config(config_path), analyst=analyst) as c:
        s = c.status()
    if as_json:
        echo_json(
            {
                "federation": s.federation,
                "ceremony_id": s.ceremony_id,
                "epoch_id": s.epoch_id,
                "period": s.period,
                "epsilon_per_period": s.epsilon_per_period,
                "queries": s.queries,
                "audit_head": s.audit_head,
                "parties": [
                    {
                        "party": p.party,
                        "healthy": p.healthy,
                        "records": p.records,
                        "epsilon_spent": p.epsilon_spent,
                        "epsilon_left": p.epsilon_left,
                    }
                    for p in s.parties
                ],
            }
        )
        return
    click.echo(f"federation {s.federation}")
    click.echo(f"  ceremony {s.ceremony_id or '(none)'}   epoch {s.epoch_id or '(none)'}")
    click.echo(f"  privacy budget per department for {s.period}: epsilon {s.epsilon_per_period:g}")
    for p in s.parties:
        click.echo(
            f"  {p.party:<12} {'healthy' if p.healthy else 'DOWN':<8} {p.records:>8} records"
            f"   epsilon spent {p.epsilon_spent:.3g}, left {p.epsilon_left:.3g}"
        )
    click.echo(f"  {s.queries} queries; audit head {s.audit_head[:16]}")

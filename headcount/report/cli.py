"""``headcount report ...``: reports a data steward reads.

Registered on the main command line by `headcount.cli`; the root group turns
a ``HeadcountError`` raised here into a one-line message and exit code.
"""

from __future__ import annotations

from pathlib import Path

import click

from headcount import config as config_mod
from headcount.cli.options import config_option
from headcount.report.subgroups import (
    DEFAULT_ATTRIBUTES,
    DEFAULT_EPSILON,
    DEFAULT_MAX_QUERIES,
    DEFAULT_POPULATIONS,
    SubgroupPlan,
)


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


@click.group()
def report() -> None:
    """Reports on the federation's linkage, from aggregates only."""


@report.command("quality")
@config_option
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory the report (quality-<epoch>.html) is written to.",
)
@click.option("--epoch", "epoch_id", default="", help="Epoch to report on (default: the latest).")
@click.option(
    "--project", "project_id", default="", help="Approved project the subgroup queries serve."
)
@click.option(
    "--subgroups/--no-subgroups",
    default=None,
    help="Ask protected queries for link rates by subgroup (spends privacy budget). "
    "Default: only when --project is given.",
)
@click.option("--analyst", default="", help="Analyst who asks them (default: the first).")
@click.option(
    "--populations",
    default=",".join(DEFAULT_POPULATIONS),
    show_default=True,
    help="Departments whose records are broken down, comma-separated.",
)
@click.option(
    "--attributes",
    default=",".join(DEFAULT_ATTRIBUTES),
    show_default=True,
    help="Their own attributes to break down by (one query each), comma-separated.",
)
@click.option(
    "--epsilon",
    default=DEFAULT_EPSILON,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="Privacy budget each subgroup query spends.",
)
@click.option(
    "--max-queries",
    default=DEFAULT_MAX_QUERIES,
    show_default=True,
    type=click.IntRange(1),
    help="Ask at most this many subgroup queries.",
)
def quality(
    config_path: Path | None,
    out_dir: Path,
    epoch_id: str,
    project_id: str,
    subgroups: bool | None,
    analyst: str,
    populations: str,
    attributes: str,
    epsilon: float,
    max_queries: int,
) -> None:
    """Write a self-contained HTML linkage quality report for an epoch: score
    distributions and thresholds, estimated precision and recall, link rates
    by department pair and by household, and (with --project) link rates by
    subgroup from protected queries. Every count obeys the small-number rule.

    \b
    Example:
      headcount report quality --config fed/federation.toml --out report.html
    """
    from headcount.report.build import build_quality_report

    federation = config_mod.load(config_path)
    run_subgroups = bool(project_id) if subgroups is None else subgroups
    plan = SubgroupPlan(
        populations=_names(populations),
        attributes=_names(attributes),
        epsilon=epsilon,
        max_queries=max_queries,
    )
    path = build_quality_report(
        federation,
        out_dir,
        epoch_id=epoch_id,
        project_id=project_id,
        subgroups=plan if run_subgroups else False,
        analyst=analyst,
    )
    click.echo(str(path))

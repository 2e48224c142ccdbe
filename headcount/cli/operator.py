"""The operator's commands: ``headcount ceremony`` and ``headcount link``."""

from __future__ import annotations

from pathlib import Path

import click

from headcount.cli.common import load_config
from headcount.cli.options import config_option


@click.command()
@config_option
def ceremony(config_path: Path | None) -> None:
    """Run the key ceremony: nodes derive a linkage secret the coordinator never holds.

    \b
    Example:
      headcount ceremony --config fed/federation.toml
    """
    from headcount.client import Client

    with Client(load_config(config_path)) as c:
        s = c.run_ceremony()
    click.echo(f"ceremony {s.ceremony_id}: {len(s.parties)} parties, confirmed={s.confirmed}")


@click.command()
@config_option
@click.option(
    "--threshold",
    default=0.0,
    type=click.FloatRange(0, 1),
    help="Dice threshold (default: the federation's).",
)
def link(config_path: Path | None, threshold: float) -> None:
    """Run a linkage epoch: fresh tokens, keyed encodings, comparison, clusters.

    \b
    Example:
      headcount link --config fed/federation.toml
    """
    from headcount.client import Client

    with Client(load_config(config_path)) as c:
        s = c.run_linkage(threshold)
    click.echo(f"epoch {s.epoch_id} (schema {s.schema_fingerprint[:12]})")
    for party, n in s.records.items():
        click.echo(f"  {party:<12} {n:>8} records")
    from headcount.demo import link_table

    click.echo(link_table(s.pairs))
    click.echo(f"  {s.clusters} clusters")

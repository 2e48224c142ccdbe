"""The operator's commands: ``headcount ceremony`` and ``headcount link``."""

from __future__ import annotations

from pathlib import Path

import click

from headcount.cli.common import echo_json, json_option, load_config
from headcount.cli.options import config_option


@click.command()
@config_option
@json_option
def ceremony(config_path: Path | None, as_json: bool) -> None:
    """Run the key ceremony: nodes derive a linkage secret the coordinator never holds.

    \b
    Example:
      headcount ceremony --config fed/federation.toml
      headcount ceremony --config fed/federation.toml --json
    """
    from headcount.client import Client

    with Client(load_config(config_path)) as c:
        s = c.run_ceremony()
    if as_json:
        echo_json(
            {"ceremony_id": s.ceremony_id, "parties": list(s.parties), "confirmed": s.confirmed}
        )
        return
    click.echo(f"ceremony {s.ceremony_id}: {len(s.parties)} parties, confirmed={s.confirmed}")


@click.command()
@config_option
@click.option(
    "--threshold",
    default=0.0,
    type=click.FloatRange(0, 1),
    help="Dice threshold (default: the federation's).",
)
@json_option
def link(config_path: Path | None, threshold: float, as_json: bool) -> None:
    """Run a linkage epoch: fresh tokens, keyed encodings, comparison, clusters.

    Its link counts and quality estimates are exact linkage statistics, for
    the coordinator's operator only (docs/privacy.md).

    \b
    Example:
      headcount link --config fed/federation.toml
      headcount link --config fed/federation.toml --json
    """
    from headcount.client import Client

    with Client(load_config(config_path)) as c:
        s = c.run_linkage(threshold)
    if as_json:
        echo_json(
            {
                "epoch_id": s.epoch_id,
                "schema_fingerprint": s.schema_fingerprint,
                "records": dict(s.records),
                "clusters": s.clusters,
                "pairs": [
                    {
                        "left": p.left,
                        "right": p.right,
                        "links": p.links,
                        "key_links": p.key_links,
                        "threshold": p.threshold,
                        "est_precision": p.est_precision,
                        "est_recall": p.est_recall,
                        "estimate_basis": p.estimate_basis,
                    }
                    for p in s.pairs
                ],
            }
        )
        return
    click.echo(f"epoch {s.epoch_id} (schema {s.schema_fingerprint[:12]})")
    for party, n in s.records.items():
        click.echo(f"  {party:<12} {n:>8} records")
    from headcount.demo import link_table

    click.echo(link_table(s.pairs))
    click.echo(f"  {s.clusters} clusters")

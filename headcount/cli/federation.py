"""``headcount federation init`` and ``headcount synth``: a federation's
certificates and config, and a synthetic population."""

from __future__ import annotations

from pathlib import Path

import click

from headcount.cli.common import Group, csv_items, echo_json, json_option


@click.group(cls=Group)
def federation() -> None:
    """Create and inspect a federation (CA, certificates, config)."""


@federation.command("init")
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--name", default="demo", show_default=True, help="Federation name.")
@click.option(
    "--paillier-bits",
    default=2048,
    show_default=True,
    type=click.Choice(["1024", "2048", "3072"]),
    help="Paillier modulus size (1024 is for tests only).",
)
@click.option("--base-port", default=0, type=int, help="First loopback port (default: free ports).")
@click.option(
    "--service-hosts",
    is_flag=True,
    help="Address each process by its own name (education:PORT, ...), as on a container "
    "network (docker/compose.yaml), instead of 127.0.0.1.",
)
@click.option(
    "--periods",
    default="",
    help="Comma-separated period labels, e.g. 2024,2025,2026: each period department "
    "then takes part once per period (immigration-2024, ...).",
)
@click.option(
    "--period-departments",
    default="education,immigration",
    show_default=True,
    help="Departments that supply one snapshot per period.",
)
def federation_init(
    directory: Path,
    name: str,
    paillier_bits: str,
    base_port: int,
    service_hosts: bool,
    periods: str,
    period_departments: str,
) -> None:
    """Create a federation CA, one certificate per party, coordinator, operator
    and analyst (role and name inside each certificate), and federation.toml.

    \b
    Example:
      headcount federation init fed --name demo
      headcount federation init fed --service-hosts --base-port 50051
    """
    from headcount.federation import InitOptions, init_federation

    bits = int(paillier_bits)
    cfg = init_federation(
        directory,
        InitOptions(
            name=name,
            paillier_bits=bits,
            insecure_test_keys=bits < 2048,
            base_port=base_port,
            service_hosts=service_hosts,
            periods=csv_items(periods),
            period_departments=csv_items(period_departments),
        ),
    )
    click.echo(f"federation {cfg.name!r} created in {directory}")
    click.echo(f"  config:      {directory / 'federation.toml'}")
    click.echo(f"  coordinator: {cfg.coordinator.address}")
    for p in cfg.parties:
        click.echo(f"  {p.name:<18} {p.address}   data: {p.data}")
    click.echo("Put each department's file at its data path, then start the nodes.")


@click.command()
@click.option(
    "--people",
    default=5000,
    show_default=True,
    type=click.IntRange(1),
    help="People in the population.",
)
@click.option(
    "--seed", default=2026, show_default=True, type=int, help="Random seed (same seed, same files)."
)
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Directory for the CSV files.",
)
@click.option(
    "--years",
    default="",
    help="Comma-separated years, e.g. 2024,2025,2026: one evolving population with a "
    "snapshot per year for education and immigration (education-2024.csv, ...), as "
    "`federation init --periods` expects.",
)
@json_option
def synth(people: int, seed: int, out_dir: Path, years: str, as_json: bool) -> None:
    """Write a synthetic population: one CSV per department plus ground_truth.csv.

    Households of children and adults across local authorities, realistic
    coverage per department and recording errors. Keep ground_truth.csv away
    from the nodes: it exists only to evaluate linkage and released counts.

    \b
    Example:
      headcount synth --people 20000 --out synth
      headcount synth --people 5000 --years 2024,2025,2026 --out synth
      headcount synth --people 2000 --out synth --json
    """
    from headcount.synth import generate_periods, generate_population

    if years:
        try:
            chosen = tuple(int(y) for y in csv_items(years))
        except ValueError:
            raise click.BadParameter("years are numbers, e.g. 2024,2025,2026") from None
        many = generate_periods(people, seed, out_dir, years=chosen, progress=True)
        if as_json:
            echo_json(
                {
                    "people": many.people,
                    "years": list(many.years),
                    "records": dict(many.records),
                    "out": str(out_dir),
                }
            )
            return
        click.echo(f"{many.people} people over {len(many.years)} years -> {out_dir}")
        for party, n in many.records.items():
            click.echo(f"  {party:<18} {n:>8} records")
        return
    summary = generate_population(people, seed, out_dir, progress=True)
    if as_json:
        echo_json(
            {
                "people": summary.people,
                "households": summary.households,
                "records": dict(summary.records),
                "out": str(out_dir),
            }
        )
        return
    click.echo(f"{summary.people} people in {summary.households} households -> {out_dir}")
    for dept, n in summary.records.items():
        click.echo(f"  {dept:<12} {n:>8} records")

"""``headcount demo``: a whole federation on this machine."""

from __future__ import annotations

from pathlib import Path

import click

DEFAULT_DEMO_PEOPLE = 20_000  # large enough that most demo cells pass the small-number rule


@click.command()
@click.option(
    "--people",
    default=DEFAULT_DEMO_PEOPLE,
    show_default=True,
    type=click.IntRange(50),
    help="Synthetic population size.",
)
@click.option("--seed", default=2026, show_default=True, type=int, help="Random seed.")
@click.option(
    "--dir",
    "directory",
    default=Path(".headcount-demo"),
    show_default=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Working directory (recreated on each run).",
)
@click.option(
    "--paillier-bits",
    default="2048",
    show_default=True,
    type=click.Choice(["1024", "2048", "3072"]),
    help="Paillier key size (1024 only for quick tests).",
)
@click.option(
    "--register-port",
    default=0,
    type=click.IntRange(0, 65535),
    help="Port of the transparency register while the demo runs (0: any free port).",
)
@click.option(
    "--serve/--no-serve",
    default=False,
    show_default=True,
    help="After the demo, keep serving the transparency register until Ctrl-C.",
)
@click.option(
    "--longitudinal/--no-longitudinal",
    default=True,
    show_default=True,
    help="Also run the children-across-time part (yearly snapshots as parties).",
)
def demo(
    people: int,
    seed: int,
    directory: Path,
    paillier_bits: str,
    register_port: int,
    serve: bool,
    longitudinal: bool,
) -> None:
    """Run a whole federation on this machine: CA, synthetic population, four
    party nodes, a coordinator and the transparency register as separate
    processes, key ceremony, one linkage epoch, the demo queries, the linkage
    quality report and the children-across-time tables; print the protected
    tables and where the report and register are; stop (or, with --serve, keep
    serving the register).

    \b
    Example:
      headcount demo
      headcount demo --people 5000 --serve
    """
    from headcount.demo import run_demo
    from headcount.register.server import serve as serve_register

    result = run_demo(
        directory,
        people=people,
        seed=seed,
        paillier_bits=int(paillier_bits),
        register_port=register_port,
        longitudinal=longitudinal,
        echo=click.echo,
    )
    if serve and result.register is not None:
        serve_register(
            result.register.parent,
            port=register_port or 8088,
            ready=lambda url: click.echo(f"transparency register at {url} (Ctrl-C to stop)"),
        )

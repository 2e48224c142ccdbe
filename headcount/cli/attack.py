"""``headcount attack``: the attack suite and the privacy games."""

from __future__ import annotations

import sys

import click

from headcount.cli.common import echo_json, json_option


@click.command()
@click.argument("names", nargs=-1)
@click.option(
    "--all",
    "run_all",
    is_flag=True,
    help="Run every attack and every privacy game (about 20 minutes on 2 cores).",
)
@click.option(
    "--games",
    "run_games",
    is_flag=True,
    help="Run (with --list: list) only the privacy games (game-*).",
)
@click.option("--list", "list_only", is_flag=True, help="List the attacks and exit.")
@click.option(
    "--trials",
    type=click.IntRange(1),
    default=None,
    help="Trials per privacy game (default: each game's own).",
)
@click.option(
    "--people",
    default=3000,
    show_default=True,
    type=click.IntRange(500),
    help="Synthetic population of the attacked federation.",
)
@click.option("--seed", default=5, show_default=True, type=int, help="Random seed.")
@json_option
def attack(
    names: tuple[str, ...],
    run_all: bool,
    run_games: bool,
    list_only: bool,
    trials: int | None,
    people: int,
    seed: int,
    as_json: bool,
) -> None:
    """Run the attack suite against a live local federation and print what each
    attacker knew and achieved. Every attack must fail, or its residual success
    is measured and shown. Privacy games (game-*, run with --all, --games or
    by name) print their trials, success rate, the Clopper-Pearson 95% lower
    bound on epsilon they prove and the epsilon the federation publishes.
    Exit code 1 if any attack succeeded or any game's bound exceeds the
    published epsilon.

    \b
    Example:
      headcount attack --list
      headcount attack --games --trials 50
      headcount attack --all
      headcount attack --games --trials 20 --json
    """
    from headcount.attacks import attack_names, game_names, run_attacks

    if list_only:
        listed = game_names() if run_games else attack_names()
        if as_json:
            echo_json(listed)
        else:
            click.echo("\n".join(listed))
        return
    chosen = list(names)
    if run_all:
        chosen = attack_names() + game_names()
    results = run_attacks(
        chosen,
        people=people,
        seed=seed,
        progress=lambda m: click.echo(m, err=True),
        games=run_games,
        trials=trials,
    )
    if as_json:
        echo_json(
            [
                {
                    "name": r.name,
                    "game": r.is_game,
                    "attacker": r.attacker,
                    "knows": r.knows,
                    "outcome": r.outcome,
                    "success_rate": r.success_rate,
                    "accepted": r.accepted,
                    "defended": r.defended,
                    "trials": r.trials,
                    "successes": r.successes,
                    "epsilon_bound": r.epsilon_bound,
                    "epsilon_claimed": r.epsilon_claimed,
                }
                for r in results
            ]
        )
        if not all(r.defended for r in results):
            sys.exit(1)
        return
    attacks = [r for r in results if not r.is_game]
    played = [r for r in results if r.is_game]
    if attacks:
        click.echo(f"{'attack':<27} {'attacker':<32} {'success':>7} {'target':>7}  outcome")
    for r in attacks:
        click.echo(
            f"{r.name:<27} {r.attacker:<32} {r.success_rate:7.1%} {'<=' + f'{r.accepted:.0%}':>7}"
            f"  {'' if r.defended else 'NOT DEFENDED: '}{r.outcome}"
        )
        click.echo(f"{'':<27} knows: {r.knows}")
    if played:
        if attacks:
            click.echo("")
        click.echo(
            f"{'game':<24} {'trials':>6} {'success':>8} {'eps >= (95%)':>12} "
            f"{'published':>9}  verdict"
        )
    for r in played:
        verdict = "within" if r.defended else "EXCEEDS THE PUBLISHED EPSILON"
        click.echo(
            f"{r.name:<24} {r.trials or 0:>6} {r.success_rate:8.1%} {r.epsilon_bound or 0.0:12.2f} "
            f"{r.epsilon_claimed or 0.0:9.2f}  {verdict}"
        )
        click.echo(f"{'':<24} attacker: {r.attacker}")
        click.echo(f"{'':<24} knows: {r.knows}")
        click.echo(f"{'':<24} {r.outcome}")
    if not all(r.defended for r in results):
        sys.exit(1)

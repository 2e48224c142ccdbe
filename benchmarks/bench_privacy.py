"""Privacy games at full size: each channel's measured lower bound on epsilon.

    .venv/bin/python benchmarks/bench_privacy.py               # 100 trials per game
    .venv/bin/python benchmarks/bench_privacy.py --trials 400 --games game-differencing

Each game of ``headcount.attacks.games`` is played through the real code paths
of live in-process federations (real servers over mutual TLS on loopback,
1024-bit test keys) on a synthetic population of ``--people`` (3,000 by
default, seed 5: about 440 pupils, 2,900 health, 300 immigration and 70
justice records). A trial draws a secret bit, changes one person's record
accordingly, runs a linkage epoch, lets the adversary spend a whole period's
budget (each trial is one period) and scores its guess. Trials are played in
chunks of ``--chunk`` per fresh federation: every node verifies its whole
audit replica before each hop of a query, so a federation slows down as the
log grows. Chunks share the population, the target and the guessing strategy;
their noise and bits are fresh, so their trials pool into one count.

The table gives, per game: trials, successes, the success rate, the best rate
the published epsilon allows (e^eps / (1 + e^eps)), the Clopper-Pearson 95%
lower bound on epsilon the successes prove, the published epsilon, how many
successes it would have taken to prove more than the published epsilon at this
number of trials, and the verdict. Exit code 1 if any bound exceeds it. About
40 minutes at 100 trials per game on 2 shared cores (the repetition game, one
epoch per query, takes a quarter of it).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from headcount.attacks import AttackResult, game_names, run_attacks
from headcount.privacy.bounds import epsilon_lower_bound
from headcount.privacy.noise import guessing_bound


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _needed(trials: int, claimed: float) -> int | None:
    """Fewest successes of ``trials`` whose bound exceeds ``claimed`` (None: none)."""
    for k in range(trials // 2, trials + 1):
        if epsilon_lower_bound(k, trials) > claimed:
            return k
    return None


def _play(name: str, trials: int, chunk: int, people: int, seed: int) -> tuple[AttackResult, int]:
    """Play ``trials`` of game ``name`` in chunks; returns the last chunk's
    result (for its texts) and the successes over all chunks."""
    successes, played, last = 0, 0, None
    while played < trials:
        n = min(chunk, trials - played)
        (last,) = run_attacks(
            [name],
            people=people,
            seed=seed,
            trials=n,
            progress=lambda m: print(f"  {m}", file=sys.stderr, flush=True),
        )
        successes += last.successes or 0
        played += n
        print(f"  {name}: {successes} of {played} so far", file=sys.stderr, flush=True)
    assert last is not None
    return last, successes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=100, help="trials per game")
    parser.add_argument("--chunk", type=int, default=25, help="trials per fresh federation")
    parser.add_argument("--people", type=int, default=3000, help="synthetic population")
    parser.add_argument("--seed", type=int, default=5, help="population seed")
    parser.add_argument("--games", nargs="*", default=None, help="games to play (default: all)")
    args = parser.parse_args()
    if args.trials < 1 or args.chunk < 1:
        parser.error("--trials and --chunk must be >= 1")
    names = args.games or game_names()
    unknown = sorted(set(names) - set(game_names()))
    if unknown:
        parser.error(f"unknown games {unknown}; known: {game_names()}")

    print(f"# {_cpu()}, nproc {os.cpu_count()}, load average {os.getloadavg()}")
    print(
        f"# {args.people} people (seed {args.seed}), {args.trials} trials per game "
        f"in chunks of {args.chunk}"
    )
    header = (
        f"{'game':<24} {'trials':>6} {'wins':>5} {'rate':>6} {'max ok':>6} "
        f"{'eps >=':>6} {'eps pub':>7} {'needed':>6} {'time s':>7}  verdict"
    )
    rows: list[str] = []
    details: list[str] = []
    failed = False
    for name in names:
        started = time.monotonic()
        last, wins = _play(name, args.trials, args.chunk, args.people, args.seed)
        elapsed = time.monotonic() - started
        claimed = last.epsilon_claimed or 0.0
        bound = epsilon_lower_bound(wins, args.trials)
        needed = _needed(args.trials, claimed)
        within = bound <= claimed
        failed |= not within
        rows.append(
            f"{name:<24} {args.trials:>6} {wins:>5} {wins / args.trials:6.1%} "
            f"{guessing_bound(claimed):6.1%} {bound:6.2f} {claimed:7.2f} "
            f"{needed if needed is not None else '-':>6} {elapsed:7.0f}  "
            f"{'within' if within else 'EXCEEDS THE PUBLISHED EPSILON'}"
        )
        details.append(f"{name}: {last.attacker}; knows: {last.knows}")
        print(rows[-1], file=sys.stderr, flush=True)
    print(header)
    print("\n".join(rows))
    print()
    print("\n".join(details))
    print(f"# load average at the end {os.getloadavg()}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

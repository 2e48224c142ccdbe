"""Curious-coordinator attacks on stored CLKs, against each hardening level,
with the person-link F1 that level costs.

    .venv/bin/python benchmarks/bench_attacks.py            # about 8 minutes on 2 shared cores
    .venv/bin/python benchmarks/bench_attacks.py --quick    # smaller, for a smoke run

Data: synthetic populations from `headcount.synth`. The attacks target the
health department of a population of ``--people`` (3,000: about 2,900 CLKs);
the graph-matching attacker holds the true identities of ``--overlap`` (70%) of
those people plus others, the frequency attacker the first names of another
population (another seed) with their counts, and the pattern-mining attacker
(`headcount.attacks.clk_patterns`) the first names and surnames of that
population with their counts. F1 is measured on a
separate population of ``--f1-people`` (10,000: about 1,400 true
education-health pairs) with the project's own linkage, CLK Dice then
one-to-one matching (`headcount.linkage.dice`, `headcount.linkage.solve`):
at the schema's fixed threshold and at the best threshold for that encoding
(the cost of the encoding itself, as `tests/unit/linkage/test_hardening.py`
measures it), and with the full engine (match-keys first, then CLKs at the
threshold the quality estimate picks, `headcount.linkage.engine.link_parties`).
The F1 cost is unhardened F1 minus the level's, at the same setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from headcount.attacks.clk_data import (
    EncodedTarget,
    from_population,
    load_identities,
    plaintext_sample,
    read_truth,
)
from headcount.attacks.clk_frequency import frequency_attack, name_frequencies, score_frequency
from headcount.attacks.clk_graph import graph_match, score_graph_match
from headcount.attacks.clk_patterns import pattern_attack, score_patterns
from headcount.attacks.hardening import LEVELS, HardeningLevel
from headcount.linkage.dice import Candidates, score_pairs
from headcount.linkage.engine import link_parties
from headcount.linkage.matchkeys import match_keys
from headcount.linkage.normalise import Identity
from headcount.linkage.schema import DEFAULT_LINKAGE_SCHEMA
from headcount.linkage.solve import match_one_to_one
from headcount.synth import generate_population

SECRET = bytes(range(32))
FLOOR = 0.5


@dataclasses.dataclass(frozen=True)
class F1Sample:
    left: list[Identity]
    right: list[Identity]
    truth: frozenset[tuple[int, int]]


def f1_sample(directory: Path) -> F1Sample:
    truth = read_truth(directory / "ground_truth.csv")
    frames = {
        p: pd.read_csv(directory / f"{p}.csv", dtype=str, keep_default_na=False)
        for p in ("education", "health")
    }
    pos = {p: {r: i for i, r in enumerate(f.record_id)} for p, f in frames.items()}
    pairs = frozenset(
        (pos["education"][e], pos["health"][h])
        for e, h in zip(truth.education_id, truth.health_id, strict=True)
        if e and h
    )
    return F1Sample(load_identities(frames["education"]), load_identities(frames["health"]), pairs)


def _f1(found: set[tuple[int, int]], truth: frozenset[tuple[int, int]]) -> float:
    hits = len(found & truth)
    if not hits:
        return 0.0
    precision, recall = hits / len(found), hits / len(truth)
    return 2 * precision * recall / (precision + recall)


def link_f1(sample: F1Sample, level: HardeningLevel) -> tuple[float, float, float]:
    """(F1 at the schema threshold, F1 at the best threshold, engine F1)."""
    rng = np.random.default_rng(1)
    left = level.encode(sample.left, SECRET, rng)
    right = level.encode(sample.right, SECRET, rng)
    links = match_one_to_one(score_pairs(left, right, FLOOR))
    pairs = list(zip(links.left.tolist(), links.right.tolist(), strict=True))
    fixed = _f1(
        {p for p, s in zip(pairs, links.score, strict=True) if s >= level.threshold}, sample.truth
    )
    best = 0.0
    for threshold in np.unique(np.round(links.score, 3)):
        keep = links.score >= threshold
        kept = Candidates(links.left[keep], links.right[keep], links.score[keep])
        best = max(
            best, _f1(set(zip(kept.left.tolist(), kept.right.tolist(), strict=True)), sample.truth)
        )

    def keys_of(identities: list[Identity], clks: np.ndarray) -> list[list[bytes | None]]:
        # Decoys (after the real rows) carry no match-key.
        levels = match_keys(identities, SECRET, DEFAULT_LINKAGE_SCHEMA.match_keys)
        return [[*level, *[None] * (len(clks) - len(identities))] for level in levels]

    keys = {"education": keys_of(sample.left, left), "health": keys_of(sample.right, right)}
    result = link_parties(
        {"education": left, "health": right},
        level.threshold,
        floor=FLOOR,
        auto_threshold=True,
        match_keys=keys,
    )
    engine = _f1(
        {(c["education"], c["health"]) for c in result.clusters if len(c) == 2}, sample.truth
    )
    return fixed, best, engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--people", type=int, default=3000)
    parser.add_argument("--f1-people", type=int, default=10000)
    parser.add_argument("--overlap", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--quick", action="store_true", help="1,500 / 4,000 people")
    parser.add_argument("--levels", nargs="*", default=list(LEVELS))
    args = parser.parse_args()
    if args.quick:
        args.people, args.f1_people = 1500, 4000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.monotonic()
        generate_population(args.people, args.seed, root / "target")
        generate_population(args.people, args.seed + 1, root / "public")
        generate_population(args.f1_people, args.seed + 2, root / "f1")
        truth = read_truth(root / "target" / "ground_truth.csv")
        public = name_frequencies(read_truth(root / "public" / "ground_truth.csv"))
        sample = f1_sample(root / "f1")
        print(
            f"target: health of {args.people} people; graph attacker knows {args.overlap:.0%};"
            f" F1 on {args.f1_people} people ({len(sample.truth)} true pairs)"
        )
        header = (
            f"{'hardening':<24} {'graph':>7} {'claimed':>8} {'freq':>7} {'qgrams':>8} {'names':>6}"
            f" {'F1@thr':>7} {'F1best':>7} {'F1eng':>7} {'cost@thr':>8} {'costbest':>8}"
            f" {'costeng':>8} {'s':>5}"
        )
        print(header)
        base: tuple[float, float, float] | None = None
        for name in args.levels:
            level = LEVELS[name]
            t0 = time.monotonic()
            target: EncodedTarget = from_population(
                root / "target", level.schema, SECRET, decoy_share=level.decoy_share
            )
            plain = plaintext_sample(truth, target, args.overlap, seed=1)
            graph = score_graph_match(
                target, plain, graph_match(target.clks, level.schema, plain.identities)
            )
            freq = score_frequency(
                target, truth, frequency_attack(target.clks, level.schema, public), public
            )
            mined = score_patterns(
                target, truth, pattern_attack(target.clks, level.schema, public), public, SECRET
            )
            f1 = link_f1(sample, level)
            base = base or f1
            cost = [b - f for b, f in zip(base, f1, strict=True)]
            print(
                f"{name:<24} {graph.rate:7.1%} {graph.claimed_correct:>3}/{graph.claimed:<4}"
                f" {freq.aligned_correct:>3}/{freq.aligned:<3}"
                f" {mined.named_correct:>3}/{mined.named:<4} {mined.rate:6.1%}"
                f" {f1[0]:7.4f} {f1[1]:7.4f} {f1[2]:7.4f} {cost[0]:8.4f} {cost[1]:8.4f}"
                f" {cost[2]:8.4f} {time.monotonic() - t0:5.0f}",
                flush=True,
            )
        print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()

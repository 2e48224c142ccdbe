"""Longitudinal benchmark: cross-period link quality and transition/cohort query time.

Usage (from the repository root):

    .venv/bin/python benchmarks/bench_longitudinal.py                 # 20,000 people, 2048-bit
    .venv/bin/python benchmarks/bench_longitudinal.py --quick         # 5,000 people, 1024-bit
    .venv/bin/python benchmarks/bench_longitudinal.py --years 2023,2024,2025,2026

A synthetic population followed over the given years
(``headcount.synth.generate_periods``: births, deaths, moves between local
authorities, status changes, naturalisation, school transitions, arrivals),
seen by education and immigration once per year and by health and justice in
the last year, so the federation has 2 x years + 2 parties. The whole federation
runs in this process (real servers, mutual TLS on 127.0.0.1), one ceremony and
one linkage epoch, then the two queries of ``headcount.longitudinal`` with the
default protection (epsilon 0.5 each): the transition table of immigration
status from the first year to the last, and mean absence in the last year by
status in the first.

Link quality is measured against the evaluation ground truth (never read by a
node): for each pair of parties, precision, recall and F1 of the person links
the coordinator stored, read back to record ids through each node's own token
map, as tests/integration/test_longitudinal.py does.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd

from headcount import longitudinal
from headcount.local import LocalFederation


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _quality(fed: LocalFederation, epoch_id: str) -> list[tuple[str, str, int, float, float]]:
    truth = pd.read_csv(fed.ground_truth, dtype=str, keep_default_na=False)
    out = []
    for a, b in itertools.combinations(sorted(fed.config.party_names), 2):
        true = {(x, y) for x, y in zip(truth[f"{a}_id"], truth[f"{b}_id"], strict=True) if x and y}
        if not true:
            continue
        found = fed.linked_record_ids(epoch_id, a, b)
        hits = len(found & true)
        out.append((a, b, len(true), hits / max(1, len(found)), hits / len(true)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--paillier-bits", type=int, default=2048, choices=(1024, 2048, 3072))
    parser.add_argument("--years", default=",".join(str(y) for y in longitudinal.YEARS))
    parser.add_argument("--quick", action="store_true", help="5,000 people, 1024-bit keys")
    parser.add_argument("--workdir", type=Path, help="keep the federation here")
    args = parser.parse_args()
    if args.quick:
        args.people, args.paillier_bits = 5000, 1024
    years = tuple(int(y) for y in args.years.split(","))
    first, last = years[0], years[-1]
    # The demo's queries, from the first year to the last of those asked for.
    transition = dataclasses.replace(
        longitudinal.TRANSITION_QUERY,
        population_party=f"immigration-{first}",
        group_party=f"immigration-{last}",
        project_id="",
    )
    cohort = dataclasses.replace(
        longitudinal.COHORT_QUERY,
        population_party=f"education-{last}",
        group_party=f"immigration-{first}",
        project_id="",
    )

    print("Headcount longitudinal benchmark")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print(f"load average at start: {_load()}")
    flags = (
        f"--people {args.people} --seed {args.seed} --paillier-bits {args.paillier_bits} "
        f"--years {args.years}"
    )
    print(f"command: .venv/bin/python benchmarks/bench_longitudinal.py {flags}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-longitudinal-"))
    started = time.perf_counter()
    with longitudinal.start_period_federation(
        workdir / "fed",
        people=args.people,
        seed=args.seed,
        years=years,
        paillier_bits=args.paillier_bits,
        require_projects=False,
    ) as fed:
        setup_s = time.perf_counter() - started
        with fed.operator() as op:
            op.run_ceremony()
            started = time.perf_counter()
            linkage = op.run_linkage()
            linkage_s = time.perf_counter() - started
        timings = {}
        with fed.analyst() as analyst:
            for name, spec in (("transition", transition), ("cohort", cohort)):
                started = time.perf_counter()
                analyst.query(spec)
                timings[name] = time.perf_counter() - started
        quality = _quality(fed, linkage.epoch_id)

    print()
    print(f"parties and records: {dict(sorted(linkage.records.items()))}")
    print(f"data and servers: {setup_s:.1f} s; linkage epoch: {linkage_s:.1f} s")
    print(f"transition table query: {timings['transition']:.1f} s")
    print(f"cohort mean query:      {timings['cohort']:.1f} s")
    print()
    header = f"{'pair':<38} {'true links':>10} {'precision':>10} {'recall':>8} {'F1':>8}"
    print(header)
    print("-" * len(header))
    for a, b, n, p, r in quality:
        if n < 30:
            continue
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        marker = "  <- across periods" if a.split("-")[0] == b.split("-")[0] else ""
        print(f"{a + ' x ' + b:<38} {n:>10} {p:>10.4f} {r:>8.4f} {f1:>8.4f}{marker}")
    print(f"\nload average at end: {_load()}")


if __name__ == "__main__":
    main()

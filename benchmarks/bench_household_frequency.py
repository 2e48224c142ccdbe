"""Household-key frequency: can the coordinator single out a known family?

The coordinator holds every department's keyed household keys (opaque HMAC
digests, `headcount.linkage.address`), so it sees how many records each
department holds at each key. An attacker at the coordinator who knows a
target family's make-up from outside (say, how many of its members are at
school and how many are registered with a GP) looks for the one key with
that signature. If the signature is unique, it has found the family's key,
and learns whether justice or immigration hold records at that address.

This measures that on a synthetic population (``headcount.synth``), with the
keys computed as each node computes them: for each piece of outside knowledge,
how many households have a unique signature, and how many of those have a
justice record (a disclosure the attack would make). Usage:

    .venv/bin/python benchmarks/bench_household_frequency.py              # 20,000 people
    .venv/bin/python benchmarks/bench_household_frequency.py --people 100000

The synthetic generator draws households of one to seven people (at most
three adults and four children), so only the largest families can stand out;
a national population holds rarer, larger households, which would stand out
more.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

from headcount import synth
from headcount.departments import DEPARTMENTS
from headcount.linkage.address import household_keys
from party_node.data import load_department_file

SECRET = bytes(range(32))
# What an outsider might know of a family, as record counts per department.
KNOWLEDGE = (
    ("pupils", ("education",)),
    ("pupils and GP patients", ("education", "health")),
    ("pupils, GP patients and immigration records", ("education", "health", "immigration")),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=20_000, help="synthetic population size")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hc-hhfreq-") as tmp:
        out = Path(tmp)
        synth.generate_population(args.people, args.seed, out)
        counts: dict[bytes, Counter[str]] = {}
        for dept in sorted(DEPARTMENTS):
            data = load_department_file(out / f"{dept}.csv", dept, synth.REFERENCE_DATE)
            keys = household_keys(
                data.addresses,
                [i.postcode for i in data.identities],
                SECRET,
                data.attributes["local_authority"].astype(str).tolist(),
            )
            for key in keys:
                if key:
                    counts.setdefault(key, Counter())[dept] += 1
    households = len(counts)
    with_justice = sum(1 for c in counts.values() if c["justice"])
    print(
        f"synthetic population of {args.people:,} (seed {args.seed}): {households:,} keyed "
        f"households, {with_justice:,} of them with a justice record; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    header = ["outside knowledge", "unique households", "share", "of them with justice"]
    rows = []
    for label, depts in KNOWLEDGE:
        signature = {key: tuple(c[d] for d in depts) for key, c in counts.items()}
        seen = Counter(signature.values())
        unique = [key for key, sig in signature.items() if seen[sig] == 1]
        disclosed = sum(1 for key in unique if counts[key]["justice"])
        rows.append(
            [label, f"{len(unique):,}", f"{len(unique) / households:.3%}", f"{disclosed:,}"]
        )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)))
    print(f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

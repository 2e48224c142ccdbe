"""Load benchmark: many analysts querying a live federation at once, on loopback.

Usage (from the repository root):

    .venv/bin/python benchmarks/bench_load.py                  # 5,000 people, 40 queries
    .venv/bin/python benchmarks/bench_load.py --quick          # 2,000 people, 12 queries
    .venv/bin/python benchmarks/bench_load.py --queries 100 --concurrency 1,4,16

A federation of four party nodes and the coordinator runs in this process, each
a real gRPC server over mutual TLS on 127.0.0.1 (1024-bit Paillier test keys, so
the figures are about the service, not the key size). After the ceremony and
one linkage epoch, for each concurrency level the same number of queries is
submitted by that many analyst threads at once (each thread its own client
and channel). The epoch budget is set high enough for all of them. Between two
levels a new linkage epoch runs concurrently with the queries (an upload under
load), so queries and the four nodes' encoding streams share the machine.

For each level the table shows queries released, refused and failed (must be
0), p50 / p95 / max latency, throughput, and whether the audit chain verified
afterwards with exactly one terminal event per announced query.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from headcount.client import Client
from headcount.domain.query import QuerySpec
from headcount.errors import BudgetExhausted, HeadcountError
from headcount.local import LocalFederation, start_local_federation

SPECS = (
    ("education", "immigration", "immigration_status"),
    ("health", "immigration", "immigration_status"),
    ("education", "health", "gp_registered"),
    ("immigration", "education", "attainment_band"),
)


def _spec(i: int) -> QuerySpec:
    population, group_party, group_by = SPECS[i % len(SPECS)]
    return QuerySpec(
        purpose=f"Load benchmark query {i}: {population} records by {group_party}.{group_by}.",
        population_party=population,
        group_party=group_party,
        group_by=group_by,
        epsilon=0.01,
    )


def _level(fed: LocalFederation, queries: int, threads: int, *, with_epoch: bool) -> dict[str, str]:
    analyst_name = fed.config.analysts[0].name

    def one(i: int) -> tuple[str, float]:
        started = time.monotonic()
        with Client(fed.config, analyst=analyst_name) as analyst:
            try:
                analyst.query(_spec(i))
                outcome = "released"
            except BudgetExhausted:
                outcome = "refused"
            except HeadcountError:
                outcome = "failed"
        return outcome, time.monotonic() - started

    epoch_thread = None
    if with_epoch:

        def link() -> None:
            with fed.operator() as op:
                op.run_linkage()

        epoch_thread = threading.Thread(target=link)
        epoch_thread.start()
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(one, range(queries)))
    wall = time.monotonic() - started
    if epoch_thread is not None:
        epoch_thread.join()

    coord = fed.coordinator.coordinator
    coord.audit.verify()
    events = coord.audit.events()
    terminal = Counter(e.body["query_id"] for e in events if e.kind in ("release", "refusal"))
    announced = [e.body["query_id"] for e in events if e.kind == "query"]
    consistent = all(terminal[q] == 1 for q in announced) and not coord.store.running_queries()
    outcomes = Counter(o for o, _ in results)
    latencies = sorted(t for _, t in results)
    return {
        "threads": str(threads),
        "epoch_during": "yes" if with_epoch else "no",
        "released": str(outcomes["released"]),
        "refused": str(outcomes["refused"]),
        "failed": str(outcomes["failed"]),
        "p50_s": f"{statistics.median(latencies):.2f}",
        "p95_s": f"{latencies[max(0, int(0.95 * len(latencies)) - 1)]:.2f}",
        "max_s": f"{latencies[-1]:.2f}",
        "queries_per_s": f"{queries / wall:.2f}",
        "audit_ok": "yes" if consistent else "NO",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=5000)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--concurrency", default="1,4,8", help="comma-separated thread counts")
    parser.add_argument("--quick", action="store_true", help="2,000 people, 12 queries")
    args = parser.parse_args()
    if args.quick:
        args.people, args.queries = 2000, 12
    levels = [int(x) for x in args.concurrency.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        fed = start_local_federation(
            Path(tmp) / "fed",
            people=args.people,
            seed=1,
            require_projects=False,
            epsilon_per_period=100.0,
        )
        try:
            with fed.operator() as op:
                op.run_ceremony()
                op.run_linkage()
            rows = [
                _level(fed, args.queries, t, with_epoch=(i % 2 == 1)) for i, t in enumerate(levels)
            ]
        finally:
            fed.stop()

    load = os.getloadavg()
    print(
        f"# {args.people} people, {args.queries} queries per level, "
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    headers = list(rows[0])
    widths = [max(len(h), *(len(r[h]) for r in rows)) for h in headers]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)))
    for r in rows:
        print("  ".join(r[h].rjust(w) for h, w in zip(headers, widths, strict=True)))


if __name__ == "__main__":
    main()

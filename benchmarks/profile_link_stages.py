"""Where ``link_parties`` spends its time: wall time and peak memory of each stage.

A profiling aid, not a benchmark: for a given N it builds (once, cached in
``--work``) the same four departments of N records that ``bench_scale.py``
builds, encoded as its nodes encode them, then runs ``link_parties`` as the
scale benchmark's coordinator does (threshold 0.7, floor 0.6, match-keys,
LSH blocking forced on every pair under a fixed key) and times the engine's
stages by wrapping the functions it calls for them:

- EM sample: ``engine._sample_candidates`` (each sampled record's best candidates);
- blocked Dice: ``candidate_pairs_blocked_many``, as the executor calls it;
- match-key joins: ``engine.index_digests`` and ``engine.link_indexed``;
- clustering: ``engine.cluster_parties``.

Each stage's peak is the resident set's high-water mark during it less the
resident set at its start (``VmHWM`` reset through ``/proc/self/clear_refs``,
Linux only). Usage, from the repository root:

    .venv/bin/python benchmarks/profile_link_stages.py --records 100000
    .venv/bin/python benchmarks/profile_link_stages.py --records 1000000

Building the 1,000,000-record inputs takes about 3.5 minutes on 2 cores;
the profile itself under a minute. The 1-minute load average is printed
beside the times: on a shared machine, compare sizes profiled back to back.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_scale

from headcount.departments import DEPARTMENTS
from headcount.linkage import engine, executor
from headcount.linkage.schema import DEFAULT_LINKAGE_SCHEMA, BlockingSpec

# (module, function it calls) -> stage; blocked Dice runs through the executor.
STAGES = {
    (engine, "_sample_candidates"): "EM sample",
    (executor, "candidate_pairs_blocked_many"): "blocked Dice",
    (engine, "index_digests"): "match-key joins",
    (engine, "link_indexed"): "match-key joins",
    (engine, "cluster_parties"): "clustering",
}


def _kib(field_name: str) -> int:
    return bench_scale._status_kib(field_name)


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5", encoding="ascii")


def build_inputs(records: int, work: Path) -> None:
    """The scale benchmark's departments and node outputs, unless already there."""
    if all((work / f"{d}.clks.npy").exists() for d in DEPARTMENTS):
        return
    work.mkdir(parents=True, exist_ok=True)
    print(f"building {records:,}-record inputs in {work}", flush=True)
    bench_scale.make_departments(records, str(work))
    for dept in DEPARTMENTS:
        bench_scale.run_child(bench_scale.node_stage, dept, str(work))


def profile(work: Path) -> None:
    clks = {d: np.load(work / f"{d}.clks.npy") for d in DEPARTMENTS}
    digests = {d: np.load(work / f"{d}.digests.npy") for d in DEPARTMENTS}
    threshold = DEFAULT_LINKAGE_SCHEMA.threshold
    floor = DEFAULT_LINKAGE_SCHEMA.candidate_floor
    key = bench_scale.BLOCKING_KEY
    # Compile (or load numba's cache) before anything is timed.
    some = {d: c[:64] for d, c in clks.items()}
    engine.link_parties(some, threshold, floor=floor, blocking_key=key, min_blocked_pairs=0)

    seconds: dict[str, float] = defaultdict(float)
    added: dict[str, int] = defaultdict(int)

    def timed(fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            _reset_peak()
            resident = _kib("VmRSS")
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            seconds[stage] += time.perf_counter() - start
            added[stage] = max(added[stage], _kib("VmHWM") - resident)
            return out

        return run

    for (module, name), stage in STAGES.items():
        setattr(module, name, timed(getattr(module, name), stage))
    load = os.getloadavg()[0]
    _reset_peak()
    resident = _kib("VmRSS")
    start = time.perf_counter()
    engine.link_parties(
        clks,
        threshold,
        floor=floor,
        match_keys=digests,
        blocking=BlockingSpec(),
        blocking_key=key,
        min_blocked_pairs=0,
    )
    total = time.perf_counter() - start
    records = len(next(iter(clks.values())))
    print(f"link_parties on 4 x {records:,} records; load average (1 min) {load:.2f} at the start")
    for stage in dict.fromkeys(STAGES.values()):
        print(f"  {stage:<16} {seconds[stage]:7.2f} s  peak +{added[stage] / 1024:,.0f} MiB")
    other = total - sum(seconds.values())
    print(f"  {'rest':<16} {other:7.2f} s")
    print(
        f"  {'total':<16} {total:7.2f} s  peak +{(_kib('VmHWM') - resident) / 1024:,.0f} MiB"
        f" ({_kib('VmHWM') / 1024:,.0f} MiB resident); load average at the end "
        f"{os.getloadavg()[0]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="records per department")
    parser.add_argument(
        "--work", type=Path, help="input cache (default /tmp/headcount-profile-N)", default=None
    )
    args = parser.parse_args()
    work = args.work or Path(f"/tmp/headcount-profile-{args.records}")
    build_inputs(args.records, work)
    profile(work)


if __name__ == "__main__":
    main()

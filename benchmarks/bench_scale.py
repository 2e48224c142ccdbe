"""Scale benchmark: four departments of N records each, linked end to end, with blocking.

One command, from the repository root:

    .venv/bin/python benchmarks/bench_scale.py                    # N = 100,000 (and 10,000)
    .venv/bin/python benchmarks/bench_scale.py --quick            # N = 20,000 (and 2,000)
    .venv/bin/python benchmarks/bench_scale.py --records 1000000  # the 1M goal (and 100,000)

Every run measures two sizes, N/10 and N, in the same run on the same machine,
so the ratios in the table say how each stage's cost grows (10x is linear).

Data. For a size N, a population of P = N / 0.97 people is built with the
synthetic generator's own household, name, date-of-birth and address model
(``headcount.synth.population``'s helpers ``_draw_households``, ``_build_pools``,
``_build_population``; seed 1). Each of the four departments then holds a
random N of those P people, drawn independently per department (so two
departments share about 0.97 N people), recorded by ``synth.records._recorded_identity``
with that department's own date format and sex labels and its own,
independent recording errors (nicknames, typos, surname changes, day/month
swaps, moves, missing values, case and punctuation noise), in a random row
order, and written as a CSV with the link-file columns. The generator's own
department files are not used: their sizes differ 30-fold (health holds 97% of
people, education 15%, immigration 10%, justice 3%), and topping the small
ones up with copies of health's records would give two departments
byte-identical records of one person, which link too easily. The department
names thus only choose formats and error draws: each department holds adults
and children alike. Ground truth is the person behind each row.

Pipeline, as the federation runs it:

- nodes: one child process per department (each department runs its own
  node) reads the CSV with ``party_node.data.load_identity_file`` (the node's
  checks and normalisation), then ``encode_clks`` (the default schema: 1024-bit, XOR-folded to 512)
  and ``match_keys`` (default 7 levels), all under one linkage secret; the
  keys are saved as ``keylinks.key_digests`` arrays (computed in numpy from
  the 16-byte keys the wire carries);
- coordinator: one child process loads every department's CLKs and match-key
  digests and calls ``link_parties`` as the coordinator does for an epoch
  (the default schema: XOR-folded CLKs, threshold 0.7, floor 0.6, match-keys),
  with LSH blocking (default 64 bands
  of 18 bits) under a fixed key for a reproducible run, forced on every pair
  (``min_blocked_pairs=0``; by default the engine blocks pairs of 1e10 record
  pairs and up, i.e. from two departments of 100,000): an EM quality estimate
  on a sample, blocked Dice candidates, match-keys first, greedy clustering;
- EM quality estimate: the engine scores its sample of the smaller side's
  records (``QUALITY_SAMPLE_ROWS``, 1,000) against every record of the other
  side down to the floor, unblocked, with a kernel that keeps only each
  sampled record's 32 best as it goes (``dice.best_pairs``; about 3.7% of all pairs
  score >= 0.5, so the sample has some 37 million candidates per pair at
  N = 1M, nearly all chance pairs). In its own process, the benchmark fits the
  first pair's estimate on every candidate and checks it equals the engine's;
  the estimate is reported at 0.7, the threshold the links are cut at (what
  ``LinkResult.quality`` holds);
- ``link_parties`` with blocking method ``"none"`` (every pair compared) also
  runs on the same records when that is small enough (up to 7e10 pairs, i.e.
  N = 100,000), so blocking's cost in quality and time can be read off
  directly; at 1M it is not run, and the output says why.

Memory: the peak resident set (``ru_maxrss``) of each child process, which
starts with nothing but its imports, so the node's and the coordinator's peaks
are what each machine of a federation would need. Inside the coordinator each
stage's own peak is read from ``VmHWM`` after resetting it through
``/proc/self/clear_refs``. tracemalloc is not used: it slows
allocation-heavy code several times over.

Quality: precision, recall and F1 of the linked record pairs of each
department pair (clusters expanded into pairs, as ``LinkResult.pairs`` does)
against the ground truth (two records are a true pair when the same person is
behind both), beside the EM estimate.

Household placement: a synthetic population (``generate_population``,
``--household-people``, default 20,000, seed 1); the four department files are
loaded with ``load_department_file``, keyed household keys computed with
``household_keys`` under one secret as the node computes them (a record
without a postcode borrowing its file's unambiguous one within its local
authority), and linked with ``link_parties`` on the default schema as an epoch
links them. Each child in education is placed with the health records of
adults (18 or over by the record's own date of birth) that a household hop
reaches: first by each record's own key ("own key"), then by the keys the
coordinator resolves through person links (``resolve_households``, summing one
raw key's records per household as ``household_groups`` does: "resolved").
Truth: the people of the child's ``household_id`` aged 18 or over who have a
health record. Each miss is put down to its first cause (a record moved,
without a postcode, formatted in a way the normaliser misses, left out of its
household's sum, ...), and every record's key is checked against its person's
true one. ``--household-only`` runs just this part, in seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import itertools
import multiprocessing
import os
import platform
import re
import resource
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pandas as pd

from headcount import synth
from headcount.departments import DEPARTMENTS
from headcount.linkage import engine
from headcount.linkage.address import household_keys
from headcount.linkage.blocking import (
    DEFAULT_BANDS,
    DEFAULT_BITS_PER_BAND,
    blocking_stats,
)
from headcount.linkage.clk import encode_clks
from headcount.linkage.dice import score_pairs
from headcount.linkage.engine import (
    QUALITY_SAMPLE_ROWS,
    QUALITY_TOP_CANDIDATES,
    link_parties,
    sample_rows,
)
from headcount.linkage.households import household_groups, resolve_households
from headcount.linkage.matchkeys import KEY_BYTES, match_keys
from headcount.linkage.normalise import normalise_postcode
from headcount.linkage.quality import QualityEstimate, estimate_link_quality
from headcount.linkage.schema import DEFAULT_LINKAGE_SCHEMA, BlockingSpec
from headcount.synth import population as synth_population
from headcount.synth import records as synth_records
from party_node.data import (
    LINK_FILE_COLUMNS,
    load_department_file,
    load_identity_file,
)

# The federation's default schema: XOR-folded CLKs linked at 0.7 (docs/attacks.md).
THRESHOLD = DEFAULT_LINKAGE_SCHEMA.threshold
FLOOR = DEFAULT_LINKAGE_SCHEMA.candidate_floor
COVERAGE = 0.97  # share of the population each department holds (health's, in synth)
LINKAGE_SECRET = bytes(range(32))
BLOCKING_KEY = bytes(range(32, 64))
SEED = 1
# link_parties without blocking compares every pair: run it up to 100,000
# records a department (6e10 pairs, under a minute), not at 1M (6e12 pairs).
UNBLOCKED_MAX_PAIRS = 7e10
ADULT_AGE = 18
# The coordinator's stages, in the order they run.
INPUTS = "inputs (CLKs, match-key digests)"
LINK_STAGE = "link_parties (EM sample, blocked Dice, match-keys, clustering)"
STAGES = (INPUTS, LINK_STAGE)
# Measured once per run in its own process, not counted in the totals: the
# EM fit on every candidate of the sample, which the engine trims.
EM_UNTRIMMED = "EM on all sample candidates (1 pair)"
PAIRS = list(itertools.combinations(sorted(DEPARTMENTS), 2))
MIB = 2**20
# numba's stubs leave out its runtime settings.
numba_runtime: Any = numba


# --- child processes -------------------------------------------------------------
#
# Each stage runs in a fresh spawned process, so ru_maxrss is that stage's own
# peak and not the parent's data or an earlier stage's garbage.


def run_child(fn: Callable[..., dict[str, Any]], *args: object) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


class Stages:
    """Wall time and peak resident set of named stages (repeats add up / take the max).

    ``peak`` is the process's high-water mark during the stage, so it includes
    whatever earlier stages still hold (the key lists, the edges of pairs
    already done); ``added`` is that peak less the resident set at the stage's
    start, the stage's own working memory.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.peak: dict[str, int] = defaultdict(int)
        self.added: dict[str, int] = defaultdict(int)
        # Writing "5" to clear_refs resets VmHWM to the current RSS (Linux >= 4.0),
        # which gives each stage its own high-water mark within one process.
        try:
            Path("/proc/self/clear_refs").write_text("5", encoding="ascii")
            self.resettable = True
        except OSError:
            self.resettable = False

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.resettable:
            Path("/proc/self/clear_refs").write_text("5", encoding="ascii")
        resident = _status_kib("VmRSS") * 1024
        start = time.perf_counter()
        yield
        self.seconds[name] += time.perf_counter() - start
        high = _status_kib("VmHWM") * 1024 if self.resettable else peak_rss_bytes()
        self.peak[name] = max(self.peak[name], high)
        self.added[name] = max(self.added[name], high - resident)


def make_departments(records: int, out: str) -> dict[str, Any]:
    """Write N-record department CSVs and each row's person index (see the module docstring)."""
    start = time.perf_counter()
    people = round(records / COVERAGE)
    household_rng, person_rng, *dept_rngs = (
        np.random.default_rng(s) for s in np.random.SeedSequence(SEED).spawn(2 + len(DEPARTMENTS))
    )
    kind, n_adults, size = synth_population._draw_households(people, household_rng)
    pools = synth_population._build_pools(
        SEED, max(20, len(size) // synth_population._HOUSEHOLDS_PER_STREET)
    )
    pop = synth_population._build_population(kind, n_adults, size, person_rng, pools)
    for dept, rng in zip(DEPARTMENTS, dept_rngs, strict=True):
        # A random N people in a random row order: row order must say nothing
        # about the person, or index tie-breaks in clustering would favour truth.
        idx = rng.choice(people, size=records, replace=False)
        recorded = synth_records._recorded_identity(dept, idx, rng, pop, pools)
        frame = pd.DataFrame({c: recorded[c] for c in LINK_FILE_COLUMNS if c != "record_id"})
        frame.insert(0, "record_id", [f"{dept[:3].upper()}-{i:07d}" for i in range(records)])
        frame.to_csv(Path(out) / f"{dept}.csv", index=False, lineterminator="\n")
        np.save(Path(out) / f"{dept}.person.npy", idx.astype(np.int64))
    return {"seconds": time.perf_counter() - start, "people": people, "households": len(size)}


def node_stage(dept: str, out: str) -> dict[str, Any]:
    """One department's node: read and normalise, encode CLKs, compute match-keys."""
    base = Path(out) / dept
    rss_start = _status_kib("VmRSS") * 1024
    start = time.perf_counter()
    _, identities = load_identity_file(base.with_suffix(".csv"))
    loaded = time.perf_counter()
    clks = encode_clks(identities, LINKAGE_SECRET, DEFAULT_LINKAGE_SCHEMA.clk)
    encoded = time.perf_counter()
    keys = match_keys(identities, LINKAGE_SECRET)
    keyed = time.perf_counter()
    np.save(base.with_suffix(".clks.npy"), clks)
    # What the engine takes: (levels, records) uint64 digests, as a
    # coordinator holding the received keys in an array would pass them.
    np.save(base.with_suffix(".digests.npy"), digests_from_packed(pack_keys(keys)))
    return {
        "records": len(identities),
        "load_s": loaded - start,
        "encode_s": encoded - loaded,
        "keys_s": keyed - encoded,
        "peak": peak_rss_bytes(),
        "rss_start": rss_start,
    }


def pack_keys(keys: Sequence[Sequence[bytes | None]]) -> np.ndarray:
    """(records, levels, 16) uint8, zeros for a missing key, as the wire carries them."""
    n = len(keys[0]) if keys else 0
    out = np.zeros((n, len(keys), KEY_BYTES), dtype=np.uint8)
    for level, column in enumerate(keys):
        present = [i for i, k in enumerate(column) if k is not None]
        raw = b"".join(k for k in column if k is not None)
        out[present, level] = np.frombuffer(raw, dtype=np.uint8).reshape(-1, KEY_BYTES)
    return out


def digests_from_packed(packed: np.ndarray) -> np.ndarray:
    """``keylinks.key_digests`` of (records, levels, 16) packed keys, in numpy."""
    present = packed.any(axis=2).T
    first = np.ascontiguousarray(packed[:, :, :8]).view("<u8")[:, :, 0].T.copy()
    first[present & (first == 0)] = 1
    first[~present] = 0
    return first


def coordinator_stage(out: str, mode: str, em_sample: int) -> dict[str, Any]:
    """Link the four departments with link_parties: LSH-blocked (``mode="blocked"``)
    or comparing every pair (``mode="shipped"``, blocking method "none")."""
    work = Path(out)
    rss_start = _status_kib("VmRSS") * 1024
    stages = Stages()
    # The engine's sample size; the option exists to measure its effect.
    engine.QUALITY_SAMPLE_ROWS = em_sample
    with stages.stage(INPUTS):
        clks = {d: np.load(work / f"{d}.clks.npy") for d in DEPARTMENTS}
        digests = {d: np.load(work / f"{d}.digests.npy") for d in DEPARTMENTS}
    warm_up(clks)
    blocking = BlockingSpec() if mode == "blocked" else BlockingSpec(method="none")
    with stages.stage(LINK_STAGE):
        # As the coordinator calls it for an epoch, with the default schema;
        # blocked at every size here (the engine's own switch blocks pairs of
        # 1e10 record pairs and up), under a fixed key for a reproducible run.
        result = link_parties(
            clks,
            THRESHOLD,
            floor=FLOOR,
            match_keys=digests,
            blocking=blocking,
            blocking_key=BLOCKING_KEY,
            min_blocked_pairs=0,
        )
    stats: dict[str, dict[str, Any]] = {}
    for a, b in PAIRS:
        stats[f"{a}|{b}"] = {
            "candidates": result.candidates[(a, b)],
            "key_links": result.key_links.get((a, b), 0),
            "estimate_at_threshold": estimate_dict(result.quality.get((a, b))),
        }
        if mode == "blocked":
            # Not part of the engine: how many pairs blocking scored, for the table.
            counted = blocking_stats(clks[a], clks[b], seed_key=BLOCKING_KEY)
            stats[f"{a}|{b}"]["pairs_compared"] = counted.pairs_compared
            stats[f"{a}|{b}"]["pairs_total"] = counted.pairs_total
    members, index = result.members, {p: k for k, p in enumerate(result.parties)}
    arrays: dict[str, Any] = {}
    for a, b in PAIRS:
        both = members[(members[:, index[a]] >= 0) & (members[:, index[b]] >= 0)]
        arrays[f"{a}|{b}"] = both[:, [index[a], index[b]]]
    np.savez(work / f"links-{mode}.npz", **arrays)
    return {
        "seconds": dict(stages.seconds),
        "stage_peak": dict(stages.peak),
        "stage_added": dict(stages.added),
        "pairs": stats,
        "peak": peak_rss_bytes(),
        "rss_start": rss_start,
        "clusters": len(members),
    }


def warm_up(clks: Mapping[str, np.ndarray]) -> None:
    """Compile the numba kernels (or load numba's cache) before anything is timed."""
    some = {d: c[:64] for d, c in clks.items()}
    link_parties(some, THRESHOLD, blocking_key=BLOCKING_KEY, min_blocked_pairs=0)


# The untrimmed comparison keeps every candidate of the sample: at the default
# floor (0.5) on folded CLKs, 18% of random pairs qualify, which is 900 million
# candidates for 5,000 rows against a million (it ran out of 24 GiB). It is
# therefore made on 1,000 rows at 0.6, where 0.1% of random pairs qualify.
UNTRIMMED_ROWS = 1000
UNTRIMMED_FLOOR = max(FLOOR, 0.6)


def em_untrimmed(out: str, em_sample: int) -> dict[str, Any]:
    """The first pair's EM fit on every candidate >= 0.6 of 1,000 sampled rows
    (what the engine trims to each record's best), at the threshold."""
    work = Path(out)
    a, b = PAIRS[0]
    clks = {d: np.load(work / f"{d}.clks.npy") for d in (a, b)}
    small, large = (a, b) if len(clks[a]) <= len(clks[b]) else (b, a)
    rows = sample_rows(len(clks[small]), min(em_sample, UNTRIMMED_ROWS))
    start = time.perf_counter()
    found = score_pairs(clks[small][rows], clks[large], UNTRIMMED_FLOOR)
    try:
        estimate = estimate_dict(estimate_link_quality(found, UNTRIMMED_FLOOR, threshold=THRESHOLD))
    except ValueError:
        estimate = None
    return {
        "seconds": time.perf_counter() - start,
        "candidates": len(found),
        "estimate": estimate,
        "peak": peak_rss_bytes(),
    }


def estimate_dict(q: QualityEstimate | None) -> dict[str, float] | None:
    if q is None:
        return None
    return {
        "threshold": q.threshold,
        "precision": q.est_precision,
        "recall": q.est_recall,
        "f1": q.est_f1,
    }


# --- one size ----------------------------------------------------------------------


@dataclass
class SizeRun:
    records: int
    people: int = 0
    generate_s: float = 0.0
    load_avg: float = 0.0
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    blocked: dict[str, Any] = field(default_factory=dict)
    # link_parties on the same records: its result, or why it was not run.
    shipped: dict[str, Any] | None = None
    shipped_note: str = ""
    untrimmed: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


def run_size(records: int, em_sample: int) -> SizeRun:
    run = SizeRun(records, load_avg=os.getloadavg()[0])
    with tempfile.TemporaryDirectory(prefix="hc-scale-") as tmp:
        progress(f"[{records:,}] generating four departments")
        made = run_child(make_departments, records, tmp)
        run.people, run.generate_s = made["people"], made["seconds"]
        for dept in DEPARTMENTS:
            progress(f"[{records:,}] node {dept}: load, encode, match-keys")
            run.nodes[dept] = run_child(node_stage, dept, tmp)
        progress(f"[{records:,}] coordinator: link_parties, blocked, 6 pairs")
        run.blocked = run_child(coordinator_stage, tmp, "blocked", em_sample)
        progress(f"[{records:,}] EM on every sample candidate (1 pair, own process)")
        run.untrimmed = run_child(em_untrimmed, tmp, em_sample)
        persons = {d: np.load(Path(tmp) / f"{d}.person.npy") for d in DEPARTMENTS}
        run.quality["blocked"] = score_links(Path(tmp) / "links-blocked.npz", persons)
        all_pairs = sum(run.blocked["pairs"][f"{a}|{b}"]["pairs_total"] for a, b in PAIRS)
        if all_pairs <= UNBLOCKED_MAX_PAIRS:
            progress(f"[{records:,}] coordinator: link_parties, every pair compared")
            run.shipped = run_child(coordinator_stage, tmp, "shipped", em_sample)
            run.quality["shipped"] = score_links(Path(tmp) / "links-shipped.npz", persons)
        else:
            run.shipped_note = (
                f"not run: scoring all {all_pairs:.2g} pairs takes about "
                f"{all_pairs / 2.5e9 / 60:.0f} min at the kernel's ~2.5e9 pairs/s on 2 cores"
            )
    return run


def progress(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message} ...", flush=True)


def score_links(path: Path, persons: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Precision, recall and F1 per department pair, and over all pairs ("all")."""
    out: dict[str, dict[str, float]] = {}
    totals = np.zeros(3)
    with np.load(path) as links:
        for a, b in PAIRS:
            pairs = links[f"{a}|{b}"]
            true = len(np.intersect1d(persons[a], persons[b]))
            hits = int(np.sum(persons[a][pairs[:, 0]] == persons[b][pairs[:, 1]]))
            out[f"{a}|{b}"] = prf(hits, len(pairs), true)
            totals += (hits, len(pairs), true)
    out["all"] = prf(int(totals[0]), int(totals[1]), int(totals[2]))
    return out


def prf(hits: int, predicted: int, true: int) -> dict[str, float]:
    p = hits / predicted if predicted else 1.0
    r = hits / true if true else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f, "links": predicted, "true": true}


# --- household placement -----------------------------------------------------------


@dataclass
class Placement:
    """Education children against one department's adult records a household hop reaches."""

    with_adults: int = 0  # children with at least one true co-resident adult there
    exact: int = 0
    right_no_wrong: int = 0
    without_adults_exact: int = 0
    link_precision: float = 1.0
    link_recall: float = 1.0
    causes: dict[str, int] = field(default_factory=dict)


@dataclass
class HouseholdResult:
    people: int
    children: int
    with_adults: int  # children with at least one true co-resident adult in health
    raw: Placement  # each record's own household key
    resolved: Placement  # one key per person cluster (headcount.linkage.households)
    other_departments: dict[str, tuple[Placement, Placement]]  # adults there: own key, resolved
    person_f1: float  # of the linkage run the resolution used, all pairs
    records: dict[str, int]  # "department: key: cause" -> records
    seconds: float


def household_placement(people: int, work: Path) -> HouseholdResult:
    start = time.perf_counter()
    out = work / "household"
    synth.generate_population(people, SEED, out)
    reference = synth.REFERENCE_DATE
    data = {
        dept: load_department_file(out / f"{dept}.csv", dept, reference)
        for dept in sorted(DEPARTMENTS)
    }
    # As the node calls it (party_node/node.py encode): a record without a
    # postcode may borrow one from its own file, within its local authority.
    raw = {
        dept: household_keys(
            d.addresses,
            [i.postcode for i in d.identities],
            LINKAGE_SECRET,
            d.attributes["local_authority"].astype(str).tolist(),
        )
        for dept, d in data.items()
    }
    # The person links the coordinator would hold: the engine on the four
    # files with the default schema, as an epoch runs it.
    schema = DEFAULT_LINKAGE_SCHEMA
    clks = {
        dept: encode_clks(d.identities, LINKAGE_SECRET, schema.clk, rng=np.random.default_rng(SEED))
        for dept, d in data.items()
    }
    keys = {
        dept: match_keys(d.identities, LINKAGE_SECRET, schema.match_keys)
        for dept, d in data.items()
    }
    result = link_parties(
        clks,
        THRESHOLD,
        floor=FLOOR,
        auto_threshold=schema.auto_threshold,
        match_keys=keys,
        blocking=schema.blocking,
        blocking_key=BLOCKING_KEY,
    )
    resolved = resolve_households(result.parties, result.members, raw)

    truth = pd.read_csv(out / "ground_truth.csv", dtype=str, keep_default_na=False)
    person_of = {  # department -> file row -> person (truth row)
        dept: person_rows(out / f"{dept}.csv", truth[f"{dept}_id"].tolist()) for dept in data
    }
    person_f1 = _person_f1(result, person_of)
    # Each person's key at their true address: a record whose key differs was
    # recorded at another address (a move), without a postcode, or formatted
    # in a way the normaliser does not undo.
    true_postcodes = [normalise_postcode(p) for p in truth["postcode"]]
    true_addresses = truth["address"].tolist()
    true_keys = household_keys(true_addresses, true_postcodes, LINKAGE_SECRET)
    household = truth["household_id"].tolist()
    age = truth["age"].astype(int).tolist()

    def record_cause(dept: str, row: int, p: int) -> str:
        """Why a record's own key is not its person's true key ("" when it is)."""
        d = data[dept]
        if raw[dept][row] == true_keys[p]:
            return ""
        postcode = d.identities[row].postcode
        digits = re.findall(r"[0-9]+", d.addresses[row])
        if digits != re.findall(r"[0-9]+", true_addresses[p]) or (
            postcode and postcode != true_postcodes[p]
        ):
            return "at another address (moved)"
        if not postcode:
            if raw[dept][row]:
                return "no postcode, borrowed a wrong one from its file"
            return "no postcode, none to borrow from its file"
        return "address formatted in a way the normaliser misses"

    def key_cause(dept: str, keys: Sequence[bytes], row: int, p: int) -> str:
        """Why the key used for a record is not its person's true one ("" when it is)."""
        if keys[row] == true_keys[p]:
            return ""
        own = record_cause(dept, row, p)
        if keys is raw[dept]:
            return own
        if own:
            return f"{own}, not corrected by a linked record"
        return "its own key was right, its linked records outvoted it"

    def adults_by_household(dept: str) -> dict[str, set[int]]:
        """The truth: ``dept``'s records of each household's adults."""
        adults_of: dict[str, set[int]] = defaultdict(set)
        for row, p in person_of[dept].items():
            if age[p] >= ADULT_AGE:
                adults_of[household[p]].add(row)
        return adults_of

    def place(dept: str, child_keys: Sequence[bytes], adult_keys: Sequence[bytes]) -> Placement:
        """Education's children against ``dept``'s adult records a household hop
        reaches: per key of the child, the records of household_groups (one raw
        key's records per resolved household), adults by their own recorded DOB."""
        adult_person = person_of[dept]
        adult_record = [
            recorded_age(i.date_of_birth, reference) >= ADULT_AGE for i in data[dept].identities
        ]
        adults_of = adults_by_household(dept)
        groups = household_groups(raw[dept], adult_keys)
        reached = {k: {r for r in rows if adult_record[r]} for k, rows in groups.items()}
        grouped = {r for rows in groups.values() for r in rows}

        def miss_cause(row: int, child: int, placed: set[int], true: set[int]) -> str:
            """The first reason, in this order, why a placement differs from the truth."""
            cause = key_cause("education", child_keys, row, child)
            if cause:
                return f"child's record: {cause}"
            for adult in true - placed:
                cause = key_cause(dept, adult_keys, adult, adult_person[adult])
                if cause:
                    return f"an adult's {dept} record: {cause}"
                if not adult_record[adult]:
                    return "an adult's recorded date of birth is missing or under 18"
                if adult not in grouped:
                    return "an adult's record left out: its household sums another raw key"
            for adult in placed - true:
                p = adult_person[adult]
                if household[p] != household[child] and true_keys[p] == true_keys[child]:
                    return "another household has the same address (synthetic data)"
                if age[p] < ADULT_AGE:
                    return "a co-resident under 18 is recorded as 18 or over"
                return f"another person's {dept} record was placed at this address"
            return "other"

        result = Placement()
        causes: dict[str, int] = defaultdict(int)
        hits = predicted_links = true_links = 0
        for row, child in person_of["education"].items():
            key = child_keys[row]
            placed = reached.get(key, set()) if key else set()
            true = adults_of.get(household[child], set())
            hits += len(placed & true)
            predicted_links += len(placed)
            true_links += len(true)
            if not true:
                result.without_adults_exact += not placed
                continue
            result.with_adults += 1
            result.exact += placed == true
            result.right_no_wrong += bool(placed & true) and placed <= true
            if placed != true:
                causes[miss_cause(row, child, placed, true)] += 1
        result.link_precision = hits / predicted_links if predicted_links else 1.0
        result.link_recall = hits / true_links if true_links else 1.0
        result.causes = dict(causes)
        return result

    records: dict[str, int] = defaultdict(int)  # each record's key against the truth
    for dept in ("education", "health"):
        for name, dept_keys in (("own key", raw[dept]), ("resolved", resolved[dept])):
            for row, p in person_of[dept].items():
                cause = key_cause(dept, dept_keys, row, p) or "true key"
                records[f"{dept}, {name}: {cause}"] += 1
    health_raw = place("health", raw["education"], raw["health"])
    return HouseholdResult(
        people=people,
        children=len(person_of["education"]),
        with_adults=health_raw.with_adults,
        raw=health_raw,
        resolved=place("health", resolved["education"], resolved["health"]),
        # The departments a household condition usually names (the origin of
        # "children living with an adult in custody"): their adults nearly
        # all hold a health record too, which resolution can draw on.
        other_departments={
            dept: (
                place(dept, raw["education"], raw[dept]),
                place(dept, resolved["education"], resolved[dept]),
            )
            for dept in ("justice", "immigration")
        },
        person_f1=person_f1,
        records=dict(records),
        seconds=time.perf_counter() - start,
    )


def _person_f1(result: engine.LinkResult, person_of: Mapping[str, Mapping[int, int]]) -> float:
    """F1 of all linked record pairs against the truth (same person behind both)."""
    hits = predicted = 0
    for a, i, b, j in result.pairs():
        predicted += 1
        pa, pb = person_of[a].get(i), person_of[b].get(j)
        hits += pa is not None and pa == pb
    true = 0
    for a, b in itertools.combinations(sorted(person_of), 2):
        true += len(set(person_of[a].values()) & set(person_of[b].values()))
    return prf(hits, predicted, true)["f1"]


def person_rows(path: Path, truth_ids: Sequence[str]) -> dict[int, int]:
    """File row -> ground-truth row, matching the file's record ids to the truth's."""
    ids = pd.read_csv(path, dtype=str, usecols=["record_id"])["record_id"]
    row_of = {rid: row for row, rid in enumerate(ids)}
    return {row_of[rid]: p for p, rid in enumerate(truth_ids) if rid in row_of}


def recorded_age(iso: str, reference: dt.date) -> int:
    """Whole years at ``reference``; -1 when the date is missing (never counted as adult)."""
    if not iso:
        return -1
    born = dt.date.fromisoformat(iso)
    return reference.year - born.year - ((reference.month, reference.day) < (born.month, born.day))


# --- report ------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, help="records per department, N (default 100,000)")
    parser.add_argument("--quick", action="store_true", help="N = 20,000, under a minute")
    parser.add_argument(
        "--em-sample",
        type=int,
        default=QUALITY_SAMPLE_ROWS,
        help="records of the smaller side per pair in the EM fit (link_parties's sample)",
    )
    parser.add_argument(
        "--household-people", type=int, default=20_000, help="population for household placement"
    )
    parser.add_argument(
        "--household-only",
        action="store_true",
        help="only household placement and its miss diagnosis (seconds: one small linkage run)",
    )
    args = parser.parse_args()
    records = args.records or (20_000 if args.quick else 100_000)
    started = time.perf_counter()
    print_machine()
    runs = (
        []
        if args.household_only
        else [run_size(n, args.em_sample) for n in (records // 10, records)]
    )
    with tempfile.TemporaryDirectory(prefix="hc-scale-hh-") as tmp:
        progress(f"household placement ({args.household_people:,} people)")
        households = household_placement(args.household_people, Path(tmp))
    print()
    if args.household_only:
        print_household(households)
        print(f"\nload average (1 min) at the end {os.getloadavg()[0]:.2f}")
        return
    print_stage_table(runs, args.em_sample)
    print()
    print_engine_comparison(runs)
    print()
    print_pair_table(runs[-1], args.em_sample)
    print()
    print_quality_summary(runs)
    print()
    print_household(households)
    print()
    print_goals(runs[0], runs[-1], households)
    print()
    load_end = os.getloadavg()[0]
    print(
        "load average (1 min) at the start of each size: "
        + ", ".join(f"{r.records:,}: {r.load_avg:.2f}" for r in runs)
        + f"; at the end {load_end:.2f}. Times are wall-clock on a shared machine: above ~0.3 "
        "another process was competing for the 2 cores."
    )
    print(f"total benchmark time {time.perf_counter() - started:.0f} s")


def print_machine() -> None:
    model = "unknown"
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(
        f"machine: {model}; nproc {len(os.sched_getaffinity(0))}; {memory_gib:.0f} GiB; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        f"software: Python {platform.python_version()}, numpy {np.__version__}, "
        f"numba {numba.__version__}; numba threads {numba_runtime.config.NUMBA_NUM_THREADS}"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _ratio(small: float, big: float) -> str:
    return f"{big / small:.1f}x" if small > 0 else "-"


def print_stage_table(runs: Sequence[SizeRun], em_sample: int) -> None:
    small, big = runs
    print(
        f"Scale: four departments of N records (P = N / {COVERAGE} people), 6 pairs, "
        f"threshold {THRESHOLD}, blocking {DEFAULT_BANDS} bands x {DEFAULT_BITS_PER_BAND} bits, "
        f"EM on a sample of {em_sample} records per pair at the floor {FLOOR}"
    )

    def node_sum(run: SizeRun, key: str) -> float:
        return float(sum(n[key] for n in run.nodes.values()))

    def coord(run: SizeRun, stage: str) -> float:
        return float(run.blocked["seconds"].get(stage, 0.0))

    def coord_total(run: SizeRun) -> float:
        return float(sum(run.blocked["seconds"][stage] for stage in STAGES))

    def node_total(run: SizeRun) -> float:
        return node_sum(run, "load_s") + node_sum(run, "encode_s") + node_sum(run, "keys_s")

    def pair_sum(run: SizeRun, key: str) -> int:
        return int(sum(run.blocked["pairs"][f"{a}|{b}"][key] for a, b in PAIRS))

    rows: list[list[str]] = []

    def seconds_row(label: str, get: Callable[[SizeRun], float]) -> None:
        a, b = get(small), get(big)
        rows.append([label, f"{a:.1f} s", f"{b:.1f} s", _ratio(a, b)])

    def mb_row(label: str, get: Callable[[SizeRun], float]) -> None:
        a, b = get(small) / MIB, get(big) / MIB
        rows.append([label, f"{a:,.0f} MiB", f"{b:,.0f} MiB", _ratio(a, b)])

    def peak_row(stage: str) -> None:
        # Peak during the stage, with what the stage itself added in brackets.
        cells = [
            f"{r.blocked['stage_peak'][stage] / MIB:,.0f} MiB "
            f"(+{r.blocked['stage_added'][stage] / MIB:,.0f})"
            for r in (small, big)
        ]
        ratio = _ratio(small.blocked["stage_peak"][stage], big.blocked["stage_peak"][stage])
        rows.append([f"  peak during {stage} (+ added by it)", *cells, ratio])

    def count_row(label: str, get: Callable[[SizeRun], float]) -> None:
        a, b = get(small), get(big)
        rows.append([label, f"{a:,.0f}", f"{b:,.0f}", _ratio(a, b)])

    seconds_row("data generation (not the engine)", lambda r: r.generate_s)
    seconds_row("nodes: load + normalise (4 departments)", lambda r: node_sum(r, "load_s"))
    seconds_row("nodes: encode_clks", lambda r: node_sum(r, "encode_s"))
    seconds_row("nodes: match_keys", lambda r: node_sum(r, "keys_s"))
    seconds_row("nodes total (one after another)", node_total)
    mb_row("node peak RSS (largest of 4)", lambda r: max(n["peak"] for n in r.nodes.values()))
    for stage in STAGES:
        seconds_row(f"coordinator: {stage}", functools.partial(coord, stage=stage))
    seconds_row("coordinator total (inputs + link_parties)", coord_total)
    seconds_row(f"  beside it: {EM_UNTRIMMED}", lambda r: float(r.untrimmed["seconds"]))
    seconds_row(
        "end to end (nodes one after another + coordinator)",
        lambda r: node_total(r) + coord_total(r),
    )
    mb_row("coordinator peak RSS", lambda r: r.blocked["peak"])
    for stage in STAGES:
        peak_row(stage)
    mb_row(f"  {EM_UNTRIMMED}: peak RSS, own process", lambda r: r.untrimmed["peak"])
    mb_row("  RSS of an idle child process (imports)", lambda r: r.blocked["rss_start"])
    count_row(f"CLK candidates >= {THRESHOLD} (6 pairs)", lambda r: pair_sum(r, "candidates"))
    count_row("match-key links (6 pairs)", lambda r: pair_sum(r, "key_links"))
    count_row("pairs scored by blocking (6 pairs)", lambda r: pair_sum(r, "pairs_compared"))
    count_row("all pairs (6 pairs)", lambda r: pair_sum(r, "pairs_total"))
    count_row("clusters", lambda r: r.blocked["clusters"])
    count_row(f"{EM_UNTRIMMED}: candidates >= {FLOOR}", lambda r: r.untrimmed["candidates"])
    header = ["stage", f"N/10 = {small.records:,}", f"N = {big.records:,}", "ratio (10x = linear)"]
    _table(header, rows)
    first = f"{PAIRS[0][0]}|{PAIRS[0][1]}"
    same = all(
        r.untrimmed["estimate"] == r.blocked["pairs"][first]["estimate_at_threshold"] for r in runs
    )
    print(
        f"The engine's EM fit (each sampled record's {QUALITY_TOP_CANDIDATES} best candidates) "
        + ("gave the same estimate as" if same else "gave a DIFFERENT estimate from")
        + f" the fit on every candidate, for {PAIRS[0][0]} x {PAIRS[0][1]} at both sizes."
    )


def print_engine_comparison(runs: Sequence[SizeRun]) -> None:
    print(
        "link_parties blocked (LSH, the default above 1e10 record pairs) and comparing every "
        "pair, on the same records; times exclude loading the inputs"
    )
    rows = []
    notes = []
    for run in runs:
        results = {"link_parties, LSH blocking": (run.blocked, "blocked")}
        if run.shipped is not None:
            results['link_parties, blocking method "none"'] = (run.shipped, "shipped")
        else:
            notes.append(f"  link_parties at {run.records:,}: {run.shipped_note}")
        for call, (result, mode) in results.items():
            seconds = result["seconds"][LINK_STAGE]
            estimates = [result["pairs"][f"{a}|{b}"]["estimate_at_threshold"] for a, b in PAIRS]
            f1s = sorted(e["f1"] for e in estimates if e)
            em = "-" if not f1s else f"{f1s[0]:.3f}-{f1s[-1]:.3f}"
            rows.append(
                [
                    f"{run.records:,}",
                    call,
                    f"{seconds:.1f} s",
                    f"{result['peak'] / MIB:,.0f} MiB",
                    f"{run.quality[mode]['all']['f1']:.4f}",
                    em,
                ]
            )
    _table(["N", "engine", "time", "peak RSS", "F1", f"EM est. F1 at {THRESHOLD}"], rows)
    for note in notes:
        print(note)


def print_pair_table(run: SizeRun, em_sample: int) -> None:
    print(
        f"Quality per department pair at N = {run.records:,} (link_parties, blocked; truth: "
        f"same person behind both records; EM estimate from {em_sample} sampled records at "
        f"the threshold {THRESHOLD} the links are cut at, as LinkResult.quality reports it)"
    )
    rows = []
    quality = run.quality["blocked"]
    for a, b in PAIRS:
        key = f"{a}|{b}"
        q, s = quality[key], run.blocked["pairs"][key]
        est = s["estimate_at_threshold"]
        rows.append(
            [
                f"{a} x {b}",
                f"{q['true']:,.0f}",
                f"{s['key_links']:,}",
                f"{s['candidates']:,}",
                f"{q['links']:,.0f}",
                f"{q['precision']:.4f}",
                f"{q['recall']:.4f}",
                f"{q['f1']:.4f}",
                "-"
                if est is None
                else f"{est['precision']:.3f} / {est['recall']:.3f} / {est['f1']:.3f}",
            ]
        )
    q = quality["all"]
    rows.append(
        [
            "all pairs",
            f"{q['true']:,.0f}",
            "",
            "",
            f"{q['links']:,.0f}",
            f"{q['precision']:.4f}",
            f"{q['recall']:.4f}",
            f"{q['f1']:.4f}",
            "",
        ]
    )
    header = [
        "pair",
        "true pairs",
        "key links",
        f"CLK >= {THRESHOLD}",
        "links",
        "precision",
        "recall",
        "F1",
        f"EM est. at {THRESHOLD}: P / R / F1",
    ]
    _table(header, rows)


def print_quality_summary(runs: Sequence[SizeRun]) -> None:
    print("Person links over all 6 pairs")
    rows = []
    for run in runs:
        for mode, label in (("blocked", "LSH blocking"), ("shipped", "every pair")):
            if mode not in run.quality:
                continue
            q = run.quality[mode]
            worst = min(q[f"{a}|{b}"]["f1"] for a, b in PAIRS)
            rows.append(
                [
                    f"{run.records:,}",
                    label,
                    f"{q['all']['precision']:.4f}",
                    f"{q['all']['recall']:.4f}",
                    f"{q['all']['f1']:.4f}",
                    f"{worst:.4f}",
                ]
            )
    _table(["N", "engine", "precision", "recall", "F1", "worst pair F1"], rows)


def print_household(h: HouseholdResult) -> None:
    print(
        f"Household placement: synthetic population of {h.people:,} (seed {SEED}); "
        f"{h.children:,} children in education, {h.with_adults:,} of them with at least one "
        'co-resident adult holding a health record. "own key": each record\'s household '
        'key as its node sent it; "resolved": one key per person, chosen by the '
        f"coordinator from the person's linked records (person-link F1 {h.person_f1:.4f})"
    )

    def share(n: int) -> str:
        return f"{n:,} ({n / h.with_adults:.1%})"

    rows = [
        ["placed with exactly the right adults", share(h.raw.exact), share(h.resolved.exact)],
        [
            "at least one right adult and no wrong one",
            share(h.raw.right_no_wrong),
            share(h.resolved.right_no_wrong),
        ],
        [
            "child-adult links: precision / recall",
            f"{h.raw.link_precision:.4f} / {h.raw.link_recall:.4f}",
            f"{h.resolved.link_precision:.4f} / {h.resolved.link_recall:.4f}",
        ],
    ]
    _table(["measure (children)", "own key", "resolved"], rows)
    for name, placement in (("own key", h.raw), ("resolved", h.resolved)):
        missed = h.with_adults - placement.exact
        print(f"{name}: why the {missed:,} children not placed exactly were missed (first cause):")
        for cause, n in sorted(placement.causes.items(), key=lambda kv: -kv[1]):
            print(f"  {n:5,}  {cause}")
    print("each record's household key against its person's true one:")
    for cause, n in sorted(h.records.items()):
        print(f"  {n:6,}  {cause}")
    print(
        "the same children against the adults of the departments a household condition "
        "usually names (most of whose adults also hold a health record):"
    )
    rows = []
    for dept, (own, res) in h.other_departments.items():
        n = res.with_adults

        def pct(k: int, n: int = n) -> str:
            return f"{k:,} ({k / n:.1%})" if n else "-"

        rows.append([dept, f"{n:,}", pct(own.exact), pct(res.exact), pct(res.right_no_wrong)])
    _table(
        [
            "adults in",
            "children with one there",
            "exactly right, own key",
            "exactly right, resolved",
            ">= 1 right, 0 wrong, resolved",
        ],
        rows,
    )
    no_adult = h.children - h.with_adults
    print(
        f"({no_adult:,} children have no co-resident adult with a health record; "
        f"{h.raw.without_adults_exact:,} (own key) and {h.resolved.without_adults_exact:,} "
        f"(resolved) of them correctly get none. {h.seconds:.1f} s)"
    )


def node_seconds(node: Mapping[str, Any]) -> float:
    return float(node["load_s"] + node["encode_s"] + node["keys_s"])


def print_goals(small: SizeRun, big: SizeRun, h: HouseholdResult) -> None:
    print("Goals (from the linkage-engine issue)")
    coordinator_s = sum(big.blocked["seconds"][stage] for stage in STAGES)
    nodes_serial = sum(node_seconds(n) for n in big.nodes.values())
    nodes_parallel = max(node_seconds(n) for n in big.nodes.values())
    node_peak = max(n["peak"] for n in big.nodes.values())
    coordinator_ratio = coordinator_s / sum(small.blocked["seconds"][stage] for stage in STAGES)
    nodes_ratio = nodes_serial / sum(node_seconds(n) for n in small.nodes.values())
    q = big.quality["blocked"]
    worst = min(q[f"{a}|{b}"]["f1"] for a, b in PAIRS)
    placed = h.resolved.exact / h.with_adults
    justice = h.other_departments["justice"][1]
    at = "" if big.records == 1_000_000 else f" (goal at 1M; measured at N = {big.records:,})"

    def met(ok: bool) -> str:
        return "yes" if ok else "no"

    rows = [
        [
            f"4 x N linked in < 10 min{at}",
            f"coordinator {coordinator_s / 60:.1f} min + nodes {nodes_parallel / 60:.1f} min in "
            f"parallel ({nodes_serial / 60:.1f} min one after another)",
            met(coordinator_s + nodes_parallel < 600)
            + (
                ", not if one machine also runs the 4 nodes" * (coordinator_s + nodes_serial >= 600)
            ),
        ],
        [
            f"peak memory < 4 GB{at}",
            f"coordinator {big.blocked['peak'] / 1e9:.2f} GB, "
            f"largest node {node_peak / 1e9:.2f} GB",
            met(max(big.blocked["peak"], node_peak) < 4e9),
        ],
        [
            "cost close to linear in size",
            f"10x the records: coordinator {coordinator_ratio:.1f}x, nodes {nodes_ratio:.1f}x",
            # "Close to linear": within 30% of 10x.
            met(coordinator_ratio <= 13 and nodes_ratio <= 13),
        ],
        [
            "person-link F1 >= 0.99, default settings",
            f"all pairs {q['all']['f1']:.4f}, worst pair {worst:.4f}",
            met(worst >= 0.99),
        ],
        [
            ">= 95% of children with the right adults",
            f"adults in health: {placed:.1%} exactly, "
            f"{h.resolved.right_no_wrong / h.with_adults:.1%} >= 1 right, 0 wrong; "
            f"in justice: {justice.exact / max(1, justice.with_adults):.1%} exactly",
            f"{met(placed >= 0.95)} exactly (health), "
            f"{met(h.resolved.right_no_wrong / h.with_adults >= 0.95)} >= 1 right, 0 wrong",
        ],
    ]
    _table(["goal", "measured", "met"], rows)


if __name__ == "__main__":
    main()

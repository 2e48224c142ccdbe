"""``headcount link-files``: the federation's linkage engine on local files.

Each file is encoded as its own party under one fresh random secret, then
linked by the same ``link_parties`` the coordinator runs, so anyone can measure
match quality on their own labelled data with the federation's code path.
Nothing leaves the machine; the secret is discarded after the run.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from headcount.errors import InvalidRequest
from headcount.linkage.clk import encode_clks
from headcount.linkage.engine import LinkResult, link_parties, pair_score
from headcount.linkage.executor import dask_address, executor_from_spec
from headcount.linkage.matchkeys import match_keys
from headcount.linkage.schema import DEFAULT_LINKAGE_SCHEMA, LinkageSchema
from party_node.data import load_identity_file


@dataclass(frozen=True, slots=True)
class LinkFilesSummary:
    records: dict[str, int]  # party (file stem) -> records
    pairs_written: int
    clusters: int
    out: Path
    result: LinkResult  # per pair: thresholds, estimated quality, match-key links


def _party_names(paths: Sequence[Path]) -> list[str]:
    names = [p.stem for p in paths]
    if len(set(names)) != len(names):
        # Two files called data.csv in different folders: number them.
        names = [f"{n}-{i + 1}" for i, n in enumerate(names)]
    return names


def link_files(
    paths: Sequence[Path],
    out: Path,
    *,
    threshold: float | None = None,
    schema: LinkageSchema = DEFAULT_LINKAGE_SCHEMA,
    progress: Callable[[str], None] = lambda _: None,
    executor: str = "local",
) -> LinkFilesSummary:
    """Link ``paths`` (two or more CSV files) and write the linked pairs to ``out``.

    Two files: columns ``id_a,id_b,score``. More: ``party_a,id_a,party_b,id_b,score``,
    one row per linked pair. ``executor`` is where the comparisons run:
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
    names = _party_names(paths)
    loaded = {}
    for name, path in zip(names, paths, strict=True):
        progress(f"reading {path}")
        loaded[name] = load_identity_file(path)
    secret = os.urandom(32)
    clks = {}
    keys = {}
    for name, (_, identities) in loaded.items():
        progress(f"encoding {name} ({len(identities)} records)")
        clks[name] = encode_clks(identities, secret, schema.clk)
        keys[name] = match_keys(identities, secret, schema.match_keys)
    progress(f"comparing and clustering ({executor})")
    with closing(executor_from_spec(executor)) as runner:
        # The same settings the coordinator uses for an epoch.
        result: LinkResult = link_parties(
            clks,
            threshold or schema.threshold,
            executor=runner,
            floor=schema.candidate_floor,
            auto_threshold=schema.auto_threshold and threshold is None,
            match_keys=keys,
            blocking=schema.blocking,
        )
    rows = result.pairs()
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
    )

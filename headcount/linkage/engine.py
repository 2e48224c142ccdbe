"""The linkage engine: every party's CLKs in, clusters out.

One function, ``link_parties``, is the code path both the coordinator (on
encodings streamed from nodes) and ``headcount link-files`` (on local files)
run, so match quality measured locally is the federation's match quality.
Where the comparisons run is the executor's business
(`headcount.linkage.executor`): in this process by default, or on a Dask
cluster; the blocks are merged back so the result is the same either way.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from headcount.linkage.dice import Candidates, dice_reference
from headcount.linkage.executor import (
    CompareTask,
    Executor,
    LocalExecutor,
    merge_candidates,
    plan_compare,
)
from headcount.linkage.solve import Edge, cluster_records

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LinkResult:
    """Clusters of at most one record per party, as {party: row index}."""

    clusters: tuple[dict[str, int], ...]
    candidates: dict[tuple[str, str], int]  # party pair -> pairs scored above threshold
    links: dict[tuple[str, str], int]  # party pair -> clusters holding both

    def pairs(self) -> list[tuple[str, int, str, int]]:
        """Every linked pair of records (left party < right party), deterministic order.

        A cluster of three parties yields three pairs, including the one whose
        records were joined through the third rather than scored directly.
        """
        out = []
        for c in self.clusters:
            for a, b in itertools.combinations(sorted(c), 2):
                out.append((a, c[a], b, c[b]))
        return sorted(out)


def pair_score(clks: Mapping[str, np.ndarray], a: str, i: int, b: str, j: int) -> float:
    """Dice coefficient of record ``i`` of ``a`` and record ``j`` of ``b``."""
    return dice_reference(clks[a][i].tobytes(), clks[b][j].tobytes())


def link_parties(
    clks: Mapping[str, np.ndarray], threshold: float, *, executor: Executor | None = None
) -> LinkResult:
    """Link every pair of parties at Dice >= ``threshold`` and cluster greedily.

    ``clks`` maps party name to a uint8 (records, filter_bytes) array; parties
    are compared in sorted-name order so the result does not depend on the
    mapping's order. The comparisons run on ``executor`` (default: a
    `LocalExecutor`, in this process); every executor gives the same result.
    The caller keeps ownership of ``executor`` and closes it.

    Raises:
        ValueError: mismatched widths, arrays that are not 2-D uint8, or a
            threshold outside (0, 1].
        PeerUnavailable: a remote executor lost its cluster.
    """
    parties = sorted(clks)
    pairs = list(itertools.combinations(parties, 2))
    runner = LocalExecutor() if executor is None else executor
    # Every pair's tasks go to the executor in one call, so a cluster can work
    # on several pairs at once instead of idling at each pair's last block.
    tasks: list[CompareTask] = []
    spans: list[slice] = []
    for a, b in pairs:
        planned = plan_compare(clks[a], clks[b], threshold, runner.block_rows)
        spans.append(slice(len(tasks), len(tasks) + len(planned)))
        tasks.extend(planned)
    results = runner.map_compare(tasks)
    if len(results) != len(tasks):
        raise RuntimeError(f"executor returned {len(results)} results for {len(tasks)} tasks")
    edges: list[Edge] = []
    candidates: dict[tuple[str, str], int] = {}
    for (a, b), span in zip(pairs, spans, strict=True):
        cands: Candidates = merge_candidates(results[span])
        candidates[(a, b)] = len(cands)
        edges.extend(
            Edge(a, int(i), b, int(j), float(s))
            for i, j, s in zip(cands.left, cands.right, cands.score, strict=True)
        )
        log.info("%s x %s: %d candidate pairs", a, b, len(cands))
    clusters = tuple(cluster_records(edges))
    links = {(a, b): sum(1 for c in clusters if a in c and b in c) for a, b in pairs}
    return LinkResult(clusters, candidates, links)

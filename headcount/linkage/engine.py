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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from headcount.linkage.dice import Candidates, dice_reference
from headcount.linkage.executor import (
    CompareTask,
    Executor,
    LocalExecutor,
    merge_candidates,
    plan_compare,
)
from headcount.linkage.matchkeys import match_by_keys
from headcount.linkage.quality import QualityEstimate, estimate_link_quality
from headcount.linkage.solve import Edge, cluster_records

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LinkResult:
    """Clusters of at most one record per party, as {party: row index}."""

    clusters: tuple[dict[str, int], ...]
    candidates: dict[tuple[str, str], int]  # party pair -> pairs scored above threshold
    links: dict[tuple[str, str], int]  # party pair -> clusters holding both
    # Per party pair: the threshold used, the quality estimated from the score
    # distribution (None when there were too few candidates to fit), and the
    # links the match-keys found before any CLK was compared.
    thresholds: dict[tuple[str, str], float] = field(default_factory=dict)
    quality: dict[tuple[str, str], QualityEstimate | None] = field(default_factory=dict)
    key_links: dict[tuple[str, str], int] = field(default_factory=dict)

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


QUALITY_SAMPLE_ROWS = 1000  # left records per pair scored down to the floor for the estimate


def _sample_rows(n: int) -> np.ndarray:
    """A fixed, spread-out sample of row indices (all rows when there are few)."""
    if n <= QUALITY_SAMPLE_ROWS:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, QUALITY_SAMPLE_ROWS, replace=False))


def _compare_all(
    runner: Executor,
    jobs: Sequence[tuple[np.ndarray, np.ndarray]],
    thresholds: float | Sequence[float],
) -> list[Candidates]:
    """Score each (left, right) job at its threshold in one executor call, so a
    cluster can work on several pairs at once."""
    cuts = [thresholds] * len(jobs) if isinstance(thresholds, float) else list(thresholds)
    tasks: list[CompareTask] = []
    spans: list[slice] = []
    for (left, right), cut in zip(jobs, cuts, strict=True):
        planned = plan_compare(left, right, cut, runner.block_rows)
        spans.append(slice(len(tasks), len(tasks) + len(planned)))
        tasks.extend(planned)
    results = runner.map_compare(tasks)
    if len(results) != len(tasks):
        raise RuntimeError(f"executor returned {len(results)} results for {len(tasks)} tasks")
    return [merge_candidates(results[span]) for span in spans]


def pair_score(clks: Mapping[str, np.ndarray], a: str, i: int, b: str, j: int) -> float:
    """Dice coefficient of record ``i`` of ``a`` and record ``j`` of ``b``."""
    return dice_reference(clks[a][i].tobytes(), clks[b][j].tobytes())


def link_parties(
    clks: Mapping[str, np.ndarray],
    threshold: float,
    *,
    executor: Executor | None = None,
    floor: float | None = None,
    auto_threshold: bool = False,
    match_keys: Mapping[str, Sequence[Sequence[bytes | None]]] | None = None,
) -> LinkResult:
    """Link every pair of parties at Dice >= ``threshold`` and cluster greedily.

    ``clks`` maps party name to a uint8 (records, filter_bytes) array; parties
    are compared in sorted-name order so the result does not depend on the
    mapping's order. The comparisons run on ``executor`` (default: a
    `LocalExecutor`, in this process); every executor gives the same result.
    The caller keeps ownership of ``executor`` and closes it.

    With ``floor`` (< threshold), candidates down to the floor are scored and
    the quality of each pair's links is estimated from their score
    distribution (`headcount.linkage.quality`); with ``auto_threshold`` the
    threshold that estimate picks is used (never below the floor). With
    ``match_keys`` (per party, per level, per record), exact keyed matches are
    a first pass: their links are taken before any CLK link.

    Raises:
        ValueError: mismatched widths, arrays that are not 2-D uint8, or a
            threshold outside (0, 1].
        PeerUnavailable: a remote executor lost its cluster.
    """
    parties = sorted(clks)
    pairs = list(itertools.combinations(parties, 2))
    runner = LocalExecutor() if executor is None else executor
    quality: dict[tuple[str, str], QualityEstimate | None] = {}
    thresholds: dict[tuple[str, str], float] = {pair: threshold for pair in pairs}
    if floor is not None:
        # The estimate needs scores well below the threshold, and a pair of
        # departments has far more of those than links (a few percent of all
        # pairs score >= 0.5). Scoring a fixed sample of left records against
        # every right record keeps that memory bounded whatever the sizes,
        # and still sees each sampled record's link and its runner-up.
        floor = min(floor, threshold)
        # Sample the smaller side: a small department is then seen whole.
        jobs = []
        for a, b in pairs:
            small, large = (a, b) if len(clks[a]) <= len(clks[b]) else (b, a)
            jobs.append((clks[small][_sample_rows(len(clks[small]))], clks[large]))
        sampled = _compare_all(runner, jobs, floor)
        for (a, b), cands in zip(pairs, sampled, strict=True):
            estimate: QualityEstimate | None = None
            try:
                estimate = estimate_link_quality(cands, floor)
            except ValueError as exc:
                # Too few candidates to fit two components: keep the fixed threshold.
                log.info("%s x %s: no quality estimate (%s)", a, b, exc)
            quality[(a, b)] = estimate
            if estimate is not None and auto_threshold:
                thresholds[(a, b)] = max(floor, estimate.threshold)
    scored = _compare_all(
        runner, [(clks[a], clks[b]) for a, b in pairs], [thresholds[p] for p in pairs]
    )
    edges: list[Edge] = []
    candidates: dict[tuple[str, str], int] = {}
    key_links: dict[tuple[str, str], int] = {}
    for (a, b), cands in zip(pairs, scored, strict=True):
        candidates[(a, b)] = len(cands)
        if match_keys is not None:
            keyed = match_by_keys(match_keys[a], match_keys[b])
            key_links[(a, b)] = len(keyed)
            # Exact keyed matches go first: score 1.0 puts them ahead of
            # every CLK edge in the greedy clustering.
            edges.extend(Edge(a, i, b, j, 1.0) for i, j, _ in keyed)
        edges.extend(
            Edge(a, int(i), b, int(j), float(s))
            for i, j, s in zip(cands.left, cands.right, cands.score, strict=True)
        )
        log.info("%s x %s: %d candidate pairs at %.3f", a, b, len(cands), thresholds[(a, b)])
    clusters = tuple(cluster_records(edges))
    links = {(a, b): sum(1 for c in clusters if a in c and b in c) for a, b in pairs}
    return LinkResult(clusters, candidates, links, thresholds, quality, key_links)

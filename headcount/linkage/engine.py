"""The linkage engine: every party's CLKs in, clusters out.

One function, ``link_parties``, is the code path both the coordinator (on
encodings streamed from nodes) and ``headcount link-files`` (on local files)
run, so match quality measured locally is the federation's match quality.
Where the comparisons run is the executor's business
(`headcount.linkage.executor`): in this process by default, or on a Dask
cluster; the blocks are merged back so the result is the same either way.
Pairs of large parties are blocked (keyed LSH, `headcount.linkage.blocking`)
and scored on the executor too, all together, split by ranges of bands on a
cluster; the quality estimate's sample is scored in this process.

Everything that grows with the number of records stays in numpy arrays:
candidates, match-key digests and their joins, the edge list and the
union-find that clusters it. Memory is a few tens of bytes per record and per
candidate pair; the clusters are turned into dicts only when asked for.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from headcount.linkage.blocking import MIN_SEED_KEY_BYTES
from headcount.linkage.dice import Candidates, best_pairs, dice_reference, row_dice
from headcount.linkage.executor import (
    BlockedJob,
    CompareTask,
    Executor,
    LocalExecutor,
    merge_candidates,
    plan_compare,
)
from headcount.linkage.keylinks import (
    KeyLinks,
    MatchKeyLevels,
    index_digests,
    key_digests,
    link_indexed,
)
from headcount.linkage.output_quality import (
    OutputFit,
    estimate_from_fit,
    estimate_written_quality,
    fit_output,
    link_posterior,
    pooled_match_shape,
)
from headcount.linkage.quality import QualityEstimate
from headcount.linkage.schema import BlockingSpec
from headcount.linkage.solve import EdgeBlock, cluster_parties

log = logging.getLogger(__name__)

__all__ = [
    "AUTO_BLOCKING_PAIRS",
    "QUALITY_SAMPLE_ROWS",
    "QUALITY_TOP_CANDIDATES",
    "LinkResult",
    "link_parties",
    "pair_score",
]

# Smaller-side records per pair scored down to the floor for the estimate:
# 5,000 keep its sampling error near 0.2 of a point of recall (at 1,000 it
# was 0.5), for about 2 s a pair against a million records (2 cores).
QUALITY_SAMPLE_ROWS = 5000
# The automatic threshold needs the smaller department of a pair to hold at
# least this many records; below it the schema's threshold is used.
AUTO_THRESHOLD_MIN_RECORDS = 1000
# Candidates >= the floor kept per sampled record for the estimate, best first.
# Some 3.7% of all pairs score >= 0.5, nearly all of them chance pairs: at a
# million records a sampled record has ~37,000, which would cost gigabytes per
# pair; its link and runner-up are among its first few. The scale benchmark
# checks the estimate is the same as from every candidate. The kernel keeps
# only these (`dice.best_pairs`), so the sample's cost is its comparisons,
# QUALITY_SAMPLE_ROWS x the other side: linear in the records.
QUALITY_TOP_CANDIDATES = 32
# Pairs of parties with at least this many record pairs are blocked when the
# blocking method is "lsh": below it, comparing every pair takes a few seconds
# at most and loses nothing (at 1.4e9 pairs, full comparison took 0.4 s and
# blocking 0.6 s; at 1.3e10, 7.9 s and 2.9 s: docs/benchmarks.md).
AUTO_BLOCKING_PAIRS = 10**10

MatchKeys = MatchKeyLevels | np.ndarray  # per party: levels x records, lists or digests


@dataclass(frozen=True, slots=True, eq=False)
class LinkResult:
    """Clusters of at most one record per party.

    Attributes:
        parties: party names, sorted.
        members: ``int64`` array ``(clusters, len(parties))``: per cluster, the
            row index of its record in each party, -1 where it has none;
            clusters ordered by their first record.
        candidates: per party pair, the pairs scored at or above its threshold.
        links: per party pair, the clusters holding a record of both.
        thresholds: per party pair, the threshold its links were cut at.
        quality: per party pair, the quality of the pairs `pairs` gives for
            it (through a third party too), estimated from the score
            distribution at that threshold (None when there were too few
            candidates to fit, or no floor was given).
        key_links: per party pair, the links the match-keys found before any
            CLK was compared.
        blocked: per party pair, whether its candidates came from LSH blocking.
    """

    parties: tuple[str, ...]
    members: np.ndarray
    candidates: dict[tuple[str, str], int]
    links: dict[tuple[str, str], int]
    thresholds: dict[tuple[str, str], float] = field(default_factory=dict)
    quality: dict[tuple[str, str], QualityEstimate | None] = field(default_factory=dict)
    key_links: dict[tuple[str, str], int] = field(default_factory=dict)
    blocked: dict[tuple[str, str], bool] = field(default_factory=dict)

    @property
    def clusters(self) -> tuple[dict[str, int], ...]:
        """Every cluster as ``{party: row index}``, parties in sorted order.

        Built on each access from `members` (a dict per cluster: use `members`
        for large results).
        """
        parties = self.parties
        return tuple(
            {parties[p]: r for p, r in enumerate(row) if r >= 0} for row in self.members.tolist()
        )

    def pairs(self) -> list[tuple[str, int, str, int]]:
        """Every linked pair of records (left party < right party), deterministic order.

        A cluster of three parties yields three pairs, including the one whose
        records were joined through the third rather than scored directly.
        """
        out: list[tuple[str, int, str, int]] = []
        for a, b in itertools.combinations(range(len(self.parties)), 2):
            both = self.members[(self.members[:, a] >= 0) & (self.members[:, b] >= 0)]
            pa, pb = self.parties[a], self.parties[b]
            out.extend((pa, i, pb, j) for i, j in both[:, [a, b]].tolist())
        return sorted(out)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LinkResult):
            return NotImplemented
        return (
            self.parties == other.parties
            and np.array_equal(self.members, other.members)
            and self.candidates == other.candidates
            and self.links == other.links
            and self.thresholds == other.thresholds
            and self.quality == other.quality
            and self.key_links == other.key_links
            and self.blocked == other.blocked
        )

    __hash__ = None  # type: ignore[assignment]


def sample_rows(n: int, size: int = QUALITY_SAMPLE_ROWS) -> np.ndarray:
    """A fixed, spread-out sample of ``size`` row indices (all rows when there are few)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size, replace=False))


def compare_all(
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


def _sample_candidates(
    jobs: Sequence[tuple[np.ndarray, np.ndarray]], floor: float
) -> list[Candidates]:
    """Candidates >= ``floor`` of each job's (sampled) left rows, each row's best
    `QUALITY_TOP_CANDIDATES`, sorted by (score desc, left, right).

    Scored in this process whatever the executor: 1,000 sampled rows against
    a million took about a quarter of a second on two cores
    (`dice.best_pairs`), less than shipping the million rows to a cluster.
    Before the kernel kept each row's best itself, the sample was scored on
    the executor in steps of rows bounded by the candidates they emit, each
    step repacking the whole other side; the steps grew in number with the
    other side, so the cost grew with its square: 14.4 s for six pairs at a
    million records, 38 times the cost at 100,000, against 1.7-2.9 s now
    (8-10 times; measured on the shared 2-core machine).
    """
    return [best_pairs(left, right, floor, QUALITY_TOP_CANDIDATES) for left, right in jobs]


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
    match_keys: Mapping[str, MatchKeys] | None = None,
    blocking: BlockingSpec | None = None,
    blocking_key: bytes | None = None,
    min_blocked_pairs: int = AUTO_BLOCKING_PAIRS,
) -> LinkResult:
    """Link every pair of parties at Dice >= ``threshold`` and cluster greedily.

    ``clks`` maps party name to a uint8 (records, filter_bytes) array; parties
    are compared in sorted-name order so the result does not depend on the
    mapping's order. The comparisons run on ``executor`` (default: a
    `LocalExecutor`, in this process); every executor gives the same result.
    The caller keeps ownership of ``executor`` and closes it.

    Blocking: with ``blocking`` (default `BlockingSpec()`, keyed LSH with 64
    bands of 18 bits) of method ``"lsh"``, a party pair with at least
    ``min_blocked_pairs`` record pairs (default `AUTO_BLOCKING_PAIRS`, 1e10:
    two parties of 100,000 records) is scored only where its CLKs share an
    LSH block, in this process; smaller pairs, and every pair with method
    ``"none"``, are scored in full on the executor. Blocking keeps about
    99.8% of the pairs at 0.8 on synthetic data. The band positions are keyed
    by ``blocking_key`` (32 bytes or more); without one a fresh random key is
    drawn for the call, so that no node can predict which bits form the
    blocks (and craft records to land in or out of one), and a blocked run's
    few lost pairs vary from call to call. Pass a key for reproducible runs.

    With ``match_keys`` (per party, per level, per record: lists from
    `matchkeys.match_keys` or their `key_digests`), exact keyed matches are a
    first pass: their links are taken before any CLK link.

    With ``floor`` (lowered to ``threshold`` if above it), the precision and
    recall of each pair's links, match-key links included, are estimated
    from a fixed sample of its smaller side scored down to the floor against
    the other side's records no match-key link took (`_fit_pair`,
    `output_quality.estimate_output_quality`), at the threshold the CLK links are
    cut at. A pair with fewer than `output_quality.MIN_ANCHORS` records whose
    partner is known is refitted with the match component of the pairs that
    have enough (`output_quality.pooled_match_shape`; its estimate's
    ``basis`` says so). With ``auto_threshold`` that threshold is the one
    maximising the estimated F1, at least ``floor + output_quality.AUTO_MARGIN``;
    ``threshold`` is kept for a pair whose estimate cannot be fitted. The
    estimate reported
    (``quality``) is of the pairs the clustering finally wrote for the pair,
    those joined through a third party included
    (`output_quality.estimate_written_quality`).

    Raises:
        ValueError: mismatched widths, arrays that are not 2-D uint8, a
            threshold outside (0, 1], match-keys that do not fit the CLKs, or
            a blocking key shorter than 32 bytes.
        PeerUnavailable: a remote executor lost its cluster.
    """
    parties = sorted(clks)
    pairs = list(itertools.combinations(parties, 2))
    runner = LocalExecutor() if executor is None else executor
    spec = BlockingSpec() if blocking is None else blocking
    if blocking_key is not None and len(blocking_key) < MIN_SEED_KEY_BYTES:
        raise ValueError(f"blocking_key must be at least {MIN_SEED_KEY_BYTES} bytes")
    quality: dict[tuple[str, str], QualityEstimate | None] = {}
    thresholds: dict[tuple[str, str], float] = {pair: threshold for pair in pairs}
    blocked = {
        (a, b): spec.method == "lsh" and len(clks[a]) * len(clks[b]) >= min_blocked_pairs
        for a, b in pairs
    }
    if any(blocked.values()) and blocking_key is None:
        blocking_key = secrets.token_bytes(MIN_SEED_KEY_BYTES)
        log.info("blocking under a fresh random key")
    # Match-keys first: each party's digests sorted once and joined with each
    # partner, the indexes (16 bytes a record and level) freed before any CLK
    # candidate exists, so they never add to the engine's peak.
    keyed_links: dict[tuple[str, str], KeyLinks] = {}
    if match_keys is not None:
        indexed = {p: index_digests(_party_digests(match_keys[p], clks[p], p)) for p in parties}
        keyed_links = {(a, b): link_indexed(indexed[a], indexed[b]) for a, b in pairs}
        del indexed
    samples: dict[tuple[str, str], _Sample] = {}
    if floor is not None:
        # The estimate describes what is written: the match-key links and the
        # CLK links of the records they leave (see `_fit_pair`); after the
        # clustering, the pairs it finally wrote (`_Written`).
        floor = min(floor, threshold)
        fitted = {
            (a, b): _fit_pair(clks[a], clks[b], keyed_links.get((a, b)), floor, f"{a} x {b}")
            for a, b in pairs
        }
        # A pair with too few known partners borrows the match component
        # of the others (`output_quality.pooled_match_shape`).
        shape = pooled_match_shape([f[0].fit for f in fitted.values() if f is not None])
        for (a, b), found in fitted.items():
            if found is None:
                quality[(a, b)] = None
                continue
            sample, cands = found
            if sample.fit.basis == "unanchored" and shape is not None:
                keyed = sample.partner[sample.rows] >= 0
                pooled = fit_output(cands, keyed, floor, match_shape=shape)
                sample = dataclasses.replace(sample, fit=pooled)
            samples[(a, b)] = sample
            # A fit on a small department is too noisy to move the threshold
            # (one wrong link in 45 costs two points of F1): it is reported,
            # at the fixed one.
            auto = auto_threshold and min(len(clks[a]), len(clks[b])) >= AUTO_THRESHOLD_MIN_RECORDS
            thresholds[(a, b)] = estimate_from_fit(
                sample.fit, threshold=threshold, auto_threshold=auto
            ).threshold
        del fitted
    full = [p for p in pairs if not blocked[p]]
    index = {p: k for k, p in enumerate(parties)}
    scored = dict(
        zip(
            full,
            compare_all(
                runner, [(clks[a], clks[b]) for a, b in full], [thresholds[p] for p in full]
            ),
            strict=True,
        )
    )
    # Every blocked pair at once: each party's block keys are then made and
    # sorted once a band, not once for each pair it is in.
    blocked_pairs = [p for p in pairs if blocked[p]]
    if blocked_pairs:
        assert blocking_key is not None
        job = BlockedJob(
            tuple(clks[p] for p in parties),
            tuple((index[a], index[b], thresholds[(a, b)]) for a, b in blocked_pairs),
            blocking_key,
            spec.bands,
            spec.bits_per_band,
        )
        scored.update(zip(blocked_pairs, runner.map_blocked(job), strict=True))
    blocks: list[EdgeBlock] = []
    candidates: dict[tuple[str, str], int] = {}
    key_links: dict[tuple[str, str], int] = {}
    # Each pair's match-key links as sorted codes, for judging pairs written
    # through a third party (`_Written`); only then.
    key_codes: dict[tuple[str, str], np.ndarray] = {}
    for a, b in pairs:
        cands = scored.pop((a, b))
        candidates[(a, b)] = len(cands)
        if match_keys is not None:
            keyed = keyed_links.pop((a, b))
            key_links[(a, b)] = len(keyed)
            if samples and len(parties) > 2:
                key_codes[(a, b)] = np.sort(keyed.left * len(clks[b]) + keyed.right)
            # Exact keyed matches go first: score 1.0 puts them ahead of
            # every CLK edge in the greedy clustering.
            blocks.append(
                EdgeBlock(index[a], index[b], keyed.left, keyed.right, np.ones(len(keyed)))
            )
        blocks.append(EdgeBlock(index[a], index[b], cands.left, cands.right, cands.score))
        log.info(
            "%s x %s: %d candidate pairs at %.3f%s",
            a,
            b,
            len(cands),
            thresholds[(a, b)],
            " (blocked)" if blocked[(a, b)] else "",
        )
        del cands
    members = cluster_parties([len(clks[p]) for p in parties], blocks)
    del blocks
    links = {
        (a, b): int(np.count_nonzero((members[:, index[a]] >= 0) & (members[:, index[b]] >= 0)))
        for a, b in pairs
    }
    written = _Written(tuple(parties), members, clks, samples, key_codes)
    for (a, b), sample in samples.items():
        quality[(a, b)] = written.estimate(a, b, sample, thresholds[(a, b)])
    return LinkResult(
        tuple(parties), members, candidates, links, thresholds, quality, key_links, blocked
    )


@dataclass(frozen=True, slots=True, eq=False)
class _Sample:
    """A pair's estimate before clustering, and what re-estimating it after needs."""

    fit: OutputFit
    rows: np.ndarray  # the sampled rows of the smaller side
    small_is_left: bool  # the smaller side is the pair's first party
    partner: np.ndarray  # per smaller-side row, its match-key partner's row, or -1


def _fit_pair(
    left: np.ndarray,
    right: np.ndarray,
    keyed: KeyLinks | None,
    floor: float,
    label: str,
) -> tuple[_Sample, Candidates] | None:
    """(the fit of what a pair's run writes, the sample's candidates), or None.

    A fixed sample of the smaller side is scored against every record of the
    other side that no match-key link took (`_sample_candidates`): what is
    written for a sampled record is its match-key link if it has one, else
    its best CLK candidate among those records, if that reaches the
    threshold. `output_quality.estimate_output_quality` turns that into
    precision and recall (and, with ``auto_threshold``, a threshold); the
    candidates are kept for a refit with a pooled match component.
    """
    small_is_left = len(left) <= len(right)
    small, large = (left, right) if small_is_left else (right, left)
    partner = np.full(len(small), -1, dtype=np.int64)
    taken = np.zeros(len(large), dtype=np.bool_)
    if keyed is not None and len(keyed):
        own, other = (keyed.left, keyed.right) if small_is_left else (keyed.right, keyed.left)
        partner[own] = other
        taken[other] = True
    rows = sample_rows(len(small))
    # Records a match-key link took are never a CLK link's partner: the
    # clustering takes keyed links first. Copied only when some are taken.
    free = large[~taken] if bool(taken.any()) else large
    (cands,) = _sample_candidates([(small[rows], free)], floor)
    del free
    try:
        fit = fit_output(cands, partner[rows] >= 0, floor)
    except ValueError as exc:
        # Nothing to fit: the fixed threshold is kept.
        log.info("%s: no quality estimate (%s)", label, exc)
        return None
    if fit.basis == "unanchored":
        log.info("%s: %d records with a known partner: estimate unanchored", label, fit.known)
    return _Sample(fit, rows, small_is_left, partner), cands


@dataclass(frozen=True, slots=True, eq=False)
class _Written:
    """What the clustering wrote, and what judging it needs (`estimate`)."""

    parties: tuple[str, ...]
    members: np.ndarray  # clusters x parties: record row, or -1
    clks: Mapping[str, np.ndarray]
    samples: Mapping[tuple[str, str], _Sample]
    key_codes: Mapping[tuple[str, str], np.ndarray]  # per pair, sorted left * n_right + right

    def estimate(self, a: str, b: str, sample: _Sample, threshold: float) -> QualityEstimate:
        """The estimate of the pairs the clustering wrote for a pair's sampled records.

        Each cluster holding a record of both parties writes a pair, whether
        or not the two were linked directly (`LinkResult.pairs`), so the
        written pair of a sampled record can be another than its own link,
        or none. A pair joined through a third party's record ``k`` is true
        at least when both its links are: its ``via`` is the best product,
        over the cluster's other records, of the chances that each of the
        two links is true (`_truth`). A true pair of 0.65 joined through two
        sure links of health, among the chance pairs of a small pair, was
        otherwise counted as false (`output_quality.estimate_written_quality`).
        """
        col = {p: k for k, p in enumerate(self.parties)}
        small, large = (a, b) if sample.small_is_left else (b, a)
        own, other = self.members[:, col[small]], self.members[:, col[large]]
        cluster = np.full(len(self.clks[small]), -1, dtype=np.int64)
        cluster[own[own >= 0]] = np.flatnonzero(own >= 0)
        at = cluster[sample.rows]
        mate = np.where(at >= 0, other[np.maximum(at, 0)], -1)
        has = mate >= 0
        sure = has & (mate == sample.partner[sample.rows])
        rows = sample.rows[has]
        scores = np.full(len(mate), np.nan)
        scores[has] = row_dice(self.clks[small][rows], self.clks[large][mate[has]])
        via = np.zeros(len(mate))
        for third in self.parties:
            if third in (a, b):
                continue
            k = self.members[at[has], col[third]]
            on = k >= 0
            if not bool(on.any()):
                continue
            chance = self._truth(small, rows[on], third, k[on]) * self._truth(
                third, k[on], large, mate[has][on]
            )
            held = np.flatnonzero(has)[on]
            via[held] = np.maximum(via[held], chance)
        return estimate_written_quality(sample.fit, threshold, sure=sure, scores=scores, via=via)

    def _truth(self, p: str, x: np.ndarray, q: str, y: np.ndarray) -> np.ndarray:
        """Chance that record ``x[i]`` of ``p`` and ``y[i]`` of ``q`` are one person.

        1 for a match-key link of the pair; otherwise the pair's fitted
        posterior at their Dice score (`output_quality.link_posterior`), 0
        for a pair without a fit.
        """
        (a, u), (b, v) = ((p, x), (q, y)) if p < q else ((q, y), (p, x))
        out = np.zeros(len(u))
        sample = self.samples.get((a, b))
        if sample is not None:
            out = link_posterior(sample.fit, row_dice(self.clks[a][u], self.clks[b][v]))
        codes = self.key_codes.get((a, b))
        if codes is not None and len(codes):
            code = u * len(self.clks[b]) + v
            found = np.minimum(np.searchsorted(codes, code), len(codes) - 1)
            out[codes[found] == code] = 1.0
        return out


def _party_digests(keys: MatchKeys, clks: np.ndarray, party: str) -> np.ndarray:
    digests = key_digests(keys)
    if digests.shape[0] and digests.shape[1] != len(clks):
        raise ValueError(f"{party}: {digests.shape[1]} records of match-keys for {len(clks)} CLKs")
    return digests

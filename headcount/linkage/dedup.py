"""Deduplication: the records of one file (one department) that are one person.

Real registers hold several records of one person (a pupil re-registered at a
new school, several health episodes). Linking a file with itself under the
one-record-per-party rule cannot find them, so deduplication has its own
solver:

1. candidate pairs within the file: every pair of records whose Dice score
   reaches the threshold (``i < j``), every pair that shares an exact
   match-key at some level (score 1.0 for the greedy order), and every pair
   that shares a *supporting* key (two or three fields agreeing exactly, e.g.
   the reference number and the first name; `matchkeys.SUPPORT_KEYS`) and
   scores at least `SUPPORT_FLOOR` (taken as keyed). A guarded supporting key
   supports nothing among records sharing it when two of them conflict on its
   guards (`matchkeys.SUPPORT_GUARDS`: a parent and child of one name at one
   address have two dates of birth);
2. greedy merging, best pair first, of the clusters the two records are in,
   **only if the merged cluster stays coherent**: the average score over
   every pair of records across the two clusters must reach the threshold (a
   pair that shares an exact match-key counts as 1.0). This is average
   linkage: it refuses the chains single linkage builds (A resembles B, B
   resembles C, so A, B and C are merged although A and C share nothing),
   which is how siblings and namesakes would otherwise end up in one cluster;
3. clusters are capped at ``max_cluster`` records.

Everything is deterministic: ties in score are broken by record index.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from headcount.linkage.blocking import MIN_SEED_KEY_BYTES
from headcount.linkage.dice import Candidates, best_pairs
from headcount.linkage.engine import (
    AUTO_BLOCKING_PAIRS,
    AUTO_THRESHOLD_MIN_RECORDS,
    compare_all,
    sample_rows,
)
from headcount.linkage.executor import BlockedJob, Executor, LocalExecutor
from headcount.linkage.keylinks import MatchKeyLevels, key_digests
from headcount.linkage.matchkeys import MatchKeySpec, support_guards
from headcount.linkage.mixture import fit_mixture
from headcount.linkage.quality import QualityEstimate
from headcount.linkage.schema import BlockingSpec

__all__ = ["DedupResult", "dedup_records", "duplicate_tokens", "first_records"]

log = logging.getLogger(__name__)

# A key shared by more records than this is too common to mean one person
# (a blank-ish or very frequent combination): it adds no edges.
MAX_KEY_GROUP = 8
DEFAULT_MAX_CLUSTER = 20
QUALITY_SAMPLE_ROWS = 2_000
QUALITY_TOP = 4
# A pair sharing a supporting key (`matchkeys.SUPPORT_KEYS`) joins the edges
# when its Dice score reaches this. Measured with the keys at 0.5, 0.55 and
# 0.6 (threshold 0.7): on the non-UK duplicates file (5,000 people), whose
# households hold parents and children of one name, precision was 0.993,
# 0.995 and 0.996; on FEBRL3 recall was 0.988, 0.987 and 0.981.
SUPPORT_FLOOR = 0.55
# The automatic threshold tries these offsets from the schema's threshold
# (clusterings are not nested cuts of one another, so each is run whole).
AUTO_STEPS = (-0.05, 0.05)
# ... and leaves the schema's threshold only for an estimated F1 this much
# higher. The estimates at neighbouring cuts err by different amounts (by up
# to 0.4 points apart, measured on the FEBRL and non-UK duplicates files):
# a smaller estimated gain is as likely a loss. On the non-UK duplicates
# file (seeds 1 and 2) 0.65 was estimated 0.0-0.1 points better than 0.7 and
# was 0.1-0.4 points worse, and 1.1-1.5 points less precise.
AUTO_MIN_GAIN = 0.002


@dataclass(frozen=True, slots=True)
class DedupResult:
    """Clusters of one file's records.

    Attributes:
        labels: ``int64`` per record, the cluster it belongs to (0..k-1, in the
            order of each cluster's first record); a record alone has its own.
        pairs: every pair of records in one cluster (left < right), with its
            Dice score (a pair joined through a match-key or through the rest
            of its cluster may score below the threshold).
        candidates: CLK candidate pairs at the threshold.
        key_pairs: pairs sharing an exact match-key.
        refused: merges the coherence check refused.
        threshold: the Dice threshold used.
        quality: the estimate of the pairs' precision and recall from the
            score distribution (None when too few candidates to fit).
    """

    labels: np.ndarray
    pairs: Candidates
    candidates: int
    key_pairs: int
    refused: int
    threshold: float
    quality: QualityEstimate | None

    @property
    def clusters(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0


def _dice(bits: np.ndarray, counts: np.ndarray, a: Sequence[int], b: Sequence[int]) -> np.ndarray:
    """Dice scores of every (a, b) record pair, as an ``len(a) x len(b)`` array."""
    left = bits[np.asarray(a)][:, None, :]
    right = bits[np.asarray(b)][None, :, :]
    common = np.bitwise_count(left & right).sum(axis=2, dtype=np.int64)
    total = counts[np.asarray(a)][:, None] + counts[np.asarray(b)][None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, 2.0 * common / np.maximum(total, 1), 0.0)
    return out


def _key_pairs(
    keys: MatchKeyLevels | np.ndarray | None,
    n: int,
    guards: Mapping[int, Sequence[int]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) of every pair of records sharing a key at some level.

    ``guards`` maps a guarded level to its guard levels (`matchkeys.support_guards`):
    a group sharing the guarded level's value gives no pairs when two of its
    records conflict (`_conflict`), and a guard level gives no pairs itself.
    """
    if keys is None:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    digests = key_digests(keys)
    guards = guards or {}
    guard_only = {g for levels in guards.values() for g in levels} - set(guards)
    lefts: list[np.ndarray] = []
    rights: list[np.ndarray] = []
    for index, level in enumerate(digests):
        if index in guard_only:
            continue
        guard = digests[list(guards.get(index, ()))]
        rows = np.flatnonzero(level)
        if not len(rows):
            continue
        order = rows[np.argsort(level[rows], kind="stable")]
        values = level[order]
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        ends = np.r_[starts[1:], len(values)]
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            size = e - s
            if size < 2 or size > MAX_KEY_GROUP:
                continue
            group = np.sort(order[s:e])
            if _conflict(guard[:, group]):
                # e.g. one name at one address and two dates of birth: the
                # key cannot say which of its records are one person.
                continue
            i, j = np.triu_indices(size, k=1)
            lefts.append(group[i])
            rights.append(group[j])
    if not lefts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    left, right = np.concatenate(lefts), np.concatenate(rights)
    pair = np.unique(left.astype(np.int64) * n + right)
    return pair // n, pair % n


def _conflict(guard: np.ndarray) -> bool:
    """Whether two records of a group conflict: each holds a value of every
    guard level and the two differ on every one (``guard``: levels x the
    group's records; 0 is no value). A record lacking a guard's fields
    conflicts with nobody."""
    if not len(guard):
        return False
    i, j = np.triu_indices(guard.shape[1], k=1)
    a, b = guard[:, i], guard[:, j]
    return bool(((a != 0) & (b != 0) & (a != b)).all(axis=0).any())


def _supported(
    keyed: tuple[np.ndarray, np.ndarray],
    support: tuple[np.ndarray, np.ndarray],
    bits: np.ndarray,
    counts: np.ndarray,
    floor: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The keyed pairs plus the pairs sharing a supporting key whose Dice
    score reaches ``floor``, as one sorted, distinct (left, right)."""
    n = len(bits)
    left, right = support
    common = np.bitwise_count(bits[left] & bits[right]).sum(axis=1, dtype=np.int64)
    score = 2.0 * common / np.maximum(counts[left] + counts[right], 1)
    ok = score >= floor
    pair = np.unique(np.concatenate([keyed[0] * n + keyed[1], left[ok] * n + right[ok]]))
    return pair // n, pair % n


def _components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The connected component of each of ``n`` records under the given pairs."""
    # Label propagation: each record takes the smallest label among its pairs
    # until nothing changes; keyed groups are small, so a few rounds do.
    labels = np.arange(n, dtype=np.int64)
    while len(left):
        low = np.minimum(labels[left], labels[right])
        before = labels.copy()
        np.minimum.at(labels, left, low)
        np.minimum.at(labels, right, low)
        labels = labels[labels]  # jump along chains already joined
        if np.array_equal(labels, before):
            break
    return labels


def _self_candidates(
    clks: np.ndarray,
    threshold: float,
    runner: Executor,
    blocking: BlockingSpec,
    blocking_key: bytes | None,
    min_blocked_pairs: int,
) -> Candidates:
    """Every pair (i < j) of the file scoring >= threshold: all pairs scored on
    the executor, or, for a file of ``min_blocked_pairs`` pairs or more with
    LSH blocking on, those sharing a keyed LSH block (the file paired with
    itself, as `engine.link_parties` pairs two departments)."""
    if blocking.method == "lsh" and len(clks) * len(clks) >= min_blocked_pairs:
        key = blocking_key or secrets.token_bytes(MIN_SEED_KEY_BYTES)
        job = BlockedJob((clks,), ((0, 0, threshold),), key, blocking.bands, blocking.bits_per_band)
        (found,) = runner.map_blocked(job)
    else:
        (found,) = compare_all(runner, [(clks, clks)], threshold)
    keep = found.left < found.right
    return Candidates(found.left[keep], found.right[keep], found.score[keep])


@dataclass(frozen=True, slots=True)
class _Sample:
    """A fixed sample of records scored against the whole file down to the
    floor, each keeping its `QUALITY_TOP` best other records: what every
    threshold's estimate reads (drawn once per run)."""

    size: int  # records sampled
    left: np.ndarray  # record indices of the sampled side
    right: np.ndarray
    score: np.ndarray
    ids: np.ndarray  # min * n + max of each pair


def _sample(clks: np.ndarray, floor: float) -> _Sample:
    n = len(clks)
    rows = sample_rows(n, QUALITY_SAMPLE_ROWS)
    found = best_pairs(clks[rows], clks, floor, QUALITY_TOP + 1)
    left, right = rows[found.left], found.right
    ids = np.minimum(left, right) * n + np.maximum(left, right)
    return _Sample(len(rows), left, right, found.score, ids)


def _estimate(
    sample: _Sample,
    n: int,
    floor: float,
    threshold: float,
    keyed_ids: np.ndarray,
    component: np.ndarray,
    labels: np.ndarray,
    pairs: Candidates,
) -> QualityEstimate | None:
    """Precision and recall of the duplicate pairs one clustering wrote.

    Pairs of the `_sample` that share a match-key or a supporting key
    (``keyed_ids``, as ``min * n + max``) are taken as true (as in linkage); a
    two-component mixture (`mixture.fit_mixture`) fitted to the other pairs
    gives each its posterior, with these non-match anchors: each clustered
    sampled record's best candidate outside its cluster (0.7-5% of them true
    pairs the run missed, on the synthetic duplicates file; a record's best
    candidate outside its match-key group was a true pair 14% of the time:
    people with three records).

    Precision is the mean posterior of the pairs written: pairs in one
    ``component`` of the keyed pairs (a chain of keyed pairs is one person)
    and identical encodings count 1. Recall is their sum over itself plus the
    true pairs not written, the posteriors of the sample's candidate pairs
    outside the output scaled to the file.

    Measured against the truth at the automatic threshold
    (`benchmarks/bench_quality.py --people 5000 --seed 1`): within 1 point on
    FEBRL1, FEBRL2 and FEBRL3 and on the non-UK duplicates file (at most 0.9).
    """
    left, right, score, ids = sample.left, sample.right, sample.score, sample.ids
    free = (left != right) & ~np.isin(ids, keyed_ids)
    anchors = None
    if len(pairs):
        outside = (labels[left] != labels[right]) & (score < 1.0)
        clustered = np.bincount(labels, minlength=n)[labels[left]] >= 2
        at, best = left[outside & clustered], score[outside & clustered]
        order = np.lexsort((-best, at))
        at, best = at[order], best[order]
        anchors = best[np.r_[True, at[1:] != at[:-1]]] if len(at) else None
    try:
        model, gamma = fit_mixture(score[free], floor, nonmatch_scores=anchors)
    except ValueError as exc:
        log.info("dedup: no quality estimate (%s)", exc)
        return None
    written = pairs.left * n + pairs.right
    sure = (component[pairs.left] == component[pairs.right]) | (pairs.score >= 1.0)
    inexact = np.clip(pairs.score, floor, np.nextafter(1.0, 0.0))
    posterior = np.where(sure, 1.0, model.posterior(inexact)) if len(pairs) else np.zeros(0)
    true = float(posterior.sum())
    precision = true / len(pairs) if len(pairs) else 1.0
    # The true pairs not written: the sample's candidate pairs outside the
    # output, by their posteriors. Each is seen from both ends when both are
    # sampled, from one otherwise, so per sampled record it counts half a pair.
    unwritten = ~np.isin(ids[free], written)
    missed = float(gamma[unwritten].sum()) / sample.size * n / 2.0
    recall = true / max(true + missed, 1.0)
    precision, recall = min(1.0, precision), min(1.0, recall)
    f1 = 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return QualityEstimate(
        threshold=threshold,
        est_precision=precision,
        est_recall=recall,
        est_f1=f1,
        match_share=model.match_share,
        converged=model.converged,
        iterations=model.iterations,
    )


def dedup_records(
    clks: np.ndarray,
    threshold: float,
    *,
    keys: MatchKeyLevels | np.ndarray | None = None,
    floor: float | None = None,
    executor: Executor | None = None,
    max_cluster: int = DEFAULT_MAX_CLUSTER,
    blocking: BlockingSpec | None = None,
    blocking_key: bytes | None = None,
    min_blocked_pairs: int = AUTO_BLOCKING_PAIRS,
    support: MatchKeyLevels | np.ndarray | None = None,
    support_floor: float = SUPPORT_FLOOR,
    support_specs: Sequence[MatchKeySpec] = (),
    auto_threshold: bool = False,
) -> DedupResult:
    """Cluster the records of one file that are one person (see the module doc).

    ``clks`` is a ``uint8`` (records, filter_bytes) array; ``keys`` the file's
    match-keys (`matchkeys.match_keys`), if any. ``floor`` (default: the
    threshold less 0.1) is where the quality estimate's candidates start.
    ``blocking``, ``blocking_key`` and ``min_blocked_pairs`` are as for
    `engine.link_parties`: a file of 100,000 records or more is scored only
    within keyed LSH blocks. ``support`` holds the supporting keys
    (`matchkeys.derive_support_keys`), one level per spec of
    ``support_specs``, which say which levels are guarded and by which
    (`matchkeys.support_guards`); used with ``support_floor``.

    With ``auto_threshold``, a file of `AUTO_THRESHOLD_MIN_RECORDS` records or
    more is clustered at ``threshold`` and at `AUTO_STEPS` either side of it,
    and the clustering whose estimated F1 is highest is returned if it beats
    ``threshold``'s by `AUTO_MIN_GAIN` (a tie keeps the one nearer
    ``threshold``); a smaller file, or one with no estimate, keeps
    ``threshold``.

    Raises:
        ValueError: a threshold outside (0, 1], a floor outside (0, threshold],
            a cluster cap below 2, or supporting keys whose levels are not
            one per spec (or lack a required guard).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError("threshold must be in (0, 1]")
    floor = max(0.01, threshold - 0.1) if floor is None else floor
    if not 0.0 < floor <= threshold:
        raise ValueError("floor must be in (0, threshold]")
    if max_cluster < 2:
        raise ValueError("max_cluster must be at least 2")
    if support is not None and len(support) != len(support_specs):
        raise ValueError("supporting keys need one spec per level (support_specs)")
    guards = support_guards(support_specs)
    n = len(clks)
    tries = [threshold]
    if auto_threshold and n >= AUTO_THRESHOLD_MIN_RECORDS:
        tries += [round(threshold + t, 6) for t in AUTO_STEPS if floor <= threshold + t <= 1.0]
    lowest = min(tries)
    runner = LocalExecutor() if executor is None else executor
    cands = _self_candidates(
        clks,
        lowest,
        runner,
        BlockingSpec() if blocking is None else blocking,
        blocking_key,
        min_blocked_pairs,
    )
    bits = np.ascontiguousarray(clks).view(np.uint64)
    counts = np.bitwise_count(bits).sum(axis=1, dtype=np.int64)
    keyed = _supported(
        _key_pairs(keys, n),
        _key_pairs(support, n, guards),
        bits,
        counts,
        support_floor,
    )
    # What every threshold's estimate reads, drawn once for the run.
    sample = _sample(clks, floor) if n > 1 else None
    keyed_ids = keyed[0] * n + keyed[1]  # sorted and distinct (_supported)
    component = _components(n, *keyed)
    best: DedupResult | None = None
    schema_cut: DedupResult | None = None
    for cut in tries:
        keep = cands.score >= cut
        at = Candidates(cands.left[keep], cands.right[keep], cands.score[keep])
        labels, pairs, refused = _cluster(bits, counts, at, keyed, cut, max_cluster)
        quality = (
            _estimate(sample, n, floor, cut, keyed_ids, component, labels, pairs)
            if sample is not None
            else None
        )
        log.info(
            "dedup at %.3f: %d records, %d candidate pairs, %d keyed pairs, %d clusters,"
            " %d merges refused",
            cut,
            n,
            len(at),
            len(keyed[0]),
            int(labels.max()) + 1 if n else 0,
            refused,
        )
        result = DedupResult(labels, pairs, len(at), len(keyed[0]), refused, cut, quality)
        if best is None or (
            quality is not None
            and best.quality is not None
            and quality.est_f1 > best.quality.est_f1
        ):
            best = result
        if cut == threshold:
            schema_cut = result
    assert best is not None and schema_cut is not None
    if (
        best is not schema_cut
        and best.quality is not None
        and schema_cut.quality is not None
        and best.quality.est_f1 < schema_cut.quality.est_f1 + AUTO_MIN_GAIN
    ):
        return schema_cut
    return best


def _cluster(
    bits: np.ndarray,
    counts: np.ndarray,
    cands: Candidates,
    keyed: tuple[np.ndarray, np.ndarray],
    threshold: float,
    max_cluster: int,
) -> tuple[np.ndarray, Candidates, int]:
    """Greedy coherent merging (the module doc, steps 2 and 3): each record's
    cluster label, the pairs inside clusters, and the merges refused."""
    n = len(bits)
    key_left, key_right = keyed
    sure = set(zip(key_left.tolist(), key_right.tolist(), strict=True))
    # Edges: keyed pairs first (as 1.0), then CLK pairs by score; ties by index.
    left = np.concatenate([key_left, cands.left]).astype(np.int64)
    right = np.concatenate([key_right, cands.right]).astype(np.int64)
    score = np.concatenate([np.ones(len(key_left)), cands.score])
    order = np.lexsort((right, left, -score))

    parent = list(range(n))
    members: dict[int, list[int]] = {i: [i] for i in range(n)}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    refused = 0
    for k in order.tolist():
        a, b = find(int(left[k])), find(int(right[k]))
        if a == b:
            continue
        ma, mb = members[a], members[b]
        if len(ma) + len(mb) > max_cluster:
            refused += 1
            continue
        cross = _dice(bits, counts, ma, mb)
        for x, i in enumerate(ma):
            for y, j in enumerate(mb):
                if (min(i, j), max(i, j)) in sure:
                    cross[x, y] = 1.0
        if cross.mean() < threshold:
            refused += 1
            continue
        if len(ma) < len(mb):
            a, b, ma, mb = b, a, mb, ma
        parent[b] = a
        ma.extend(mb)
        del members[b]

    # Labels numbered by each cluster's first record, so they follow file order.
    first: dict[int, int] = {}
    labels = np.array([first.setdefault(find(i), len(first)) for i in range(n)], dtype=np.int64)
    pair_left: list[int] = []
    pair_right: list[int] = []
    pair_score: list[float] = []
    for group in members.values():
        if len(group) < 2:
            continue
        group = sorted(group)
        scores = _dice(bits, counts, group, group)
        for x in range(len(group)):
            for y in range(x + 1, len(group)):
                pair_left.append(group[x])
                pair_right.append(group[y])
                pair_score.append(float(min(1.0, scores[x, y])))
    pairs = Candidates(
        np.array(pair_left, dtype=np.int64),
        np.array(pair_right, dtype=np.int64),
        np.array(pair_score, dtype=np.float64),
    )
    return labels, pairs, refused


def first_records(labels: np.ndarray) -> np.ndarray:
    """Each cluster's first record, in label order: the record that stands for
    the person (linked and counted) when duplicates are collapsed."""
    _, first = np.unique(labels, return_index=True)
    return first.astype(np.int64)


def duplicate_tokens(tokens: Sequence[bytes], labels: np.ndarray) -> dict[bytes, bytes]:
    """Token of every record that is not its cluster's first -> the first's token."""
    first = first_records(labels)
    return {
        tokens[i]: tokens[int(first[label])]
        for i, label in enumerate(labels.tolist())
        if int(first[label]) != i
    }

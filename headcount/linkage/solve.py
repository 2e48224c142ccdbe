"""Solvers: turn scored candidate pairs into links.

Scores alone link one record to many; the solvers impose the constraint that
each department holds a person at most once. `match_one_to_one` links two
parties; `cluster_records` links any number of parties into clusters holding at
most one record per party. Both are greedy on score, which is what anonlink
does and which is close to optimal when true matches score well above
non-matches; ties are broken by indices and party names so that every party
and the coordinator reproduce the same links from the same scores.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from headcount.linkage import _kernel
from headcount.linkage.dice import Candidates, score_order

__all__ = ["Edge", "EdgeBlock", "cluster_parties", "cluster_records", "match_one_to_one"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Edge:
    """A scored link between a record of one party and a record of another.

    Attributes:
        left_party: name of the first record's party, non-empty.
        left: row index of the first record in its party's CLKs, >= 0.
        right_party: name of the second record's party; differs from ``left_party``.
        right: row index of the second record, >= 0.
        score: Dice coefficient, in [0, 1].

    Raises:
        ValueError: the parties are equal or empty, an index is negative, or the
            score is outside [0, 1] or NaN.
    """

    left_party: str
    left: int
    right_party: str
    right: int
    score: float

    def __post_init__(self) -> None:
        if not self.left_party or not self.right_party:
            raise ValueError("party names must be non-empty")
        if self.left_party == self.right_party:
            raise ValueError("an edge must join records of two different parties")
        for index in (self.left, self.right):
            if isinstance(index, bool) or not isinstance(index, int | np.integer) or index < 0:
                raise ValueError("row indices must be non-negative ints")
        if not 0.0 <= self.score <= 1.0:  # also rejects NaN
            raise ValueError("score must be in [0, 1]")
        # numpy scalars from a Candidates row become plain Python numbers, so
        # edges compare, hash and sort the same however they were built.
        object.__setattr__(self, "left", int(self.left))
        object.__setattr__(self, "right", int(self.right))
        object.__setattr__(self, "score", float(self.score))


def match_one_to_one(candidates: Candidates) -> Candidates:
    """Greedy one-to-one matching between two parties.

    Takes pairs in (score descending, left, right) order, whatever order the
    input is in, and keeps a pair when neither its left nor its right row is
    already matched.

    Returns:
        The kept pairs, in the same (score desc, left, right) order; no left and
        no right index appears twice.
    """
    n = len(candidates)
    if n == 0:
        return Candidates.empty()
    order = score_order(candidates.score, candidates.left, candidates.right)
    lefts = candidates.left[order]
    rights = candidates.right[order]
    # A plain loop: the greedy choice of each pair depends on every earlier one,
    # so it does not vectorise; tolist() makes it run at Python-int speed.
    used_left: set[int] = set()
    used_right: set[int] = set()
    kept: list[int] = []
    for position, (left, right) in enumerate(zip(lefts.tolist(), rights.tolist(), strict=True)):
        if left in used_left or right in used_right:
            continue
        used_left.add(left)
        used_right.add(right)
        kept.append(position)
    chosen = order[np.asarray(kept, dtype=np.int64)]
    log.debug("one-to-one: kept %d of %d candidate pairs", len(kept), n)
    return Candidates(candidates.left[chosen], candidates.right[chosen], candidates.score[chosen])


@dataclass(frozen=True, slots=True)
class EdgeBlock:
    """Scored links between rows of two parties, as parallel arrays.

    The array form of many `Edge` values: clustering millions of edges as
    arrays costs about 25 bytes an edge, against some 300 for `Edge` objects
    and their sort keys.

    Attributes:
        left_party, right_party: indices of the two parties in the party list
            `cluster_parties` is given; they differ.
        left, right: ``int64`` row indices, each >= 0, of equal length.
        score: ``float64`` scores in [0, 1], one per pair.

    Raises:
        ValueError: equal or negative party indices, arrays of unequal length,
            a negative row index, or a score outside [0, 1] or NaN.
    """

    left_party: int
    right_party: int
    left: np.ndarray
    right: np.ndarray
    score: np.ndarray

    def __post_init__(self) -> None:
        if self.left_party == self.right_party or min(self.left_party, self.right_party) < 0:
            raise ValueError("an edge block must join two different parties")
        left = np.asarray(self.left, dtype=np.int64).reshape(-1)
        right = np.asarray(self.right, dtype=np.int64).reshape(-1)
        score = np.asarray(self.score, dtype=np.float64).reshape(-1)
        if not len(left) == len(right) == len(score):
            raise ValueError("left, right and score must have equal lengths")
        if len(left) and (left.min() < 0 or right.min() < 0):
            raise ValueError("row indices must be non-negative")
        if len(score) and not bool(np.all((score >= 0.0) & (score <= 1.0))):
            raise ValueError("scores must be in [0, 1]")
        object.__setattr__(self, "left", left)
        object.__setattr__(self, "right", right)
        object.__setattr__(self, "score", score)


def cluster_parties(sizes: Sequence[int], blocks: Iterable[EdgeBlock]) -> np.ndarray:
    """Greedy multi-party clustering over arrays; the engine's clustering.

    The same clusters as `cluster_records` for the same edges, with party
    ``p`` standing for the ``p``-th name in sorted order: edges are taken by
    score descending, ties broken by their endpoints as (party, row) pairs in
    sorted order, and two clusters merge only when no party has a record in
    both (a compiled union-find whose roots keep a bitmask of their parties).

    Args:
        sizes: number of rows of each party; every row index must be below it.
        blocks: the scored edges.

    Returns:
        An ``int64`` array ``(clusters, len(sizes))``: row ``c`` holds, per
        party, the row index of cluster ``c``'s record, or -1 when it has none.
        Only clusters of two or more records, ordered by their first record
        (lowest party, then row), which is `cluster_records`' order.

    Raises:
        ValueError: a block names a party or row out of range.
    """
    sizes_arr = np.asarray(sizes, dtype=np.int64)
    offsets = np.zeros(len(sizes_arr) + 1, dtype=np.int64)
    np.cumsum(sizes_arr, out=offsets[1:])
    los: list[np.ndarray] = []
    his: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    for block in blocks:
        a, b = block.left_party, block.right_party
        if max(a, b) >= len(sizes_arr):
            raise ValueError("edge block names an unknown party")
        if len(block.left) and (
            block.left.max() >= sizes_arr[a] or block.right.max() >= sizes_arr[b]
        ):
            raise ValueError("edge block row index out of range")
        # Node ids follow (party, row) order, so comparing ids compares endpoints.
        u = block.left + offsets[a]
        v = block.right + offsets[b]
        los.append(np.minimum(u, v))
        his.append(np.maximum(u, v))
        scores.append(block.score)
    n_nodes = int(offsets[-1])
    node_party = np.repeat(np.arange(len(sizes_arr), dtype=np.int64), sizes_arr)
    lo = np.concatenate(los) if los else np.zeros(0, dtype=np.int64)
    hi = np.concatenate(his) if his else np.zeros(0, dtype=np.int64)
    score = np.concatenate(scores) if scores else np.zeros(0, dtype=np.float64)
    del los, his, scores
    # (score desc, lo, hi): the order cluster_records takes edges in.
    order = score_order(score, lo, hi)
    del score
    words = max(1, -(-len(sizes_arr) // 64))
    roots = _kernel.greedy_party_union(lo[order], hi[order], node_party, words)
    del order, lo, hi
    members = np.bincount(roots, minlength=n_nodes)
    clustered = np.flatnonzero(members[roots] >= 2)  # ascending node ids
    cluster_roots, first = np.unique(roots[clustered], return_index=True)
    # Number clusters by their first (lowest) node.
    rank = np.empty(len(cluster_roots), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(cluster_roots), dtype=np.int64)
    cluster_of = rank[np.searchsorted(cluster_roots, roots[clustered])]
    table = np.full((len(cluster_roots), len(sizes_arr)), -1, dtype=np.int64)
    party = node_party[clustered]
    table[cluster_of, party] = clustered - offsets[party]
    log.debug("clustering: %d edges, %d clusters", len(roots), len(table))
    return table


def cluster_records(edges: Iterable[Edge]) -> list[dict[str, int]]:
    """Greedy multi-party clustering with at most one record per party.

    Edges are taken by score descending, ties broken by their endpoints (each
    edge's two (party, index) endpoints in sorted order), so the result does not
    depend on input order nor on which end of an edge is called left. Two
    clusters are merged only when no party has a record in both; otherwise the
    edge is dropped, since a stronger edge already placed that party's record.
    Runs `cluster_parties` on the edges as arrays.

    Returns:
        Clusters of two or more records, each a ``{party: row index}`` dict with
        parties in sorted order; the list is sorted by those items.
    """
    edges = list(edges)
    parties = sorted({e.left_party for e in edges} | {e.right_party for e in edges})
    index = {p: k for k, p in enumerate(parties)}
    sizes = [0] * len(parties)
    grouped: dict[tuple[int, int], list[Edge]] = {}
    for edge in edges:
        a, b = index[edge.left_party], index[edge.right_party]
        sizes[a] = max(sizes[a], edge.left + 1)
        sizes[b] = max(sizes[b], edge.right + 1)
        grouped.setdefault((a, b), []).append(edge)
    blocks = [
        EdgeBlock(
            a,
            b,
            np.array([e.left for e in group], dtype=np.int64),
            np.array([e.right for e in group], dtype=np.int64),
            np.array([e.score for e in group], dtype=np.float64),
        )
        for (a, b), group in grouped.items()
    ]
    table = cluster_parties(sizes, blocks)
    return [
        {parties[p]: int(row[p]) for p in range(len(parties)) if row[p] >= 0}
        for row in table.tolist()
    ]

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
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from headcount.linkage.dice import Candidates

__all__ = ["Edge", "cluster_records", "match_one_to_one"]

log = logging.getLogger(__name__)

_Node = tuple[str, int]  # (party, row index)


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
    order = np.lexsort((candidates.right, candidates.left, -candidates.score))
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


def cluster_records(edges: Iterable[Edge]) -> list[dict[str, int]]:
    """Greedy multi-party clustering with at most one record per party.

    Edges are taken by score descending, ties broken by their endpoints (each
    edge's two (party, index) endpoints in sorted order), so the result does not
    depend on input order nor on which end of an edge is called left. Two
    clusters are merged only when no party has a record in both; otherwise the
    edge is dropped, since a stronger edge already placed that party's record.

    Returns:
        Clusters of two or more records, each a ``{party: row index}`` dict with
        parties in sorted order; the list is sorted by those items.
    """
    ordered = sorted(_edge_key(edge) for edge in edges)
    forest = _PartyForest()
    merged = 0
    for _, a, b in ordered:
        if forest.union_if_disjoint(a, b):
            merged += 1
    clusters = forest.clusters()
    log.debug("clustering: %d of %d edges merged, %d clusters", merged, len(ordered), len(clusters))
    return clusters


def _edge_key(edge: Edge) -> tuple[float, _Node, _Node]:
    a: _Node = (edge.left_party, edge.left)
    b: _Node = (edge.right_party, edge.right)
    return (-edge.score, a, b) if a <= b else (-edge.score, b, a)


class _PartyForest:
    """Union-find over (party, index) nodes; each root keeps its cluster's members.

    The root's ``{party: index}`` map makes the "no two records of one party"
    test one set intersection, and merging the smaller map into the larger keeps
    the total work near-linear in the number of edges.
    """

    __slots__ = ("_members", "_parent")

    def __init__(self) -> None:
        self._parent: dict[_Node, _Node] = {}
        self._members: dict[_Node, dict[str, int]] = {}

    def _find(self, node: _Node) -> _Node:
        parent = self._parent.setdefault(node, node)
        if parent == node:
            self._members.setdefault(node, {node[0]: node[1]})
            return node
        root = parent
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[node] != root:  # path compression
            self._parent[node], node = root, self._parent[node]
        return root

    def union_if_disjoint(self, a: _Node, b: _Node) -> bool:
        """Merge a's and b's clusters if their party sets are disjoint; report whether."""
        root_a, root_b = self._find(a), self._find(b)
        if root_a == root_b:
            return False
        members_a, members_b = self._members[root_a], self._members[root_b]
        if members_a.keys() & members_b.keys():
            return False
        if len(members_a) < len(members_b):
            root_a, root_b, members_a, members_b = root_b, root_a, members_b, members_a
        self._parent[root_b] = root_a
        members_a.update(members_b)
        del self._members[root_b]
        return True

    def clusters(self) -> list[dict[str, int]]:
        found = [dict(sorted(m.items())) for m in self._members.values() if len(m) >= 2]
        found.sort(key=lambda cluster: tuple(cluster.items()))
        return found

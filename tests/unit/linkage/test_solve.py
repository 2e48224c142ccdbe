"""Tests for headcount.linkage.solve: greedy one-to-one and multi-party clustering."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headcount.linkage.dice import Candidates
from headcount.linkage.solve import Edge, cluster_records, match_one_to_one

PARTIES = ("education", "health", "immigration", "justice")
# Few distinct scores so ties are common and tie-breaking is exercised.
SCORES = (0.8, 0.85, 0.9, 0.95, 1.0)


def _candidates(rows: list[tuple[int, int, float]]) -> Candidates:
    return Candidates(
        np.array([r[0] for r in rows], dtype=np.int64),
        np.array([r[1] for r in rows], dtype=np.int64),
        np.array([r[2] for r in rows], dtype=np.float64),
    )


def _pairs(c: Candidates) -> list[tuple[int, int, float]]:
    return list(zip(c.left.tolist(), c.right.tolist(), c.score.tolist(), strict=True))


_candidate_rows = st.lists(
    st.tuples(st.integers(0, 8), st.integers(0, 8), st.sampled_from(SCORES)), max_size=40
)


# --- one-to-one --------------------------------------------------------------------


def test_one_to_one_takes_best_pairs_greedily() -> None:
    rows = [(0, 0, 0.9), (0, 1, 0.95), (1, 1, 0.85), (1, 0, 0.88), (2, 2, 0.8)]
    # 0-1 (0.95) first; 0-0 and 1-1 then reuse a row; 1-0 (0.88) is free; 2-2 too.
    assert _pairs(match_one_to_one(_candidates(rows))) == [(0, 1, 0.95), (1, 0, 0.88), (2, 2, 0.8)]


def test_one_to_one_breaks_ties_by_left_then_right() -> None:
    rows = [(1, 0, 0.9), (0, 1, 0.9), (0, 0, 0.9), (1, 1, 0.9)]
    # Order (0,0), (0,1), (1,0), (1,1): 0-0 wins, then 1-1 is the only free pair.
    assert _pairs(match_one_to_one(_candidates(rows))) == [(0, 0, 0.9), (1, 1, 0.9)]


def test_one_to_one_of_nothing_is_nothing() -> None:
    assert len(match_one_to_one(Candidates.empty())) == 0


@given(_candidate_rows, st.randoms(use_true_random=False))
def test_one_to_one_never_reuses_a_row_and_is_maximal(
    rows: list[tuple[int, int, float]], rnd: random.Random
) -> None:
    result = _pairs(match_one_to_one(_candidates(rows)))
    lefts = [r[0] for r in result]
    rights = [r[1] for r in result]
    assert len(set(lefts)) == len(lefts)
    assert len(set(rights)) == len(rights)
    assert set(result) <= set(rows)
    # Greedy leaves no pair that could still be added.
    for left, right, _ in rows:
        assert left in lefts or right in rights
    # Any pair dropped loses to a kept pair on one of its rows with score >= its own.
    kept = {(r[0], r[1]): r[2] for r in result}
    for left, right, score in rows:
        if (left, right) not in kept:
            assert any(
                (k_left == left or k_right == right) and k_score >= score
                for (k_left, k_right), k_score in kept.items()
            )
    # Input order does not matter.
    shuffled = rows[:]
    rnd.shuffle(shuffled)
    assert _pairs(match_one_to_one(_candidates(shuffled))) == result
    # Output keeps (score desc, left, right) order.
    assert result == sorted(result, key=lambda r: (-r[2], r[0], r[1]))


# --- edges -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("health", 0, "health", 1, 0.9),
        ("", 0, "health", 1, 0.9),
        ("education", -1, "health", 1, 0.9),
        ("education", 0, "health", 1, 1.5),
        ("education", 0, "health", 1, -0.1),
        ("education", 0, "health", 1, float("nan")),
        ("education", True, "health", 1, 0.9),
    ],
)
def test_edge_rejects_bad_values(args: tuple[str, int, str, int, float]) -> None:
    with pytest.raises(ValueError):
        Edge(*args)


def test_edge_accepts_numpy_scalars_as_plain_numbers() -> None:
    edge = Edge("education", np.int64(3), "health", np.int64(4), np.float64(0.9))  # type: ignore[arg-type]
    assert type(edge.left) is int and type(edge.right) is int and type(edge.score) is float


# --- clustering --------------------------------------------------------------------


def test_cluster_chains_across_parties() -> None:
    edges = [
        Edge("education", 0, "health", 5, 0.95),
        Edge("health", 5, "justice", 2, 0.9),
        Edge("immigration", 7, "justice", 2, 0.85),
        Edge("education", 1, "health", 6, 0.9),
    ]
    assert cluster_records(edges) == [
        {"education": 0, "health": 5, "immigration": 7, "justice": 2},
        {"education": 1, "health": 6},
    ]


def test_cluster_refuses_a_second_record_of_a_party() -> None:
    edges = [
        Edge("education", 0, "health", 0, 0.95),
        Edge("education", 1, "health", 0, 0.9),  # health 0 already has education 0
        Edge("education", 1, "justice", 3, 0.85),
        Edge("justice", 3, "health", 0, 0.8),  # would bring education 1 to health 0
    ]
    assert cluster_records(edges) == [
        {"education": 0, "health": 0},
        {"education": 1, "justice": 3},
    ]


def test_cluster_of_no_edges_is_empty() -> None:
    assert cluster_records([]) == []


_edges = st.lists(
    st.builds(
        lambda parties, left, right, score: Edge(parties[0], left, parties[1], right, score),
        st.lists(st.sampled_from(PARTIES), min_size=2, max_size=2, unique=True),
        st.integers(0, 4),
        st.integers(0, 4),
        st.sampled_from(SCORES),
    ),
    max_size=40,
)


def _naive_clusters(edges: list[Edge]) -> list[dict[str, int]]:
    """Independent greedy reference: a list of clusters, merged by linear search."""

    def key(e: Edge) -> tuple[float, tuple[str, int], tuple[str, int]]:
        a, b = sorted([(e.left_party, e.left), (e.right_party, e.right)])
        return (-e.score, a, b)

    clusters: list[set[tuple[str, int]]] = []
    for edge in sorted(edges, key=key):
        _, a, b = key(edge)
        ca = next((c for c in clusters if a in c), {a})
        cb = next((c for c in clusters if b in c), {b})
        if ca is cb or {p for p, _ in ca} & {p for p, _ in cb}:
            continue
        clusters = [c for c in clusters if c is not ca and c is not cb] + [ca | cb]
    result = [dict(sorted(c)) for c in clusters]
    return sorted(result, key=lambda c: tuple(c.items()))


@settings(max_examples=300)
@given(_edges, st.randoms(use_true_random=False))
def test_clusters_hold_one_record_per_party_and_are_deterministic(
    edges: list[Edge], rnd: random.Random
) -> None:
    clusters = cluster_records(edges)
    assert clusters == _naive_clusters(edges)
    # No record is in two clusters, and none is silently dropped from one: each
    # cluster's size equals its number of distinct parties.
    nodes = [(party, index) for c in clusters for party, index in c.items()]
    assert len(nodes) == len(set(nodes))
    assert all(len(c) >= 2 for c in clusters)
    # Every clustered record came from an input edge.
    endpoints = {(e.left_party, e.left) for e in edges} | {(e.right_party, e.right) for e in edges}
    assert set(nodes) <= endpoints
    # Greedy is maximal: each edge is inside a cluster or blocked by a party clash.
    where = {node: i for i, c in enumerate(clusters) for node in c.items()}
    for e in edges:
        a, b = (e.left_party, e.left), (e.right_party, e.right)
        ia, ib = where.get(a), where.get(b)
        if ia is not None and ia == ib:
            continue
        parties_a = set(clusters[ia]) if ia is not None else {a[0]}
        parties_b = set(clusters[ib]) if ib is not None else {b[0]}
        assert parties_a & parties_b
    # Same result whatever the input order and edge orientation.
    flipped = [
        Edge(e.right_party, e.right, e.left_party, e.left, e.score) if rnd.random() < 0.5 else e
        for e in edges
    ]
    rnd.shuffle(flipped)
    assert cluster_records(flipped) == clusters
    assert cluster_records(iter(edges)) == clusters  # any iterable, consumed once

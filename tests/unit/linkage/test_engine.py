"""Tests for headcount.linkage.engine: blocking switch, reported quality (against
the truth on a profile the engine was not tuned on), array results, and the
array solvers against the Python ones they replaced.

The references here are the dict- and object-based implementations the
engine used before (greedy union-find over ``(party, row)`` tuples,
``Counter``-based match-key joins), written plainly.
"""

from __future__ import annotations

import csv
import itertools
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headcount.linkage.dice import score_order, score_pairs
from headcount.linkage.engine import LinkResult, link_parties
from headcount.linkage.keylinks import key_digests, link_by_key_digests, match_by_keys, wire_digests
from headcount.linkage.output_quality import AUTO_MARGIN
from headcount.linkage.schema import BlockingSpec, LinkageSchema
from headcount.linkage.solve import Edge, EdgeBlock, cluster_parties, cluster_records
from headcount.linkfiles import link_files, read_options
from headcount.synth import generate_population
from headcount.tools.intl_profile import two_files

WIDTH_BYTES = 128
THRESHOLD = 0.8
KEY = bytes(range(32, 64))
PARTIES = ("education", "health", "immigration", "justice")


def _planted(seed: int, sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """Random CLKs per party where most records reappear, lightly noised, elsewhere."""
    rng = np.random.default_rng(seed)
    people = np.packbits(rng.random((max(sizes.values()) * 2, WIDTH_BYTES * 8)) < 0.3, axis=1)
    out = {}
    for party, n in sizes.items():
        chosen = people[rng.choice(len(people), size=n, replace=False)]
        flips = rng.random((n, WIDTH_BYTES * 8)) < rng.choice([0.0, 0.01, 0.04], size=(n, 1))
        out[party] = chosen ^ np.packbits(flips, axis=1)
    return out


@pytest.fixture(scope="module")
def parties() -> dict[str, np.ndarray]:
    return _planted(3, {"education": 300, "health": 500, "immigration": 200, "justice": 120})


# --- blocking switch ------------------------------------------------------------------


def test_small_pairs_are_compared_in_full_by_default(parties: dict[str, np.ndarray]) -> None:
    result = link_parties(parties, THRESHOLD)
    assert not any(result.blocked.values())
    assert result == link_parties(parties, THRESHOLD, blocking=BlockingSpec(method="none"))


def test_blocking_switch_blocks_every_pair_above_the_size(
    parties: dict[str, np.ndarray],
) -> None:
    full = link_parties(parties, THRESHOLD)
    blocked = link_parties(parties, THRESHOLD, blocking_key=KEY, min_blocked_pairs=0)
    assert all(blocked.blocked.values())
    # Blocking only drops pairs: never more candidates, and on planted copies
    # (Hamming distance at most ~4%) it keeps every one.
    for pair, n in blocked.candidates.items():
        assert n <= full.candidates[pair]
    assert blocked.candidates == full.candidates
    assert blocked.clusters == full.clusters
    # Only the pairs with enough record pairs are blocked.
    some = link_parties(parties, THRESHOLD, blocking_key=KEY, min_blocked_pairs=300 * 500)
    assert some.blocked[("education", "health")]
    assert not some.blocked[("immigration", "justice")]
    never = link_parties(
        parties, THRESHOLD, blocking=BlockingSpec(method="none"), min_blocked_pairs=0
    )
    assert not any(never.blocked.values())


def test_blocked_runs_are_reproducible_under_a_key(parties: dict[str, np.ndarray]) -> None:
    one = link_parties(parties, THRESHOLD, blocking_key=KEY, min_blocked_pairs=0)
    assert one == link_parties(parties, THRESHOLD, blocking_key=KEY, min_blocked_pairs=0)
    # Without a key a fresh one is drawn; planted pairs are found either way.
    assert link_parties(parties, THRESHOLD, min_blocked_pairs=0).clusters == one.clusters


def test_short_blocking_key_is_refused(parties: dict[str, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="blocking_key"):
        link_parties(parties, THRESHOLD, blocking_key=b"short", min_blocked_pairs=0)


# --- quality at the threshold used ----------------------------------------------------


def test_quality_is_reported_at_the_threshold_used(parties: dict[str, np.ndarray]) -> None:
    fixed = link_parties(parties, THRESHOLD, floor=0.5)
    auto = link_parties(parties, THRESHOLD, floor=0.5, auto_threshold=True)
    assert fixed.quality and auto.quality
    for pair, estimate in fixed.quality.items():
        assert fixed.thresholds[pair] == THRESHOLD
        if estimate is not None:
            assert estimate.threshold == THRESHOLD
    for pair, estimate in auto.quality.items():
        if estimate is not None:
            assert estimate.threshold == auto.thresholds[pair]
            assert auto.thresholds[pair] >= 0.5 + AUTO_MARGIN


def test_link_files_estimate_tells_the_truth_on_an_unseen_profile(
    tmp_path: Path, intl_schema: LinkageSchema
) -> None:
    """link-files at its automatic threshold on the non-UK profile (heavier
    errors, no sex column; `headcount.tools.intl_profile`): the goal of F1 >=
    0.99 at precision >= 0.995, and an estimate within a point of the truth
    of the pairs written (match-key links included)."""
    two_files(5000, 2, tmp_path)
    schema = intl_schema
    assert schema.auto_threshold
    out = tmp_path / "pairs.csv"
    summary = link_files(
        [tmp_path / "a.csv", tmp_path / "b.csv"],
        out,
        schema=schema,
        seed=1,
        options=read_options(schema, blank_invalid=True),
    )

    def pairs(path: Path) -> set[tuple[str, str]]:
        with path.open(newline="", encoding="utf-8") as fh:
            return {(row["id_a"], row["id_b"]) for row in csv.DictReader(fh)}

    written, truth = pairs(out), pairs(tmp_path / "truth.csv")
    precision = len(written & truth) / len(written)
    recall = len(written & truth) / len(truth)
    f1 = 2 * precision * recall / (precision + recall)
    estimate = summary.result.quality[("a", "b")]
    assert estimate is not None
    assert estimate.threshold == summary.result.thresholds[("a", "b")]
    assert f1 >= 0.99 and precision >= 0.995, (precision, recall, estimate.threshold)
    assert abs(estimate.est_precision - precision) <= 0.01, (estimate, precision)
    assert abs(estimate.est_recall - recall) <= 0.01, (estimate, recall)


@pytest.mark.slow
def test_a_pair_sharing_few_people_borrows_the_match_component(tmp_path: Path) -> None:
    """Four departments of the uk profile at once (20,000 people, as
    bench_quality.py --departments 4): education and justice share 15
    people, 14 of them linked by match-keys, so the pair's CLK links are
    chance pairs and its own fit put its recall 85 points low. It borrows
    the match component of the pairs with known partners (basis
    ``"pooled"``) and its estimate is within a point of the truth; every
    other pair keeps its own fit."""
    generate_population(20_000, 1, tmp_path)
    paths = [tmp_path / f"{p}.csv" for p in PARTIES]
    summary = link_files(paths, tmp_path / "pairs.csv", seed=1)
    with (tmp_path / "ground_truth.csv").open(newline="", encoding="utf-8") as fh:
        truth = {(r["education_id"], r["justice_id"]) for r in csv.DictReader(fh)}
    truth = {t for t in truth if all(t)}
    with (tmp_path / "pairs.csv").open(newline="", encoding="utf-8") as fh:
        written = {
            (r["id_a"], r["id_b"])
            for r in csv.DictReader(fh)
            if (r["party_a"], r["party_b"]) == ("education", "justice")
        }
    precision = len(written & truth) / len(written)
    recall = len(written & truth) / len(truth)
    estimate = summary.result.quality[("education", "justice")]
    assert estimate is not None and estimate.basis == "pooled"
    assert abs(estimate.est_precision - precision) <= 0.01, (estimate, precision)
    assert abs(estimate.est_recall - recall) <= 0.01, (estimate, recall)
    others = [q for pair, q in summary.result.quality.items() if pair != ("education", "justice")]
    assert all(q is not None and q.basis == "own" for q in others)


# --- results as arrays ----------------------------------------------------------------


def test_members_clusters_links_and_pairs_agree(parties: dict[str, np.ndarray]) -> None:
    result = link_parties(parties, THRESHOLD)
    assert result.parties == tuple(sorted(parties))
    assert result.members.shape == (len(result.clusters), len(parties))
    clusters = result.clusters
    assert all(len(c) >= 2 for c in clusters)
    assert list(clusters) == sorted(clusters, key=lambda c: tuple(c.items()))
    for a, b in itertools.combinations(sorted(parties), 2):
        assert result.links[(a, b)] == sum(1 for c in clusters if a in c and b in c)
    expected = sorted(
        (a, c[a], b, c[b]) for c in clusters for a, b in itertools.combinations(sorted(c), 2)
    )
    assert result.pairs() == expected


def test_link_result_equality_compares_arrays(parties: dict[str, np.ndarray]) -> None:
    result = link_parties(parties, THRESHOLD)
    other = LinkResult(
        result.parties,
        result.members.copy(),
        dict(result.candidates),
        dict(result.links),
        dict(result.thresholds),
        dict(result.quality),
        dict(result.key_links),
        dict(result.blocked),
    )
    assert result == other
    changed = result.members.copy()
    changed[0, 0] = -1 if changed[0, 0] >= 0 else 0
    assert result != LinkResult(result.parties, changed, result.candidates, result.links)
    assert result != "not a result"


def test_match_key_lists_and_digests_link_the_same(parties: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(5)
    lists = {}
    for party, clks in parties.items():
        # Two levels; a tenth of records share keys with the planted copies' rows.
        lists[party] = [
            [
                None if v == 0 else int(v).to_bytes(16, "little")
                for v in rng.integers(0, 400, size=len(clks))
            ]
            for _ in range(2)
        ]
    digests = {p: key_digests(k) for p, k in lists.items()}
    by_lists = link_parties(parties, THRESHOLD, match_keys=lists)
    assert by_lists == link_parties(parties, THRESHOLD, match_keys=digests)
    assert sum(by_lists.key_links.values()) > 0
    with pytest.raises(ValueError, match="match-keys"):
        link_parties(
            parties,
            THRESHOLD,
            match_keys={p: d[:, :-1] for p, d in digests.items()},
        )


# --- match-keys: numpy joins against the dict reference -------------------------------


def _match_by_keys_reference(
    left_keys: Sequence[Sequence[bytes | None]], right_keys: Sequence[Sequence[bytes | None]]
) -> list[tuple[int, int, int]]:
    def unique(keys: Sequence[bytes | None]) -> dict[bytes, int]:
        counts = Counter(k for k in keys if k is not None)
        return {k: i for i, k in enumerate(keys) if k is not None and counts[k] == 1}

    linked_left: set[int] = set()
    linked_right: set[int] = set()
    links: list[tuple[int, int, int]] = []
    for level, (lefts, rights) in enumerate(zip(left_keys, right_keys, strict=True)):
        unique_right = unique(rights)
        found = []
        for key, i in unique(lefts).items():
            j = unique_right.get(key)
            if j is None or i in linked_left or j in linked_right:
                continue
            found.append((i, j, level))
        for i, j, _ in found:
            linked_left.add(i)
            linked_right.add(j)
        links.extend(sorted(found))
    return links


@settings(max_examples=200, deadline=None)
@given(
    levels=st.integers(1, 4),
    n_left=st.integers(0, 25),
    n_right=st.integers(0, 25),
    data=st.data(),
)
def test_key_joins_match_the_dict_reference(
    levels: int, n_left: int, n_right: int, data: st.DataObject
) -> None:
    def side(n: int) -> list[list[bytes | None]]:
        values = st.lists(st.integers(0, 8), min_size=n, max_size=n)
        return [
            [None if v == 0 else bytes([v]) * 16 for v in data.draw(values)] for _ in range(levels)
        ]

    left, right = side(n_left), side(n_right)
    expected = _match_by_keys_reference(left, right)
    assert match_by_keys(left, right) == expected
    links = link_by_key_digests(key_digests(left), key_digests(right))
    assert (
        list(zip(links.left.tolist(), links.right.tolist(), links.level.tolist(), strict=True))
        == expected
    )


def test_digests_keep_absent_and_zero_prefixed_keys_apart() -> None:
    zero_prefix = bytes(8) + b"\x01" * 8
    digests = key_digests([[None, zero_prefix, b"\x02" * 16]])
    assert digests.dtype == np.uint64
    assert digests[0, 0] == 0 and digests[0, 1] == 1 and digests[0, 2] != 0
    with pytest.raises(ValueError):
        key_digests([[b"short"]])
    with pytest.raises(ValueError):
        key_digests(np.zeros((2, 3), dtype=np.int64))


@settings(max_examples=100, deadline=None)
@given(
    keys=st.lists(
        st.lists(
            st.one_of(
                st.none(),
                st.binary(min_size=16, max_size=16).filter(any),
                st.just(bytes(8) + b"\x01" * 8),
            ),
            min_size=3,
            max_size=3,
        ),
        max_size=20,
    )
)
def test_wire_digests_equal_key_digests_of_the_same_keys(keys: list[list[bytes | None]]) -> None:
    """What the coordinator builds from the wire (records x levels of 16 bytes,
    zeros for none) equals key_digests of the same keys as lists."""
    levels = [[record[level] for record in keys] for level in range(3)]
    raw = b"".join(k or bytes(16) for record in keys for k in record)
    got = wire_digests(raw, len(keys), 3)
    assert got.shape == (3, len(keys))
    if keys:
        assert np.array_equal(got, key_digests(levels))
    with pytest.raises(ValueError):
        wire_digests(raw + b"\x00", len(keys), 3)


# --- clustering: compiled union-find against the tuple reference ----------------------


def _cluster_reference(edges: Sequence[Edge]) -> list[dict[str, int]]:
    """Greedy clustering over (party, row) tuples with a member dict per root."""
    ordered = sorted(
        (-e.score, *sorted(((e.left_party, e.left), (e.right_party, e.right)))) for e in edges
    )
    parent: dict[tuple[str, int], tuple[str, int]] = {}
    members: dict[tuple[str, int], dict[str, int]] = {}

    def find(node: tuple[str, int]) -> tuple[str, int]:
        if node not in parent:
            parent[node] = node
            members[node] = {node[0]: node[1]}
        while parent[node] != node:
            node = parent[node]
        return node

    for _, a, b in ordered:
        root_a, root_b = find(a), find(b)
        if root_a == root_b or members[root_a].keys() & members[root_b].keys():
            continue
        parent[root_b] = root_a
        members[root_a].update(members.pop(root_b))
    found = [dict(sorted(m.items())) for m in members.values() if len(m) >= 2]
    return sorted(found, key=lambda c: tuple(c.items()))


_edge = st.builds(
    lambda parties, left, right, score: Edge(parties[0], left, parties[1], right, score),
    st.lists(st.sampled_from(PARTIES), min_size=2, max_size=2, unique=True),
    st.integers(0, 6),
    st.integers(0, 6),
    st.sampled_from([0.8, 0.85, 0.9, 1.0]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_edge, max_size=40))
def test_clustering_matches_the_tuple_reference(edges: list[Edge]) -> None:
    assert cluster_records(edges) == _cluster_reference(edges)


def test_clustering_handles_more_than_64_parties() -> None:
    names = [f"p{k:03d}" for k in range(70)]
    edges = [Edge(a, 0, b, 0, 0.9) for a, b in itertools.pairwise(names)]
    edges.append(Edge(names[0], 1, names[-1], 0, 0.95))
    assert cluster_records(edges) == _cluster_reference(edges)


def test_cluster_parties_checks_its_blocks() -> None:
    block = EdgeBlock(0, 1, np.array([0]), np.array([3]), np.array([0.9]))
    assert cluster_parties([1, 4], [block]).tolist() == [[0, 3]]
    with pytest.raises(ValueError, match="out of range"):
        cluster_parties([1, 3], [block])
    with pytest.raises(ValueError, match="unknown party"):
        cluster_parties([1], [block])
    with pytest.raises(ValueError):
        EdgeBlock(1, 1, np.array([0]), np.array([0]), np.array([0.9]))
    with pytest.raises(ValueError):
        EdgeBlock(0, 1, np.array([0]), np.array([0]), np.array([1.5]))
    with pytest.raises(ValueError):
        EdgeBlock(0, 1, np.array([0, 1]), np.array([0]), np.array([0.9]))


def test_engine_clusters_equal_the_edge_path(parties: dict[str, np.ndarray]) -> None:
    result = link_parties(parties, THRESHOLD)
    edges = []
    for a, b in itertools.combinations(sorted(parties), 2):
        cands = score_pairs(parties[a], parties[b], THRESHOLD)
        edges += [
            Edge(a, i, b, j, s)
            for i, j, s in zip(
                cands.left.tolist(), cands.right.tolist(), cands.score.tolist(), strict=True
            )
        ]
    assert list(result.clusters) == _cluster_reference(edges)


# --- ordering -------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0.0, 0.5, 0.8, 0.8125, 0.9, 1.0]),
            st.integers(0, 2**40),
            st.integers(0, 40),
        ),
        max_size=60,
    )
)
def test_score_order_is_lexsort(rows: list[tuple[float, int, int]]) -> None:
    score = np.array([r[0] for r in rows], dtype=np.float64)
    first = np.array([r[1] for r in rows], dtype=np.int64)
    second = np.array([r[2] for r in rows], dtype=np.int64)
    # The same rows in the same order (identical rows may swap places).
    for left in (first, first << 22):  # the wide one cannot pack: lexsort's path
        got = score_order(score, left, second)
        expected = np.lexsort((second, left, -score))
        assert sorted(got.tolist()) == list(range(len(rows)))
        for column in (score, left, second):
            np.testing.assert_array_equal(column[got], column[expected])

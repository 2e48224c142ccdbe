"""Tests for the compiled Dice kernel behind score_pairs (headcount.linkage._kernel).

Every result is checked against `dice_reference` by brute force, on inputs
shaped to reach the kernel's edge cases: widths that are not whole words,
popcounts far apart (the Dice bound skips those pairs), thresholds that are
exactly achievable, output buffers too small for the pairs (resumed runs),
one or two threads, and concurrent callers.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headcount.linkage import _kernel
from headcount.linkage.dice import Candidates, best_pairs, dice_reference, score_pairs


def _reference(
    left: np.ndarray, right: np.ndarray, threshold: float
) -> dict[tuple[int, int], float]:
    found = {}
    for i, a in enumerate(left):
        for j, b in enumerate(right):
            score = dice_reference(a.tobytes(), b.tobytes())
            if score >= threshold:
                found[(i, j)] = score
    return found


def _as_dict(result: Candidates) -> dict[tuple[int, int], float]:
    return {
        (i, j): s
        for i, j, s in zip(
            result.left.tolist(), result.right.tolist(), result.score.tolist(), strict=True
        )
    }


@st.composite
def _clk_sets(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, float]:
    """Left and right CLKs with spread-out popcounts and planted near-matches.

    Row densities vary from sparse to dense, so popcounts differ enough for the
    Dice bound to skip whole tiles; some right rows are subsets or noisy copies
    of left rows; the threshold is sometimes a score that some pair has exactly.
    """
    width = draw(st.sampled_from([1, 7, 8, 31, 32, 33, 64, 128]))
    n_left = draw(st.integers(1, 21))
    n_right = draw(st.integers(1, 21))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    bits = width * 8

    def rows(n: int) -> np.ndarray:
        density = rng.choice([0.02, 0.1, 0.3, 0.6, 0.95], size=(n, 1))
        return np.packbits(rng.random((n, bits)) < density, axis=1)

    left = rows(n_left)
    right = rows(n_right)
    for j in range(n_right):
        kind = rng.integers(3)
        source = left[rng.integers(n_left)]
        if kind == 0:  # a subset: same bits, fewer of them
            right[j] = source & np.packbits(rng.random(bits) < rng.uniform(0.3, 1.0))
        elif kind == 1:  # a noisy copy
            right[j] = source ^ np.packbits(rng.random(bits) < rng.choice([0.0, 0.01, 0.05]))
    if draw(st.booleans()):
        a = left[rng.integers(n_left)]
        b = right[rng.integers(n_right)]
        score = dice_reference(a.tobytes(), b.tobytes())
        threshold = score if score > 0 else 0.5
    else:
        threshold = draw(st.floats(0.05, 1.0))
    return left.astype(np.uint8), right.astype(np.uint8), threshold


@settings(max_examples=150, deadline=None)
@given(_clk_sets(), st.sampled_from([1, 2]), st.sampled_from([1, 200, 5000, 64 * 2**20]))
def test_kernel_equals_reference(
    case: tuple[np.ndarray, np.ndarray, float], threads: int, max_block_bytes: int
) -> None:
    left, right, threshold = case
    expected = _reference(left, right, threshold)
    result = score_pairs(left, right, threshold, threads=threads, max_block_bytes=max_block_bytes)
    got = _as_dict(result)
    assert got.keys() == expected.keys()  # never misses a pair >= threshold, none extra
    assert got == expected  # scores bit for bit
    assert len(got) == len(result)  # each pair once


def test_many_hits_with_tiny_buffers_resume_to_the_same_result() -> None:
    # 60 x 50 rows that nearly all match: with a 1-byte budget every worker can
    # hold only one small tile of pairs per call, so the run is resumed many times.
    rng = np.random.default_rng(11)
    base = rng.random(1024) < 0.4
    left = np.packbits(base ^ (rng.random((60, 1024)) < 0.01), axis=1)
    right = np.packbits(base ^ (rng.random((50, 1024)) < 0.01), axis=1)
    expected = _reference(left, right, 0.9)
    assert len(expected) > 2500
    for threads in (1, 2):
        tiny = score_pairs(left, right, 0.9, max_block_bytes=1, threads=threads)
        assert _as_dict(tiny) == expected
    large = score_pairs(left, right, 0.9)
    np.testing.assert_array_equal(tiny.left, large.left)
    np.testing.assert_array_equal(tiny.right, large.right)
    np.testing.assert_array_equal(tiny.score, large.score)


def test_pairs_far_apart_in_popcount_are_found_only_when_they_qualify() -> None:
    # b is a subset of a, so Dice = 2|b| / (|a| + |b|): with |a| = 600 and
    # |b| = 400 that is exactly 0.8, at the edge of the popcount bound.
    a = np.zeros(1024, dtype=bool)
    a[:600] = True
    b = np.zeros(1024, dtype=bool)
    b[:400] = True
    c = np.zeros(1024, dtype=bool)
    c[:399] = True  # 798 / 999 < 0.8
    left = np.packbits(a[None, :], axis=1)
    right = np.packbits(np.stack([c, b, a]), axis=1)
    result = score_pairs(left, right, 0.8)
    assert _as_dict(result) == {(0, 2): 1.0, (0, 1): 0.8}


def test_two_threads_calling_at_once_get_their_own_results() -> None:
    rng = np.random.default_rng(5)
    left = np.packbits(rng.random((300, 1024)) < 0.3, axis=1)
    right = np.concatenate(
        [left[:150] ^ np.packbits(rng.random((150, 1024)) < 0.02, axis=1), left[150:]]
    )
    expected = score_pairs(left, right, 0.7)
    outcomes: list[Candidates] = []

    def run() -> None:
        outcomes.append(score_pairs(left, right, 0.7))

    workers = [threading.Thread(target=run) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(outcomes) == 4
    for got in outcomes:
        np.testing.assert_array_equal(got.left, expected.left)
        np.testing.assert_array_equal(got.right, expected.right)
        np.testing.assert_array_equal(got.score, expected.score)


@pytest.mark.parametrize("threads", [0, -1, True, 1.5, "2"])
def test_score_pairs_rejects_bad_thread_counts(threads: int) -> None:
    clks = np.ones((2, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="threads"):
        score_pairs(clks, clks, 0.8, threads=threads)


def test_more_threads_than_cores_are_reduced() -> None:
    clks = np.ones((2, 8), dtype=np.uint8)
    result = score_pairs(clks, clks, 0.8, threads=10_000)
    assert len(result) == 4


@settings(max_examples=60, deadline=None)
@given(st.floats(1e-6, 1.0), st.integers(1, 300))
def test_min_shared_table_is_the_least_qualifying_intersection(
    threshold: float, filter_bits: int
) -> None:
    table = _kernel.min_shared_table(threshold, filter_bits)
    assert len(table) == 2 * filter_bits + 1
    assert table[0] == 1  # two empty filters never match
    assert bool(np.all(np.diff(table) >= 0))
    for total in range(1, 2 * filter_bits + 1):
        need = int(table[total])
        assert 2 * need / total >= threshold  # the reference's own division
        assert need == 0 or 2 * (need - 1) / total < threshold


@given(st.floats(1e-9, 1.0))
def test_scaled_threshold_never_exceeds_the_threshold(threshold: float) -> None:
    scaled = _kernel.scale_threshold(threshold)
    assert scaled / 2**24 <= threshold
    assert threshold - scaled / 2**24 < 2**-24


# --- best_pairs: each left row's k best, kept in the kernel ------------------------


def _best_reference(
    left: np.ndarray, right: np.ndarray, threshold: float, k: int
) -> list[tuple[float, int, int]]:
    """Per left row, its pairs >= threshold by (score desc, right), the first k of
    them; all rows together sorted by (score desc, left, right)."""
    kept = []
    for i, a in enumerate(left):
        row = []
        for j, b in enumerate(right):
            score = dice_reference(a.tobytes(), b.tobytes())
            if score >= threshold:
                row.append((-score, i, j))
        kept.extend(sorted(row, key=lambda t: (t[0], t[2]))[:k])
    return sorted(kept)


def _as_rows(result: Candidates) -> list[tuple[float, int, int]]:
    return list(
        zip((-result.score).tolist(), result.left.tolist(), result.right.tolist(), strict=True)
    )


@settings(max_examples=150, deadline=None)
@given(_clk_sets(), st.integers(1, 6), st.sampled_from([1, 2]))
def test_best_pairs_are_each_rows_best_of_the_reference(
    case: tuple[np.ndarray, np.ndarray, float], k: int, threads: int
) -> None:
    left, right, threshold = case
    got = best_pairs(left, right, threshold, k, threads=threads)
    assert _as_rows(got) == _best_reference(left, right, threshold, k)


def test_best_pairs_break_ties_towards_the_lower_right_row() -> None:
    # Many right rows tie on score (copies, and subsets with equal Dice), and
    # there are more right rows than one run of the kernel (BLOCK_COLS), so
    # ties found in a later run must not displace earlier ones.
    rng = np.random.default_rng(3)
    left = np.packbits(rng.random((9, 256)) < 0.4, axis=1)
    right = np.concatenate([left[rng.integers(0, 9, 1500)], left[rng.integers(0, 9, 500)] & 0xF0])
    right = right[rng.permutation(len(right))]
    for k in (1, 5, 32, 400):
        got = best_pairs(left, right, 0.5, k)
        assert _as_rows(got) == _best_reference(left, right, 0.5, k)
        # The same as trimming score_pairs' output, which is in (score desc,
        # left, right) order, to each row's first k (what the engine did).
        seen: Counter[int] = Counter()
        first = []
        for row in _as_rows(score_pairs(left, right, 0.5)):
            seen[row[1]] += 1
            if seen[row[1]] <= k:
                first.append(row)
        assert _as_rows(got) == first


@pytest.mark.parametrize("k", [0, -1, 1.5, True])
def test_best_pairs_rejects_a_bad_k(k: object) -> None:
    ones = np.ones((2, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="k must be a positive int"):
        best_pairs(ones, ones, 0.5, k)  # type: ignore[arg-type]


def test_best_pairs_of_empty_sides_are_empty() -> None:
    ones = np.ones((3, 8), dtype=np.uint8)
    assert len(best_pairs(ones[:0], ones, 0.5, 4)) == 0
    assert len(best_pairs(ones, ones[:0], 0.5, 4)) == 0


# --- radix sort and run merging (blocking) ------------------------------------------


@st.composite
def _keys(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    """Keys below 2**bits, often with few distinct values (long runs of ties)."""
    bits = draw(st.integers(1, 64))
    dtype = draw(st.sampled_from([np.uint32, np.uint64] if bits <= 32 else [np.uint64]))
    n = draw(st.integers(0, 400))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    raw = rng.integers(0, 2**63, n, dtype=np.uint64) >> np.uint64(64 - min(bits, 63))
    if bits == 64:
        raw = raw << np.uint64(1) | rng.integers(0, 2, n, dtype=np.uint64)
    if draw(st.booleans()):  # only a handful of distinct keys
        raw = rng.choice(raw[:5], n) if n else raw
    return raw.astype(dtype), bits


@settings(max_examples=200, deadline=None)
@given(_keys())
def test_radix_argsort_is_numpys_stable_argsort(case: tuple[np.ndarray, int]) -> None:
    keys, bits = case
    sorted_keys, order = _kernel.radix_argsort(keys, bits)
    np.testing.assert_array_equal(order, np.argsort(keys, kind="stable"))
    np.testing.assert_array_equal(sorted_keys, keys[order])
    assert sorted_keys.dtype == keys.dtype


@settings(max_examples=100, deadline=None)
@given(_keys(), st.lists(st.integers(0, 400), max_size=5))
def test_radix_argsort_sorts_each_segment_on_its_own(
    case: tuple[np.ndarray, int], cuts: list[int]
) -> None:
    keys, bits = case
    starts = np.array([0, *sorted(min(c, len(keys)) for c in cuts), len(keys)], dtype=np.int64)
    sorted_keys, order = _kernel.radix_argsort_segments(keys, starts, bits)
    for a, b in itertools.pairwise(starts.tolist()):
        np.testing.assert_array_equal(order[a:b], np.argsort(keys[a:b], kind="stable"))
        np.testing.assert_array_equal(sorted_keys[a:b], np.sort(keys[a:b]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 20)), st.lists(st.integers(0, 20)))
def test_shared_runs_are_the_keys_both_sides_hold(left: list[int], right: list[int]) -> None:
    left_sorted = np.sort(np.array(left, dtype=np.uint64))
    right_sorted = np.sort(np.array(right, dtype=np.uint64))
    runs = _kernel.shared_runs(left_sorted, right_sorted)
    expected = [(left.count(key), right.count(key)) for key in sorted(set(left) & set(right))]
    assert [(int(l1 - l0), int(r1 - r0)) for l0, l1, r0, r1 in runs.tolist()] == expected
    for l0, l1, r0, r1 in runs.tolist():
        assert len(set(left_sorted[l0:l1].tolist()) | set(right_sorted[r0:r1].tolist())) == 1

"""Tests for the compiled Dice kernel behind score_pairs (headcount.linkage._kernel).

Every result is checked against `dice_reference` by brute force, on inputs
shaped to reach the kernel's edge cases: widths that are not whole words,
popcounts far apart (the Dice bound skips those pairs), thresholds that are
exactly achievable, output buffers too small for the pairs (resumed runs),
one or two threads, and concurrent callers.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headcount.linkage import _kernel
from headcount.linkage.dice import Candidates, dice_reference, score_pairs


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

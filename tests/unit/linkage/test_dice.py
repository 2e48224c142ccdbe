"""Tests for headcount.linkage.dice: the reference, and the fast kernel against it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headcount.linkage.dice import Candidates, dice_reference, row_dice, score_pairs


def _reference_pairs(
    left: np.ndarray, right: np.ndarray, threshold: float
) -> dict[tuple[int, int], float]:
    """Every pair at or above threshold, by brute force over dice_reference."""
    found = {}
    for i, a in enumerate(left):
        for j, b in enumerate(right):
            score = dice_reference(a.tobytes(), b.tobytes())
            if score >= threshold:
                found[(i, j)] = score
    return found


@st.composite
def _filter_sets(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, float]:
    """Left and right CLK arrays with planted near-duplicates, and a threshold.

    Random bytes alone score around 0.5, so right rows are partly noisy copies of
    left rows; the threshold is sometimes an exact achievable score, to test the
    boundary is inclusive.
    """
    width = draw(st.integers(1, 40))  # includes widths that are not whole words
    n_left = draw(st.integers(0, 12))
    n_right = draw(st.integers(0, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    density = draw(st.sampled_from([0.05, 0.3, 0.5, 0.9]))
    rng = np.random.default_rng(seed)
    left = np.packbits(rng.random((n_left, width * 8)) < density, axis=1)
    right = np.packbits(rng.random((n_right, width * 8)) < density, axis=1)
    for j in range(n_right):
        if n_left and rng.random() < 0.5:
            flips = np.packbits(rng.random(width * 8) < rng.choice([0.0, 0.01, 0.05]))
            right[j] = left[rng.integers(n_left)] ^ flips
    if draw(st.booleans()) and n_left and n_right:
        a, b = left[rng.integers(n_left)], right[rng.integers(n_right)]
        score = dice_reference(a.tobytes(), b.tobytes())
        threshold = score if score > 0 else 0.5
    else:
        threshold = draw(st.floats(0.01, 1.0))
    return left.astype(np.uint8), right.astype(np.uint8), threshold


def test_dice_reference_examples() -> None:
    assert dice_reference(b"\x0c", b"\x0a") == 0.5  # 1100 vs 1010: 2*1/(2+2)
    assert dice_reference(b"\xff\x00", b"\xff\x00") == 1.0
    assert dice_reference(b"\xf0", b"\x0f") == 0.0
    assert dice_reference(b"\x00\x00", b"\x00\x00") == 0.0
    assert dice_reference(b"\x00", b"\x01") == 0.0
    assert dice_reference(b"\x07\x00", b"\x01\x80") == pytest.approx(2 * 1 / (3 + 2))


def test_dice_reference_rejects_length_mismatch() -> None:
    with pytest.raises(ValueError, match="length"):
        dice_reference(b"\x00", b"\x00\x00")


@given(
    st.integers(1, 64).flatmap(
        lambda n: st.tuples(st.binary(min_size=n, max_size=n), st.binary(min_size=n, max_size=n))
    )
)
def test_dice_is_symmetric_and_in_unit_interval(pair: tuple[bytes, bytes]) -> None:
    a, b = pair
    score = dice_reference(a, b)
    assert 0.0 <= score <= 1.0
    assert score == dice_reference(b, a)


@given(st.binary(min_size=1, max_size=64).filter(lambda b: any(b)))
def test_dice_of_identical_non_empty_filters_is_one(a: bytes) -> None:
    assert dice_reference(a, a) == 1.0
    clks = np.frombuffer(a, dtype=np.uint8).reshape(1, -1)
    result = score_pairs(clks, clks, 1.0)
    assert result.left.tolist() == [0] and result.right.tolist() == [0]
    assert result.score.tolist() == [1.0]


@settings(max_examples=200, deadline=None)
@given(_filter_sets())
def test_kernel_agrees_exactly_with_reference(case: tuple[np.ndarray, np.ndarray, float]) -> None:
    left, right, threshold = case
    expected = _reference_pairs(left, right, threshold)
    result = score_pairs(left, right, threshold)
    got = {
        (i, j): s
        for i, j, s in zip(
            result.left.tolist(), result.right.tolist(), result.score.tolist(), strict=True
        )
    }
    assert got.keys() == expected.keys()  # no pair missed, none extra
    for pair, score in expected.items():
        assert abs(got[pair] - score) <= 1e-12
    assert all(s >= threshold for s in got.values())


@settings(max_examples=100, deadline=None)
@given(_filter_sets(), st.integers(1, 4096))
def test_tiny_blocks_give_the_same_result(
    case: tuple[np.ndarray, np.ndarray, float], max_block_bytes: int
) -> None:
    left, right, threshold = case
    small = score_pairs(left, right, threshold, max_block_bytes=max_block_bytes)
    large = score_pairs(left, right, threshold)
    np.testing.assert_array_equal(small.left, large.left)
    np.testing.assert_array_equal(small.right, large.right)
    np.testing.assert_array_equal(small.score, large.score)


def test_kernel_matches_reference_on_clk_sized_inputs_across_tiles() -> None:
    # 1024-bit filters at CLK-like density, with enough rows that a 64 KiB budget
    # splits both sides into several tiles.
    rng = np.random.default_rng(7)
    left = np.packbits(rng.random((150, 1024)) < 0.35, axis=1)
    flips = np.packbits(rng.random((120, 1024)) < 0.03, axis=1)
    right = np.concatenate(
        [
            left[rng.integers(150, size=120)] ^ flips,
            np.packbits(rng.random((90, 1024)) < 0.35, axis=1),
        ]
    )
    expected = _reference_pairs(left, right, 0.8)
    assert len(expected) >= 100  # the planted pairs are there to be found
    result = score_pairs(left, right, 0.8, max_block_bytes=64 * 1024)
    assert set(zip(result.left.tolist(), result.right.tolist(), strict=True)) == expected.keys()


def test_results_are_sorted_by_score_desc_then_left_then_right() -> None:
    rng = np.random.default_rng(3)
    left = np.packbits(rng.random((40, 64)) < 0.5, axis=1)
    result = score_pairs(left, left, 0.3)
    keys = list(
        zip((-result.score).tolist(), result.left.tolist(), result.right.tolist(), strict=True)
    )
    assert len(keys) > 40
    assert keys == sorted(keys)
    assert result.left.dtype == np.int64 and result.right.dtype == np.int64
    assert result.score.dtype == np.float64


def test_empty_filters_never_match() -> None:
    zeros = np.zeros((3, 16), dtype=np.uint8)
    assert len(score_pairs(zeros, zeros, 0.01)) == 0


def test_empty_inputs_give_no_pairs() -> None:
    some = np.ones((2, 8), dtype=np.uint8)
    none = np.zeros((0, 8), dtype=np.uint8)
    assert len(score_pairs(none, some, 0.5)) == 0
    assert len(score_pairs(some, none, 0.5)) == 0


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.0000001, float("nan"), True])
def test_score_pairs_rejects_bad_threshold(threshold: float) -> None:
    clks = np.ones((2, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="threshold"):
        score_pairs(clks, clks, threshold)


def test_score_pairs_rejects_width_mismatch() -> None:
    with pytest.raises(ValueError, match="widths differ"):
        score_pairs(np.ones((2, 8), dtype=np.uint8), np.ones((2, 16), dtype=np.uint8), 0.8)


@pytest.mark.parametrize(
    "bad",
    [
        np.ones((2, 8), dtype=np.int64),
        np.ones(8, dtype=np.uint8),
        np.ones((2, 0), dtype=np.uint8),
        [[1, 2, 3]],
    ],
)
def test_score_pairs_rejects_non_clk_arrays(bad: np.ndarray) -> None:
    good = np.ones((2, 8), dtype=np.uint8)
    with pytest.raises(ValueError):
        score_pairs(bad, good, 0.8)
    with pytest.raises(ValueError):
        score_pairs(good, bad, 0.8)


@pytest.mark.parametrize("max_block_bytes", [0, -1, 1.5, True])
def test_score_pairs_rejects_bad_block_size(max_block_bytes: int) -> None:
    clks = np.ones((2, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="max_block_bytes"):
        score_pairs(clks, clks, 0.8, max_block_bytes=max_block_bytes)


def test_candidates_checks_shapes_and_values() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        Candidates(np.array([0, 1]), np.array([0]), np.array([0.9, 0.8]))
    with pytest.raises(ValueError, match="1-D"):
        Candidates(np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)))
    with pytest.raises(ValueError, match=">= 0"):
        Candidates(np.array([-1]), np.array([0]), np.array([0.9]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Candidates(np.array([0]), np.array([0]), np.array([1.5]))


def test_candidates_are_read_only_copies() -> None:
    left = np.array([0, 1])
    candidates = Candidates(left, np.array([1, 0]), np.array([0.9, 0.8]))
    left[0] = 5
    assert candidates.left.tolist() == [0, 1]
    with pytest.raises(ValueError):
        candidates.left[0] = 7


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 20), st.integers(1, 16), st.integers(0, 2**32 - 1))
def test_row_dice_is_the_reference_row_by_row(rows: int, width: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    left = rng.integers(0, 256, (rows, width), dtype=np.uint8)
    right = rng.integers(0, 256, (rows, width), dtype=np.uint8)
    left[0] = 0
    right[0] = 0  # both empty: 0.0, as the reference says
    expected = [dice_reference(a.tobytes(), b.tobytes()) for a, b in zip(left, right, strict=True)]
    assert row_dice(left, right).tolist() == pytest.approx(expected, abs=1e-12)


def test_row_dice_refuses_rows_of_another_count() -> None:
    with pytest.raises(ValueError, match="row counts"):
        row_dice(np.zeros((2, 4), dtype=np.uint8), np.zeros((3, 4), dtype=np.uint8))

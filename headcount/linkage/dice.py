"""Dice similarity between CLKs: a readable reference and a fast all-pairs kernel.

Dice(a, b) = 2 |a AND b| / (|a| + |b|), where |x| counts set bits. It is 1.0 for
identical non-empty filters and 0.0 for disjoint ones. `dice_reference` states the
definition in plain Python; `score_pairs` is the vectorised kernel the
coordinator runs, and the tests hold it to the reference.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["Candidates", "dice_reference", "score_pairs"]

log = logging.getLogger(__name__)

# Peak bytes held per (left, right) pair of a tile: the AND of one word column
# (8), its popcount (1), the running intersection count (2 or 4), and for the
# threshold test the doubled count, the int64 and float64 denominators, the
# scaled denominator (8 each) and three boolean masks (3): 46, rounded up.
_BYTES_PER_PAIR = 48
# Tiles of about this many pairs keep the per-word temporaries in L2 cache; on a
# 2-core EPYC, 16..64 x 5000 tiles ran about twice as fast as 1000 x 5000 tiles.
_TARGET_TILE_PAIRS = 2**17
_MAX_TILE_RIGHT = 8192
# Slack for the cheap multiply-only prefilter, so it can only keep extra pairs
# (which the exact division then drops), never lose one at the threshold.
_PREFILTER_SLACK = 1e-12


@dataclass(frozen=True, slots=True, eq=False)
class Candidates:
    """Scored candidate pairs between a left and a right set of records.

    Arrays are copied to read-only 1-D arrays of the stated dtypes on
    construction, so a `Candidates` cannot change after it is checked.

    Attributes:
        left: ``int64`` row indices into the left CLK array, each >= 0.
        right: ``int64`` row indices into the right CLK array, each >= 0.
        score: ``float64`` Dice coefficients in [0, 1].

    Raises:
        ValueError: the arrays are not 1-D, differ in length, or hold a negative
            index or a score outside [0, 1].
    """

    left: np.ndarray
    right: np.ndarray
    score: np.ndarray

    def __post_init__(self) -> None:
        left = _frozen_array(self.left, np.int64)
        right = _frozen_array(self.right, np.int64)
        score = _frozen_array(self.score, np.float64)
        if left.ndim != 1 or right.ndim != 1 or score.ndim != 1:
            raise ValueError("left, right and score must be 1-D")
        if not len(left) == len(right) == len(score):
            raise ValueError("left, right and score must have equal lengths")
        if len(left) and (left.min() < 0 or right.min() < 0):
            raise ValueError("row indices must be >= 0")
        if len(score) and not bool(np.all((score >= 0.0) & (score <= 1.0))):
            raise ValueError("scores must lie in [0, 1]")
        object.__setattr__(self, "left", left)
        object.__setattr__(self, "right", right)
        object.__setattr__(self, "score", score)

    def __len__(self) -> int:
        return len(self.left)

    @classmethod
    def empty(cls) -> Candidates:
        """No pairs."""
        return cls(
            np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
        )


def _frozen_array(values: np.ndarray, dtype: type[np.generic]) -> np.ndarray:
    array = np.array(values, dtype=dtype, copy=True)
    array.setflags(write=False)
    return array


def dice_reference(a: bytes, b: bytes) -> float:
    """Dice coefficient of two equal-length bit strings, in plain Python.

    Returns:
        ``2 * popcount(a & b) / (popcount(a) + popcount(b))``, in [0, 1];
        0.0 when both are all zeros.

    Raises:
        ValueError: the lengths differ.
    """
    if len(a) != len(b):
        raise ValueError(f"filters differ in length: {len(a)} and {len(b)} bytes")
    x = int.from_bytes(a, "big")
    y = int.from_bytes(b, "big")
    total = x.bit_count() + y.bit_count()
    if total == 0:
        return 0.0
    return 2 * (x & y).bit_count() / total


def score_pairs(
    left: np.ndarray,
    right: np.ndarray,
    threshold: float,
    *,
    max_block_bytes: int = 64 * 2**20,
) -> Candidates:
    """Every (left row, right row) pair whose Dice coefficient is >= ``threshold``.

    Args:
        left: ``uint8`` array of shape ``(n_left, width_bytes)``, one CLK a row.
        right: ``uint8`` array of shape ``(n_right, width_bytes)``.
        threshold: minimum Dice score kept, in (0, 1].
        max_block_bytes: upper bound, in bytes, on the kernel's working memory
            for one tile of pairs (outputs excluded); at least one pair is
            always processed at a time, so memory stays bounded however large
            the inputs are.

    Returns:
        `Candidates` sorted by (score descending, left, right). Scores are
        bit-for-bit those of `dice_reference`.

    Raises:
        ValueError: inputs are not 2-D ``uint8`` of equal non-zero width, the
            threshold is outside (0, 1], or ``max_block_bytes`` is not positive.
    """
    _check_clks(left, "left")
    _check_clks(right, "right")
    if left.shape[1] != right.shape[1]:
        raise ValueError(
            f"left and right CLK widths differ: {left.shape[1]} and {right.shape[1]} bytes"
        )
    if isinstance(threshold, bool) or not isinstance(threshold, float | int | np.floating):
        raise ValueError("threshold must be a number in (0, 1]")
    if not 0.0 < threshold <= 1.0:  # also rejects NaN
        raise ValueError("threshold must be in (0, 1]")
    if isinstance(max_block_bytes, bool) or not isinstance(max_block_bytes, int):
        raise ValueError("max_block_bytes must be a positive int")
    if max_block_bytes <= 0:
        raise ValueError("max_block_bytes must be a positive int")
    threshold = float(threshold)
    n_left, n_right = left.shape[0], right.shape[0]
    if n_left == 0 or n_right == 0:
        return Candidates.empty()

    # Word-major layout (words, rows): the kernel walks one 64-bit column at a
    # time, so each step is a (tile_left x tile_right) operation whose
    # temporaries stay in cache, instead of materialising a 3-D
    # (left x right x words) array; measured about 5x faster.
    left_words = _as_word_columns(left)
    right_words = _as_word_columns(right)
    left_counts = np.bitwise_count(left_words).sum(axis=0, dtype=np.int64)
    right_counts = np.bitwise_count(right_words).sum(axis=0, dtype=np.int64)

    max_pairs = max(1, min(_TARGET_TILE_PAIRS, max_block_bytes // _BYTES_PER_PAIR))
    tile_right = min(n_right, _MAX_TILE_RIGHT, max_pairs)
    tile_left = max(1, min(n_left, max_pairs // tile_right))
    prefilter = threshold * (1.0 - _PREFILTER_SLACK)

    found_left: list[np.ndarray] = []
    found_right: list[np.ndarray] = []
    found_score: list[np.ndarray] = []
    for r0 in range(0, n_right, tile_right):
        r1 = min(n_right, r0 + tile_right)
        for l0 in range(0, n_left, tile_left):
            l1 = min(n_left, l0 + tile_left)
            shared = _intersections(left_words[:, l0:l1], right_words[:, r0:r1])
            # Denominators as float64 are exact (< 2**53); the multiply-only test
            # keeps a superset of the qualifying pairs, and the exact division
            # below, done the same way as dice_reference, decides.
            doubled = shared.astype(np.float64)
            doubled *= 2.0
            totals = (left_counts[l0:l1, None] + right_counts[None, r0:r1]).astype(np.float64)
            # shared > 0 also excludes two empty filters (0 >= 0 * t).
            rows, cols = np.nonzero((doubled >= totals * prefilter) & (shared > 0))
            if rows.size == 0:
                continue
            scores = doubled[rows, cols] / totals[rows, cols]
            keep = scores >= threshold
            found_left.append(rows[keep].astype(np.int64) + l0)
            found_right.append(cols[keep].astype(np.int64) + r0)
            found_score.append(scores[keep])

    if not found_left:
        return Candidates.empty()
    lefts = np.concatenate(found_left)
    rights = np.concatenate(found_right)
    scores = np.concatenate(found_score)
    # (score desc, left, right): a total order, so solvers downstream that take
    # pairs greedily are deterministic.
    order = np.lexsort((rights, lefts, -scores))
    log.debug("scored %d x %d CLKs: %d pairs >= %.3f", n_left, n_right, len(order), threshold)
    return Candidates(lefts[order], rights[order], scores[order])


def _check_clks(clks: np.ndarray, name: str) -> None:
    if not isinstance(clks, np.ndarray) or clks.dtype != np.uint8 or clks.ndim != 2:
        raise ValueError(f"{name} must be a 2-D uint8 array of CLKs")
    if clks.shape[1] == 0:
        raise ValueError(f"{name} CLKs must be at least one byte wide")


def _as_word_columns(clks: np.ndarray) -> np.ndarray:
    """``(words, rows)`` uint64 view of CLK rows, zero-padded to whole words."""
    width = clks.shape[1]
    padded_width = -(-width // 8) * 8
    if padded_width != width:
        # Zero bytes add nothing to any popcount, so padding keeps every score.
        padded = np.zeros((clks.shape[0], padded_width), dtype=np.uint8)
        padded[:, :width] = clks
        clks = padded
    words = np.ascontiguousarray(clks).view(np.uint64)
    return np.ascontiguousarray(words.T)


def _intersections(left_words: np.ndarray, right_words: np.ndarray) -> np.ndarray:
    """``popcount(l & r)`` for every pair of a tile, as a (left x right) array."""
    shape = (left_words.shape[1], right_words.shape[1])
    anded = np.empty(shape, dtype=np.uint64)
    counts = np.empty(shape, dtype=np.uint8)
    # uint16 counts up to 65535 bits, far beyond any CLK schema; wider input
    # falls back to uint32 rather than overflowing.
    bits = left_words.shape[0] * 64
    shared = np.zeros(shape, dtype=np.uint16 if bits < 2**16 else np.uint32)
    for word in range(left_words.shape[0]):
        np.bitwise_and(left_words[word, :, None], right_words[word, None, :], out=anded)
        np.bitwise_count(anded, out=counts)
        np.add(shared, counts, out=shared)
    return shared

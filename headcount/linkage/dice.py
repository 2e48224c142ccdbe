"""Dice similarity between CLKs: a readable reference and a fast all-pairs kernel.

Dice(a, b) = 2 |a AND b| / (|a| + |b|), where |x| counts set bits. It is 1.0 for
identical non-empty filters and 0.0 for disjoint ones. `dice_reference` states the
definition in plain Python; `score_pairs` is the compiled, multi-core kernel the
coordinator runs, and the tests hold it to the reference.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from headcount.linkage import _kernel

__all__ = [
    "Candidates",
    "best_pairs",
    "dice_reference",
    "row_dice",
    "score_order",
    "score_pairs",
]

log = logging.getLogger(__name__)

# Largest tile: left rows x right rows per rectangle (see TilePlan).
_TILE_ROWS = 256
_TILE_COLS = 512
# Rectangles generated per batch: 64k rectangles of 16 bytes x 4 is 2 MiB.
_RECTS_PER_BATCH = 2**16
# Pairs worth a thread of their own when the caller leaves the count to us:
# about a millisecond of kernel time.
_PAIRS_PER_THREAD = 2**21


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


def row_dice(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Dice coefficient of each row of ``left`` with the same row of ``right``.

    For a few thousand given pairs (no kernel: numpy's bit counts), as
    `dice_reference` defines it, 0.0 where both filters are empty.

    Raises:
        ValueError: not 2-D uint8 arrays of one shape.
    """
    check_clk_pair(left, right)
    if left.shape != right.shape:
        raise ValueError(f"row counts differ: {len(left)} and {len(right)}")
    both = np.bitwise_count(left & right).sum(axis=1, dtype=np.int64)
    total = np.bitwise_count(left).sum(axis=1, dtype=np.int64) + np.bitwise_count(right).sum(
        axis=1, dtype=np.int64
    )
    out: np.ndarray = np.where(total > 0, 2.0 * both / np.maximum(total, 1), 0.0)
    return out


def score_pairs(
    left: np.ndarray,
    right: np.ndarray,
    threshold: float,
    *,
    max_block_bytes: int = 64 * 2**20,
    threads: int | None = None,
) -> Candidates:
    """Every (left row, right row) pair whose Dice coefficient is >= ``threshold``.

    Both sides are sorted by popcount, and each tile of left rows is compared
    only with the right rows whose popcount lies within the Dice bound
    ``[|a| t / (2 - t), |a| (2 - t) / t]`` (padded by two bits against rounding):
    outside it no pair can reach ``t``, so skipping it loses nothing. Inside
    it the compiled kernel (`headcount.linkage._kernel`) counts
    ``popcount(a & b)`` for four left rows against a run of right rows at a
    time, on ``threads`` cores, and keeps a pair when the count reaches the
    least intersection that gives ``t`` for that pair's popcount total.

    Args:
        left: ``uint8`` array of shape ``(n_left, width_bytes)``, one CLK a row.
        right: ``uint8`` array of shape ``(n_right, width_bytes)``.
        threshold: minimum Dice score kept, in (0, 1].
        max_block_bytes: upper bound, in bytes, on the pair buffers the kernel
            fills before handing them back (about 20 bytes per pair slot, shared
            between the threads), which also sets the tile size; memory stays
            bounded however large the inputs are. Below the minimum (a 4 x 1
            tile per thread) the minimum is used. Besides this, each thread
            holds 16 KiB of counters, and the inputs are copied once, sorted.
        threads: worker threads, >= 1, capped at the cores numba was
            started with (``NUMBA_NUM_THREADS``, by default all of them);
            ``None`` uses all of them, or fewer for small inputs (one per
            ~2 million pairs).

    Returns:
        `Candidates` sorted by (score descending, left, right). Scores are
        bit-for-bit those of `dice_reference`.

    Raises:
        ValueError: inputs are not 2-D ``uint8`` of equal non-zero width, the
            threshold is outside (0, 1], ``max_block_bytes`` is not a positive
            int, or ``threads`` is not a positive int.
    """
    check_clk_pair(left, right)
    threshold = check_threshold(threshold)
    check_positive_int(max_block_bytes, "max_block_bytes")
    n_left, n_right = left.shape[0], right.shape[0]
    n_threads = resolve_threads(threads, n_left * n_right)
    if n_left == 0 or n_right == 0:
        return Candidates.empty()

    left_counts_raw = np.bitwise_count(left).sum(axis=1, dtype=np.int64)
    right_counts_raw = np.bitwise_count(right).sum(axis=1, dtype=np.int64)
    # Popcount order makes each left tile's feasible right rows one contiguous
    # run (the Dice bound is monotone in popcount). The order of ties does not
    # matter: the result is sorted by (score, left, right) at the end.
    left_order = np.argsort(left_counts_raw)
    right_order = np.argsort(right_counts_raw)
    left_rows = _kernel.pack_rows(left, left_order)
    left_counts = np.zeros(len(left_rows), dtype=np.int64)
    left_counts[:n_left] = left_counts_raw[left_order]
    right_t = _kernel.pack_columns(right, right_order)
    right_counts = np.ascontiguousarray(right_counts_raw[right_order])

    plan = TilePlan.for_budget(max_block_bytes, n_threads, n_left * n_right)
    batches = _popcount_window_rectangles(
        left_counts[:n_left], right_counts, threshold, plan.tile_rows, plan.tile_cols
    )
    rows, cols, shared = _kernel.collect_pairs(
        left_rows,
        left_counts,
        right_t,
        right_counts,
        threshold,
        batches,
        threads=n_threads,
        capacity=plan.capacity,
    )
    candidates = candidates_from_hits(
        left_order[rows],
        right_order[cols],
        shared,
        left_counts[rows] + right_counts[cols],
    )
    log.debug("scored %d x %d CLKs: %d pairs >= %.3f", n_left, n_right, len(candidates), threshold)
    return candidates


def best_pairs(
    left: np.ndarray,
    right: np.ndarray,
    threshold: float,
    k: int,
    *,
    threads: int | None = None,
) -> Candidates:
    """Each left row's ``k`` best pairs at Dice >= ``threshold``.

    The same pairs as taking, from `score_pairs` of the same arguments, the
    first ``k`` of each left row in its (score descending, left, right) order,
    that is each row's best scores with ties going to the lower right row;
    but the kernel keeps only those (`_kernel.best_per_row`), so the pairs
    that pass the threshold are never held, however many there are. Every
    left row is compared with every right row: cost ``n_left * n_right``
    comparisons, memory ``O(n_left * k)`` besides a packed copy of each side.

    Args:
        left: ``uint8`` array ``(n_left, width_bytes)``, one CLK a row.
        right: ``uint8`` array ``(n_right, width_bytes)``.
        threshold: minimum Dice score kept, in (0, 1].
        k: most pairs kept per left row, a positive int.
        threads: worker threads, as for `score_pairs`.

    Returns:
        `Candidates` sorted by (score descending, left, right); scores are
        bit-for-bit those of `dice_reference`.

    Raises:
        ValueError: as `score_pairs`, or ``k`` is not a positive int.
    """
    check_clk_pair(left, right)
    threshold = check_threshold(threshold)
    check_positive_int(k, "k")
    n_left, n_right = left.shape[0], right.shape[0]
    n_threads = resolve_threads(threads, n_left * n_right)
    if n_left == 0 or n_right == 0:
        return Candidates.empty()
    left_rows = _kernel.pack_rows(left)
    left_counts = np.zeros(len(left_rows), dtype=np.int64)
    left_counts[:n_left] = np.bitwise_count(left).sum(axis=1, dtype=np.int64)
    right_t = _kernel.pack_columns(right)
    right_counts = np.bitwise_count(right).sum(axis=1, dtype=np.int64)
    best_right, best_shared, best_total, found = _kernel.best_per_row(
        left_rows,
        left_counts,
        right_t,
        right_counts,
        threshold,
        k,
        rows=n_left,
        threads=n_threads,
    )
    held = np.arange(k) < found[:, None]
    return candidates_from_hits(
        np.repeat(np.arange(n_left, dtype=np.int64), found),
        best_right[held],
        best_shared[held],
        best_total[held],
    )


@dataclass(frozen=True, slots=True)
class TilePlan:
    """Tile shape and buffer size for one kernel run (internal to the linkage package).

    Attributes:
        tile_rows: left rows per rectangle, a multiple of 4.
        tile_cols: right rows per rectangle, >= 1.
        capacity: output pair slots per thread, >= tile_rows * tile_cols.
    """

    tile_rows: int
    tile_cols: int
    capacity: int

    @classmethod
    def for_budget(cls, max_block_bytes: int, threads: int, pairs: int) -> TilePlan:
        """The largest tiles (up to 256 x 512) whose pair buffers fit ``max_block_bytes``.

        Args:
            max_block_bytes: bytes for all threads' output slots together.
            threads: worker threads, >= 1.
            pairs: the most pairs the run can emit; no more slots are made.
        """
        slots = max(4, max_block_bytes // (_kernel.SLOT_BYTES * threads))
        # 256 x 512 measured best on Zen 5 (1.8e9 pairs/s a core against 1.4e9
        # for 32 x 2048): a right segment (64 KiB at 1024 bits) stays in L2
        # while 64 quads of left rows pass over it.
        tile_rows = max(4, min(_TILE_ROWS, slots // _TILE_COLS // 4 * 4))
        tile_cols = max(1, min(_TILE_COLS, slots // tile_rows))
        most = tile_rows * tile_cols
        return cls(tile_rows, tile_cols, max(most, min(slots, pairs)))


def check_threshold(threshold: float) -> float:
    """``threshold`` as a float in (0, 1]; ValueError otherwise (bools and NaN included)."""
    if isinstance(threshold, bool) or not isinstance(threshold, float | int | np.floating):
        raise ValueError("threshold must be a number in (0, 1]")
    if not 0.0 < threshold <= 1.0:  # also rejects NaN
        raise ValueError("threshold must be in (0, 1]")
    return float(threshold)


def resolve_threads(threads: int | None, pairs: int) -> int:
    """Threads to run ``pairs`` comparisons with; ValueError unless a positive int or None.

    ``None`` means every core, but one thread per `_PAIRS_PER_THREAD` pairs at
    most: below about a millisecond of work per core, waking a second thread
    costs more than it saves (on a busy machine, a scheduler time slice).
    An explicit count is only capped at numba's pool size.
    """
    if threads is None:
        return max(1, min(_kernel.max_threads(), pairs // _PAIRS_PER_THREAD))
    check_positive_int(threads, "threads")
    return min(threads, _kernel.max_threads())


def candidates_from_hits(
    left: np.ndarray, right: np.ndarray, shared: np.ndarray, totals: np.ndarray
) -> Candidates:
    """Sorted `Candidates` from kernel hits: row indices, intersections and popcount totals."""
    if len(left) == 0:
        return Candidates.empty()
    # float64 holds these integers exactly, and IEEE division is correctly
    # rounded, so this is the same number dice_reference's int / int gives.
    scores = (2.0 * shared.astype(np.float64)) / totals.astype(np.float64)
    # (score desc, left, right): a total order, so solvers downstream that take
    # pairs greedily are deterministic.
    order = score_order(scores, left, right)
    return Candidates(left[order], right[order], scores[order])


def score_order(score: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Indices sorting by (score descending, first, second), as ``np.lexsort((second,
    first, -score))`` does up to the order of identical rows, about six times faster.

    Scores take few distinct values (a Dice score is a ratio of two small
    integers), so each is replaced by its rank among the distinct scores,
    found by hashing, and rank, ``first`` and ``second`` are packed into one
    ``uint64`` key sorted once; lexsort's three passes are the fallback when
    they do not fit 64 bits. ``first`` and ``second`` are non-negative ints,
    ``score`` has no NaN.
    """
    if len(score) == 0:
        return np.zeros(0, dtype=np.intp)
    codes, distinct = pd.factorize(score, sort=False)
    ascending = np.unique(distinct)
    rank = (len(ascending) - 1 - np.searchsorted(ascending, distinct)).astype(np.uint64)[codes]
    first_bits = int(first.max()).bit_length()
    second_bits = int(second.max()).bit_length()
    if (len(ascending) - 1).bit_length() + first_bits + second_bits > 64:
        return np.lexsort((second, first, -score))
    key = (
        (rank << np.uint64(first_bits + second_bits))
        | (first.astype(np.uint64) << np.uint64(second_bits))
        | second.astype(np.uint64)
    )
    # Equal keys are equal in all three columns, so an unstable sort (numpy's
    # vectorised one) orders the rows as lexsort does, only permuting
    # identical rows among themselves.
    order: np.ndarray = np.argsort(key)
    return order


def _popcount_window_rectangles(
    left_counts: np.ndarray,
    right_counts: np.ndarray,
    threshold: float,
    tile_rows: int,
    tile_cols: int,
) -> Iterator[np.ndarray]:
    """Rectangles covering every pair within the Dice popcount bound, in batches.

    Both count arrays are sorted ascending. Each tile of ``tile_rows`` left
    rows meets the right rows whose popcount lies in
    ``[floor(lo * t / (2 - t)) - 2, ceil(hi * (2 - t) / t) + 2]`` for the
    tile's lowest and highest counts ``lo`` and ``hi``; that run is cut into
    pieces of ``tile_cols``. Batches hold about `_RECTS_PER_BATCH` rectangles
    so memory stays bounded.
    """
    starts = np.arange(0, len(left_counts), tile_rows, dtype=np.int64)
    ends = np.minimum(starts + tile_rows, len(left_counts))
    lowest = left_counts[starts].astype(np.float64)
    highest = left_counts[ends - 1].astype(np.float64)
    # Two bits of slack either side: the kernel's exact per-pair test decides,
    # so a wider run costs a little time and can never lose a pair.
    fewest = np.floor(lowest * threshold / (2.0 - threshold)) - 2
    most = np.ceil(highest * (2.0 - threshold) / threshold) + 2
    col_lo = np.searchsorted(right_counts, fewest, side="left").astype(np.int64)
    col_hi = np.searchsorted(right_counts, most, side="right").astype(np.int64)
    pieces = np.maximum(0, -(-(col_hi - col_lo) // tile_cols))
    tiles_done = 0
    while tiles_done < len(starts):
        # Take tiles until the batch holds enough rectangles (at least one tile).
        cumulative = np.cumsum(pieces[tiles_done:])
        take = max(1, int(np.searchsorted(cumulative, _RECTS_PER_BATCH, side="right")))
        chosen = slice(tiles_done, tiles_done + take)
        tiles_done += take
        per_tile = pieces[chosen]
        total = int(per_tile.sum())
        if total == 0:
            continue
        tile = np.repeat(np.arange(take), per_tile)
        piece = np.arange(total) - np.repeat(np.cumsum(per_tile) - per_tile, per_tile)
        rects = np.empty((total, 4), dtype=np.int64)
        rects[:, 0] = starts[chosen][tile]
        rects[:, 1] = ends[chosen][tile]
        rects[:, 2] = col_lo[chosen][tile] + piece * tile_cols
        rects[:, 3] = np.minimum(rects[:, 2] + tile_cols, col_hi[chosen][tile])
        yield rects


def check_positive_int(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int")


def check_clk_pair(left: np.ndarray, right: np.ndarray) -> None:
    """`check_clks` on both sides, and their widths equal (ValueError if not)."""
    check_clks(left, "left")
    check_clks(right, "right")
    if left.shape[1] != right.shape[1]:
        raise ValueError(
            f"left and right CLK widths differ: {left.shape[1]} and {right.shape[1]} bytes"
        )


def check_clks(clks: np.ndarray, name: str) -> None:
    if not isinstance(clks, np.ndarray) or clks.dtype != np.uint8 or clks.ndim != 2:
        raise ValueError(f"{name} must be a 2-D uint8 array of CLKs")
    if clks.shape[1] == 0:
        raise ValueError(f"{name} CLKs must be at least one byte wide")

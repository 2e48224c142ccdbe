"""Keyed Hamming-LSH blocking: score only pairs of CLKs that share a block.

Comparing every left CLK with every right CLK costs ``n_left * n_right``
comparisons; blocking cuts that to the pairs likely to match. This module uses
Hamming locality-sensitive hashing on the CLK bits (the bit-sampling LSH used
for Bloom-filter record linkage, e.g. Karapiperis and Verykios' lambda-fold
LSH blocking): each of ``bands`` bands samples
``bits_per_band`` bit positions, and a record's key in a band is its filter's
values at those positions. Two records share a block when they agree on every
sampled bit of at least one band. A pair whose filters differ in a fraction
``h`` of the bits shares one band with probability ``(1 - h) ** k`` and some
band with ``1 - (1 - (1 - h) ** k) ** bands`` (``k = bits_per_band``), so
near-duplicates almost always meet while unrelated filters rarely do.

The positions come from HMAC-SHA256 under a secret key passed in, not from a
public seed: without the key nobody can tell which bits form the blocks, so
nobody can craft records that land in (or stay out of) a chosen record's
blocks. Both parties' CLKs must be blocked under the same key.

Memory: one band is processed at a time, keeping its keys, sort orders and
the CLKs of rows that share a block (one copy of each side at most), and
the kernel's pair buffers, bounded by ``max_block_bytes``; no structure grows
with the number of pairs compared. A pair sharing several bands is scored in
each, but reported once: a pair found in band ``b`` is dropped if it also
agrees on an earlier band, where it was already reported.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from headcount.linkage import _kernel
from headcount.linkage.dice import (
    Candidates,
    TilePlan,
    candidates_from_hits,
    check_clks,
    check_positive_int,
    check_threshold,
    resolve_threads,
)

__all__ = [
    "DEFAULT_BANDS",
    "DEFAULT_BITS_PER_BAND",
    "MIN_SEED_KEY_BYTES",
    "BlockingStats",
    "blocking_stats",
    "candidate_pairs_blocked",
    "lsh_blocks",
]

log = logging.getLogger(__name__)

MIN_SEED_KEY_BYTES = 32
MAX_BITS_PER_BAND = 64  # a band's key is one uint64
MAX_BANDS = 1024

# Defaults from a sweep on synthetic populations (headcount.synth) encoded with
# the default 1024-bit CLK schema, education against health at Dice >= 0.8:
# with 100,000 people (14,642 x 97,017 records) 64 bands of 18 bits kept 99.75%
# of the pairs full comparison finds while comparing 0.52% of all pairs; 48 x 16
# kept 99.76% comparing 0.95%, 32 x 20 only 97.3%, 64 x 14 99.99% comparing
# 3.6%. The test suite checks the defaults on a 20,000-person population.
DEFAULT_BANDS = 64
DEFAULT_BITS_PER_BAND = 18

_DOMAIN = b"headcount/blocking/lsh/v1"
# Buckets are turned into rectangles for the kernel this many at a time.
_BUCKETS_PER_BATCH = 2**15


@dataclass(frozen=True, slots=True)
class BlockingStats:
    """How much work blocking saved.

    Attributes:
        pairs_total: ``n_left * n_right``, the pairs a full comparison scores.
        pairs_compared: pairs the blocked comparison scores: the sum over bands
            and blocks of (left rows x right rows) in the block, so a pair that
            shares several bands counts once for each.
        reduction_ratio: ``1 - pairs_compared / pairs_total``, in [0, 1]
            (0 when there are no pairs; floored at 0 when bands overlap so
            much that blocking scores more than everything).

    Raises:
        ValueError: a count is negative or the ratio is outside [0, 1].
    """

    pairs_total: int
    pairs_compared: int
    reduction_ratio: float

    def __post_init__(self) -> None:
        if self.pairs_total < 0 or self.pairs_compared < 0:
            raise ValueError("pair counts must be >= 0")
        if not 0.0 <= self.reduction_ratio <= 1.0:  # also rejects NaN
            raise ValueError("reduction_ratio must be in [0, 1]")


def lsh_blocks(clks: np.ndarray, *, bands: int, bits_per_band: int, seed_key: bytes) -> np.ndarray:
    """Each CLK's block key in every band.

    Args:
        clks: ``uint8`` array ``(n, width_bytes)``, one CLK a row (bit ``j`` is
            ``(row[j // 8] >> (7 - j % 8)) & 1``, as `headcount.linkage.clk`
            lays it out).
        bands: number of bands, 1..1024.
        bits_per_band: sampled bits per band, 1..64 and at most the filter's
            bit count.
        seed_key: secret of at least 32 bytes from which the sampled positions
            are derived; both parties of a linkage must use the same one.

    Returns:
        ``uint64`` array ``(n, bands)``: record ``r`` is in block
        ``(b, keys[r, b])`` of band ``b``, whose bit ``k`` is the filter's bit
        at the band's ``k``-th sampled position.

    Raises:
        ValueError: ``clks`` is not a 2-D ``uint8`` array of non-zero width, or
            a parameter is out of range.
    """
    check_clks(clks, "clks")
    positions = _band_positions(seed_key, clks.shape[1] * 8, bands, bits_per_band)
    out = np.empty((clks.shape[0], bands), dtype=np.uint64)
    data = np.ascontiguousarray(clks)
    for band in range(bands):
        out[:, band] = _keys_for_band(data, positions[band])
    return out


def candidate_pairs_blocked(
    left: np.ndarray,
    right: np.ndarray,
    threshold: float,
    *,
    seed_key: bytes,
    bands: int = DEFAULT_BANDS,
    bits_per_band: int = DEFAULT_BITS_PER_BAND,
    max_block_bytes: int = 64 * 2**20,
    threads: int | None = None,
) -> Candidates:
    """Pairs sharing an LSH block whose Dice coefficient is >= ``threshold``.

    Equal to `headcount.linkage.dice.score_pairs` restricted to the pairs that
    agree on every sampled bit of at least one band (see `lsh_blocks`): the
    same scores, bit for bit, each pair at most once, in the same order.
    Pairs that share no block are never scored, so a few true matches may be
    lost; `blocking_stats` and the tests measure how few.

    Args:
        left: ``uint8`` array ``(n_left, width_bytes)``, one CLK a row.
        right: ``uint8`` array ``(n_right, width_bytes)``.
        threshold: minimum Dice score kept, in (0, 1].
        seed_key: the blocking secret, at least 32 bytes.
        bands: number of bands, 1..1024; more bands keep more matches and
            score more pairs.
        bits_per_band: sampled bits per band, 1..64; more bits make smaller
            blocks and lose more matches.
        max_block_bytes: bound, in bytes, on the kernel's pair buffers, as for
            `score_pairs`.
        threads: worker threads as for `score_pairs`; with ``None`` the count
            is chosen band by band from the pairs the band compares.

    Returns:
        `Candidates` sorted by (score descending, left, right).

    Raises:
        ValueError: on malformed CLKs, mismatched widths, or a parameter out of
            range (see `lsh_blocks` and `score_pairs`).
    """
    check_clks(left, "left")
    check_clks(right, "right")
    if left.shape[1] != right.shape[1]:
        raise ValueError(
            f"left and right CLK widths differ: {left.shape[1]} and {right.shape[1]} bytes"
        )
    threshold = check_threshold(threshold)
    check_positive_int(max_block_bytes, "max_block_bytes")
    positions = _band_positions(seed_key, left.shape[1] * 8, bands, bits_per_band)
    n_left, n_right = left.shape[0], right.shape[0]
    resolve_threads(threads, 0)  # reject a bad count before any work
    if n_left == 0 or n_right == 0:
        return Candidates.empty()

    left = np.ascontiguousarray(left)
    right = np.ascontiguousarray(right)
    left_counts_all = np.bitwise_count(left).sum(axis=1, dtype=np.int64)
    right_counts_all = np.bitwise_count(right).sum(axis=1, dtype=np.int64)
    masks = _band_masks(positions, left.shape[1])

    found_left: list[np.ndarray] = []
    found_right: list[np.ndarray] = []
    found_shared: list[np.ndarray] = []
    found_totals: list[np.ndarray] = []
    for band in range(bands):
        shared_blocks = _shared_blocks(
            _keys_for_band(left, positions[band]), _keys_for_band(right, positions[band])
        )
        if shared_blocks is None:
            continue
        left_rows_of, left_sizes, right_rows_of, right_sizes = shared_blocks
        # Threads and buffers sized for this band's comparisons, which are
        # usually few: a second thread only pays when there is work for it.
        band_pairs = int(np.dot(left_sizes, right_sizes))
        n_threads = resolve_threads(threads, band_pairs)
        plan = TilePlan.for_budget(max_block_bytes, n_threads, band_pairs)
        left_rows = _kernel.pack_rows(left, left_rows_of)
        left_counts = np.zeros(len(left_rows), dtype=np.int64)
        left_counts[: len(left_rows_of)] = left_counts_all[left_rows_of]
        right_t = _kernel.pack_columns(right, right_rows_of)
        right_counts = np.ascontiguousarray(right_counts_all[right_rows_of])
        rows, cols, shared = _kernel.collect_pairs(
            left_rows,
            left_counts,
            right_t,
            right_counts,
            threshold,
            _block_rectangles(left_sizes, right_sizes, plan.tile_rows, plan.tile_cols),
            # A pair that agrees on an earlier band was reported there.
            np.ascontiguousarray(masks[:band]),
            threads=n_threads,
            capacity=plan.capacity,
        )
        found_left.append(left_rows_of[rows])
        found_right.append(right_rows_of[cols])
        found_shared.append(shared)
        found_totals.append(left_counts[rows] + right_counts[cols])
    if not found_left:
        return Candidates.empty()
    candidates = candidates_from_hits(
        np.concatenate(found_left),
        np.concatenate(found_right),
        np.concatenate(found_shared),
        np.concatenate(found_totals),
    )
    log.debug(
        "blocked scoring of %d x %d CLKs (%d bands of %d bits): %d pairs >= %.3f",
        n_left,
        n_right,
        bands,
        bits_per_band,
        len(candidates),
        threshold,
    )
    return candidates


def blocking_stats(
    left: np.ndarray,
    right: np.ndarray,
    *,
    seed_key: bytes,
    bands: int = DEFAULT_BANDS,
    bits_per_band: int = DEFAULT_BITS_PER_BAND,
) -> BlockingStats:
    """How many pairs `candidate_pairs_blocked` scores with these parameters.

    Counts only; nothing is scored. Memory is one band's keys at a time.

    Raises:
        ValueError: as `candidate_pairs_blocked`.
    """
    check_clks(left, "left")
    check_clks(right, "right")
    if left.shape[1] != right.shape[1]:
        raise ValueError(
            f"left and right CLK widths differ: {left.shape[1]} and {right.shape[1]} bytes"
        )
    positions = _band_positions(seed_key, left.shape[1] * 8, bands, bits_per_band)
    total = left.shape[0] * right.shape[0]
    compared = 0
    if total:
        left = np.ascontiguousarray(left)
        right = np.ascontiguousarray(right)
        for band in range(bands):
            shared_blocks = _shared_blocks(
                _keys_for_band(left, positions[band]), _keys_for_band(right, positions[band])
            )
            if shared_blocks is not None:
                _, left_sizes, _, right_sizes = shared_blocks
                compared += int(np.dot(left_sizes, right_sizes))
    ratio = max(0.0, 1.0 - compared / total) if total else 0.0
    return BlockingStats(pairs_total=total, pairs_compared=compared, reduction_ratio=ratio)


def _band_positions(
    seed_key: bytes, filter_bits: int, bands: int, bits_per_band: int
) -> np.ndarray:
    """``(bands, bits_per_band)`` distinct-within-band bit positions from ``seed_key``.

    Position stream of band ``b``: 32-bit big-endian words of
    ``HMAC-SHA256(seed_key, domain || b || counter)`` reduced modulo
    ``filter_bits`` (bias below 2**-19 for filters up to 8192 bits), repeats
    within a band skipped. Each band thus depends only on the key and its
    index, so adding bands keeps the existing ones.

    Raises:
        ValueError: the key is shorter than 32 bytes, or ``bands`` or
            ``bits_per_band`` is out of range for ``filter_bits``.
    """
    if not isinstance(seed_key, bytes | bytearray) or len(seed_key) < MIN_SEED_KEY_BYTES:
        raise ValueError(f"seed_key must be at least {MIN_SEED_KEY_BYTES} bytes")
    if isinstance(bands, bool) or not isinstance(bands, int) or not 1 <= bands <= MAX_BANDS:
        raise ValueError(f"bands must be an int in 1..{MAX_BANDS}")
    most = min(MAX_BITS_PER_BAND, filter_bits)
    if (
        isinstance(bits_per_band, bool)
        or not isinstance(bits_per_band, int)
        or not 1 <= bits_per_band <= most
    ):
        raise ValueError(f"bits_per_band must be an int in 1..{most}")
    key = bytes(seed_key)
    out = np.empty((bands, bits_per_band), dtype=np.int64)
    for band in range(bands):
        chosen: list[int] = []
        counter = 0
        while len(chosen) < bits_per_band:
            message = _DOMAIN + struct.pack(">II", band, counter)
            for word in struct.unpack(">8I", hmac.digest(key, message, hashlib.sha256)):
                position = word % filter_bits
                if position not in chosen and len(chosen) < bits_per_band:
                    chosen.append(position)
            counter += 1
        out[band] = chosen
    return out


def _keys_for_band(clks: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``uint64`` key of each row: bit ``k`` is the filter bit at ``positions[k]``."""
    out = np.empty(clks.shape[0], dtype=np.uint64)
    byte_index = np.ascontiguousarray(positions // 8, dtype=np.int64)
    shift = np.ascontiguousarray(7 - positions % 8, dtype=np.int64)
    _kernel.band_keys(clks, byte_index, shift, out)
    return out


def _band_masks(positions: np.ndarray, width_bytes: int) -> np.ndarray:
    """``(bands, W)`` ``uint64`` masks of each band's positions, in `pack_rows` layout."""
    bands = positions.shape[0]
    as_bytes = np.zeros((bands, width_bytes), dtype=np.uint8)
    for band in range(bands):
        np.bitwise_or.at(
            as_bytes[band],
            positions[band] // 8,
            (1 << (7 - positions[band] % 8)).astype(np.uint8),
        )
    return np.ascontiguousarray(_kernel.pack_rows(as_bytes)[:bands])


def _shared_blocks(
    left_keys: np.ndarray, right_keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Rows of the blocks both sides have, grouped block by block.

    Returns:
        ``(left_rows, left_sizes, right_rows, right_sizes)``: ``left_rows``
        lists the left row indices of the shared blocks, block after block,
        ``left_sizes[i]`` rows for the ``i``-th block (likewise on the right),
        all ``int64``; or ``None`` when no block is shared.
    """
    # Any sort order will do: the final result is sorted by (score, left, right).
    left_order = np.argsort(left_keys)
    right_order = np.argsort(right_keys)
    left_unique, left_start, left_size = _runs(left_keys[left_order])
    right_unique, right_start, right_size = _runs(right_keys[right_order])
    _, in_left, in_right = np.intersect1d(
        left_unique, right_unique, assume_unique=True, return_indices=True
    )
    if len(in_left) == 0:
        return None
    left_sizes = left_size[in_left].astype(np.int64)
    right_sizes = right_size[in_right].astype(np.int64)
    left_rows = left_order[_ranges(left_start[in_left], left_sizes)]
    right_rows = right_order[_ranges(right_start[in_right], right_sizes)]
    return left_rows.astype(np.int64), left_sizes, right_rows.astype(np.int64), right_sizes


def _runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct values of a sorted array, with each one's first index and run length."""
    if len(sorted_keys) == 0:
        empty = np.empty(0, dtype=np.int64)
        return sorted_keys[:0], empty, empty.copy()
    starts = np.flatnonzero(np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1])))
    sizes = np.diff(np.append(starts, len(sorted_keys)))
    return sorted_keys[starts], starts.astype(np.int64), sizes.astype(np.int64)


def _ranges(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Concatenation of ``range(start, start + size)`` for each pair, as ``int64``."""
    total = int(sizes.sum())
    offsets = np.cumsum(sizes) - sizes
    return np.repeat(starts.astype(np.int64) - offsets, sizes) + np.arange(total, dtype=np.int64)


def _block_rectangles(
    left_sizes: np.ndarray, right_sizes: np.ndarray, tile_rows: int, tile_cols: int
) -> Iterator[np.ndarray]:
    """Kernel rectangles covering each shared block's left x right rows, in batches.

    Block ``i`` holds left rows ``[L_i, L_i + left_sizes[i])`` and right rows
    ``[R_i, R_i + right_sizes[i])`` of the gathered arrays (``L``, ``R`` the
    running sums); it is cut into tiles of at most ``tile_rows`` x ``tile_cols``.
    """
    left_starts = np.cumsum(left_sizes) - left_sizes
    right_starts = np.cumsum(right_sizes) - right_sizes
    for first in range(0, len(left_sizes), _BUCKETS_PER_BATCH):
        chosen = slice(first, first + _BUCKETS_PER_BATCH)
        l_size = left_sizes[chosen]
        r_size = right_sizes[chosen]
        l_tiles = -(-l_size // tile_rows)
        r_tiles = -(-r_size // tile_cols)
        per_block = l_tiles * r_tiles
        block = np.repeat(np.arange(len(per_block)), per_block)
        index = _ranges(np.zeros(len(per_block), dtype=np.int64), per_block)
        l_tile = index // r_tiles[block]
        r_tile = index % r_tiles[block]
        rects = np.empty((len(block), 4), dtype=np.int64)
        rects[:, 0] = left_starts[chosen][block] + l_tile * tile_rows
        rects[:, 1] = np.minimum(
            rects[:, 0] + tile_rows, left_starts[chosen][block] + l_size[block]
        )
        rects[:, 2] = right_starts[chosen][block] + r_tile * tile_cols
        rects[:, 3] = np.minimum(
            rects[:, 2] + tile_cols, right_starts[chosen][block] + r_size[block]
        )
        yield rects

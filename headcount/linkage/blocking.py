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

Time: per band, each party's keys are computed and sorted in linear time
(a radix sort: keys have ``bits_per_band`` bits), the runs of equal keys the
two sides share are merged, and the kernel scores each block's pairs reading
the CLKs where they lie. Most of a band's cost is loading the scattered rows
of its blocks; the rest grows with the pairs the blocks hold, which, besides
near-duplicates, include chance agreements, about
``n_left * n_right / 2**bits_per_band`` a band for uniform bits: a quadratic
term. For two synthetic parties of a million records, a band's blocks held
5.9 million pairs of which 0.75 million scored >= 0.7; at 100,000 records,
126,000 and 75,000.

Memory: one band is processed at a time, keeping each party's keys and sort
order (8 bytes a record for bands of up to 32 bits) and the kernel's pair
buffers, bounded by ``max_block_bytes``; the CLKs are read in place, not
copied. The pairs found are held until the last band, 12 bytes each, and
no structure grows with the number of pairs compared. A pair sharing
several bands is scored in each, but reported once: a pair found in band
``b`` is dropped if it also agrees on an earlier band, where it was already
reported.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from headcount.linkage import _kernel
from headcount.linkage.dice import (
    Candidates,
    candidates_from_hits,
    check_clk_pair,
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
    "candidate_pairs_blocked_many",
    "check_blocked_pairs",
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
# What a pair in a block costs, in pairs of `score_pairs`' dense tiles (whose
# count `resolve_threads` takes): a block's rows are scattered, and loading
# them dominates. At 100,000 records a party, a band's blocks hold about
# 130,000 pairs, which the dense count gives one thread; two took blocking of
# six pairs from 1.75 s to 1.35 s.
_BLOCKED_PAIR_COST = 64


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
    (found,) = candidate_pairs_blocked_many(
        [left, right],
        [(0, 1, threshold)],
        seed_key=seed_key,
        bands=bands,
        bits_per_band=bits_per_band,
        max_block_bytes=max_block_bytes,
        threads=threads,
    )
    return found


def candidate_pairs_blocked_many(
    clks: Sequence[np.ndarray],
    pairs: Sequence[tuple[int, int, float]],
    *,
    seed_key: bytes,
    bands: int = DEFAULT_BANDS,
    bits_per_band: int = DEFAULT_BITS_PER_BAND,
    max_block_bytes: int = 64 * 2**20,
    threads: int | None = None,
    band_range: tuple[int, int] | None = None,
) -> list[Candidates]:
    """`candidate_pairs_blocked` for several pairs of parties at once.

    Each party's block keys are computed and sorted once a band, however
    many pairs it is in, rather than once for each of its pairs: with four
    parties (six pairs), four sorts a band instead of twelve.

    Args:
        clks: each party's ``uint8`` ``(records, width_bytes)`` CLKs, all of
            one width.
        pairs: ``(left party, right party, threshold)``, party as an index
            into ``clks``, threshold in (0, 1].
        seed_key, bands, bits_per_band, max_block_bytes, threads: as for
            `candidate_pairs_blocked`.
        band_range: ``(first, stop)``, to score only the pairs whose first
            shared band is in ``first..stop-1`` (``None``: every band). Ranges
            that cover ``0..bands`` without overlap split the work exactly:
            each pair is reported in its first shared band, whichever range
            that falls in, so merging the ranges' results (`merge_candidates`
            in `headcount.linkage.executor`) gives the whole run's, bit for
            bit. This is how an executor spreads blocked scoring over machines.

    Returns:
        For each pair, in order, what `candidate_pairs_blocked` gives for it.

    Raises:
        ValueError: as `candidate_pairs_blocked`, a party index is out of
            range, or ``band_range`` is not within ``0..bands``.
    """
    cuts = check_blocked_pairs(
        clks, pairs, seed_key=seed_key, bands=bands, bits_per_band=bits_per_band
    )
    check_positive_int(max_block_bytes, "max_block_bytes")
    resolve_threads(threads, 0)  # reject a bad count before any work
    first, stop = (0, bands) if band_range is None else band_range
    if not (0 <= first <= stop <= bands):
        raise ValueError(f"band_range must lie within 0..{bands}, got {band_range}")
    if not pairs:
        return []
    width = clks[pairs[0][0]].shape[1]
    positions = _band_positions(seed_key, width * 8, bands, bits_per_band)
    live = [k for k, (a, b, _) in enumerate(pairs) if len(clks[a]) and len(clks[b])]
    if not live:
        return [Candidates.empty() for _ in pairs]

    # The parties in some pair, their keys side by side in one array per band.
    used = sorted({p for k in live for p in pairs[k][:2]})
    data = {p: np.ascontiguousarray(clks[p]) for p in used}
    words = {p: _kernel.as_words(data[p]) for p in used}
    counts = {p: np.bitwise_count(data[p]).sum(axis=1, dtype=np.int64) for p in used}
    starts = np.zeros(len(used) + 1, dtype=np.int64)
    starts[1:] = np.cumsum([len(data[p]) for p in used])
    span = {p: slice(int(starts[i]), int(starts[i + 1])) for i, p in enumerate(used)}
    masks = _band_masks(positions, width)

    # Hits of every pair, band by band: 12 bytes a hit (int32 rows), a pair
    # holding about as many as it has candidates, since a pair is reported
    # only in the first band it shares.
    found: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in pairs]
    keys = np.empty(int(starts[-1]), dtype=_key_dtype(bits_per_band))
    for band in range(first, stop):
        for p in used:
            _kernel.band_keys(data[p], *_band_bytes(positions[band]), keys[span[p]])
        sorted_keys, order = _kernel.radix_argsort_segments(keys, starts, bits_per_band)
        for k in live:
            a, b, _ = pairs[k]
            blocks = _kernel.shared_runs(sorted_keys[span[a]], sorted_keys[span[b]])
            if len(blocks) == 0:
                continue
            # Threads and buffers sized for this band's comparisons, which
            # are usually few: a second thread only pays when there is work.
            band_pairs = _pairs_in(blocks)
            n_threads = resolve_threads(threads, band_pairs * _BLOCKED_PAIR_COST)
            slots = max_block_bytes // (_kernel.SLOT_BYTES * n_threads)
            found[k].append(
                _kernel.collect_block_pairs(
                    words[a],
                    words[b],
                    order[span[a]],
                    order[span[b]],
                    blocks,
                    cuts[k],
                    # A pair that agrees on an earlier band was reported there.
                    masks[:band],
                    threads=n_threads,
                    capacity=max(1, min(band_pairs, slots)),
                )
            )
    del keys, sorted_keys, order
    out = []
    for k, (a, b, _) in enumerate(pairs):
        hits, found[k] = found[k], []
        if not hits:
            out.append(Candidates.empty())
            continue
        hit_left = np.concatenate([h[0] for h in hits]).astype(np.int64)
        hit_right = np.concatenate([h[1] for h in hits]).astype(np.int64)
        shared = np.concatenate([h[2] for h in hits])
        del hits
        out.append(
            candidates_from_hits(
                hit_left, hit_right, shared, counts[a][hit_left] + counts[b][hit_right]
            )
        )
        log.debug(
            "blocked scoring of %d x %d CLKs (%d bands of %d bits): %d pairs >= %.3f",
            len(data[a]),
            len(data[b]),
            bands,
            bits_per_band,
            len(out[-1]),
            cuts[k],
        )
    return out


def check_blocked_pairs(
    clks: Sequence[np.ndarray],
    pairs: Sequence[tuple[int, int, float]],
    *,
    seed_key: bytes,
    bands: int,
    bits_per_band: int,
) -> list[float]:
    """Check `candidate_pairs_blocked_many`'s inputs without scoring anything.

    Returns:
        Each pair's threshold, checked.

    Raises:
        ValueError: as `candidate_pairs_blocked_many`.
    """
    for k, party in enumerate(clks):
        check_clks(party, f"clks[{k}]")
    cuts = []
    for a, b, threshold in pairs:
        if not (0 <= a < len(clks) and 0 <= b < len(clks)):
            raise ValueError(f"party index out of range in pair ({a}, {b})")
        check_clk_pair(clks[a], clks[b])
        cuts.append(check_threshold(threshold))
    if pairs:
        width = clks[pairs[0][0]].shape[1]
        if any(clks[p].shape[1] != width for a, b, _ in pairs for p in (a, b)):
            raise ValueError("CLK widths differ between the pairs' parties")
        # The key, band count and band width, as the bands will be drawn.
        _band_positions(seed_key, width * 8, bands, bits_per_band)
    return cuts


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
    check_clk_pair(left, right)
    positions = _band_positions(seed_key, left.shape[1] * 8, bands, bits_per_band)
    total = left.shape[0] * right.shape[0]
    compared = 0
    if total:
        left = np.ascontiguousarray(left)
        right = np.ascontiguousarray(right)
        for band in range(bands):
            left_sorted, _ = _kernel.radix_argsort(
                _keys_for_band(left, positions[band]), bits_per_band
            )
            right_sorted, _ = _kernel.radix_argsort(
                _keys_for_band(right, positions[band]), bits_per_band
            )
            compared += _pairs_in(_kernel.shared_runs(left_sorted, right_sorted))
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
    """Key of each row: bit ``k`` is the filter bit at ``positions[k]``.

    ``uint32`` for bands of up to 32 bits, else ``uint64``.
    """
    out = np.empty(clks.shape[0], dtype=_key_dtype(len(positions)))
    _kernel.band_keys(clks, *_band_bytes(positions), out)
    return out


def _key_dtype(bits_per_band: int) -> type[np.unsignedinteger]:
    """The narrowest of ``uint32`` and ``uint64`` that holds a band's key: the
    radix sort moves half the bytes on 32-bit keys."""
    return np.uint32 if bits_per_band <= 32 else np.uint64


def _band_bytes(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(byte index, shift) of each position, as `_kernel.band_keys` takes them."""
    byte_index = np.ascontiguousarray(positions // 8, dtype=np.int64)
    shift = np.ascontiguousarray(7 - positions % 8, dtype=np.int64)
    return byte_index, shift


def _band_masks(positions: np.ndarray, width_bytes: int) -> np.ndarray:
    """``(bands, W)`` ``uint64`` masks of each band's positions, in `as_words` layout."""
    bands = positions.shape[0]
    as_bytes = np.zeros((bands, width_bytes), dtype=np.uint8)
    for band in range(bands):
        np.bitwise_or.at(
            as_bytes[band],
            positions[band] // 8,
            (1 << (7 - positions[band] % 8)).astype(np.uint8),
        )
    return np.ascontiguousarray(_kernel.as_words(as_bytes))


def _pairs_in(blocks: np.ndarray) -> int:
    """Pairs the blocks hold: the sum of (left rows x right rows)."""
    return int(np.dot(blocks[:, 1] - blocks[:, 0], blocks[:, 3] - blocks[:, 2]))

"""Compiled inner loops for Dice scoring, LSH blocking, CLK encoding and clustering (numba).

Numba rather than a C extension: it installs from a wheel on every platform
pip supports, needs no compiler at install time, spreads a loop over cores
with ``prange``, and compiles for the host CPU, so LLVM emits the widest
popcount the machine has (AVX-512 ``vpopcntq`` where present, ``popcnt``
otherwise). ``cache=True`` keeps the compiled code beside this file (or in
numba's user cache when that is read-only, or, when neither is writable, as
for an unprivileged user with no home in the container image, in a per-user
directory under the system's temporary directory: `_ensure_cache_dir`), so
only the first process after an install pays the few seconds of compilation.
``NUMBA_CACHE_DIR`` set by the operator always wins.

Everything here works on prepared arrays and trusts its caller (`dice.py`,
`blocking.py`) to have checked shapes, dtypes and contiguity: the functions
are private and do no validation of their own.

Layouts (``W`` = 64-bit words per filter, a multiple of `WORD_MULTIPLE`):

- left filters are row-major ``(rows, W)`` ``uint64``; the kernel reads four
  left rows at a time, so the array carries at least 3 zero rows after the
  last row any rectangle names;
- right filters are word-major ``(W, rows)`` ``uint64``, so that one word of
  many right rows is contiguous and the compiler vectorises across pairs;
- a *rectangle* ``(l0, l1, r0, r1)`` asks for every pair of left rows
  ``l0 <= i < l1`` with right rows ``r0 <= j < r1``.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import numba
import numpy as np
from numba import prange
from numba.core import types
from numba.extending import intrinsic

__all__ = [
    "BLOCK_COLS",
    "SLOT_BYTES",
    "WORD_MULTIPLE",
    "as_words",
    "band_keys",
    "best_per_row",
    "collect_block_pairs",
    "collect_pairs",
    "greedy_party_union",
    "kernel_lock",
    "max_threads",
    "min_shared_table",
    "or_rows",
    "pack_columns",
    "pack_rows",
    "radix_argsort",
    "radix_argsort_segments",
    "scale_threshold",
    "scan_rectangles",
    "set_bloom_bits",
    "shared_runs",
]

# The counting loop takes four words of four left rows per step (16 values
# held in registers), so filters are zero-padded to a multiple of four words;
# zero words add nothing to any popcount.
WORD_MULTIPLE = 4
# Right rows counted per step against one quad of left rows: the quad's
# accumulators (16 KiB) stay in L1. On a 2-core EPYC (Zen 5), runs of 512 or
# 1024 ran at 1.9e9 pairs/s a core, against 1.2e9 for 64 (loop overhead).
BLOCK_COLS = 512
# Fixed-point bits of the threshold in the kernel's prefilter: both sides of
# its comparison stay below 2**(25 + log2(filter bits) + 1), far below 2**63
# for any CLK (8192 bits gives 2**39).
_SCALE_BITS = 24

# One process-wide lock around every parallel launch: the kernel already uses
# every core it is given, so concurrent callers (gRPC worker threads) gain
# nothing by overlapping, and serialising them keeps numba's thread-count
# setting, which is per calling thread, from racing and keeps any threading
# layer (including the non-thread-safe "workqueue") safe.
kernel_lock = threading.Lock()
# numba's stubs do not list its runtime settings.
_numba_config: Any = numba.config

# numba's own "workqueue" thread pool unless the operator picked a layer
# (NUMBA_THREADING_LAYER, which numba reads itself): with the lock above its
# lack of thread safety does not matter, it survives os.fork (GNU OpenMP
# does not), and it launches in about 0.5 ms where GNU OpenMP took 16 ms per
# call on a busy 2-core machine, which dominated small comparisons.
if _numba_config.THREADING_LAYER == "default":
    _numba_config.THREADING_LAYER = "workqueue"


def max_threads() -> int:
    """Most threads a kernel launch may use (numba's pool size, >= 1)."""
    return int(_numba_config.NUMBA_NUM_THREADS)


def _popcount_codegen(
    context: Any, builder: Any, signature: Any, args: Any
) -> Any:  # pragma: no cover - runs inside the compiler
    return builder.ctpop(args[0])


def _popcount_typer(typingctx: Any, value: Any) -> Any:  # pragma: no cover - compiled
    # LLVM's ctpop intrinsic: one popcnt instruction, or a vpopcntq lane when
    # the surrounding loop is vectorised (numba has no np.bitwise_count).
    # int64 result so that counts, thresholds and indices share one type
    # (numba compares uint64 with int64 through float64).
    return types.int64(types.uint64), _popcount_codegen


# Typed as a plain callable for mypy; numba sees the intrinsic.
_popcount = cast(Callable[[Any], int], intrinsic(_popcount_typer))


def _writable(directory: Path) -> bool:
    """Whether ``directory`` exists (or can be made) and this process may write in it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK | os.X_OK)


def cache_dir_for(here: Path, user_cache: Path, temp: Path, uid: int) -> Path | None:
    """Where compiled kernels should go when numba's own places fail: None when
    the package's ``__pycache__`` or the user's cache is writable (numba uses
    them), else ``<temp>/headcount-numba-<uid>``."""
    if _writable(here / "__pycache__") or _writable(user_cache):
        return None
    return temp / f"headcount-numba-{uid}"


def _ensure_cache_dir() -> None:
    """Give numba a writable cache directory before any ``cache=True`` kernel is
    defined; without one it refuses to import this module at all."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    chosen = cache_dir_for(
        Path(__file__).parent, Path(xdg) / "numba", Path(tempfile.gettempdir()), os.getuid()
    )
    if chosen is None:
        return
    chosen.mkdir(mode=0o700, exist_ok=True)
    check_private(chosen)
    numba.config.CACHE_DIR = str(chosen)  # type: ignore[attr-defined]


def check_private(directory: Path) -> None:
    """Refuse a cache directory this user does not own alone: numba loads
    compiled code from its cache, so a directory someone else made in the
    shared temporary directory could feed this process theirs."""
    info = directory.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise RuntimeError(
            f"{directory} is not private to this user; set NUMBA_CACHE_DIR to a directory"
            " only this user can write (the container image sets /var/cache/headcount)"
        )


_ensure_cache_dir()


@numba.njit(cache=True, nogil=True)
def _quad_counts(
    left: np.ndarray, i: int, right_t: np.ndarray, j0: int, n: int, acc: np.ndarray
) -> None:  # pragma: no cover - compiled
    """``acc[q, k] = popcount(left[i + q] & right column j0 + k)``, q < 4, k < n."""
    words = left.shape[1]
    acc0 = acc[0]
    acc1 = acc[1]
    acc2 = acc[2]
    acc3 = acc[3]
    for k in range(n):
        acc0[k] = 0
        acc1[k] = 0
        acc2[k] = 0
        acc3[k] = 0
    # Sixteen left words stay in registers while four right words stream past:
    # each loaded right word serves four pairs, and the k loop vectorises
    # (eight pairs per AVX-512 lane set) with no horizontal sums.
    for x in range(0, words, 4):
        a00 = left[i, x]
        a01 = left[i, x + 1]
        a02 = left[i, x + 2]
        a03 = left[i, x + 3]
        a10 = left[i + 1, x]
        a11 = left[i + 1, x + 1]
        a12 = left[i + 1, x + 2]
        a13 = left[i + 1, x + 3]
        a20 = left[i + 2, x]
        a21 = left[i + 2, x + 1]
        a22 = left[i + 2, x + 2]
        a23 = left[i + 2, x + 3]
        a30 = left[i + 3, x]
        a31 = left[i + 3, x + 1]
        a32 = left[i + 3, x + 2]
        a33 = left[i + 3, x + 3]
        r0 = right_t[x, j0 : j0 + n]
        r1 = right_t[x + 1, j0 : j0 + n]
        r2 = right_t[x + 2, j0 : j0 + n]
        r3 = right_t[x + 3, j0 : j0 + n]
        for k in range(n):
            b0 = r0[k]
            b1 = r1[k]
            b2 = r2[k]
            b3 = r3[k]
            acc0[k] += (
                _popcount(a00 & b0)
                + _popcount(a01 & b1)
                + _popcount(a02 & b2)
                + _popcount(a03 & b3)
            )
            acc1[k] += (
                _popcount(a10 & b0)
                + _popcount(a11 & b1)
                + _popcount(a12 & b2)
                + _popcount(a13 & b3)
            )
            acc2[k] += (
                _popcount(a20 & b0)
                + _popcount(a21 & b1)
                + _popcount(a22 & b2)
                + _popcount(a23 & b3)
            )
            acc3[k] += (
                _popcount(a30 & b0)
                + _popcount(a31 & b1)
                + _popcount(a32 & b2)
                + _popcount(a33 & b3)
            )


@numba.njit(parallel=True, cache=True, nogil=True)
def scan_rectangles(
    left: np.ndarray,
    left_counts: np.ndarray,
    right_t: np.ndarray,
    right_counts: np.ndarray,
    min_shared: np.ndarray,
    threshold_scaled: int,
    rects: np.ndarray,
    next_rect: np.ndarray,
    out_left: np.ndarray,
    out_right: np.ndarray,
    out_shared: np.ndarray,
    capacity: int,
) -> np.ndarray:  # pragma: no cover - compiled
    """Score every pair of the rectangles, keeping those that reach the threshold.

    Worker ``w`` (``w < len(next_rect)``) takes rectangles ``next_rect[w]``,
    ``next_rect[w] + len(next_rect)``, ... and writes its pairs to slots
    ``[w * capacity, (w + 1) * capacity)`` of the ``out_*`` arrays. It stops
    before a rectangle that might overflow its slots and leaves the index of
    that rectangle in ``next_rect[w]`` (``>= len(rects)`` when finished), so
    the caller drains the buffers and calls again. ``capacity`` must be at
    least the largest rectangle's pair count, or a worker never progresses.

    A pair ``(i, j)`` is kept when ``popcount(left[i] & right[j])`` is at
    least ``min_shared[left_counts[i] + right_counts[j]]``.
    ``threshold_scaled`` is `scale_threshold` of the same threshold, for a
    vectorised prefilter that never drops a qualifying pair.

    Returns:
        ``int64`` count of pairs each worker wrote.
    """
    n_workers = next_rect.shape[0]
    n_rects = rects.shape[0]
    filled = np.zeros(n_workers, dtype=np.int64)
    # One worker per thread, each taking every n_workers-th rectangle: the
    # rectangles are of similar size, so a static stride balances the cores
    # without any shared counter.
    for w in prange(n_workers):
        acc = np.empty((4, BLOCK_COLS), dtype=np.int64)
        base = w * capacity
        used = 0
        k = next_rect[w]
        while k < n_rects:
            l0 = rects[k, 0]
            l1 = rects[k, 1]
            r0 = rects[k, 2]
            r1 = rects[k, 3]
            # Stop (to be resumed) before a rectangle whose every pair might
            # not fit the worker's share of the output buffer.
            if used + (l1 - l0) * (r1 - r0) > capacity:
                break
            for i in range(l0, l1, 4):
                rows = min(4, l1 - i)
                for j0 in range(r0, r1, BLOCK_COLS):
                    n = min(BLOCK_COLS, r1 - j0)
                    _quad_counts(left, i, right_t, j0, n, acc)
                    counts = right_counts[j0 : j0 + n]
                    for q in range(rows):
                        row = i + q
                        ca = left_counts[row]
                        accq = acc[q]
                        # Cheap vectorised test first: it keeps a superset of
                        # the qualifying pairs (threshold rounded down), and
                        # the exact table lookup below runs only on blocks
                        # where something passed, which at CLK thresholds is
                        # rare.
                        passed = 0
                        for k2 in range(n):
                            passed += (accq[k2] << (_SCALE_BITS + 1)) >= (
                                ca + counts[k2]
                            ) * threshold_scaled
                        if passed == 0:
                            continue
                        for k2 in range(n):
                            col = j0 + k2
                            shared = accq[k2]
                            if shared < min_shared[ca + right_counts[col]]:
                                continue
                            out_left[base + used] = row
                            out_right[base + used] = col
                            out_shared[base + used] = shared
                            used += 1
            k += n_workers
        next_rect[w] = k
        filled[w] = used
    return filled


def best_per_row(
    left: np.ndarray,
    left_counts: np.ndarray,
    right_t: np.ndarray,
    right_counts: np.ndarray,
    threshold: float,
    k: int,
    *,
    rows: int,
    threads: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each left row's ``k`` best right rows at Dice >= ``threshold``, kept in the kernel.

    Scores every left row against every right row, as `scan_rectangles` over
    one whole rectangle would, but holds only each row's ``k`` best pairs by
    (score descending, right row ascending) instead of emitting every pair
    that passes. The quality estimate's sample needs just those, and at a
    floor of 0.6 some 400 of a million right rows pass for each sampled row.
    Emitting them meant bounding the pairs emitted per call, so the engine
    scored its sample in steps of ~54 rows, each repacking the other side:
    14.4 s for six pairs at a million records, 1.7 s with this kernel.

    Args:
        left, left_counts, right_t, right_counts: as for `scan_rectangles`
            (``left`` from `pack_rows`, ``right_t`` from `pack_columns`).
        threshold: minimum Dice score kept, in (0, 1].
        k: pairs kept per left row, >= 1.
        rows: left rows to score (``left`` carries three more, zero).
        threads: worker threads, 1..`max_threads`.

    Returns:
        ``(right, shared, total, found)``: ``int64`` arrays of shape
        ``(rows, k)`` (right row, intersection and popcount total of each
        kept pair, best first) and ``(rows,)`` (how many of a row's ``k``
        slots are filled; the rest hold -1 / 0).
    """
    best_right = np.full((rows, k), -1, dtype=np.int64)
    best_shared = np.zeros((rows, k), dtype=np.int64)
    best_total = np.zeros((rows, k), dtype=np.int64)
    found = np.zeros(rows, dtype=np.int64)
    min_shared = min_shared_table(threshold, left.shape[1] * 64)
    with kernel_lock:
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            _scan_best(
                left,
                left_counts,
                right_t,
                right_counts,
                min_shared,
                scale_threshold(threshold),
                # Groups of up to 256 rows (64 quads pass over each run of
                # right rows, as score_pairs' 256 x 512 tiles do), but at
                # least one group per thread.
                max(4, min(256, -(-rows // (4 * threads)) * 4)),
                best_right,
                best_shared,
                best_total,
                found,
            )
        finally:
            numba.set_num_threads(previous)
    return best_right, best_shared, best_total, found


@numba.njit(parallel=True, cache=True, nogil=True)
def _scan_best(
    left: np.ndarray,
    left_counts: np.ndarray,
    right_t: np.ndarray,
    right_counts: np.ndarray,
    min_shared: np.ndarray,
    threshold_scaled: int,
    group_rows: int,
    best_right: np.ndarray,
    best_shared: np.ndarray,
    best_total: np.ndarray,
    found: np.ndarray,
) -> None:  # pragma: no cover - compiled
    rows = found.shape[0]
    k = best_right.shape[1]
    n_right = right_t.shape[1]
    # One group of left rows per iteration, walked over the right rows a run
    # of BLOCK_COLS at a time with every quad of the group taking that run
    # before the next: the run stays in cache while the quads pass over it
    # (streaming all of a million right rows past one quad at a time made
    # this memory-bound, 2x slower than score_pairs). Each row is still
    # scanned by one thread from the first right row to the last, which is
    # what makes "the earlier pair wins a tie" mean "the lower right row
    # wins", as in the reference.
    for group in prange((rows + group_rows - 1) // group_rows):
        g0 = group * group_rows
        g1 = min(rows, g0 + group_rows)
        acc = np.empty((4, BLOCK_COLS), dtype=np.int64)
        score = np.zeros((g1 - g0, k), dtype=np.float64)
        # Each row's prefilter bar, in the fixed point of `scale_threshold`:
        # the threshold until the row holds k pairs, then its k-th best score
        # rounded down, so that once a row's best are found nearly every run
        # of right rows fails the vectorised test and is skipped whole.
        bar = np.full(g1 - g0, threshold_scaled, dtype=np.int64)
        for j0 in range(0, n_right, BLOCK_COLS):
            n = min(BLOCK_COLS, n_right - j0)
            counts = right_counts[j0 : j0 + n]
            for i in range(g0, g1, 4):
                _quad_counts(left, i, right_t, j0, n, acc)
                for q in range(min(4, g1 - i)):
                    row = i + q
                    slot = row - g0
                    ca = left_counts[row]
                    accq = acc[q]
                    bar_q = bar[slot]
                    passed = 0
                    for k2 in range(n):
                        passed += (accq[k2] << (_SCALE_BITS + 1)) >= (ca + counts[k2]) * bar_q
                    if passed == 0:
                        continue
                    for k2 in range(n):
                        shared = accq[k2]
                        total = ca + counts[k2]
                        if shared < min_shared[total]:
                            continue
                        # The division candidates_from_hits does, so scores and
                        # their ties are those of the reference, bit for bit.
                        s = (2.0 * shared) / total
                        held = found[row]
                        if held == k and s <= score[slot, k - 1]:
                            continue  # on a tie the lower right row, found first, stays
                        # Insertion into the row's sorted list: k is small
                        # (32), and once the list is full insertions are rare.
                        p = held if held < k else k - 1
                        while p > 0 and score[slot, p - 1] < s:
                            score[slot, p] = score[slot, p - 1]
                            best_right[row, p] = best_right[row, p - 1]
                            best_shared[row, p] = best_shared[row, p - 1]
                            best_total[row, p] = best_total[row, p - 1]
                            p -= 1
                        score[slot, p] = s
                        best_right[row, p] = j0 + k2
                        best_shared[row, p] = shared
                        best_total[row, p] = total
                        if held < k:
                            found[row] = held + 1
                        if found[row] == k:
                            # floor(score * 2**24) <= score * 2**24: a pair
                            # that beats the k-th best passes the prefilter.
                            bar[slot] = max(
                                threshold_scaled,
                                np.int64(np.floor(score[slot, k - 1] * (1 << _SCALE_BITS))),
                            )


# Widest digit of a radix pass: a 2**18-entry table of int64 counts (2 MiB)
# still sits in L2. One 18-bit pass sorted a million random 18-bit keys in
# 4.6 ms, two 9-bit passes in 7.9 ms; at 100,000 keys both took about 0.3 ms.
_MAX_DIGIT_BITS = 18


def radix_argsort(keys: np.ndarray, key_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable ascending sort of unsigned keys below ``2**key_bits``, in linear time.

    The order ``np.argsort(keys, kind="stable")`` gives, by least-significant-
    digit radix sort: ``ceil(key_bits / 18)`` counting passes over equal
    digits. See `radix_argsort_segments`, which this runs on one segment.

    Args:
        keys: ``uint32`` or ``uint64`` array, every value below ``2**key_bits``.
        key_bits: 1..64 (at most 32 for ``uint32`` keys).

    Returns:
        ``(sorted keys, order)``: keys of ``keys``' dtype, ``order`` ``int32``
        (``int64`` from 2**31 keys), ``sorted keys == keys[order]``.
    """
    return radix_argsort_segments(keys, np.array([0, len(keys)], dtype=np.int64), key_bits)


def radix_argsort_segments(
    keys: np.ndarray, starts: np.ndarray, key_bits: int
) -> tuple[np.ndarray, np.ndarray]:
    """`radix_argsort` of each segment ``keys[starts[s]:starts[s + 1]]``, in parallel.

    Blocking sorts every party's keys for each of 64 bands. numpy's
    comparison sort is O(n log n), and slower per key once the keys leave
    cache: it took 1.2 ms for 100,000 band keys and 23 ms for a million (20x
    for 10x), this 0.8 and 7.5 ms (32-bit keys and indices, half the memory
    traffic of 64-bit ones). The segments (one per party) are sorted on
    separate threads.

    Args:
        keys: ``uint32`` or ``uint64`` array, every value below ``2**key_bits``.
        starts: ``int64`` segment bounds, ``starts[0] == 0``, non-decreasing,
            ``starts[-1] == len(keys)``.
        key_bits: 1..64 (at most 32 for ``uint32`` keys).

    Returns:
        ``(sorted keys, order)``, both of ``keys``' length: each segment's
        keys sorted and their indices within the segment (``int32``, or
        ``int64`` from 2**31 keys).
    """
    passes = -(-key_bits // _MAX_DIGIT_BITS)
    order_type = np.int32 if len(keys) < 2**31 else np.int64
    out_keys = np.empty_like(keys)
    out_order = np.empty(len(keys), dtype=order_type)
    with kernel_lock:
        previous = numba.get_num_threads()
        numba.set_num_threads(max(1, min(max_threads(), len(starts) - 1)))
        try:
            _radix_argsort_segments(
                keys, starts, key_bits, -(-key_bits // passes), out_keys, out_order
            )
        finally:
            numba.set_num_threads(previous)
    return out_keys, out_order


@numba.njit(parallel=True, cache=True, nogil=True)
def _radix_argsort_segments(
    keys: np.ndarray,
    starts: np.ndarray,
    key_bits: int,
    digit_bits: int,
    out_keys: np.ndarray,
    out_order: np.ndarray,
) -> None:  # pragma: no cover - compiled
    for s in prange(starts.shape[0] - 1):
        a = starts[s]
        b = starts[s + 1]
        _radix_argsort_into(keys[a:b], key_bits, digit_bits, out_keys[a:b], out_order[a:b])


@numba.njit(cache=True, nogil=True)
def _radix_argsort_into(
    keys: np.ndarray,
    key_bits: int,
    digit_bits: int,
    out_keys: np.ndarray,
    out_order: np.ndarray,
) -> None:  # pragma: no cover - compiled
    n = keys.shape[0]
    passes = -(-key_bits // digit_bits)
    # The passes alternate between the outputs and scratch arrays, arranged
    # so that the last pass writes the outputs.
    if passes % 2 == 1:
        key = np.empty_like(out_keys)
        order = np.empty_like(out_order)
        spare_key = out_keys
        spare_order = out_order
    else:
        key = out_keys
        order = out_order
        spare_key = np.empty_like(out_keys)
        spare_order = np.empty_like(out_order)
    for i in range(n):
        key[i] = keys[i]
        order[i] = i
    start = np.empty(1 << digit_bits, dtype=np.int64)
    mask = (1 << digit_bits) - 1
    for shift in range(0, key_bits, digit_bits):
        start[:] = 0
        for i in range(n):
            start[(key[i] >> shift) & mask] += 1
        total = 0
        for d in range(start.shape[0]):
            size = start[d]
            start[d] = total
            total += size
        # Keys travel with their indices: each pass reads both in order and
        # writes them to their digit's run, never gathering at random.
        for i in range(n):
            d = (key[i] >> shift) & mask
            at = start[d]
            start[d] = at + 1
            spare_key[at] = key[i]
            spare_order[at] = order[i]
        key, spare_key = spare_key, key
        order, spare_order = spare_order, order


@numba.njit(cache=True, nogil=True)
def shared_runs(
    left_sorted: np.ndarray, right_sorted: np.ndarray
) -> np.ndarray:  # pragma: no cover - compiled
    """Runs of equal keys that both sorted ``uint64`` arrays have, by a merge.

    Returns:
        ``int64`` ``(m, 4)``: per shared key, ascending, ``(l0, l1, r0, r1)``
        with ``left_sorted[l0:l1]`` and ``right_sorted[r0:r1]`` its runs.
    """
    n_left = left_sorted.shape[0]
    n_right = right_sorted.shape[0]
    out = np.empty((min(n_left, n_right), 4), dtype=np.int64)
    m = 0
    i = 0
    j = 0
    while i < n_left and j < n_right:
        a = left_sorted[i]
        b = right_sorted[j]
        if a < b:
            i += 1
        elif b < a:
            j += 1
        else:
            i1 = i + 1
            while i1 < n_left and left_sorted[i1] == a:
                i1 += 1
            j1 = j + 1
            while j1 < n_right and right_sorted[j1] == a:
                j1 += 1
            out[m, 0] = i
            out[m, 1] = i1
            out[m, 2] = j
            out[m, 3] = j1
            m += 1
            i = i1
            j = j1
    return out[:m]


def as_words(clks: np.ndarray) -> np.ndarray:
    """Row-major ``(n, W)`` ``uint64`` words of CLK rows, ``W = ceil(width_bytes / 8)``.

    A view of ``clks`` when its rows are already whole, aligned words (the
    default schemas' 64- and 128-byte CLKs, as loaded), else a zero-padded
    copy. The word layout is `pack_rows`' (native byte order), so masks built
    from bytes the same way line up with it.
    """
    width = clks.shape[1]
    if width % 8 == 0 and clks.flags.c_contiguous and clks.ctypes.data % 8 == 0:
        return clks.view(np.uint64)
    out = np.zeros((clks.shape[0], -(-width // 8) * 8), dtype=np.uint8)
    out[:, :width] = clks
    return out.view(np.uint64)


def collect_block_pairs(
    left: np.ndarray,
    right: np.ndarray,
    left_order: np.ndarray,
    right_order: np.ndarray,
    blocks: np.ndarray,
    threshold: float,
    seen_masks: np.ndarray,
    *,
    threads: int,
    capacity: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of every block at Dice >= ``threshold``, not seen in an earlier band.

    Block ``b`` pairs left rows ``left_order[l0:l1]`` with right rows
    ``right_order[r0:r1]`` (``(l0, l1, r0, r1) = blocks[b]``); the rows are
    read where they lie, in `as_words` layout. A pair is kept when its
    intersection reaches the least that gives ``threshold`` (`min_shared_table`)
    and the two filters differ on some bit of every row of ``seen_masks``
    (as `scan_rectangles`).

    This replaces gathering each band's blocks into packed copies of both
    sides for `scan_rectangles`: at a million records a band's blocks hold
    nearly every row, so each band copied (and transposed) both parties
    whole, about 45% of blocking's time (one pair, 16 bands, profiled), and
    the copies grew faster than the rows once they no longer fitted in cache.
    Blocks hold a few rows each, so the popcounts run row by row, with each
    row's own count computed alongside, which saves a second scattered read.

    Args:
        left, right: ``uint64`` rows, `as_words` of each side.
        left_order, right_order: ``int64`` row indices grouped block by block.
        blocks: ``int64`` ``(m, 4)`` runs of the orders, as `shared_runs` gives.
        threshold: minimum Dice score kept, in (0, 1].
        seen_masks: ``uint64`` ``(bands, W)`` masks of the earlier bands.
        threads: worker threads, 1..`max_threads`.
        capacity: output slots per worker, >= 1; a worker whose slots fill
            stops at the pair it could not write and resumes there.

    Returns:
        ``(left row, right row, intersection)`` of the kept pairs: original
        row indices in the orders' dtype, ``int32`` intersections, in no
        particular order.
    """
    found_left: list[np.ndarray] = []
    found_right: list[np.ndarray] = []
    found_shared: list[np.ndarray] = []
    # Row indices in the orders' own type (int32 below 2**31 rows): a pass of
    # blocking holds every pair's hits until its last band, 12 bytes a hit.
    out_left = np.empty(threads * capacity, dtype=left_order.dtype)
    out_right = np.empty(threads * capacity, dtype=right_order.dtype)
    out_shared = np.empty(threads * capacity, dtype=np.int32)
    min_shared = min_shared_table(threshold, left.shape[1] * 64)
    # Per worker: next block, and the left and right offsets within it.
    resume = np.zeros((threads, 3), dtype=np.int64)
    resume[:, 0] = np.arange(threads) * _TOUCH_BLOCKS
    touched = np.zeros(threads, dtype=np.uint64)
    with kernel_lock:
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            while bool((resume[:, 0] < len(blocks)).any()):
                filled = _scan_blocks(
                    left,
                    right,
                    left_order,
                    right_order,
                    blocks,
                    min_shared,
                    seen_masks,
                    resume,
                    out_left,
                    out_right,
                    out_shared,
                    capacity,
                    touched,
                )
                for w, count in enumerate(filled.tolist()):
                    if count:
                        part = slice(w * capacity, w * capacity + count)
                        found_left.append(out_left[part].copy())
                        found_right.append(out_right[part].copy())
                        found_shared.append(out_shared[part].copy())
        finally:
            numba.set_num_threads(previous)
    if not found_left:
        return out_left[:0].copy(), out_right[:0].copy(), out_shared[:0].copy()
    return np.concatenate(found_left), np.concatenate(found_right), np.concatenate(found_shared)


@numba.njit(cache=True, nogil=True)
def _agrees_on_a_band(
    left: np.ndarray, i: int, right: np.ndarray, j: int, masks: np.ndarray
) -> bool:  # pragma: no cover - compiled
    """Whether row-major rows agree on every sampled bit of some band in ``masks``."""
    for band in range(masks.shape[0]):
        agree = True
        for x in range(left.shape[1]):
            if (left[i, x] ^ right[j, x]) & masks[band, x]:
                agree = False
                break
        if agree:
            return True
    return False


# Blocks a worker takes at a time in `_scan_blocks`, their rows loaded first.
_TOUCH_BLOCKS = 16


@numba.njit(cache=True, nogil=True)
def _score_run(
    left: np.ndarray,
    right: np.ndarray,
    left_order: np.ndarray,
    right_order: np.ndarray,
    blocks: np.ndarray,
    start: np.ndarray,
    run_end: int,
    min_shared: np.ndarray,
    seen_masks: np.ndarray,
    out_left: np.ndarray,
    out_right: np.ndarray,
    out_shared: np.ndarray,
    base: int,
    used: int,
    capacity: int,
) -> int:  # pragma: no cover - compiled
    """Score blocks ``start[0]`` to ``run_end`` from pair (``start[1]``, ``start[2]``).

    Writes kept pairs to slots ``base + used``, ... below ``base + capacity``;
    returns the new ``used``. When the slots fill, ``start`` is left at the
    pair that did not fit, else at ``(run_end, 0, 0)``.
    """
    words = left.shape[1]
    first = start[0]
    for k in range(first, run_end):
        l0 = blocks[k, 0]
        r0 = blocks[k, 2]
        r1 = blocks[k, 3]
        skip_i = start[1] if k == first else 0
        for ii in range(l0 + skip_i, blocks[k, 1]):
            row = left_order[ii]
            ca = 0
            for x in range(words):
                ca += _popcount(left[row, x])
            skip_j = start[2] if k == first and ii == l0 + skip_i else 0
            for jj in range(r0 + skip_j, r1):
                col = right_order[jj]
                shared = 0
                cb = 0
                for x in range(words):
                    b = right[col, x]
                    shared += _popcount(left[row, x] & b)
                    cb += _popcount(b)
                if shared < min_shared[ca + cb]:
                    continue
                if seen_masks.shape[0] and _agrees_on_a_band(left, row, right, col, seen_masks):
                    continue
                if used == capacity:
                    start[0] = k
                    start[1] = ii - l0
                    start[2] = jj - r0
                    return used
                out_left[base + used] = row
                out_right[base + used] = col
                out_shared[base + used] = shared
                used += 1
    start[0] = run_end
    start[1] = 0
    start[2] = 0
    return used


@numba.njit(parallel=True, cache=True, nogil=True)
def _scan_blocks(
    left: np.ndarray,
    right: np.ndarray,
    left_order: np.ndarray,
    right_order: np.ndarray,
    blocks: np.ndarray,
    min_shared: np.ndarray,
    seen_masks: np.ndarray,
    resume: np.ndarray,
    out_left: np.ndarray,
    out_right: np.ndarray,
    out_shared: np.ndarray,
    capacity: int,
    touched: np.ndarray,
) -> np.ndarray:  # pragma: no cover - compiled
    n_workers = resume.shape[0]
    n_blocks = blocks.shape[0]
    last = left.shape[1] - 1
    filled = np.zeros(n_workers, dtype=np.int64)
    # Worker w takes runs of _TOUCH_BLOCKS blocks: runs w, w + n_workers, ...
    # Blocks are many and small, so a static stride balances the cores
    # without a shared counter.
    for w in prange(n_workers):
        state = resume[w]
        used = 0
        sink = np.uint64(0)
        while state[0] < n_blocks:
            k = state[0]
            run_end = min(n_blocks, (k // _TOUCH_BLOCKS + 1) * _TOUCH_BLOCKS)
            # Load every row of the run's blocks first, in a loop of
            # independent loads the CPU keeps many of in flight, so that the
            # scoring finds them in cache. Scoring straight from the scattered
            # rows stalled on each block's loads in turn: for two parties of a
            # million records (rows far beyond cache) a band took 150 ms on
            # one core, with this about 60 ms. Both ends of a row, which may
            # straddle two cache lines (rows are 16-byte aligned as loaded).
            for ii in range(blocks[k, 0], blocks[run_end - 1, 1]):
                row = left_order[ii]
                sink ^= left[row, 0] ^ left[row, last]
            for jj in range(blocks[k, 2], blocks[run_end - 1, 3]):
                row = right_order[jj]
                sink ^= right[row, 0] ^ right[row, last]
            used = _score_run(
                left,
                right,
                left_order,
                right_order,
                blocks,
                state,
                run_end,
                min_shared,
                seen_masks,
                out_left,
                out_right,
                out_shared,
                w * capacity,
                used,
                capacity,
            )
            if state[0] < run_end:
                break  # the slots are full
            # This worker's next run.
            state[0] = run_end + (n_workers - 1) * _TOUCH_BLOCKS
        filled[w] = used
        # Stored so that the loads above are not optimised away.
        touched[w] = sink
    return filled


def band_keys(clks: np.ndarray, byte_index: np.ndarray, shift: np.ndarray, out: np.ndarray) -> None:
    """Write each filter's LSH key for one band into ``out`` (``uint64``, one per row).

    Bit ``k`` of a key is ``(clks[row, byte_index[k]] >> shift[k]) & 1``;
    ``clks`` is C-contiguous ``uint8``, the index arrays ``int64``.
    """
    with kernel_lock:
        _band_keys(clks, byte_index, shift, out)


@numba.njit(parallel=True, cache=True, nogil=True)
def _band_keys(
    clks: np.ndarray, byte_index: np.ndarray, shift: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - compiled
    for r in prange(clks.shape[0]):
        key = np.uint64(0)
        for k in range(byte_index.shape[0]):
            bit = (clks[r, byte_index[k]] >> shift[k]) & 1
            key |= np.uint64(bit) << np.uint64(k)
        out[r] = key


def set_bloom_bits(
    out: np.ndarray,
    item_ids: np.ndarray,
    item_starts: np.ndarray,
    item_tokens: np.ndarray,
    token_starts: np.ndarray,
    positions: np.ndarray,
) -> None:
    """OR each record's Bloom filter bits into ``out`` (CLK encoding, `clk.py`).

    Record ``r`` takes, for every field ``f``, the item ``i = item_ids[f, r]``
    (a distinct field value, with its salt), and sets bit ``b`` of its row for
    each ``b = positions[token_starts[t]:token_starts[t + 1]]`` of every token
    ``t = item_tokens[item_starts[i]:item_starts[i + 1]]``. Bit ``b`` is
    ``out[r, b // 8] & (0x80 >> b % 8)``, most significant bit first as
    ``numpy.packbits`` lays it out. ``out`` is C-contiguous ``uint8``, the
    index arrays ``int64`` and ``positions`` ``int32``, all already in range.
    """
    with kernel_lock:
        _set_bloom_bits(out, item_ids, item_starts, item_tokens, token_starts, positions)


@numba.njit(parallel=True, cache=True, nogil=True)
def _set_bloom_bits(
    out: np.ndarray,
    item_ids: np.ndarray,
    item_starts: np.ndarray,
    item_tokens: np.ndarray,
    token_starts: np.ndarray,
    positions: np.ndarray,
) -> None:  # pragma: no cover - compiled
    # One record per iteration: rows are disjoint, so threads never write the
    # same byte, and a record's ~130 bytes stay in L1 while its bits are set.
    for r in prange(out.shape[0]):
        for f in range(item_ids.shape[0]):
            item = item_ids[f, r]
            for q in range(item_starts[item], item_starts[item + 1]):
                token = item_tokens[q]
                for s in range(token_starts[token], token_starts[token + 1]):
                    bit = positions[s]
                    out[r, bit >> 3] |= np.uint8(0x80 >> (bit & 7))


def or_rows(out: np.ndarray, row_ids: np.ndarray, rows: np.ndarray) -> None:
    """``out[r] |= rows[row_ids[f, r]]`` for every ``f``, each row of ``out`` once.

    ``out`` and ``rows`` are C-contiguous ``uint64`` of equal width, ``row_ids``
    a 2-D ``int64`` array of valid row indices into ``rows``.
    """
    with kernel_lock:
        _or_rows(out, row_ids, rows)


@numba.njit(parallel=True, cache=True, nogil=True)
def _or_rows(
    out: np.ndarray, row_ids: np.ndarray, rows: np.ndarray
) -> None:  # pragma: no cover - compiled
    for r in prange(out.shape[0]):
        for f in range(row_ids.shape[0]):
            source = row_ids[f, r]
            for w in range(out.shape[1]):
                out[r, w] |= rows[source, w]


@numba.njit(cache=True, nogil=True)
def _find(parent: np.ndarray, node: int) -> int:  # pragma: no cover - compiled
    root = node
    while parent[root] != root:
        root = parent[root]
    while parent[node] != root:  # path compression
        parent[node], node = root, parent[node]
    return root


@numba.njit(cache=True, nogil=True)
def greedy_party_union(
    lo: np.ndarray, hi: np.ndarray, node_party: np.ndarray, words: int
) -> np.ndarray:  # pragma: no cover - compiled
    """Union-find over nodes ``0..len(node_party)-1``, taking edges in the given order.

    Edge ``e`` joins ``lo[e]`` and ``hi[e]`` (``int64``) when their clusters
    hold no party in common; each root keeps its cluster's parties as a
    bitmask of ``words`` 64-bit words (party ``p`` is bit ``p % 64`` of word
    ``p // 64``; ``node_party`` is ``int64``). Sequential by nature: whether an
    edge is taken depends on every earlier one.

    Returns:
        The root of every node (``int64``), fully compressed.
    """
    n = node_party.shape[0]
    parent = np.arange(n)
    size = np.ones(n, dtype=np.int64)
    mask = np.zeros((n, words), dtype=np.uint64)
    for i in range(n):
        mask[i, node_party[i] >> 6] = np.uint64(1) << np.uint64(node_party[i] & 63)
    for e in range(lo.shape[0]):
        a = _find(parent, lo[e])
        b = _find(parent, hi[e])
        if a == b:
            continue
        disjoint = True
        for w in range(words):
            if mask[a, w] & mask[b, w]:
                disjoint = False
                break
        if not disjoint:
            continue
        if size[a] < size[b]:
            a, b = b, a
        parent[b] = a
        size[a] += size[b]
        for w in range(words):
            mask[a, w] |= mask[b, w]
    for i in range(n):
        parent[i] = _find(parent, i)
    return parent


def scale_threshold(threshold: float) -> int:
    """``floor(threshold * 2**24)``: the kernel's fixed-point threshold, never above it."""
    return int(np.floor(threshold * (1 << _SCALE_BITS)))


def min_shared_table(threshold: float, filter_bits: int) -> np.ndarray:
    """Smallest intersection that reaches ``threshold``, for every popcount total.

    Entry ``T`` (0 <= T <= 2 * filter_bits) is the least ``c`` with
    ``2 * c / T >= threshold`` in float64 division, exactly as `dice_reference`
    computes it (both divisions are correctly rounded, so the test agrees with
    the reference bit for bit). Entry 0 is 1: two empty filters never match.
    The table is non-decreasing in ``T``.

    Args:
        threshold: in (0, 1]; checked by the caller.
        filter_bits: bits per (padded) filter, >= 1.

    Returns:
        ``int64`` array of length ``2 * filter_bits + 1``.
    """
    totals = np.arange(2 * filter_bits + 1, dtype=np.int64)
    denominators = np.maximum(totals, 1).astype(np.float64)
    # Start below the answer (the float estimate is within one of it), then
    # step up with the reference's own division until every entry qualifies:
    # the first c that does is the least.
    need: np.ndarray = np.maximum(np.ceil(threshold * totals / 2.0).astype(np.int64) - 2, 0)
    while True:
        short = (2.0 * need.astype(np.float64)) / denominators < threshold
        if not short.any():
            break
        need += short
    need[0] = 1
    return need


# Bytes of output buffer per pair slot: int64 left row, int64 right row, int32
# intersection count.
SLOT_BYTES = 20


def pack_rows(clks: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """Row-major ``uint64`` words of CLK rows, padded for the four-row kernel.

    Args:
        clks: ``uint8`` array ``(n, width_bytes)``.
        order: optional row indices to gather (in that order).

    Returns:
        ``(m + 3, W)`` ``uint64`` (``m`` rows taken), ``W`` a multiple of
        `WORD_MULTIPLE`; the padding bytes, words and three trailing rows are zero.
    """
    rows = clks.shape[0] if order is None else len(order)
    width = clks.shape[1]
    padded_width = -(-width // (8 * WORD_MULTIPLE)) * 8 * WORD_MULTIPLE
    out = np.empty((rows + 3, padded_width), dtype=np.uint8)
    out[rows:] = 0
    if padded_width == width:
        # The common case (CLKs of a multiple of 256 bits): gather straight
        # into place, without a zeroed intermediate.
        if order is None:
            out[:rows] = clks
        else:
            np.take(clks, order, axis=0, out=out[:rows])
    else:
        out[:rows, width:] = 0
        out[:rows, :width] = clks if order is None else clks[order]
    return out.view(np.uint64)


def pack_columns(clks: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """Word-major ``(W, m)`` ``uint64`` words of CLK rows (``m`` rows taken), zero-padded."""
    rows = pack_rows(clks, order)[:-3]
    return np.ascontiguousarray(rows.T)


def collect_pairs(
    left_rows: np.ndarray,
    left_counts: np.ndarray,
    right_t: np.ndarray,
    right_counts: np.ndarray,
    threshold: float,
    rect_batches: Iterator[np.ndarray],
    *,
    threads: int,
    capacity: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run `scan_rectangles` over batches of rectangles, draining the buffers.

    Args:
        left_rows, left_counts, right_t, right_counts: as for
            `scan_rectangles`.
        threshold: minimum Dice score kept, in (0, 1].
        rect_batches: ``int64`` ``(m, 4)`` arrays of rectangles, made lazily so
            that only one batch is held at a time.
        threads: worker threads, 1..`max_threads`.
        capacity: output slots per worker, at least the largest rectangle's
            pair count.

    Returns:
        ``(left row, right row, intersection)`` of the kept pairs as ``int64``
        arrays, in no particular order.
    """
    found_left: list[np.ndarray] = []
    found_right: list[np.ndarray] = []
    found_shared: list[np.ndarray] = []
    out_left = np.empty(threads * capacity, dtype=np.int64)
    out_right = np.empty(threads * capacity, dtype=np.int64)
    out_shared = np.empty(threads * capacity, dtype=np.int32)
    min_shared = min_shared_table(threshold, left_rows.shape[1] * 64)
    threshold_scaled = scale_threshold(threshold)
    with kernel_lock:
        previous = numba.get_num_threads()
        numba.set_num_threads(threads)
        try:
            for rects in rect_batches:
                next_rect = np.arange(threads, dtype=np.int64)
                while bool((next_rect < len(rects)).any()):
                    filled = scan_rectangles(
                        left_rows,
                        left_counts,
                        right_t,
                        right_counts,
                        min_shared,
                        threshold_scaled,
                        rects,
                        next_rect,
                        out_left,
                        out_right,
                        out_shared,
                        capacity,
                    )
                    for w, count in enumerate(filled.tolist()):
                        if count:
                            part = slice(w * capacity, w * capacity + count)
                            found_left.append(out_left[part].copy())
                            found_right.append(out_right[part].copy())
                            found_shared.append(out_shared[part].astype(np.int64))
        finally:
            numba.set_num_threads(previous)
    if not found_left:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty.copy(), empty.copy()
    return np.concatenate(found_left), np.concatenate(found_right), np.concatenate(found_shared)

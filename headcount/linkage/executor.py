"""Executors: where the linkage engine's Dice comparisons run.

`headcount.linkage.engine.link_parties` cuts every party pair's comparison
into `CompareTask` blocks (`plan_compare`), hands them all to an `Executor`,
and merges each pair's results back (`merge_candidates`). Pairs large enough
to be LSH-blocked go to the executor as one `BlockedJob`, which it may split
into ranges of bands (each pair is reported in its first shared band, so the
ranges' results merge into exactly the whole job's). Clustering then runs on
the caller's machine as before, so which executor ran the comparisons never
changes the links, only where the CPU time is spent.

- `LocalExecutor` (spec ``"local"``, the default) scores in this process on
  every core numba was started with. By default each pair is one task, which
  is exactly the single-machine path; memory is bounded by `score_pairs`
  itself.
- `DaskExecutor` (spec ``"dask://HOST:PORT"``, in `headcount.linkage.dask_executor`)
  sends the blocks to a running Dask distributed scheduler. Use it when the
  federation's comparison no longer fits one machine's time budget: the
  all-pairs work grows with the product of the parties' sizes, and one 2-core
  machine scores about 2-3e9 pairs/s, so two parties of a million records
  (1e12 pairs) take up to seven minutes and ten such parties (45 pairs) up to
  five hours; the kernel's popcount bound skips part of that, depending on the
  data. Below a few minutes of work the cluster's overhead (shipping CLKs, a
  second or so per run) is not worth it.

Running a cluster::

    pip install 'headcount[dask]'          # on the coordinator and every worker
    dask scheduler --port 8786             # one machine
    dask worker tcp://SCHED:8786 --nworkers 1 --nthreads 1   # every worker machine
    headcount link-files a.csv b.csv --out pairs.csv --executor dask://SCHED:8786

Each worker must have the same ``headcount`` version installed: a task names
its function by module path, and the worker imports it from its own install.
One worker process per machine with one Dask thread is the intended shape: a
task already uses all of the worker's cores through numba (set
``NUMBA_NUM_THREADS`` on the worker to limit it), so more Dask threads per
machine only oversubscribe the cores.

Trust boundary: the Dask scheduler and workers receive the parties' CLKs, so
they belong to the coordinator's trust domain and network, exactly as the
coordinator's own memory does. Dask's comms are unauthenticated plain TCP and
run pickled code, so anyone who can reach the scheduler can read the CLKs and
run code on the workers: keep it on a private network or behind Dask's own TLS
(``distributed.security``), which this module does not configure.
"""

from __future__ import annotations

import ipaddress
import logging
import string
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from headcount.errors import InvalidRequest
from headcount.linkage.blocking import candidate_pairs_blocked_many, check_blocked_pairs
from headcount.linkage.dice import (
    Candidates,
    check_clk_pair,
    check_clks,
    check_positive_int,
    check_threshold,
    score_pairs,
)

__all__ = [
    "DEFAULT_BLOCK_ROWS",
    "BlockedJob",
    "CompareTask",
    "Executor",
    "LocalExecutor",
    "compare_block",
    "dask_address",
    "executor_from_spec",
    "merge_candidates",
    "plan_compare",
]

log = logging.getLogger(__name__)

# Left rows per distributed task. 50k rows of 128-byte CLKs is 6.4 MiB to ship,
# and against a million right rows 5e10 pairs, about 20 s of one 2-core
# worker: long enough that per-task overhead (a scheduler round trip, and
# score_pairs sorting the right side by popcount) stays a few per cent, short
# enough that a federation of two parties still spreads over many workers.
DEFAULT_BLOCK_ROWS = 50_000
_DASK_SCHEME = "dask"
# Characters of a DNS name or an IPv4/IPv6 literal (brackets already removed).
_HOST_CHARS = frozenset(string.ascii_lowercase + string.digits + "-.:_")


@dataclass(frozen=True, slots=True, eq=False)
class CompareTask:
    """One block of one party pair: some left rows against every right row.

    Attributes:
        left: ``uint8`` ``(rows, width_bytes)`` block of the left party's CLKs,
            usually a view into the party's array.
        right: the right party's whole ``uint8`` CLK array. All tasks of a pair
            hold the same array object, which is how an executor knows to ship
            it once.
        left_start: index, in the left party's full array, of ``left[0]``, >= 0.
        threshold: minimum Dice score kept, in (0, 1].

    Raises:
        ValueError: an array is not 2-D ``uint8`` of non-zero width, the widths
            differ, ``left_start`` is negative or not an int, or the threshold
            is outside (0, 1] (messages as `score_pairs` gives them).
    """

    left: np.ndarray
    right: np.ndarray
    left_start: int
    threshold: float

    def __post_init__(self) -> None:
        check_clk_pair(self.left, self.right)
        start = self.left_start
        if isinstance(start, bool) or not isinstance(start, int | np.integer) or start < 0:
            raise ValueError("left_start must be a non-negative int")
        object.__setattr__(self, "left_start", int(start))
        object.__setattr__(self, "threshold", check_threshold(self.threshold))


@dataclass(frozen=True, slots=True, eq=False)
class BlockedJob:
    """Every LSH-blocked party pair of a run, scored together band by band.

    Attributes:
        clks: each party's ``uint8`` ``(records, width_bytes)`` CLKs.
        pairs: ``(left, right, threshold)``, parties as indices into ``clks``.
        seed_key: the blocking secret (at least 32 bytes).
        bands, bits_per_band: the LSH shape.

    An executor returns, per pair, what
    `headcount.linkage.blocking.candidate_pairs_blocked_many` gives for it.

    Raises:
        ValueError: as `candidate_pairs_blocked_many` (checked on creation,
            so bad input fails before anything is sent anywhere).
    """

    clks: tuple[np.ndarray, ...]
    pairs: tuple[tuple[int, int, float], ...]
    seed_key: bytes
    bands: int
    bits_per_band: int

    def __post_init__(self) -> None:
        check_blocked_pairs(
            self.clks,
            self.pairs,
            seed_key=self.seed_key,
            bands=self.bands,
            bits_per_band=self.bits_per_band,
        )

    def run(
        self, band_range: tuple[int, int] | None = None, threads: int | None = None
    ) -> list[Candidates]:
        """Score the job, or the part of it whose first shared band is in ``band_range``."""
        return candidate_pairs_blocked_many(
            list(self.clks),
            list(self.pairs),
            seed_key=self.seed_key,
            bands=self.bands,
            bits_per_band=self.bits_per_band,
            threads=threads,
            band_range=band_range,
        )


def plan_compare(
    left: np.ndarray, right: np.ndarray, threshold: float, block_rows: int | None
) -> list[CompareTask]:
    """The tasks comparing every row of ``left`` with every row of ``right``.

    Args:
        left: ``uint8`` ``(n_left, width_bytes)`` CLKs of the pair's left party.
        right: ``uint8`` ``(n_right, width_bytes)`` CLKs of its right party.
        threshold: minimum Dice score kept, in (0, 1].
        block_rows: most left rows per task, >= 1; ``None`` for one task.

    Returns:
        Tasks over consecutive, disjoint runs of left rows covering all of
        them, in row order; always at least one, so an empty side is still
        checked as `score_pairs` would check it.

    Raises:
        ValueError: the arrays or threshold are invalid (see `CompareTask`), or
            ``block_rows`` is not a positive int or None.
    """
    check_clks(left, "left")
    if block_rows is not None:
        check_positive_int(block_rows, "block_rows")
    n_left = left.shape[0]
    step = max(n_left, 1) if block_rows is None else block_rows
    # A row slice of an array is a view: planning copies no CLKs.
    return [
        CompareTask(left[start : start + step], right, start, threshold)
        for start in range(0, max(n_left, 1), step)
    ]


def compare_block(task: CompareTask, threads: int | None = None) -> Candidates:
    """Score one task: `score_pairs` on its block, left indices made global.

    Args:
        task: the block to score.
        threads: numba threads for the kernel, as for `score_pairs`.

    Returns:
        The block's pairs at or above the threshold, ``left`` indexing the left
        party's full array, sorted by (score descending, left, right).

    Raises:
        ValueError: ``threads`` is invalid (see `score_pairs`).
    """
    found = score_pairs(task.left, task.right, task.threshold, threads=threads)
    if task.left_start == 0:
        return found
    # Adding one offset to every left index keeps the (score, left, right) order.
    return Candidates(found.left + task.left_start, found.right, found.score)


def merge_candidates(parts: Sequence[Candidates]) -> Candidates:
    """One pair's block results as the single `Candidates` a whole-pair run gives.

    The blocks cover disjoint left rows, so the union has no duplicates; sorting
    it by (score descending, left, right), a total order, gives exactly the
    array `score_pairs` returns for the whole pair.
    """
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return Candidates.empty()
    left = np.concatenate([p.left for p in parts])
    right = np.concatenate([p.right for p in parts])
    score = np.concatenate([p.score for p in parts])
    order = np.lexsort((right, left, -score))
    return Candidates(left[order], right[order], score[order])


class Executor(Protocol):
    """Runs comparison tasks somewhere and returns their results in order.

    ``block_rows`` tells `plan_compare` how many left rows to put in a task
    (``None``: a whole pair per task). ``map_compare`` returns one `Candidates`
    per task, equal to ``compare_block(task)``, in the order of ``tasks``;
    ``map_blocked`` returns, per pair of the job, what ``job.run()`` does. Both
    raises what the comparison raises (ValueError for bad input), and
    `headcount.errors.PeerUnavailable` when remote workers are lost or cannot
    be reached. ``close`` releases connections; the caller who made the
    executor closes it.
    """

    @property
    def block_rows(self) -> int | None: ...

    def map_compare(self, tasks: Sequence[CompareTask]) -> list[Candidates]: ...

    def map_blocked(self, job: BlockedJob) -> list[Candidates]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Scores every task in this process, one after another, on all its cores.

    Args:
        block_rows: most left rows per task, >= 1; ``None`` (the default) for
            one task per pair, which is the single-machine engine unchanged.
        threads: numba threads per task, as for `score_pairs`.

    Raises:
        ValueError: ``block_rows`` or ``threads`` is not a positive int or None.
    """

    __slots__ = ("_block_rows", "_threads")

    def __init__(self, *, block_rows: int | None = None, threads: int | None = None) -> None:
        if block_rows is not None:
            check_positive_int(block_rows, "block_rows")
        if threads is not None:
            check_positive_int(threads, "threads")
        self._block_rows = block_rows
        self._threads = threads

    @property
    def block_rows(self) -> int | None:
        return self._block_rows

    def map_compare(self, tasks: Sequence[CompareTask]) -> list[Candidates]:
        return [compare_block(task, self._threads) for task in tasks]

    def map_blocked(self, job: BlockedJob) -> list[Candidates]:
        return job.run(threads=self._threads)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def executor_from_spec(
    spec: str,
    *,
    connect_timeout_s: float = 10.0,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> Executor:
    """The executor a ``--executor`` value names.

    Args:
        spec: ``"local"``, or ``"dask://HOST:PORT"`` for a Dask scheduler
            (``HOST`` a name, an IPv4 address, or an IPv6 address in brackets;
            ``PORT`` in 1-65535).
        connect_timeout_s: seconds to wait for a Dask scheduler, > 0.
        block_rows: left rows per Dask task, >= 1 (ignored for ``"local"``).

    Raises:
        InvalidRequest: the spec is neither form.
        FailedPrecondition: a Dask spec, but dask is not installed.
        PeerUnavailable: the Dask scheduler could not be reached in time.
    """
    if spec == "local":
        return LocalExecutor()
    # Imported here: the Dask executor's module is only needed for dask:// specs.
    from headcount.linkage.dask_executor import DaskExecutor

    return DaskExecutor(
        dask_address(spec), block_rows=block_rows, connect_timeout_s=connect_timeout_s
    )


def dask_address(spec: str) -> str:
    """The scheduler address ``tcp://HOST:PORT`` for ``dask://HOST:PORT``.

    Raises:
        InvalidRequest: ``spec`` is not of that form.
    """
    usage = f"executor must be 'local' or 'dask://HOST:PORT', not {spec!r}"
    # urlsplit silently drops tabs and newlines and strips leading blanks, so
    # those are refused first rather than parsed into some other address.
    if not isinstance(spec, str) or not spec.startswith(f"{_DASK_SCHEME}://"):
        raise InvalidRequest(usage)
    if not spec.isprintable() or any(c.isspace() for c in spec):
        raise InvalidRequest(usage)
    try:
        parts = urllib.parse.urlsplit(spec)
        port = parts.port
    except ValueError as exc:  # a port out of range or not a number, a bad bracket
        raise InvalidRequest(usage) from exc
    host = parts.hostname
    if (
        not host
        or not _HOST_CHARS.issuperset(host)
        or not port  # missing, or 0 (which would mean "any port")
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise InvalidRequest(usage)
    if ":" not in host:
        return f"tcp://{host}:{port}"
    try:
        ipaddress.IPv6Address(host)
    except ValueError as exc:
        raise InvalidRequest(usage) from exc
    return f"tcp://[{host}]:{port}"

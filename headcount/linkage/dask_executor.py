"""The Dask executor: the linkage engine's comparisons on a Dask distributed
cluster (see `headcount.linkage.executor` for when to use one, how to run the
cluster, and its trust boundary).

Each worker imports `_compare_remote` and `_blocked_remote` from its own
install by this module's path, so every worker must run the same ``headcount``
version as the coordinator.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import itertools
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from headcount.errors import FailedPrecondition, PeerUnavailable
from headcount.linkage.dice import (
    Candidates,
    check_positive_int,
)
from headcount.linkage.executor import (
    DEFAULT_BLOCK_ROWS,
    BlockedJob,
    CompareTask,
    compare_block,
    merge_candidates,
)

log = logging.getLogger(__name__)

# Dask tasks kept in flight per worker thread: two, so a worker has its next
# block already delivered while it scores the current one, but no more, so the
# cluster holds a bounded number of blocks and results at any time.
_IN_FLIGHT_PER_THREAD = 2
# Band ranges per worker for a blocked job: two, so a worker that finishes
# early takes over part of a slower one's share.
_BAND_RANGES_PER_WORKER = 2


def _compare_remote(
    left: np.ndarray, right: np.ndarray, left_start: int, threshold: float, threads: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`compare_block` as a Dask task: plain arrays in and out.

    Plain arrays travel as raw buffers (pickle protocol 5) with no copy through
    Python objects, and the client rebuilds, and so re-checks, the
    `Candidates` from them.
    """
    found = compare_block(CompareTask(left, right, left_start, threshold), threads)
    return found.left, found.right, found.score


def _blocked_remote(
    clks: list[np.ndarray],
    pairs: list[tuple[int, int, float]],
    seed_key: bytes,
    bands: int,
    bits_per_band: int,
    band_range: tuple[int, int],
    threads: int | None,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One band range of a `BlockedJob` as a Dask task: plain arrays out."""
    job = BlockedJob(tuple(clks), tuple(pairs), seed_key, bands, bits_per_band)
    return [(c.left, c.right, c.score) for c in job.run(band_range, threads)]


class DaskExecutor:
    """Scores tasks on a Dask distributed cluster.

    Each pair's right-hand CLKs are scattered to the cluster once (to every
    worker when the pair has more than one block, since every block needs
    them), and each block of left rows is scattered on its own, so a task runs
    where its block already is. At most two tasks per worker thread are in
    flight; a pair's data is released as soon as its last task returns, so the
    cluster holds about one pair's right side and a few blocks at a time.

    Args:
        address: the scheduler's Dask address, e.g. ``"tcp://10.0.0.5:8786"``.
        block_rows: most left rows per task, >= 1.
        connect_timeout_s: seconds to wait for the scheduler, > 0.
        threads: numba threads per task on the worker, as for `score_pairs`;
            ``None`` lets each task use the worker's cores.

    Raises:
        ValueError: ``block_rows``, ``connect_timeout_s`` or ``threads`` is out
            of range.
        FailedPrecondition: dask is not installed (the ``dask`` extra).
        PeerUnavailable: the scheduler could not be reached in time; the
            message names the address.
    """

    __slots__ = ("_address", "_block_rows", "_client", "_dask", "_threads")

    def __init__(
        self,
        address: str,
        *,
        block_rows: int = DEFAULT_BLOCK_ROWS,
        connect_timeout_s: float = 10.0,
        threads: int | None = None,
    ) -> None:
        check_positive_int(block_rows, "block_rows")
        if threads is not None:
            check_positive_int(threads, "threads")
        if not connect_timeout_s > 0:  # also rejects NaN
            raise ValueError("connect_timeout_s must be > 0")
        try:
            # Imported here: dask is an optional extra, and the local path
            # must not pay its import time.
            import distributed
        except ImportError as exc:
            raise FailedPrecondition(
                "the dask executor needs the 'dask' extra: pip install 'headcount[dask]'"
            ) from exc
        # distributed's own annotations leave most Client methods untyped, so
        # it is held as Any rather than failing mypy --strict at every call.
        self._dask: Any = distributed
        self._address = address
        self._block_rows = block_rows
        self._threads = threads
        try:
            # set_as_default=False: a library must not become the process's
            # implicit Dask client behind its caller's back.
            self._client: Any = self._dask.Client(
                address, timeout=connect_timeout_s, set_as_default=False
            )
        except OSError as exc:  # includes TimeoutError and refused connections
            raise PeerUnavailable(
                f"Dask scheduler {address} could not be reached "
                f"within {connect_timeout_s:g} s: {exc}"
            ) from exc
        log.info("dask executor connected to %s", address)

    @property
    def address(self) -> str:
        """The scheduler's address, as given."""
        return self._address

    @property
    def block_rows(self) -> int | None:
        return self._block_rows

    def map_compare(self, tasks: Sequence[CompareTask]) -> list[Candidates]:
        """Results of ``tasks`` in order, scored on the cluster.

        Raises:
            ValueError: a task raised it on its worker (bad input).
            PeerUnavailable: the scheduler or workers were lost, or there are
                no workers to scatter to.
        """
        with self._cluster_failures():
            return self._map_compare(tasks)

    def map_blocked(self, job: BlockedJob) -> list[Candidates]:
        """The job's candidates per pair, its bands split over the cluster.

        Every party's CLKs go to every worker once; each task scores a range
        of bands (two ranges per worker), and the ranges' results are merged
        per pair, which gives exactly what ``job.run()`` gives.

        Raises:
            PeerUnavailable: as `map_compare`.
        """
        if not job.pairs:
            return []
        with self._cluster_failures():
            return self._map_blocked(job)

    @contextlib.contextmanager
    def _cluster_failures(self) -> Iterator[None]:
        """A lost scheduler or worker as PeerUnavailable, naming the cluster."""
        try:
            yield
        except (OSError, concurrent.futures.CancelledError, self._dask.KilledWorker) as exc:
            # OSError covers lost connections and "no workers" timeouts.
            raise PeerUnavailable(f"Dask cluster at {self._address} failed: {exc}") from exc

    def _map_blocked(self, job: BlockedJob) -> list[Candidates]:
        client = self._client
        workers = max(1, len(client.nthreads()))
        ranges = max(1, min(job.bands, workers * _BAND_RANGES_PER_WORKER))
        cuts = [job.bands * i // ranges for i in range(ranges + 1)]
        shared = [client.scatter(c, broadcast=True, hash=False) for c in job.clks]
        futures = [
            client.submit(
                _blocked_remote,
                shared,
                list(job.pairs),
                job.seed_key,
                job.bands,
                job.bits_per_band,
                (first, stop),
                self._threads,
                pure=False,
            )
            for first, stop in itertools.pairwise(cuts)
        ]
        parts = client.gather(futures)
        del futures, shared  # lets the scheduler free the CLKs on every worker
        log.debug(
            "dask executor: %d bands in %d ranges over %d workers", job.bands, ranges, workers
        )
        return [
            merge_candidates([Candidates(*part[k]) for part in parts])
            for k in range(len(job.pairs))
        ]

    def _map_compare(self, tasks: Sequence[CompareTask]) -> list[Candidates]:
        if not tasks:
            return []
        client = self._client
        results: list[Candidates | None] = [None] * len(tasks)
        # Tasks are grouped by their right array's identity: the engine gives
        # each pair's tasks one shared array, so this is one group per pair.
        per_right = collections.Counter(id(task.right) for task in tasks)
        waiting = per_right.copy()
        shared: dict[int, Any] = {}  # id(right array) -> its Dask future
        threads = sum(client.nthreads().values())
        in_flight = max(1, threads) * _IN_FLIGHT_PER_THREAD
        position: dict[Any, int] = {}
        # Our client's loop, given explicitly: this client is not the process
        # default, which as_completed would otherwise look for.
        done = self._dask.as_completed(loop=client.loop)
        next_task = 0

        def submit(index: int) -> None:
            task = tasks[index]
            key = id(task.right)
            if key not in shared:
                # Broadcast only when several blocks need it; one block's right
                # side can go wherever its task runs.
                shared[key] = client.scatter(task.right, broadcast=per_right[key] > 1, hash=False)
            block = client.scatter(task.left, hash=False)
            future = client.submit(
                _compare_remote,
                block,
                shared[key],
                task.left_start,
                task.threshold,
                self._threads,
                pure=False,
            )
            position[future.key] = index
            done.add(future)

        while next_task < min(in_flight, len(tasks)):
            submit(next_task)
            next_task += 1
        for future in done:
            index = position.pop(future.key)
            left, right, score = future.result()
            results[index] = Candidates(left, right, score)
            key = id(tasks[index].right)
            waiting[key] -= 1
            if waiting[key] == 0:
                # Dropping the last reference lets the scheduler free the
                # pair's right side on every worker.
                del shared[key]
            if next_task < len(tasks):
                submit(next_task)
                next_task += 1
        log.debug("dask executor: %d tasks over %d worker threads", len(tasks), threads)
        finished = [r for r in results if r is not None]
        if len(finished) != len(tasks):  # pragma: no cover - as_completed yields every future
            raise RuntimeError("a Dask task returned no result")
        return finished

    def close(self) -> None:
        """Disconnect from the scheduler; the cluster itself keeps running."""
        self._client.close()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

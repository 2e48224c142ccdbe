"""Worker processes for large batches: an ``Encryptor`` spread over several cores.

Each worker rebuilds the encryptor from its parameters (``Encryptor.__reduce__``
pickles n, p, q, r0 and the exponent size, never the 5 MiB table).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_all_start_methods, get_context
from typing import TYPE_CHECKING

from headcount.errors import InvalidRequest

if TYPE_CHECKING:
    from headcount.crypto.paillier.encryptor import Encryptor

_MAX_WORKERS = 64


BULK_WORKERS_FROM = 50_000  # below this, starting a process pool costs more than it saves


def bulk_workers(items: int) -> int:
    """Worker processes worth using for a batch of ``items`` randomisers: all
    cores for large batches (each worker rebuilds its table, ~50 ms, and the
    pool takes ~0.5 s to start), one for small ones."""
    return min(os.cpu_count() or 1, _MAX_WORKERS) if items >= BULK_WORKERS_FROM else 1


def _check_workers(workers: int) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise InvalidRequest("workers must be an int")
    if not 1 <= workers <= _MAX_WORKERS:
        raise InvalidRequest(f"workers must be 1 to {_MAX_WORKERS}, got {workers}")
    return workers


_WORKER: Encryptor | None = None


def _pool_init(encryptor: Encryptor) -> None:
    global _WORKER
    _WORKER = encryptor


def _pool_run(task: tuple[str, Sequence[int] | int, bool]) -> list[int]:
    kind, items, secure = task
    enc = _WORKER
    if enc is None:  # pragma: no cover - the initializer always runs first
        raise RuntimeError("worker process was not initialised")
    if kind == "zeros" and isinstance(items, int):
        return enc.randomisers(items, secure_randomiser=secure)
    if kind == "encrypt" and not isinstance(items, int):
        return enc._encrypt(items, secure)
    if kind == "rerandomise" and not isinstance(items, int):
        return enc._rerandomise(items, secure)
    raise RuntimeError(f"unknown pool task {kind!r}")  # pragma: no cover


def run_in_workers(
    encryptor: Encryptor, kind: str, items: Sequence[int] | int, secure: bool, workers: int
) -> list[int]:
    """``encryptor``'s ``kind`` task ("zeros", "encrypt" or "rerandomise") over
    ``items`` (a count for "zeros"), split across ``workers`` processes."""
    total = items if isinstance(items, int) else len(items)
    # A few tasks per worker, so one slow process does not hold up the rest.
    parts = min(total, workers * 4)
    bounds = [total * i // parts for i in range(parts + 1)]
    tasks: list[tuple[str, Sequence[int] | int, bool]] = [
        (kind, hi - lo if isinstance(items, int) else items[lo:hi], secure)
        for lo, hi in itertools.pairwise(bounds)
    ]
    # forkserver, not fork: the nodes and coordinator run gRPC threads, and
    # forking a threaded process can deadlock the child.
    method = "forkserver" if "forkserver" in get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context(method),
        initializer=_pool_init,
        initargs=(encryptor,),
    ) as pool:
        out: list[int] = []
        for part in pool.map(_pool_run, tasks):
            out.extend(part)
    return out

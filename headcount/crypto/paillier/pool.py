"""Randomisers computed ahead of time, in the background, for one ``Encryptor``."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_all_start_methods, get_context
from typing import TYPE_CHECKING, Any

import gmpy2

from headcount.crypto.paillier.keys import PublicKey
from headcount.crypto.paillier.randomisers import Mpz, RandomiserSource, _check_count, _Params
from headcount.crypto.paillier.workers import _MAX_WORKERS, _check_workers
from headcount.errors import InvalidRequest

if TYPE_CHECKING:
    from headcount.crypto.paillier.encryptor import Encryptor

log = logging.getLogger(__name__)

# its own base), 5 MiB each at 2048 bits.
_REFILL_TABLES = 16

# A randomiser pool holds at most this many bytes of randomisers per key: 128 MiB
# is 262,144 randomisers at 2048 bits (512 bytes each, ~540 bytes as gmpy2
# objects), enough for the coordinator's two alignments over 100,000-record
# departments. A node sizes its pools to its own records (one pass), so at
# 100,000 records each of its pools holds ~54 MB.
POOL_MAX_BYTES = 128 * 2**20

# The refill thread asks for this many randomisers at a time (~80 ms of work at
# 2048 bits), so stop() and a resumed query are noticed quickly.
_POOL_BATCH = 512

# Refill threads pause while any pool in the process was drawn on in the last
# this-many seconds, so pools refill between queries rather than compete with
# one for the CPU.
_POOL_IDLE_S = 0.5

# A shortfall smaller than this is computed in the calling thread even when
# workers are allowed: starting worker processes (~0.3 s) would cost more.
_POOL_SHORTFALL_WORKERS_FROM = 4096

_last_take_s = 0.0  # time.monotonic() of the latest take() from any pool


def pool_limit(pub: PublicKey) -> int:
    """The largest pool capacity allowed for ``pub`` (``POOL_MAX_BYTES`` of randomisers)."""
    return POOL_MAX_BYTES // pub.ciphertext_bytes


class RandomiserPool:
    """Short-exponent randomisers of one ``Encryptor``, computed ahead of time.

    A randomiser R (an encryption of 0) does not depend on the data, so a daemon
    thread has them computed in the background and keeps up to ``capacity``
    ready; encrypting, drawing E(0) or re-randomising then costs one
    modular multiplication online. ``take`` hands each randomiser out exactly once
    (reusing one would link two ciphertexts and leak the ratio of their
    plaintexts) and computes any shortfall on the spot, so a cold or empty pool
    is only slower, never wrong. The randomisers are as secret as the plaintexts
    they will hide: they live in this object's memory only (and, briefly, the
    refill process's) and are never logged, pickled to storage, stored or sent.

    The arithmetic runs in a child process at the lowest priority (nice 19),
    one per parent process shared by all its pools and using all cores but one:
    in a refill thread it would hold the GIL, which the threads serving requests
    need, for most of its time. The child rebuilds each key's table from the
    encryptor's parameters (p and q for the owner, as ``workers`` > 1 already
    does) and returns plain integers over a local pipe. With
    ``refill_in_process=False``, or if no child process can be started, the
    refill thread computes them itself, at the lowest thread priority (Linux).
    Either way refilling pauses while any pool in the process was drawn on in
    the last ``_POOL_IDLE_S`` seconds. Build one with ``Encryptor.start_pool``.
    Thread-safe.
    """

    __slots__ = (
        "_capacity",
        "_computed",
        "_cond",
        "_encryptor",
        "_in_process",
        "_ready",
        "_refill_cpu_s",
        "_stopping",
        "_thread",
    )

    def __init__(
        self, encryptor: Encryptor, capacity: int, *, refill_in_process: bool = True
    ) -> None:
        self._capacity = _check_capacity(encryptor.public_key, capacity)
        self._encryptor = encryptor
        self._in_process = refill_in_process
        self._ready: deque[Mpz] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._computed = 0
        self._refill_cpu_s = 0.0
        self._thread = threading.Thread(target=self._run, name="paillier-pool", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"RandomiserPool(ready={self.ready}, capacity={self.capacity})"

    def __reduce__(self) -> Any:
        raise TypeError("a randomiser pool holds secrets and is never pickled")

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def ready(self) -> int:
        """Randomisers computed and not yet handed out."""
        with self._cond:
            return len(self._ready)

    @property
    def running(self) -> bool:
        """True until ``stop`` has ended the refill thread."""
        return self._thread.is_alive() and not self._stopping

    @property
    def thread_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def refills_in_process(self) -> bool:
        """True while randomisers are computed in the refill process, not the thread."""
        return self._in_process

    @property
    def refill_cpu_s(self) -> float:
        """CPU seconds spent computing this pool's randomisers (child process or thread)."""
        with self._cond:
            return self._refill_cpu_s

    @property
    def computed(self) -> int:
        """Randomisers the refill thread has computed so far."""
        with self._cond:
            return self._computed

    def grow(self, capacity: int) -> None:
        """Raise the capacity to ``capacity`` (never lowers it); InvalidRequest if too large."""
        capacity = _check_capacity(self._encryptor.public_key, capacity)
        with self._cond:
            if capacity > self._capacity:
                self._capacity = capacity
                self._cond.notify_all()

    def take(self, count: int, *, workers: int = 1) -> list[Mpz]:
        """``count`` randomisers, each handed out by this pool once and never again.

        Ready ones first; any shortfall is computed now with the encryptor's
        fast path (in ``workers`` processes if > 1 and the shortfall is at
        least ``_POOL_SHORTFALL_WORKERS_FROM``). Raises ``InvalidRequest``
        for a bad ``count`` or ``workers``.
        """
        global _last_take_s
        count = _check_count(count)
        workers = _check_workers(workers)
        with self._cond:
            # Removed under the lock: no other caller can receive these.
            got = min(count, len(self._ready))
            out = [self._ready.popleft() for _ in range(got)]
            _last_take_s = time.monotonic()
            self._cond.notify_all()
        short = count - got
        if short:
            out.extend(
                self._encryptor._fresh(
                    short, workers if short >= _POOL_SHORTFALL_WORKERS_FROM else 1
                )
            )
        return out

    def wait_full(self, timeout_s: float | None = None) -> bool:
        """Block until ``capacity`` randomisers are ready; False on timeout or stop."""
        return wait_until(
            self._cond,
            lambda: len(self._ready) >= self._capacity,
            lambda: self._stopping,
            timeout_s,
        )

    def stop(self, timeout_s: float | None = 10.0) -> None:
        """Stop the refill thread and drop every ready randomiser."""
        with self._cond:
            self._stopping = True
            self._ready.clear()
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        _lower_thread_priority()
        while True:
            with self._cond:
                while not self._stopping and len(self._ready) >= self._capacity:
                    self._cond.wait()
                if self._stopping:
                    return
                want = min(_POOL_BATCH, self._capacity - len(self._ready))
            busy_s = _POOL_IDLE_S - (time.monotonic() - _last_take_s)
            if busy_s > 0:
                with self._cond:
                    if not self._stopping:
                        self._cond.wait(busy_s)
                continue
            computed = self._compute(want)
            if computed is None:
                return
            batch, spent = computed
            with self._cond:
                if self._stopping:
                    return
                room = self._capacity - len(self._ready)
                self._ready.extend(batch[:room])
                self._computed += len(batch)
                self._refill_cpu_s += spent
                self._cond.notify_all()

    def _compute(self, count: int) -> tuple[list[Mpz], float] | None:
        """``count`` fresh randomisers and the CPU seconds they took; None at exit."""
        if self._in_process:
            try:
                future = _refill_executor().submit(_refill_run, self._encryptor._params(), count)
                ints, spent = future.result()
                return [gmpy2.mpz(r) for r in ints], spent
            except RuntimeError:
                # The interpreter is exiting and takes no new tasks: nothing to refill for.
                return None
            except (BrokenProcessPool, OSError) as exc:
                log.warning(
                    "randomiser pool: no refill process (%s); refilling in a thread",
                    type(exc).__name__,
                )
                self._in_process = False
        cpu = time.thread_time()
        batch = list(self._encryptor._randomisers(count, False))
        return batch, time.thread_time() - cpu


_REFILL_LOCK = threading.Lock()
_REFILL_EXECUTOR: ProcessPoolExecutor | None = None
_REFILL_SOURCES: dict[_Params, RandomiserSource] = {}  # in the refill process


def _refill_executor() -> ProcessPoolExecutor:
    """This process's refill process pool (all cores but one), started on first use."""
    global _REFILL_EXECUTOR
    with _REFILL_LOCK:
        if _REFILL_EXECUTOR is None:
            # forkserver, not fork: nodes and the coordinator run gRPC threads.
            method = "forkserver" if "forkserver" in get_all_start_methods() else "spawn"
            _REFILL_EXECUTOR = ProcessPoolExecutor(
                max_workers=max(1, min((os.cpu_count() or 1) - 1, _MAX_WORKERS)),
                mp_context=get_context(method),
                initializer=_refill_init,
            )
        return _REFILL_EXECUTOR


def _refill_init() -> None:
    try:
        os.nice(19)
    except OSError:  # pragma: no cover - already at the lowest priority or forbidden
        pass


def _refill_run(params: _Params, count: int) -> tuple[list[int], float]:
    """In the refill process: ``count`` randomisers and the CPU seconds they took."""
    cpu = time.process_time()
    enc = _REFILL_SOURCES.get(params)
    if enc is None:
        if len(_REFILL_SOURCES) >= _REFILL_TABLES:
            del _REFILL_SOURCES[next(iter(_REFILL_SOURCES))]  # the oldest
        enc = _REFILL_SOURCES[params] = RandomiserSource(*params)
    out = enc.randomisers(count)
    return out, time.process_time() - cpu


def wait_until(
    cond: threading.Condition,
    done: Callable[[], bool],
    stopping: Callable[[], bool],
    timeout_s: float | None,
) -> bool:
    """Wait on ``cond`` until ``done()``; False if ``stopping()`` or on timeout.
    Both are read under ``cond``, which their writers notify."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with cond:
        while not done():
            if stopping():
                return False
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            cond.wait(left)
        return True


def _check_capacity(pub: PublicKey, capacity: int) -> int:
    limit = pool_limit(pub)
    if isinstance(capacity, bool) or not isinstance(capacity, int) or not 0 <= capacity <= limit:
        raise InvalidRequest(f"pool capacity must be an int from 0 to {limit}, got {capacity!r}")
    return capacity


def _lower_thread_priority() -> None:
    """Give the calling thread the lowest scheduling priority, where the OS allows it.

    On Linux, setpriority on a thread id changes only that thread; elsewhere the
    id would name a process, so nothing is done.
    """
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:  # pragma: no cover - e.g. a sandbox forbidding it
            pass

"""The random exponents of proven ciphertexts and their powers, computed ahead of time.

Nearly all of a proof's cost (``proofs.Prover``) is fixed-base powers of the
key's public proof base h: h^x for the ciphertext's randomiser and h^beta for
each branch's commitment. None depends on the data, so, like the randomisers
of ``RandomiserPool``, they are computed in the background and a query draws
them: proving then costs a few multiplications and a hash per ciphertext.

Each pair (exponent, power) is handed out once and never again (a reused x or
beta would reveal the randomiser, and with it the plaintext). Pairs are as
secret as the plaintexts they will hide: kept in this object's memory only
(and, briefly, the refill process's), never logged, stored or sent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from headcount.crypto.paillier.keys import PublicKey
from headcount.crypto.paillier.pool import _lower_thread_priority, _refill_executor, wait_until
from headcount.crypto.paillier.proofs import BETA_BITS, Pair, draw_pairs
from headcount.crypto.paillier.randomisers import SHORT_EXPONENT_BITS
from headcount.errors import InvalidRequest

log = logging.getLogger(__name__)

# At most this many bytes of pairs per key: at 2048 bits an indicator's proof
# takes one randomiser pair and two commitment pairs, about 1.7 kB, so 384 MiB
# holds about 230,000 proofs (a 100,000-record origin's records and fills).
PROOF_POOL_MAX_BYTES = 384 * 2**20
_BATCH = 256
_IDLE_S = 0.5


def proof_pool_limit(pub: PublicKey, branches: int = 2) -> int:
    """The most proofs of ``branches`` values a pool for ``pub`` may hold."""
    per_proof = (1 + branches) * (pub.ciphertext_bytes + BETA_BITS // 8)
    return PROOF_POOL_MAX_BYTES // per_proof


class ProofPool:
    """Pairs for proofs under one key: ``capacity`` randomisers and
    ``branches`` x ``capacity`` commitments, refilled by a daemon thread that
    has the refill process (``pool._refill_executor``, nice 19) compute them,
    pausing while the pool was drawn on in the last half second. ``take``
    computes any shortfall on the spot, so an empty pool is only slower.
    Thread-safe; stop it with ``stop``."""

    def __init__(self, pub: PublicKey, capacity: int, *, branches: int = 2) -> None:
        limit = proof_pool_limit(pub, branches)
        if isinstance(capacity, bool) or not isinstance(capacity, int) or not 0 <= capacity:
            raise InvalidRequest(f"proof pool capacity must be an int >= 0, got {capacity!r}")
        self.pub = pub
        self.capacity = min(capacity, limit)
        self.branches = branches
        self._want = {SHORT_EXPONENT_BITS: self.capacity, BETA_BITS: branches * self.capacity}
        self._ready: dict[int, deque[Pair]] = {bits: deque() for bits in self._want}
        self._cond = threading.Condition()
        self._stopping = False
        self._last_take = 0.0
        self._in_process = True
        self.refill_cpu_s = 0.0
        self._thread = threading.Thread(target=self._run, name="proof-pool", daemon=True)
        self._thread.start()

    def __reduce__(self) -> Any:
        raise TypeError("a proof pool holds secrets and is never pickled")

    def __repr__(self) -> str:
        return f"ProofPool(ready={self.ready}, capacity={self.capacity})"

    @property
    def ready(self) -> int:
        """Proofs that can be made from ready pairs alone."""
        with self._cond:
            return min(
                len(self._ready[SHORT_EXPONENT_BITS]),
                len(self._ready[BETA_BITS]) // max(1, self.branches),
            )

    def take(self, bits: int, count: int) -> list[Pair]:
        """``count`` pairs with exponents of ``bits`` bits, each handed out once."""
        with self._cond:
            ready = self._ready[bits]
            got = min(count, len(ready))
            out = [ready.popleft() for _ in range(got)]
            self._last_take = time.monotonic()
            self._cond.notify_all()
        if count > got:
            out.extend(draw_pairs(self.pub.n, bits, count - got))
        return out

    def wait_full(self, timeout_s: float | None = None) -> bool:
        """Block until every pair the pool holds is ready; False on timeout or stop."""
        return wait_until(
            self._cond,
            lambda: all(len(self._ready[b]) >= w for b, w in self._want.items()),
            lambda: self._stopping,
            timeout_s,
        )

    def stop(self, timeout_s: float | None = 10.0) -> None:
        with self._cond:
            self._stopping = True
            for ready in self._ready.values():
                ready.clear()
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def _next(self) -> tuple[int, int] | None:
        """(bits, count) of the next batch, waiting while full; None once stopped."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                short = [(b, w - len(self._ready[b])) for b, w in self._want.items()]
                short = [(b, n) for b, n in short if n > 0]
                if not short:
                    self._cond.wait()
                    continue
                idle = _IDLE_S - (time.monotonic() - self._last_take)
                if idle > 0:
                    self._cond.wait(idle)
                    continue
                bits, missing = max(short, key=lambda s: s[1])
                return bits, min(_BATCH, missing)

    def _run(self) -> None:
        _lower_thread_priority()
        while (batch := self._next()) is not None:
            bits, count = batch
            cpu = time.process_time()
            if self._in_process:
                try:
                    pairs, spent = (
                        _refill_executor().submit(_refill, self.pub.n, bits, count).result()
                    )
                except RuntimeError:
                    return  # the interpreter is exiting
                except (BrokenProcessPool, OSError) as exc:
                    log.warning(
                        "proof pool: no refill process (%s); in a thread", type(exc).__name__
                    )
                    self._in_process = False
                    continue
            else:
                pairs = draw_pairs(self.pub.n, bits, count)
                spent = time.process_time() - cpu
            with self._cond:
                if self._stopping:
                    return
                ready = self._ready[bits]
                ready.extend(pairs[: max(0, self._want[bits] - len(ready))])
                self.refill_cpu_s += spent
                self._cond.notify_all()


def _refill(n: int, bits: int, count: int) -> tuple[list[Pair], float]:
    """In the refill process: ``count`` pairs and the CPU seconds they took."""
    cpu = time.process_time()
    return draw_pairs(n, bits, count), time.process_time() - cpu

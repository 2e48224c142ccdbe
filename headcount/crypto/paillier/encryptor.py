"""Fast Paillier encryption under one key (``Encryptor``); ``phe`` decrypts everything it makes."""

from __future__ import annotations

import operator
import threading
from collections.abc import Sequence

import gmpy2
import phe

from headcount.crypto.paillier.keys import PublicKey
from headcount.crypto.paillier.pool import RandomiserPool
from headcount.crypto.paillier.randomisers import (
    SHORT_EXPONENT_BITS,
    Mpz,
    RandomiserSource,
    _check_count,
)
from headcount.crypto.paillier.workers import _check_workers, run_in_workers
from headcount.errors import InvalidCiphertext, InvalidRequest

_POOL_START_LOCK = threading.Lock()


class Encryptor(RandomiserSource):
    """Fast Paillier encryption under one key; ``phe`` decrypts everything it makes.

    Build it with ``for_public_key`` (anyone, e.g. the coordinator's fresh E(0)s)
    or ``for_private_key`` (the key's owner, e.g. the origin node encrypting its
    own indicators): with p and q every exponentiation runs modulo p^2 and q^2 and
    is recombined by CRT, which is cheaper than one exponentiation modulo n^2.

    Each method takes ``secure_randomiser``: ``False`` (default) for the
    short-exponent randomiser R = h^x, ``True`` for the textbook R = r^n; see
    ``RandomiserSource`` for what each costs and what each rests on.

    ``workers`` > 1 spreads a batch over that many processes (forkserver, each
    rebuilding the table from this object's parameters, ~0.3 s to start), so use
    it for batches of thousands. Instances are safe to share between threads;
    apart from the optional ``RandomiserPool`` (``start_pool``), which the
    default (short-exponent) methods then draw from, they are immutable.
    Raises ``InvalidRequest`` on out-of-range arguments.
    """

    __slots__ = ("_pool",)

    def __init__(
        self, n: int, p: int | None, q: int | None, r0: int | None, exponent_bits: int
    ) -> None:
        """Use ``for_public_key`` or ``for_private_key``; this is their common part.

        ``r0`` (None: draw a fresh one) is the secret base of the short-exponent
        table; passing it lets a worker process rebuild the same table.
        """
        super().__init__(n, p, q, r0, exponent_bits)
        self._pool: RandomiserPool | None = None

    @classmethod
    def for_public_key(
        cls, pub: PublicKey, *, exponent_bits: int = SHORT_EXPONENT_BITS
    ) -> Encryptor:
        """An encryptor for anyone holding ``pub``; builds its table (~70 ms at 2048 bits)."""
        return cls(pub.n, None, None, None, exponent_bits)

    @classmethod
    def for_private_key(
        cls, priv: phe.PaillierPrivateKey, *, exponent_bits: int = SHORT_EXPONENT_BITS
    ) -> Encryptor:
        """An encryptor for the key's owner, using p and q for CRT (~60 ms to build)."""
        p, q = int(priv.p), int(priv.q)
        return cls(p * q, p, q, None, exponent_bits)

    @property
    def pool(self) -> RandomiserPool | None:
        """The attached randomiser pool, if ``start_pool`` was called."""
        return self._pool

    def start_pool(self, capacity: int, *, refill_in_process: bool = True) -> RandomiserPool:
        """Attach a ``RandomiserPool`` that keeps up to ``capacity`` randomisers ready.

        ``refill_in_process`` (default): the randomisers are computed in a
        low-priority child process (see ``RandomiserPool``); False computes them
        in the refill thread itself.

        If a running pool is attached already, its capacity is raised to
        ``capacity`` if that is larger and the same pool is returned. Raises
        ``InvalidRequest`` if ``capacity`` is negative or above ``pool_limit``.
        """
        with _POOL_START_LOCK:  # two callers must not both attach a pool
            pool = self._pool
            if pool is not None and pool.running:
                pool.grow(capacity)
                return pool
            pool = RandomiserPool(self, capacity, refill_in_process=refill_in_process)
            self._pool = pool
            return pool

    def stop_pool(self) -> None:
        """Stop and detach the pool (if any), dropping its randomisers."""
        with _POOL_START_LOCK:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.stop()

    def encrypt(
        self, values: Sequence[int], *, secure_randomiser: bool = False, workers: int = 1
    ) -> list[int]:
        """Encrypt each integer (|v| <= ``public_key.max_plaintext``, about n/3).

        Raises ``InvalidRequest`` if any value is not an integer or out of range;
        nothing is encrypted then.
        """
        plain = _check_plaintexts(self._pub, values)
        pool = self._pool
        if pool is not None and not secure_randomiser:
            n, nsq = self._n, self._nsq
            rs = pool.take(len(plain), workers=workers)
            return [int(_seal(n, nsq, m, r)) for m, r in zip(plain, rs, strict=True)]
        if _check_workers(workers) > 1 and len(plain) > 1:
            return run_in_workers(self, "encrypt", plain, secure_randomiser, workers)
        return self._encrypt(plain, secure_randomiser)

    def encrypt_zeros(
        self, count: int, *, secure_randomiser: bool = False, workers: int = 1
    ) -> list[int]:
        """``count`` fresh, independent encryptions of 0."""
        count = _check_count(count)
        pool = self._pool
        if pool is not None and not secure_randomiser:
            return [int(r) for r in pool.take(count, workers=workers)]
        if _check_workers(workers) > 1 and count > 1:
            return run_in_workers(self, "zeros", count, secure_randomiser, workers)
        return self.randomisers(count, secure_randomiser=secure_randomiser)

    def rerandomise(
        self, ciphertexts: Sequence[int], *, secure_randomiser: bool = False, workers: int = 1
    ) -> list[int]:
        """Multiply each ciphertext by a fresh encryption of 0: same plaintext, unlinkable bits.

        Raises ``InvalidCiphertext`` if a ciphertext is outside (0, n^2).
        """
        nsq = self._nsq
        cts = list(ciphertexts)
        for c in cts:
            if not 0 < c < nsq:
                raise InvalidCiphertext("ciphertext is out of range for this key")
        pool = self._pool
        if pool is not None and not secure_randomiser:
            rs = pool.take(len(cts), workers=workers)
            return [int(gmpy2.mpz(c) * r % nsq) for c, r in zip(cts, rs, strict=True)]
        if _check_workers(workers) > 1 and len(cts) > 1:
            return run_in_workers(self, "rerandomise", cts, secure_randomiser, workers)
        return self._rerandomise(cts, secure_randomiser)

    # -- internals ---------------------------------------------------------------

    def _encrypt(self, plain: Sequence[int], secure: bool) -> list[int]:
        n, nsq = self._n, self._nsq
        out: list[int] = []
        for m, r in zip(plain, self._randomisers(len(plain), secure), strict=True):
            out.append(int(_seal(n, nsq, m, r)))
        return out

    def _rerandomise(self, cts: Sequence[int], secure: bool) -> list[int]:
        nsq = self._nsq
        rs = self._randomisers(len(cts), secure)
        return [int(gmpy2.mpz(c) * r % nsq) for c, r in zip(cts, rs, strict=True)]

    def _fresh(self, count: int, workers: int) -> list[Mpz]:
        """``count`` short-exponent randomisers computed now (in ``workers`` processes)."""
        if workers > 1 and count > 1:
            return run_in_workers(self, "zeros", count, False, workers)
        return list(self._randomisers(count, False))


def _seal(n: Mpz, nsq: Mpz, m: int, r: Mpz) -> Mpz:
    """(1 + m*n) * r mod n^2, for 0 <= m < n, without a full-size product.

    (1 + m*n) * r = r + n * (m*r mod n) (mod n^2): one multiplication of
    half-size numbers instead of one of full-size ones.
    """
    if m == 0:
        return r
    c = r + n * (m * (r % n) % n)
    return c - nsq if c >= nsq else c


def _check_plaintexts(pub: PublicKey, values: Sequence[int]) -> list[int]:
    """Values as residues mod n; InvalidRequest unless each is an int within +-max_plaintext."""
    bound = pub.max_plaintext
    n = pub.n
    out: list[int] = []
    for i, v in enumerate(values):
        try:
            m = operator.index(v)
        except TypeError:
            raise InvalidRequest(f"plaintext {i} is not an integer") from None
        if isinstance(v, bool) or not -bound <= m <= bound:
            # No value in the message: plaintexts never reach logs or errors.
            raise InvalidRequest(f"plaintext {i} is not an integer within +-n/3")
        out.append(m % n)
    return out

"""Paillier keys and ciphertext vectors, compatible with ``phe``.

Keys are ``phe`` keys, so a ``phe`` private key decrypts everything produced
here. Per-record vectors are handled as raw integers with gmpy2 (homomorphic
addition is a modular product) because wrapping each in ``phe.EncryptedNumber``
costs more than the arithmetic. Ciphertexts cross the wire as fixed-width
big-endian bytes and are range-checked on the way in.

Encryption is E(m) = (1 + m*n) * R mod n^2 (g = n + 1, as ``phe`` uses), where the
randomiser R is an n-th residue. Almost all of the cost is R, and there are two
ways to draw it (see ``Encryptor``):

* the *full* randomiser R = r^n for r uniform in Z*_n, exactly ``phe``'s
  distribution, semantically secure under the DCR assumption alone
  (``secure_randomiser=True``). Built from the private key it is computed by CRT,
  about 3.5x faster than ``phe``.
* the *short-exponent* randomiser R = h^x for a fixed h = r0^n and a fresh
  ``SHORT_EXPONENT_BITS``-bit x, read off a fixed-base table: about 50x faster
  than ``phe`` from a public key and 70x from the private key (CRT), at 2048-bit
  keys. It rests on one further, standard assumption; see ``SHORT_EXPONENT_BITS``.

The module-level ``encrypt``, ``encrypt_zeros`` and ``rerandomise`` use the short
exponent by default, with one table per key cached per process.

Since R does not depend on the plaintext, it can also be drawn ahead of time: an
``Encryptor`` with a ``RandomiserPool`` attached (``Encryptor.start_pool``) keeps
short-exponent randomisers ready, computed in the background by a low-priority
child process, and its encrypt, encrypt_zeros and rerandomise then cost one
modular multiplication each online.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import operator
import os
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from typing import Any, TypeAlias, TypeVar

import gmpy2
import phe

from headcount.errors import InvalidCiphertext, InvalidRequest

log = logging.getLogger(__name__)

# gmpy2 ships no type stubs; values of this alias are gmpy2.mpz.
Mpz: TypeAlias = Any
# What rebuilds an Encryptor in another process: n, p, q, r0, exponent_bits.
_Params: TypeAlias = tuple[int, int | None, int | None, int, int]
T = TypeVar("T")

# Length in bits of the random exponent x of a short-exponent randomiser h^x.
#
# Why 320 = 2*128 + 64. The randomiser h^x is only as hidden as x: whoever finds x
# from h^x mod n (the plaintext does not affect c mod n) decrypts. Finding an
# exponent known to lie in an interval of width 2^L takes about 2^(L/2) group
# operations by Pollard's kangaroo (lambda) method (Pollard, "Monte Carlo methods
# for index computation (mod p)", Math. Comp. 32, 1978), which needs neither the
# group order nor any structure of the group; no faster method is known in
# Z*_{n^2} without the factors of n. So L >= 2*kappa bits buy kappa bits of
# security (van Oorschot and Wiener, "On Diffie-Hellman key agreement with short
# exponents", EUROCRYPT 1996, who also show that small known factors of the group
# order weaken short exponents further; here the order of h divides
# lcm(p-1, q-1), which is unknown without factoring n, so their Pohlig-Hellman
# step does not apply). We take kappa = 128, above the ~112-bit strength of a
# 2048-bit modulus (NIST SP 800-57 Pt 1), so the randomiser is never the weakest
# link. The extra 64 bits cover an attacker content to break any one of up to 2^64
# ciphertexts under the same h: generic multi-instance attacks gain at most the
# square root of the number of targets (Kuhn and Struik, "Random walks revisited",
# SAC 2001; Bernstein and Lange, "Computing small discrete logarithms faster",
# INDOCRYPT 2012, whose precomputation needs more than 2^(2L/3) = 2^213 work here).
#
# What this does not have is a reduction to factoring: Hastad, Schrift and Shamir
# ("The discrete logarithm modulo a composite hides O(n) bits", JCSS 47, 1993)
# prove that exponents of half the modulus length are indistinguishable from full
# ones if factoring is hard, which is why Damgard, Jurik and Nielsen ("A
# generalization of Paillier's public-key system with applications to electronic
# voting", IJIS 9, 2010) use (1+n)^m * (h^n)^x with x of k/2 = 1024 bits. At 320
# bits we assume instead, as short-exponent Diffie-Hellman does (Koshiba and
# Kurosawa, "Short exponent Diffie-Hellman problems", PKC 2004), that h^x for short
# x cannot be told from h^x for full-length x; the best attack on that is the
# kangaroo search above. Callers who want the factoring-based argument pass
# ``exponent_bits=n_bits // 2`` (about 3x slower) or ``secure_randomiser=True``.
SHORT_EXPONENT_BITS = 320

# Fixed-base window: 8 bits, so a digit is one byte of os.urandom output and a
# table row has 256 entries. At 2048-bit keys the table is 40 rows x 256 entries
# x 512 bytes = 5 MiB and takes ~70 ms to build; measured, wider windows (12 bits,
# 56 MiB) are no faster because the table no longer fits in cache.
_WINDOW_BITS = 8

# Randomisers are drawn in batches of this many, so one os.urandom call serves
# many ciphertexts without holding megabytes of random bytes at once.
_DRAW_BATCH = 4096

# Tables kept per process for the module-level functions (5 MiB each at 2048 bits).
_SHARED_TABLES = 8

_MAX_WORKERS = 64

# Tables kept by the refill process: one per pool it serves (each encryptor has
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

_POOL_START_LOCK = threading.Lock()

_last_take_s = 0.0  # time.monotonic() of the latest take() from any pool


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A Paillier public key (n, with g = n + 1 as ``phe`` uses)."""

    n: int

    def __post_init__(self) -> None:
        if self.n < 2**511 or self.n % 2 == 0:
            raise InvalidRequest("Paillier modulus is too small or not odd")

    @property
    def nsquare(self) -> int:
        return self.n * self.n

    @property
    def ciphertext_bytes(self) -> int:
        return (self.nsquare.bit_length() + 7) // 8

    @property
    def max_plaintext(self) -> int:
        """Largest |m| that encrypts and decrypts as a signed integer (``phe``'s max_int)."""
        return self.n // 3 - 1

    @property
    def phe(self) -> phe.PaillierPublicKey:
        return phe.PaillierPublicKey(self.n)

    def to_bytes(self) -> bytes:
        return self.n.to_bytes((self.n.bit_length() + 7) // 8, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKey:
        return cls(int.from_bytes(data, "big"))


def generate_keypair(bits: int) -> tuple[PublicKey, phe.PaillierPrivateKey]:
    """A fresh key pair with an ``bits``-bit modulus."""
    pub, priv = phe.generate_paillier_keypair(n_length=bits)
    return PublicKey(pub.n), priv


def private_key_bytes(priv: phe.PaillierPrivateKey) -> bytes:
    """A private key as the bytes a node keeps in its state file (p and q, JSON)."""
    return json.dumps({"p": str(priv.p), "q": str(priv.q)}).encode()


def private_key_from_bytes(raw: bytes) -> phe.PaillierPrivateKey:
    """The private key `private_key_bytes` wrote."""
    data = json.loads(raw)
    p, q = int(data["p"]), int(data["q"])
    return phe.PaillierPrivateKey(phe.PaillierPublicKey(p * q), p, q)


class _FixedBase:
    """h^x mod m for x below 2^(8 * windows), from a table of h^(d * 256^i).

    Row i holds h^(d * 256^i) for every byte d, so h^x is the product of one entry
    per row, picked by the bytes of x (little-endian): windows - 1 modular
    multiplications and no squarings (Brickell, Gordon, McCurley and Wilson, "Fast
    exponentiation with precomputation", EUROCRYPT 1992).
    """

    __slots__ = ("_first", "_modulus", "_rest")

    def __init__(self, base: Mpz, modulus: Mpz, windows: int) -> None:
        one = gmpy2.mpz(1)
        rows: list[tuple[Mpz, ...]] = []
        step = base % modulus  # h^(256^i)
        for _ in range(windows):
            row = [one]
            acc = one
            for _ in range((1 << _WINDOW_BITS) - 1):
                acc = acc * step % modulus
                row.append(acc)
            rows.append(tuple(row))
            step = acc * step % modulus  # h^(255 * 256^i) * h^(256^i) = h^(256^(i+1))
        self._modulus = modulus
        self._first = rows[0]
        self._rest = tuple(rows[1:])

    def power(self, digits: bytes | memoryview) -> Mpz:
        """h^x for x = int.from_bytes(digits, "little"); ``digits`` has ``windows`` bytes."""
        modulus = self._modulus
        acc = self._first[digits[0]]
        for row, d in zip(self._rest, digits[1:], strict=True):
            acc = acc * row[d] % modulus
        return acc


class Encryptor:
    """Fast Paillier encryption under one key; ``phe`` decrypts everything it makes.

    Build it with ``for_public_key`` (anyone, e.g. the coordinator's fresh E(0)s)
    or ``for_private_key`` (the key's owner, e.g. the origin node encrypting its
    own indicators): with p and q every exponentiation runs modulo p^2 and q^2 and
    is recombined by CRT, which is cheaper than one exponentiation modulo n^2.

    Each method takes ``secure_randomiser``:

    * ``False`` (default): R = h^x with h = r0^n fixed for this object (r0 drawn
      once, uniformly, with Jacobi symbol -1) and x a fresh uniform
      ``exponent_bits``-bit integer, via a fixed-base table. ~0.15 ms per
      ciphertext at 2048 bits (~0.1 ms for the owner) against ~8 ms for ``phe``.
      Security: DCR plus the short-exponent assumption explained at
      ``SHORT_EXPONENT_BITS`` (best known attack 2^160 work at the default). We
      make it the default for bulk per-record work because that is where the
      time goes (millions of ciphertexts per query), and the price is one extra
      assumption, the standard one for short-exponent discrete logarithms, with
      a margin above the modulus's own ~112-bit strength. Since r0 has Jacobi
      symbol -1, the Jacobi symbol of a
      ciphertext mod n is (-1)^x, uniform, exactly as for ``phe``: the one
      property computable without the factors of n does not tell fast and full
      ciphertexts apart, so mixing them in one vector does not reveal which is
      which.
    * ``True``: the textbook R = r^n with r uniform in Z*_n, the distribution
      ``phe`` uses, secure under DCR alone. From the private key, R mod p^2 is
      a^p for a uniform in Z*_p (and likewise for q), which has exactly the
      distribution of r^n mod p^2 because r -> r^q is a bijection of Z*_p when
      gcd(n, (p-1)(q-1)) = 1: half-length exponents at half-length moduli, ~3.5x
      faster than ``phe``.

    ``workers`` > 1 spreads a batch over that many processes (forkserver, each
    rebuilding the table from this object's parameters, ~0.3 s to start), so use
    it for batches of thousands. Instances are safe to share between threads;
    apart from the optional ``RandomiserPool`` (``start_pool``), which the
    default (short-exponent) methods then draw from, they are immutable.
    Raises ``InvalidRequest`` on out-of-range arguments.
    """

    __slots__ = (
        "_crt",
        "_exponent_bytes",
        "_n",
        "_nsq",
        "_p",
        "_pool",
        "_pub",
        "_q",
        "_r0",
        "_tables",
    )

    def __init__(
        self, n: int, p: int | None, q: int | None, r0: int | None, exponent_bits: int
    ) -> None:
        """Use ``for_public_key`` or ``for_private_key``; this is their common part.

        ``r0`` (None: draw a fresh one) is the secret base of the short-exponent
        table; passing it lets a worker process rebuild the same table.
        """
        pub = PublicKey(n)
        if (
            isinstance(exponent_bits, bool)
            or not isinstance(exponent_bits, int)
            or exponent_bits % _WINDOW_BITS
            or not SHORT_EXPONENT_BITS <= exponent_bits <= n.bit_length()
        ):
            raise InvalidRequest(
                f"exponent_bits must be a multiple of {_WINDOW_BITS} from "
                f"{SHORT_EXPONENT_BITS} to {n.bit_length()}, got {exponent_bits!r}"
            )
        if (p is None) != (q is None):
            raise InvalidRequest("give both prime factors or neither")
        if p is not None and q is not None:
            if p * q != n or p == q or min(p, q) < 3:
                raise InvalidRequest("p and q are not the prime factors of this key")
            if gmpy2.gcd(n, (p - 1) * (q - 1)) != 1:
                raise InvalidRequest("not a Paillier key: gcd(n, (p-1)(q-1)) != 1")
        if r0 is None:
            r0 = _draw_base(n)
        elif not 0 < r0 < n or gmpy2.jacobi(r0, n) != -1:
            raise InvalidRequest("table base must be in (0, n) with Jacobi symbol -1")
        self._pub = pub
        self._n = gmpy2.mpz(n)
        self._nsq = self._n * self._n
        self._p = p
        self._q = q
        self._r0 = r0
        self._pool: RandomiserPool | None = None
        self._exponent_bytes = exponent_bits // _WINDOW_BITS
        windows = self._exponent_bytes
        self._tables: tuple[_FixedBase, ...]
        self._crt: _Crt | None
        if p is None or q is None:
            h = gmpy2.powmod(r0, self._n, self._nsq)
            self._tables = (_FixedBase(h, self._nsq, windows),)
            self._crt = None
        else:
            crt = _Crt(p, q)
            # h mod p^2 = r0^n mod p^2: the same h as from the public key, computed
            # modulo the half-size squares.
            hp = gmpy2.powmod(r0, self._n, crt.psq)
            hq = gmpy2.powmod(r0, self._n, crt.qsq)
            self._tables = (_FixedBase(hp, crt.psq, windows), _FixedBase(hq, crt.qsq, windows))
            self._crt = crt

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
    def public_key(self) -> PublicKey:
        return self._pub

    @property
    def is_owner(self) -> bool:
        """True if built from the private key (CRT arithmetic)."""
        return self._crt is not None

    @property
    def exponent_bits(self) -> int:
        return self._exponent_bytes * _WINDOW_BITS

    def __repr__(self) -> str:
        # Never show p, q or the table base.
        return (
            f"Encryptor({self._n.bit_length()}-bit key, owner={self.is_owner}, "
            f"exponent_bits={self.exponent_bits})"
        )

    def __reduce__(self) -> tuple[Any, _Params]:
        # Pickle the parameters, not the 5 MiB table: a worker rebuilds it. The
        # pickle of an owner encryptor holds p and q; it exists only to reach this
        # process's own workers, never storage or the wire.
        return (Encryptor, self._params())

    def _params(self) -> _Params:
        return (int(self._n), self._p, self._q, self._r0, self.exponent_bits)

    def check_key(self, pub: PublicKey) -> None:
        """Raise ``InvalidRequest`` unless this encryptor is for ``pub``."""
        if pub.n != self._pub.n:
            raise InvalidRequest("this encryptor's table was built for another key")

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

    def randomisers(self, count: int, *, secure_randomiser: bool = False) -> list[int]:
        """``count`` fresh n-th residues mod n^2, i.e. fresh encryptions of 0."""
        return [int(r) for r in self._randomisers(_check_count(count), secure_randomiser)]

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
            return self._in_pool("encrypt", plain, secure_randomiser, workers)
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
            return self._in_pool("zeros", count, secure_randomiser, workers)
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
            return self._in_pool("rerandomise", cts, secure_randomiser, workers)
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

    def _randomisers(self, count: int, secure: bool) -> Iterator[Mpz]:
        if secure:
            for _ in range(count):
                yield self._full_randomiser()
            return
        width = self._exponent_bytes
        crt = self._crt
        done = 0
        while done < count:
            batch = min(_DRAW_BATCH, count - done)
            # os.urandom, not random/gmpy2 state: safe after fork, and a CSPRNG.
            pool = memoryview(os.urandom(batch * width))
            for i in range(0, batch * width, width):
                digits = pool[i : i + width]
                if crt is None:
                    yield self._tables[0].power(digits)
                else:
                    yield crt.combine(self._tables[0].power(digits), self._tables[1].power(digits))
            done += batch

    def _fresh(self, count: int, workers: int) -> list[Mpz]:
        """``count`` short-exponent randomisers computed now (in ``workers`` processes)."""
        if workers > 1 and count > 1:
            return self._in_pool("zeros", count, False, workers)
        return list(self._randomisers(count, False))

    def _full_randomiser(self) -> Mpz:
        crt = self._crt
        if crt is None:
            # r uniform in [1, n): a non-unit turns up with probability ~2^-1023
            # and would mean we had factored n; phe draws the same way.
            r = secrets.randbelow(int(self._n) - 1) + 1
            return gmpy2.powmod(r, self._n, self._nsq)
        a_p = secrets.randbelow(int(crt.p) - 1) + 1
        a_q = secrets.randbelow(int(crt.q) - 1) + 1
        return crt.combine(gmpy2.powmod(a_p, crt.p, crt.psq), gmpy2.powmod(a_q, crt.q, crt.qsq))

    def _in_pool(
        self, kind: str, items: Sequence[int] | int, secure: bool, workers: int
    ) -> list[int]:
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
            initargs=(self,),
        ) as pool:
            out: list[int] = []
            for part in pool.map(_pool_run, tasks):
                out.extend(part)
        return out


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
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while len(self._ready) < self._capacity:
                if self._stopping:
                    return False
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

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
_REFILL_ENCRYPTORS: dict[_Params, Encryptor] = {}  # in the refill process


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
    enc = _REFILL_ENCRYPTORS.get(params)
    if enc is None:
        if len(_REFILL_ENCRYPTORS) >= _REFILL_TABLES:
            del _REFILL_ENCRYPTORS[next(iter(_REFILL_ENCRYPTORS))]  # the oldest
        enc = _REFILL_ENCRYPTORS[params] = Encryptor(*params)
    out = enc.randomisers(count)
    return out, time.process_time() - cpu


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


class _Crt:
    """Constants for recombining values modulo p^2 and q^2 into one modulo n^2."""

    __slots__ = ("p", "psq", "q", "qsq", "qsq_inv")

    def __init__(self, p: int, q: int) -> None:
        self.p = gmpy2.mpz(p)
        self.q = gmpy2.mpz(q)
        self.psq = self.p * self.p
        self.qsq = self.q * self.q
        self.qsq_inv = gmpy2.invert(self.qsq, self.psq)

    def combine(self, rp: Mpz, rq: Mpz) -> Mpz:
        """The x mod n^2 with x = rp mod p^2 and x = rq mod q^2 (Garner)."""
        return rq + self.qsq * ((rp - rq) * self.qsq_inv % self.psq)


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


def _draw_base(n: int) -> int:
    """A uniform r0 in Z*_n with Jacobi symbol -1 (see ``Encryptor``)."""
    while True:
        r0 = secrets.randbelow(n - 1) + 1
        if gmpy2.jacobi(r0, n) == -1:
            return r0


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


def _check_count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise InvalidRequest(f"count must be an int >= 0, got {count!r}")
    return count


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


@functools.lru_cache(maxsize=_SHARED_TABLES)
def _shared(n: int) -> Encryptor:
    return Encryptor(n, None, None, None, SHORT_EXPONENT_BITS)


def shared_encryptor(pub: PublicKey) -> Encryptor:
    """This process's public-key ``Encryptor`` for ``pub`` (built once, then cached).

    The module-level functions use it; at most eight keys' tables are kept.
    """
    return _shared(pub.n)


def _encryptor(pub: PublicKey, encryptor: Encryptor | None) -> Encryptor:
    if encryptor is None:
        return shared_encryptor(pub)
    encryptor.check_key(pub)
    return encryptor


def encrypt(
    pub: PublicKey,
    values: Sequence[int],
    *,
    secure_randomiser: bool = False,
    encryptor: Encryptor | None = None,
) -> list[int]:
    """Encrypt each integer (may be negative, |v| < n/3) under ``pub``.

    Short-exponent randomisers by default (see ``Encryptor``); pass the owner's
    ``encryptor`` (from ``Encryptor.for_private_key``) for CRT speed. Raises
    ``InvalidRequest`` for a value out of range or an encryptor for another key.
    """
    return _encryptor(pub, encryptor).encrypt(values, secure_randomiser=secure_randomiser)


def encrypt_zeros(
    pub: PublicKey,
    count: int,
    *,
    secure_randomiser: bool = False,
    encryptor: Encryptor | None = None,
) -> list[int]:
    """``count`` fresh, independent encryptions of 0 (n-th residues mod n^2).

    Short-exponent h^x by default, r^n with ``secure_randomiser=True``.
    """
    return _encryptor(pub, encryptor).encrypt_zeros(count, secure_randomiser=secure_randomiser)


def rerandomise(
    pub: PublicKey,
    ciphertexts: Sequence[int],
    *,
    secure_randomiser: bool = False,
    encryptor: Encryptor | None = None,
) -> list[int]:
    """Multiply each ciphertext by a fresh encryption of 0: same plaintext, unlinkable bits.

    Raises ``InvalidCiphertext`` if a ciphertext is outside (0, n^2).
    """
    return _encryptor(pub, encryptor).rerandomise(ciphertexts, secure_randomiser=secure_randomiser)


def add_all(pub: PublicKey, ciphertexts: Iterable[int]) -> int:
    """Homomorphic sum: the product of the ciphertexts modulo n^2 (E(0) if empty)."""
    nsq = gmpy2.mpz(pub.nsquare)
    acc = gmpy2.mpz(1)  # 1 = g^0 * 1^n, a valid (deterministic) encryption of 0
    for c in ciphertexts:
        acc = acc * c % nsq
    return int(acc)


def add_plain(pub: PublicKey, ciphertext: int, value: int) -> int:
    """E(m) -> E(m + value) for a (possibly negative) integer ``value``."""
    nsq = pub.nsquare
    # g = n + 1, so g^v = 1 + v*n mod n^2: no exponentiation needed.
    return ciphertext * ((1 + (value % pub.n) * pub.n) % nsq) % nsq


def decrypt(priv: phe.PaillierPrivateKey, ciphertext: int) -> int:
    """Decrypt to a signed integer in (-n/3, n/3), as ``phe`` decodes."""
    m = int(priv.raw_decrypt(ciphertext))
    n = priv.public_key.n
    return m - n if m > n // 3 * 2 else m


def decrypt_batch(priv: phe.PaillierPrivateKey, ciphertexts: Iterable[int]) -> list[int]:
    """``decrypt`` over a sequence (CRT inside ``phe``, ~2 ms each at 2048 bits)."""
    return [decrypt(priv, c) for c in ciphertexts]


def check_ciphertext(pub: PublicKey, c: int) -> int:
    """Return ``c`` if it is a unit modulo n^2; InvalidCiphertext otherwise."""
    if not 0 < c < pub.nsquare or gmpy2.gcd(c, pub.n) != 1:
        raise InvalidCiphertext("ciphertext is out of range or not a unit modulo n^2")
    return c


def to_bytes(pub: PublicKey, c: int) -> bytes:
    return c.to_bytes(pub.ciphertext_bytes, "big")


def from_bytes(pub: PublicKey, data: bytes) -> int:
    """Parse and range-check a fixed-width ciphertext; InvalidCiphertext if malformed."""
    if len(data) != pub.ciphertext_bytes:
        raise InvalidCiphertext(
            f"ciphertext is {len(data)} bytes; this key's ciphertexts are {pub.ciphertext_bytes}"
        )
    return check_ciphertext(pub, int.from_bytes(data, "big"))


def to_bytes_batch(pub: PublicKey, ciphertexts: Iterable[int]) -> list[bytes]:
    """Fixed-width encodings; InvalidCiphertext if any is outside (0, n^2)."""
    width, nsq = pub.ciphertext_bytes, pub.nsquare
    out: list[bytes] = []
    for c in ciphertexts:
        if not 0 < c < nsq:
            raise InvalidCiphertext("ciphertext is out of range for this key")
        out.append(int(c).to_bytes(width, "big"))
    return out


def from_bytes_batch(pub: PublicKey, items: Iterable[bytes]) -> list[int]:
    """``from_bytes`` over a batch, with one gcd for the whole batch.

    A ciphertext is a unit mod n^2 iff it shares no factor with n, and a product
    shares no factor with n iff none of its factors does; so one gcd of the
    product mod n replaces one gcd per ciphertext (~2 us instead of ~11 us each at
    2048 bits). Raises ``InvalidCiphertext`` if any item is malformed; nothing is
    returned then.
    """
    width, nsq = pub.ciphertext_bytes, pub.nsquare
    n = gmpy2.mpz(pub.n)
    acc = gmpy2.mpz(1)
    out: list[int] = []
    for i, data in enumerate(items):
        if len(data) != width:
            raise InvalidCiphertext(
                f"ciphertext {i} is {len(data)} bytes; this key's ciphertexts are {width}"
            )
        c = int.from_bytes(data, "big")
        if not 0 < c < nsq:
            raise InvalidCiphertext(f"ciphertext {i} is out of range for this key")
        acc = acc * (c % n) % n
        out.append(c)
    if gmpy2.gcd(acc, n) != 1:
        raise InvalidCiphertext("a ciphertext in the batch is not a unit modulo n^2")
    return out


def chunks(seq: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``seq`` of ``size`` items (the last may be shorter).

    Yields nothing for an empty sequence. Raises ``InvalidRequest`` if size < 1.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise InvalidRequest(f"chunk size must be an int >= 1, got {size!r}")
    for start in range(0, len(seq), size):
        yield seq[start : start + size]

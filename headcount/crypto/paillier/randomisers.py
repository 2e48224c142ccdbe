"""Fresh Paillier randomisers (n-th residues mod n^2, i.e. encryptions of 0) under one key.

Almost all of the cost of encrypting is the randomiser R, and there are two
ways to draw it (see `RandomiserSource`): the full R = r^n, or the
short-exponent R = h^x read off a fixed-base table.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any, TypeAlias

import gmpy2

from headcount.crypto.paillier.keys import PublicKey
from headcount.errors import InvalidRequest

# gmpy2 ships no type stubs; values of this alias are gmpy2.mpz.
Mpz: TypeAlias = Any
# What rebuilds an Encryptor in another process: n, p, q, r0, exponent_bits.
_Params: TypeAlias = tuple[int, int | None, int | None, int, int]

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


class RandomiserSource:
    """Fresh randomisers R (n-th residues mod n^2, i.e. encryptions of 0) under one key.

    ``Encryptor`` builds on this; on its own it serves the refill process of a
    ``RandomiserPool``. Built from the public key (n) or from the private key
    (p and q too): then every exponentiation runs modulo p^2 and q^2 and is
    recombined by CRT, which is cheaper than one exponentiation modulo n^2.

    Two kinds of randomiser (``secure_randomiser``):

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

    Immutable, so safe to share between threads. Raises ``InvalidRequest`` on
    out-of-range arguments.
    """

    __slots__ = (
        "_crt",
        "_exponent_bytes",
        "_n",
        "_nsq",
        "_p",
        "_pub",
        "_q",
        "_r0",
        "_tables",
    )

    def __init__(
        self, n: int, p: int | None, q: int | None, r0: int | None, exponent_bits: int
    ) -> None:
        """``Encryptor.for_public_key`` and ``for_private_key`` build through this;
        ``p`` and ``q`` are None for a source built from the public key.

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
            f"{type(self).__name__}({self._n.bit_length()}-bit key, owner={self.is_owner}, "
            f"exponent_bits={self.exponent_bits})"
        )

    def __reduce__(self) -> tuple[Any, _Params]:
        # Pickle the parameters, not the 5 MiB table: a worker rebuilds it. The
        # pickle of an owner encryptor holds p and q; it exists only to reach this
        # process's own workers, never storage or the wire.
        return (type(self), self._params())

    def _params(self) -> _Params:
        return (int(self._n), self._p, self._q, self._r0, self.exponent_bits)

    def check_key(self, pub: PublicKey) -> None:
        """Raise ``InvalidRequest`` unless this encryptor is for ``pub``."""
        if pub.n != self._pub.n:
            raise InvalidRequest("this encryptor's table was built for another key")

    def randomisers(self, count: int, *, secure_randomiser: bool = False) -> list[int]:
        """``count`` fresh n-th residues mod n^2, i.e. fresh encryptions of 0."""
        return [int(r) for r in self._randomisers(_check_count(count), secure_randomiser)]

    # -- internals ---------------------------------------------------------------

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


def _draw_base(n: int) -> int:
    """A uniform r0 in Z*_n with Jacobi symbol -1 (see ``RandomiserSource``)."""
    while True:
        r0 = secrets.randbelow(n - 1) + 1
        if gmpy2.jacobi(r0, n) == -1:
            return r0


def _check_count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise InvalidRequest(f"count must be an int >= 0, got {count!r}")
    return count

"""Paillier keys and ciphertext vectors, compatible with ``phe``.

Keys are ``phe`` keys, so a ``phe`` private key decrypts everything produced
here. Per-record vectors are handled as raw integers with gmpy2 (homomorphic
addition is a modular product) because wrapping each in ``phe.EncryptedNumber``
costs more than the arithmetic. Ciphertexts cross the wire as fixed-width
big-endian bytes and are range-checked on the way in.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import gmpy2
import phe

from headcount.errors import InvalidCiphertext, InvalidRequest


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


def save_private_key(priv: phe.PaillierPrivateKey, path: Path) -> None:
    """Write p and q as JSON to a file readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"p": str(priv.p), "q": str(priv.q)}, fh)


def load_private_key(path: Path) -> phe.PaillierPrivateKey:
    data = json.loads(path.read_text())
    p, q = int(data["p"]), int(data["q"])
    return phe.PaillierPrivateKey(phe.PaillierPublicKey(p * q), p, q)


def encrypt(pub: PublicKey, values: Sequence[int]) -> list[int]:
    """Encrypt each integer (may be negative, |v| < n/3) under ``pub``."""
    key = pub.phe
    return [int(key.raw_encrypt(v % pub.n)) for v in values]


def encrypt_zeros(pub: PublicKey, count: int) -> list[int]:
    """``count`` fresh, independent encryptions of 0 (r^n mod n^2)."""
    n, nsq = gmpy2.mpz(pub.n), gmpy2.mpz(pub.nsquare)
    out = []
    for _ in range(count):
        r = gmpy2.mpz(pub.phe.get_random_lt_n())
        out.append(int(gmpy2.powmod(r, n, nsq)))
    return out


def rerandomise(pub: PublicKey, ciphertexts: Sequence[int]) -> list[int]:
    """Multiply each ciphertext by a fresh encryption of 0: same plaintext, unlinkable bits."""
    nsq = gmpy2.mpz(pub.nsquare)
    zeros = encrypt_zeros(pub, len(ciphertexts))
    return [int(gmpy2.mpz(c) * z % nsq) for c, z in zip(ciphertexts, zeros, strict=True)]


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

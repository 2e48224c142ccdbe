"""Paillier key pairs: the public key as a checked value, private keys as ``phe`` keys."""

from __future__ import annotations

import json
from dataclasses import dataclass

import phe

from headcount.errors import InvalidRequest


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

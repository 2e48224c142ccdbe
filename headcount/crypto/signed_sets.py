"""Signed ciphertext sets: what stops a coordinator amplifying a contribution.

Between hops the coordinator decides which ciphertext goes to which record of
the next node; it must not decide what a ciphertext holds. So every sender of
per-record ciphertexts (the origin, then each filter node) signs the set of
everything it hands on: its records' ciphertexts and the E(0) fills the
coordinator will place at the next node's unlinked positions. A receiver
accepts a ciphertext only if its SHA-256 is in the previous hop's signed set,
and each at most once. A coordinator can then move a ciphertext, or drop it,
but never scale it (E(x)^k), fold two into one, use one twice or make its own:
each of the receiver's records carries at most one sender contribution, so the
query's sensitivity holds whatever the alignment (docs/privacy.md).

The grouping node signs its grouped output the same way, and the noise chain
must start from exactly that output, so nothing can be added between the last
hop and the noise (headcount.crypto.attest.verify_noise_chain).

A statement is ECDSA with the sender's federation certificate key over
"headcount-hop-v1" | query id | party | stage | digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from headcount.crypto.attest import sign_payload, verify_payload
from headcount.errors import InvalidProof, InvalidRequest

_DOMAIN = b"headcount-hop-v1"
_SET_DOMAIN = b"headcount-set-v1"
HASH_BYTES = 32

# Who signs what: an origin and a filter node a set of per-record ciphertexts,
# a grouping node its grouped sums (headcount.crypto.attest.digest_groups).
ORIGIN_SET = "origin"
FILTER_SET = "filter"
GROUP_OUTPUT = "group"
STAGES = (ORIGIN_SET, FILTER_SET, GROUP_OUTPUT)


@dataclass(frozen=True, slots=True)
class HopStatement:
    party: str
    stage: str
    digest: bytes
    signature: bytes
    certificate_pem: bytes

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise InvalidRequest(f"a hop statement's stage is one of {list(STAGES)}")
        if len(self.digest) != HASH_BYTES:
            raise InvalidRequest("a hop statement's digest is 32 bytes")


def ciphertext_hash(ciphertext: bytes) -> bytes:
    """SHA-256 of one fixed-width ciphertext encoding."""
    return hashlib.sha256(ciphertext).digest()


def set_digest(hashes: Iterable[bytes]) -> bytes:
    """SHA-256 over a set's ciphertext hashes, sorted (so the digest says nothing
    about which are records and which are fills)."""
    h = hashlib.sha256(_SET_DOMAIN)
    for item in sorted(hashes):
        h.update(item)
    return h.digest()


def _payload(query_id: str, party: str, stage: str, digest: bytes) -> bytes:
    parts = [_DOMAIN, query_id.encode(), party.encode(), stage.encode(), digest]
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def sign_hop(
    query_id: str,
    party: str,
    stage: str,
    digest: bytes,
    key: ec.EllipticCurvePrivateKey,
    certificate_pem: bytes,
) -> HopStatement:
    signature = sign_payload(_payload(query_id, party, stage, digest), key)
    return HopStatement(party, stage, digest, signature, certificate_pem)


def verify_hop(
    statement: HopStatement,
    query_id: str,
    party: str,
    stage: str,
    *,
    ca_cert: Path,
) -> None:
    """Raise InvalidProof unless ``party`` signed ``statement`` for this query and stage."""
    if statement.party != party or statement.stage != stage:
        raise InvalidProof(
            f"expected {party}'s {stage} statement, got {statement.party}'s {statement.stage}"
        )
    verify_payload(
        party,
        _payload(query_id, party, stage, statement.digest),
        statement.signature,
        statement.certificate_pem,
        ca_cert=ca_cert,
        what=f"{party}'s {stage} statement",
    )


class SetCheck:
    """A receiver's check of the ciphertexts it is handed against a signed set.

    Feed the set's hashes in strictly increasing order (``add_hashes``), then
    ``seal`` against the sender's statement; afterwards ``take`` each received
    ciphertext: it must be in the set and not taken before.
    """

    def __init__(self, sender: str, limit: int | None = None) -> None:
        """``limit``: the most hashes the set may hold (the sender's published
        records, times the household cap, plus the receiver's fills), so a
        coordinator cannot make a receiver hold an endless set."""
        self.sender, self.limit = sender, limit
        self._hashes: set[bytes] = set()
        self._digest = hashlib.sha256(_SET_DOMAIN)
        self._last = b""
        self._sealed = False
        self._taken: set[bytes] = set()

    def add_hashes(self, hashes: Iterable[bytes]) -> None:
        if self._sealed:
            raise InvalidRequest(f"{self.sender}'s set hashes after its ciphertexts")
        for h in hashes:
            if len(h) != HASH_BYTES or h <= self._last:
                raise InvalidProof(
                    f"{self.sender}'s set hashes are not 32-byte values in increasing order"
                )
            self._last = h
            self._hashes.add(h)
            if self.limit is not None and len(self._hashes) > self.limit:
                raise InvalidRequest(
                    f"{self.sender}'s set holds more than the {self.limit} ciphertexts "
                    "its published size allows"
                )
            self._digest.update(h)

    def seal(self, statement_digest: bytes) -> None:
        """Check the hashes received are the set the sender signed."""
        if self._digest.digest() != statement_digest:
            raise InvalidProof(f"the set hashes are not the set {self.sender} signed")
        self._sealed = True

    def take(self, ciphertext: bytes) -> None:
        if not self._sealed:
            raise InvalidRequest(f"ciphertexts before {self.sender}'s signed set")
        h = ciphertext_hash(ciphertext)
        if h not in self._hashes:
            raise InvalidProof(f"a ciphertext that is not in {self.sender}'s signed set")
        if h in self._taken:
            raise InvalidProof(f"a ciphertext of {self.sender}'s set handed on twice")
        self._taken.add(h)

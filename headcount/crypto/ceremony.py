"""The key ceremony: the nodes derive one linkage secret the coordinator never holds.

Each node draws 32 random bytes, commits to them (SHA-256) and seals them to
every other node with X25519 + HKDF-SHA256 + ChaCha20-Poly1305; the coordinator
only relays sealed envelopes and commitments. Every node opens the envelopes
addressed to it, checks each contribution against its sender's commitment, and
derives the secret with HKDF over all contributions in party order. One honest
node's contribution makes the secret unpredictable. Nodes prove they derived
the same secret by returning an HMAC tag under a key derived from it.

Identities (X25519 and Paillier public keys) are signed with each node's TLS
certificate key, so a coordinator that relays them cannot substitute its own.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509 import load_pem_x509_certificate

from headcount.crypto.pki import Role, verify_issued_by
from headcount.errors import InvalidProof, InvalidRequest

CONTRIBUTION_BYTES = 32
SECRET_BYTES = 32
_NONCE_BYTES = 12


@dataclass(frozen=True, slots=True)
class Identity:
    party: str
    x25519_public_key: bytes
    paillier_n: bytes
    certificate_pem: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.x25519_public_key) != 32:
            raise InvalidRequest(f"{self.party}: X25519 public key must be 32 bytes")


@dataclass(frozen=True, slots=True)
class Envelope:
    ceremony_id: str
    sender: str
    recipient: str
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class Commitment:
    party: str
    digest: bytes

    def __post_init__(self) -> None:
        if len(self.digest) != 32:
            raise InvalidRequest(f"{self.party}: commitment must be a SHA-256 digest")


def _identity_payload(party: str, x25519_pub: bytes, paillier_n: bytes) -> bytes:
    parts = [b"headcount/identity/v1", party.encode(), x25519_pub, paillier_n]
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def sign_identity(
    party: str,
    x25519_pub: bytes,
    paillier_n: bytes,
    cert_pem: bytes,
    tls_key: ec.EllipticCurvePrivateKey,
) -> Identity:
    sig = tls_key.sign(_identity_payload(party, x25519_pub, paillier_n), ec.ECDSA(hashes.SHA256()))
    return Identity(party, x25519_pub, paillier_n, cert_pem, sig)


def verify_identity(identity: Identity, ca_cert: Path) -> None:
    """Check the identity is signed by a federation party certificate naming it.

    Raises InvalidProof otherwise.
    """
    principal = verify_issued_by(identity.certificate_pem, ca_cert)
    if principal.role is not Role.PARTY or principal.name != identity.party:
        raise InvalidProof(f"identity for {identity.party!r} is not signed by that party")
    cert = load_pem_x509_certificate(identity.certificate_pem)
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise InvalidProof("party certificate must carry an EC key")
    payload = _identity_payload(identity.party, identity.x25519_public_key, identity.paillier_n)
    try:
        key.verify(identity.signature, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise InvalidProof(f"identity signature for {identity.party!r} does not verify") from None


def new_contribution() -> bytes:
    return os.urandom(CONTRIBUTION_BYTES)


def commit(ceremony_id: str, party: str, contribution: bytes) -> Commitment:
    h = hashlib.sha256()
    for part in (b"headcount/commit/v1", ceremony_id.encode(), party.encode(), contribution):
        h.update(len(part).to_bytes(4, "big") + part)
    return Commitment(party, h.digest())


def _aad(ceremony_id: str, sender: str, recipient: str) -> bytes:
    return b"\x00".join(
        (b"headcount/envelope/v1", ceremony_id.encode(), sender.encode(), recipient.encode())
    )


def _envelope_key(
    own: x25519.X25519PrivateKey, peer_public: bytes, ceremony_id: str, sender: str, recipient: str
) -> bytes:
    shared = own.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=ceremony_id.encode(),
        info=_aad(ceremony_id, sender, recipient),
    ).derive(shared)


def seal(
    own: x25519.X25519PrivateKey,
    sender: str,
    recipient: Identity,
    ceremony_id: str,
    contribution: bytes,
) -> Envelope:
    """Seal ``contribution`` from ``sender`` to ``recipient`` for one ceremony."""
    key = _envelope_key(own, recipient.x25519_public_key, ceremony_id, sender, recipient.party)
    nonce = os.urandom(_NONCE_BYTES)
    aad = _aad(ceremony_id, sender, recipient.party)
    ct = ChaCha20Poly1305(key).encrypt(nonce, contribution, aad)
    return Envelope(ceremony_id, sender, recipient.party, nonce, ct)


def open_envelope(own: x25519.X25519PrivateKey, me: str, sender: Identity, env: Envelope) -> bytes:
    """Open an envelope addressed to ``me``; InvalidProof if it was altered or misaddressed."""
    if env.recipient != me or env.sender != sender.party:
        raise InvalidProof(f"envelope from {env.sender} to {env.recipient} is not for {me}")
    key = _envelope_key(own, sender.x25519_public_key, env.ceremony_id, env.sender, me)
    try:
        return ChaCha20Poly1305(key).decrypt(
            env.nonce, env.ciphertext, _aad(env.ceremony_id, env.sender, me)
        )
    except InvalidTag:
        raise InvalidProof(f"envelope from {env.sender} failed authentication") from None


def derive_secret(ceremony_id: str, contributions: Mapping[str, bytes]) -> bytes:
    """The linkage secret from every party's contribution (order-independent)."""
    ikm = b"".join(
        len(p).to_bytes(4, "big") + p.encode() + contributions[p] for p in sorted(contributions)
    )
    return HKDF(
        algorithm=hashes.SHA256(),
        length=SECRET_BYTES,
        salt=ceremony_id.encode(),
        info=b"headcount/linkage-secret/v1",
    ).derive(ikm)


def epoch_key(secret: bytes, epoch_id: str) -> bytes:
    """The key every encoding of one linkage epoch is derived from.

    Distinct per epoch, so encodings (CLKs, match-keys, household keys) of one
    epoch cannot be compared with another's; the same for every node in it.
    """
    return HKDF(
        algorithm=hashes.SHA256(),
        length=SECRET_BYTES,
        salt=epoch_id.encode(),
        info=b"headcount/epoch-key/v1",
    ).derive(secret)


def confirmation_tag(secret: bytes, ceremony_id: str) -> bytes:
    """A tag that shows which secret a node holds without revealing it."""
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"headcount/key-confirmation/v1"
    ).derive(secret)
    return hmac.new(key, ceremony_id.encode(), hashlib.sha256).digest()

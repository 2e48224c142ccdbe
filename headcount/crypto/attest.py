"""Signed statements about a query: a share-holder added its noise share; an
origin abandoned the query.

A node that adds its share signs (query id, its party name, the digest of the
aggregates it received, the digest of those it returned) with its federation
certificate's key. The decrypting origin checks, before it decrypts, that
every share-holding node of the announced query signed, that the statements
chain (each input is the previous output) and that the last output is exactly
what it is asked to decrypt. So a coordinator cannot leave a node's share out
and keep its own draw as the only noise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import load_pem_x509_certificate

from headcount.crypto.pki import Role, verify_issued_by
from headcount.errors import InvalidProof, InvalidRequest

_DOMAIN = b"headcount-noise-v1"
DIGEST_BYTES = 32


@dataclass(frozen=True, slots=True)
class NoiseAttestation:
    party: str
    input_digest: bytes
    output_digest: bytes
    signature: bytes
    certificate_pem: bytes

    def __post_init__(self) -> None:
        if len(self.input_digest) != DIGEST_BYTES or len(self.output_digest) != DIGEST_BYTES:
            raise InvalidRequest("a noise attestation's digests are 32 bytes")


def _party_named(certificate_pem: bytes, ca_cert: Path) -> str:
    """The party a certificate names, once it chains to the federation CA with the
    party role; InvalidProof otherwise."""
    principal = verify_issued_by(certificate_pem, ca_cert)
    if principal.role is not Role.PARTY:
        raise InvalidProof("a statement about a query is signed with a party certificate")
    return principal.name


def digest_groups(groups: Sequence[tuple[str, bytes]]) -> bytes:
    """SHA-256 over (group name, ciphertext) pairs in order, each length-prefixed."""
    h = hashlib.sha256(b"headcount-groups-v1")
    for name, ct in groups:
        raw = name.encode()
        h.update(len(raw).to_bytes(4, "big") + raw + len(ct).to_bytes(4, "big") + ct)
    return h.digest()


def _payload(query_id: str, party: str, input_digest: bytes, output_digest: bytes) -> bytes:
    parts = [_DOMAIN, query_id.encode(), party.encode(), input_digest, output_digest]
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def sign_payload(payload: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """ECDSA-SHA256 with a node's federation certificate key."""
    return key.sign(payload, ec.ECDSA(hashes.SHA256()))


def verify_payload(
    party: str,
    payload: bytes,
    signature: bytes,
    certificate_pem: bytes,
    *,
    ca_cert: Path,
    what: str,
) -> None:
    """Raise InvalidProof unless ``party``'s certificate (issued by the federation
    CA, with the party role) signed ``payload``; ``what`` names the statement."""
    named = _party_named(certificate_pem, ca_cert)
    if named != party:
        raise InvalidProof(f"{what} carries {named}'s certificate")
    key = load_pem_x509_certificate(certificate_pem).public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise InvalidProof("a party certificate carries an EC key")
    try:
        key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise InvalidProof(f"{what} does not verify") from None


def sign_noise(
    query_id: str,
    party: str,
    input_digest: bytes,
    output_digest: bytes,
    key: ec.EllipticCurvePrivateKey,
    certificate_pem: bytes,
) -> NoiseAttestation:
    signature = sign_payload(_payload(query_id, party, input_digest, output_digest), key)
    return NoiseAttestation(party, input_digest, output_digest, signature, certificate_pem)


def verify_noise_chain(
    query_id: str,
    expected_parties: Sequence[str],
    attestations: Sequence[NoiseAttestation],
    start_digest: bytes,
    final_digest: bytes,
    *,
    ca_cert: Path,
) -> None:
    """Raise InvalidProof unless ``attestations`` prove every expected share was added,
    in turn, starting from exactly the aggregates whose digest is ``start_digest``
    (the grouping node's signed output) and ending at ``final_digest``, each signed
    with a party certificate the federation CA (``ca_cert``) issued."""
    if [a.party for a in attestations] != list(expected_parties):
        raise InvalidProof(
            f"noise shares attested by {[a.party for a in attestations]}, "
            f"the query announced {list(expected_parties)}"
        )
    previous = start_digest
    for a in attestations:
        verify_payload(
            a.party,
            _payload(query_id, a.party, a.input_digest, a.output_digest),
            a.signature,
            a.certificate_pem,
            ca_cert=ca_cert,
            what=f"{a.party}'s noise attestation",
        )
        if a.input_digest != previous:
            raise InvalidProof(f"{a.party} added its share to other aggregates than it was given")
        previous = a.output_digest
    if not attestations or previous != final_digest:
        raise InvalidProof(
            "the aggregates to decrypt are not the ones the last share-holder noised"
        )


_ABANDON_DOMAIN = b"headcount-abandon-v1"


@dataclass(frozen=True, slots=True)
class Abandonment:
    """The origin's signed promise never to decrypt ``query_id``."""

    query_id: str
    party: str
    signature: bytes
    certificate_pem: bytes

    def to_json(self) -> dict[str, str]:
        return {
            "party": self.party,
            "signature": self.signature.hex(),
            "certificate": self.certificate_pem.decode(),
        }

    @classmethod
    def from_json(cls, query_id: str, data: object) -> Abandonment:
        if not isinstance(data, dict):
            raise InvalidProof("an abandonment is an object")
        try:
            return cls(
                query_id,
                str(data["party"]),
                bytes.fromhex(str(data["signature"])),
                str(data["certificate"]).encode(),
            )
        except (KeyError, ValueError) as exc:
            raise InvalidProof("a malformed abandonment") from exc


def _abandon_payload(query_id: str, party: str) -> bytes:
    parts = [_ABANDON_DOMAIN, query_id.encode(), party.encode()]
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def sign_abandonment(
    query_id: str, party: str, key: ec.EllipticCurvePrivateKey, certificate_pem: bytes
) -> Abandonment:
    signature = sign_payload(_abandon_payload(query_id, party), key)
    return Abandonment(query_id, party, signature, certificate_pem)


def verify_abandonment(abandonment: Abandonment, origin: str, *, ca_cert: Path) -> None:
    """Raise InvalidProof unless ``origin`` itself signed the abandonment."""
    if abandonment.party != origin:
        raise InvalidProof(f"the query's origin is {origin}, not {abandonment.party}")
    verify_payload(
        origin,
        _abandon_payload(abandonment.query_id, origin),
        abandonment.signature,
        abandonment.certificate_pem,
        ca_cert=ca_cert,
        what=f"the abandonment of {abandonment.query_id}",
    )

"""Key ceremony primitives: same secret everywhere, tampering refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from headcount import tls
from headcount.crypto import ceremony
from headcount.errors import InvalidProof
from headcount.tls import Role

PARTIES = ("education", "health", "justice")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tls.IssuedCredential]]:
    d = tmp_path_factory.mktemp("pki")
    ca = tls.create_ca(d / "ca", "test")
    return ca.cert_path, {p: tls.issue(ca, d / "certs", p, Role.PARTY) for p in PARTIES}


def _identities(
    pki: tuple[Path, dict[str, tls.IssuedCredential]],
) -> tuple[dict[str, x25519.X25519PrivateKey], dict[str, ceremony.Identity]]:
    _, creds = pki
    keys = {p: x25519.X25519PrivateKey.generate() for p in PARTIES}
    idents = {
        p: ceremony.sign_identity(
            p,
            keys[p].public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
            b"\x01" * 128,
            creds[p].cert_path.read_bytes(),
            tls.load_private_key(creds[p].key_path),
        )
        for p in PARTIES
    }
    return keys, idents


def test_all_parties_derive_the_same_secret(
    pki: tuple[Path, dict[str, tls.IssuedCredential]],
) -> None:
    ca, _ = pki
    keys, idents = _identities(pki)
    for i in idents.values():
        ceremony.verify_identity(i, ca)
    contrib = {p: ceremony.new_contribution() for p in PARTIES}
    envelopes = [
        ceremony.seal(keys[s], s, idents[r], "c1", contrib[s])
        for s in PARTIES
        for r in PARTIES
        if s != r
    ]
    secrets = {}
    for me in PARTIES:
        got = {me: contrib[me]}
        for env in envelopes:
            if env.recipient == me:
                got[env.sender] = ceremony.open_envelope(keys[me], me, idents[env.sender], env)
        secrets[me] = ceremony.derive_secret("c1", got)
    assert len(set(secrets.values())) == 1
    secret = secrets["health"]
    assert secret not in contrib.values()
    tag = ceremony.confirmation_tag(secret, "c1")
    assert tag != secret and len(tag) == 32
    # Another ceremony with the same contributions derives another secret.
    assert ceremony.derive_secret("c2", contrib) != ceremony.derive_secret("c1", contrib)


def test_tampered_or_misaddressed_envelopes_are_refused(
    pki: tuple[Path, dict[str, tls.IssuedCredential]],
) -> None:
    keys, idents = _identities(pki)
    env = ceremony.seal(keys["education"], "education", idents["health"], "c1", b"x" * 32)
    flipped = replace(env, ciphertext=bytes([env.ciphertext[0] ^ 1]) + env.ciphertext[1:])
    with pytest.raises(InvalidProof):
        ceremony.open_envelope(keys["health"], "health", idents["education"], flipped)
    with pytest.raises(InvalidProof):  # replayed into another ceremony
        ceremony.open_envelope(
            keys["health"], "health", idents["education"], replace(env, ceremony_id="c2")
        )
    with pytest.raises(InvalidProof):  # a third party cannot open it
        ceremony.open_envelope(
            keys["justice"], "justice", idents["education"], replace(env, recipient="justice")
        )
    assert ceremony.open_envelope(keys["health"], "health", idents["education"], env) == b"x" * 32


def test_identity_substitution_is_detected(
    pki: tuple[Path, dict[str, tls.IssuedCredential]], tmp_path: Path
) -> None:
    ca, creds = pki
    _, idents = _identities(pki)
    # A relaying coordinator swaps in its own X25519 key.
    swapped = replace(idents["health"], x25519_public_key=b"\x07" * 32)
    with pytest.raises(InvalidProof, match="signature"):
        ceremony.verify_identity(swapped, ca)
    # One party's certificate cannot vouch for another party's name.
    impostor = replace(idents["health"], certificate_pem=creds["justice"].cert_path.read_bytes())
    with pytest.raises(InvalidProof):
        ceremony.verify_identity(impostor, ca)
    # A certificate from another CA is refused.
    rogue = tls.create_ca(tmp_path / "rogue", "test")
    rogue_cert = tls.issue(rogue, tmp_path / "rogue", "health", Role.PARTY)
    forged = ceremony.sign_identity(
        "health",
        b"\x07" * 32,
        b"\x01" * 128,
        rogue_cert.cert_path.read_bytes(),
        tls.load_private_key(rogue_cert.key_path),
    )
    with pytest.raises(InvalidProof, match="federation CA"):
        ceremony.verify_identity(forged, ca)


def test_commitment_binds_party_and_ceremony() -> None:
    c = b"y" * 32
    assert ceremony.commit("c1", "health", c) != ceremony.commit("c1", "justice", c)
    assert ceremony.commit("c1", "health", c) != ceremony.commit("c2", "health", c)
    assert ceremony.commit("c1", "health", c) == ceremony.commit("c1", "health", c)

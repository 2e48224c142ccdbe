"""Noise attestations: the origin decrypts only what every share-holder signed."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest

from headcount import tls
from headcount.crypto.attest import (
    NoiseAttestation,
    digest_groups,
    sign_noise,
    verify_noise_chain,
)
from headcount.errors import InvalidProof
from headcount.tls import Role

PARTIES = ("health", "immigration")
QUERY = "q1"

PKI = tuple[Path, dict[str, tls.IssuedCredential]]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    d = tmp_path_factory.mktemp("pki")
    ca = tls.create_ca(d / "ca", "test")
    creds = {p: tls.issue(ca, d / "certs", p, Role.PARTY) for p in PARTIES}
    creds["coordinator"] = tls.issue(ca, d / "certs", "coordinator", Role.COORDINATOR)
    return ca.cert_path, creds


def _chain(pki: PKI, stages: list[list[tuple[str, bytes]]]) -> list[NoiseAttestation]:
    _, creds = pki
    out = []
    for party, (before, after) in zip(PARTIES, itertools.pairwise(stages), strict=True):
        out.append(
            sign_noise(
                QUERY,
                party,
                digest_groups(before),
                digest_groups(after),
                tls.load_private_key(creds[party].key_path),
                creds[party].cert_path.read_bytes(),
            )
        )
    return out


STAGES = [
    [("a", b"\x01" * 8), ("b", b"\x02" * 8)],
    [("a", b"\x03" * 8), ("b", b"\x04" * 8)],
    [("a", b"\x05" * 8), ("b", b"\x06" * 8)],
]
# The grouping node's signed output, where the chain must start.
START = digest_groups(STAGES[0])


def test_a_complete_chain_verifies(pki: PKI) -> None:
    ca, _ = pki
    verify_noise_chain(
        QUERY,
        PARTIES,
        _chain(pki, STAGES),
        START,
        digest_groups(STAGES[-1]),
        ca_cert=ca,
    )


def test_a_missing_share_holder_is_refused(pki: PKI) -> None:
    ca, _ = pki
    chain = _chain(pki, STAGES)
    with pytest.raises(InvalidProof, match="announced"):
        verify_noise_chain(QUERY, PARTIES, chain[:1], START, digest_groups(STAGES[1]), ca_cert=ca)


def test_other_aggregates_than_the_last_noised_are_refused(pki: PKI) -> None:
    # The coordinator swaps in aggregates without the nodes' shares.
    ca, _ = pki
    with pytest.raises(InvalidProof, match="last share-holder"):
        verify_noise_chain(
            QUERY,
            PARTIES,
            _chain(pki, STAGES),
            START,
            digest_groups(STAGES[0]),
            ca_cert=ca,
        )


def test_a_chain_that_starts_elsewhere_is_refused(pki: PKI) -> None:
    # The coordinator adds a ciphertext of its own (E(x)^k, say) to the
    # grouping node's output before the first share-holder sees it.
    ca, _ = pki
    with pytest.raises(InvalidProof, match="other aggregates"):
        verify_noise_chain(
            QUERY,
            PARTIES,
            _chain(pki, STAGES),
            digest_groups(STAGES[1]),
            digest_groups(STAGES[-1]),
            ca_cert=ca,
        )


def test_a_broken_chain_is_refused(pki: PKI) -> None:
    ca, _ = pki
    first, second = _chain(pki, STAGES)
    other = _chain(pki, [STAGES[0], STAGES[2], STAGES[1]])[1]
    with pytest.raises(InvalidProof):
        verify_noise_chain(
            QUERY,
            PARTIES,
            [first, other],
            START,
            digest_groups(STAGES[1]),
            ca_cert=ca,
        )
    del second


def test_a_forged_or_misattributed_signature_is_refused(pki: PKI) -> None:
    ca, creds = pki
    first, second = _chain(pki, STAGES)
    forged = replace(second, signature=first.signature)
    with pytest.raises(InvalidProof, match="does not verify"):
        verify_noise_chain(
            QUERY,
            PARTIES,
            [first, forged],
            START,
            digest_groups(STAGES[-1]),
            ca_cert=ca,
        )
    # health signs in immigration's name with its own certificate.
    impostor = replace(second, certificate_pem=creds["health"].cert_path.read_bytes())
    with pytest.raises(InvalidProof, match="certificate"):
        verify_noise_chain(
            QUERY,
            PARTIES,
            [first, impostor],
            START,
            digest_groups(STAGES[-1]),
            ca_cert=ca,
        )
    # The coordinator's own certificate is no share-holder's.
    coordinator = sign_noise(
        QUERY,
        "immigration",
        second.input_digest,
        second.output_digest,
        tls.load_private_key(creds["coordinator"].key_path),
        creds["coordinator"].cert_path.read_bytes(),
    )
    with pytest.raises(InvalidProof):
        verify_noise_chain(
            QUERY,
            PARTIES,
            [first, coordinator],
            START,
            digest_groups(STAGES[-1]),
            ca_cert=ca,
        )


def test_an_attestation_for_another_query_is_refused(pki: PKI) -> None:
    ca, _ = pki
    with pytest.raises(InvalidProof, match="does not verify"):
        verify_noise_chain(
            "q2",
            PARTIES,
            _chain(pki, STAGES),
            START,
            digest_groups(STAGES[-1]),
            ca_cert=ca,
        )


def test_digest_depends_on_names_order_and_bytes() -> None:
    base = [("a", b"x"), ("b", b"y")]
    assert digest_groups(base) == digest_groups(list(base))
    assert digest_groups(base) != digest_groups(base[::-1])
    assert digest_groups(base) != digest_groups([("a", b"x"), ("c", b"y")])
    assert digest_groups(base) != digest_groups([("a", b"x"), ("b", b"z")])
    # Length prefixes: moving a byte between name and ciphertext changes the digest.
    assert digest_groups([("ab", b"c")]) != digest_groups([("a", b"bc")])

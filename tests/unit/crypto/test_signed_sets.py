"""Signed ciphertext sets: a receiver takes only what the sender signed, once."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from headcount import tls
from headcount.crypto.signed_sets import (
    FILTER_SET,
    ORIGIN_SET,
    HopStatement,
    SetCheck,
    ciphertext_hash,
    set_digest,
    sign_hop,
    verify_hop,
)
from headcount.errors import InvalidProof, InvalidRequest
from headcount.tls import Role

QUERY = "q1"
PKI = tuple[Path, dict[str, tls.IssuedCredential]]
CTS = [os.urandom(64) for _ in range(6)]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    d = tmp_path_factory.mktemp("pki")
    ca = tls.create_ca(d / "ca", "test")
    creds = {p: tls.issue(ca, d / "certs", p, Role.PARTY) for p in ("education", "health")}
    creds["coordinator"] = tls.issue(ca, d / "certs", "coordinator", Role.COORDINATOR)
    return ca.cert_path, creds


def _sign(pki: PKI, party: str, signer: str | None = None) -> HopStatement:
    _, creds = pki
    cred = creds[signer or party]
    return sign_hop(
        QUERY,
        party,
        ORIGIN_SET,
        set_digest(ciphertext_hash(c) for c in CTS),
        tls.load_private_key(cred.key_path),
        cred.cert_path.read_bytes(),
    )


def _check(statement: HopStatement) -> SetCheck:
    check = SetCheck("education")
    check.add_hashes(sorted(ciphertext_hash(c) for c in CTS))
    check.seal(statement.digest)
    return check


def test_the_sender_signed_statement_verifies_and_each_member_is_taken_once(pki: PKI) -> None:
    ca, _ = pki
    statement = _sign(pki, "education")
    verify_hop(statement, QUERY, "education", ORIGIN_SET, ca_cert=ca)
    check = _check(statement)
    for c in CTS:
        check.take(c)
    with pytest.raises(InvalidProof, match="twice"):
        check.take(CTS[0])


def test_a_ciphertext_outside_the_set_is_refused(pki: PKI) -> None:
    check = _check(_sign(pki, "education"))
    with pytest.raises(InvalidProof, match="not in education's signed set"):
        check.take(os.urandom(64))


def test_statements_name_their_party_stage_and_query(pki: PKI) -> None:
    ca, _ = pki
    statement = _sign(pki, "education")
    with pytest.raises(InvalidProof, match="expected health"):
        verify_hop(statement, QUERY, "health", ORIGIN_SET, ca_cert=ca)
    with pytest.raises(InvalidProof, match="filter"):
        verify_hop(statement, QUERY, "education", FILTER_SET, ca_cert=ca)
    with pytest.raises(InvalidProof, match="does not verify"):
        verify_hop(statement, "q2", "education", ORIGIN_SET, ca_cert=ca)
    # Another digest under the same signature.
    forged = replace(statement, digest=bytes(32))
    with pytest.raises(InvalidProof, match="does not verify"):
        verify_hop(forged, QUERY, "education", ORIGIN_SET, ca_cert=ca)
    # Signed in education's name by health, or by the coordinator.
    for signer in ("health", "coordinator"):
        with pytest.raises(InvalidProof):
            verify_hop(_sign(pki, "education", signer), QUERY, "education", ORIGIN_SET, ca_cert=ca)


def test_the_hashes_must_be_the_signed_set_in_order(pki: PKI) -> None:
    statement = _sign(pki, "education")
    hashes = sorted(ciphertext_hash(c) for c in CTS)
    # One more hash (a ciphertext of the coordinator's own) changes the digest.
    extra = SetCheck("education")
    extra.add_hashes(sorted([*hashes, ciphertext_hash(b"mine")]))
    with pytest.raises(InvalidProof, match="not the set education signed"):
        extra.seal(statement.digest)
    unsorted = SetCheck("education")
    with pytest.raises(InvalidProof, match="increasing order"):
        unsorted.add_hashes(hashes[::-1])
    repeated = SetCheck("education")
    with pytest.raises(InvalidProof, match="increasing order"):
        repeated.add_hashes([hashes[0], hashes[0]])
    unsealed = SetCheck("education")
    with pytest.raises(InvalidRequest, match="before"):
        unsealed.take(CTS[0])


def test_the_digest_hides_which_are_records_and_which_are_fills() -> None:
    hashes = [ciphertext_hash(c) for c in CTS]
    assert set_digest(hashes) == set_digest(hashes[::-1])
    assert set_digest(hashes) != set_digest(hashes[:-1])


def test_a_malformed_statement_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="stage"):
        HopStatement("education", "mine", bytes(32), b"", b"")
    with pytest.raises(InvalidRequest, match="32 bytes"):
        HopStatement("education", ORIGIN_SET, bytes(31), b"", b"")


def test_a_set_larger_than_its_published_size_is_refused() -> None:
    check = SetCheck("education", limit=len(CTS) - 1)
    with pytest.raises(InvalidRequest, match="published size"):
        check.add_hashes(sorted(ciphertext_hash(c) for c in CTS))

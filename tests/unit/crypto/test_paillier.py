"""Paillier vectors: phe-compatible, homomorphic, and strict about what they accept."""

from __future__ import annotations

import phe
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headcount.crypto import paillier
from headcount.errors import InvalidCiphertext

PUB, PRIV = paillier.generate_keypair(1024)


def test_phe_private_key_decrypts_our_ciphertexts() -> None:
    cts = paillier.encrypt(PUB, [0, 1, 42, -7])
    values = [PRIV.decrypt(phe.EncryptedNumber(PRIV.public_key, c)) for c in cts]
    assert values == [0, 1, 42, -7]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(-1000, 1000), min_size=0, max_size=12))
def test_decrypting_a_sum_gives_the_sum(values: list[int]) -> None:
    total = paillier.add_all(PUB, paillier.encrypt(PUB, values))
    assert paillier.decrypt(PRIV, total) == sum(values)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(-500, 500))
def test_add_plain(value: int, delta: int) -> None:
    (c,) = paillier.encrypt(PUB, [value])
    assert paillier.decrypt(PRIV, paillier.add_plain(PUB, c, delta)) == value + delta


def test_rerandomise_keeps_plaintext_and_changes_bits() -> None:
    cts = paillier.encrypt(PUB, [1, 0, 1])
    fresh = paillier.rerandomise(PUB, cts)
    assert [paillier.decrypt(PRIV, c) for c in fresh] == [1, 0, 1]
    assert not set(cts) & set(fresh)


def test_zeros_are_fresh_and_decrypt_to_zero() -> None:
    zeros = paillier.encrypt_zeros(PUB, 5)
    assert len(set(zeros)) == 5
    assert all(paillier.decrypt(PRIV, z) == 0 for z in zeros)


def test_bytes_round_trip_is_fixed_width() -> None:
    (c,) = paillier.encrypt(PUB, [3])
    data = paillier.to_bytes(PUB, c)
    assert len(data) == PUB.ciphertext_bytes
    assert paillier.from_bytes(PUB, data) == c


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x00" * 10,
        (0).to_bytes(PUB.ciphertext_bytes, "big"),
        (PUB.nsquare + 1).to_bytes(PUB.ciphertext_bytes + 1, "big")[-PUB.ciphertext_bytes :],
        PUB.n.to_bytes(PUB.ciphertext_bytes, "big"),  # shares a factor with n
    ],
)
def test_invalid_ciphertexts_are_refused(bad: bytes) -> None:
    with pytest.raises(InvalidCiphertext):
        paillier.from_bytes(PUB, bad)


def test_ciphertext_under_another_key_is_out_of_range_or_garbage() -> None:
    other_pub, _ = paillier.generate_keypair(1024)
    (c,) = paillier.encrypt(other_pub, [1])
    data = c.to_bytes(other_pub.ciphertext_bytes, "big")
    if len(data) != PUB.ciphertext_bytes or c >= PUB.nsquare:
        with pytest.raises(InvalidCiphertext):
            paillier.from_bytes(PUB, data)
    else:
        assert paillier.decrypt(PRIV, paillier.from_bytes(PUB, data)) != 1

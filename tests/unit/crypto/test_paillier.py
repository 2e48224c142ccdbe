"""Paillier vectors: phe-compatible, homomorphic, and strict about what they accept."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import gmpy2
import phe
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headcount.crypto import paillier
from headcount.crypto.paillier.encryptor import _seal
from headcount.crypto.paillier.randomisers import _Crt
from headcount.errors import InvalidCiphertext, InvalidRequest

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


# -- fast encryption ------------------------------------------------------------

VECTORS = json.loads((Path(__file__).parents[2] / "vectors" / "paillier_phe.json").read_text())
PUBLIC_ENC = paillier.Encryptor.for_public_key(PUB)
OWNER_ENC = paillier.Encryptor.for_private_key(PRIV)
ENCRYPTORS = {"public": PUBLIC_ENC, "owner": OWNER_ENC}


def _phe_decrypt(c: int) -> int:
    return int(PRIV.decrypt(phe.EncryptedNumber(PRIV.public_key, c)))


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(sorted(ENCRYPTORS)),
    st.booleans(),
    st.lists(
        st.one_of(
            st.integers(-1000, 1000),
            st.integers(-PUB.max_plaintext, PUB.max_plaintext),
            st.sampled_from([PUB.max_plaintext, -PUB.max_plaintext]),
        ),
        max_size=6,
    ),
)
def test_phe_decrypts_fast_encryptions(who: str, secure: bool, values: list[int]) -> None:
    cts = ENCRYPTORS[who].encrypt(values, secure_randomiser=secure)
    assert [_phe_decrypt(c) for c in cts] == values
    assert paillier.decrypt_batch(PRIV, cts) == values


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(ENCRYPTORS)), st.booleans(), st.integers(-500, 500)),
        max_size=10,
    )
)
def test_decrypting_a_sum_of_mixed_encryptions_gives_the_sum(
    parts: list[tuple[str, bool, int]],
) -> None:
    cts = [ENCRYPTORS[who].encrypt([v], secure_randomiser=sec)[0] for who, sec, v in parts]
    total = paillier.add_all(PUB, paillier.rerandomise(PUB, cts))
    assert paillier.decrypt(PRIV, total) == sum(v for _, _, v in parts)


@pytest.mark.parametrize("who", sorted(ENCRYPTORS))
@pytest.mark.parametrize("secure", [False, True])
def test_randomised_ciphertexts_are_distinct(who: str, secure: bool) -> None:
    enc = ENCRYPTORS[who]
    count = 40 if secure else 300
    zeros = enc.encrypt_zeros(count, secure_randomiser=secure)
    ones = enc.encrypt([1] * count, secure_randomiser=secure)
    assert len(set(zeros) | set(ones)) == 2 * count
    assert {paillier.decrypt(PRIV, c) for c in zeros[:5]} == {0}


def test_owner_and_public_tables_agree_for_the_same_base() -> None:
    # Same table base r0: the CRT table must give exactly h^x mod n^2.
    public = paillier.Encryptor(PUB.n, None, None, OWNER_ENC._r0, 320)
    digits = os.urandom(320 // 8)
    (table,) = public._tables
    crt = OWNER_ENC._crt
    assert crt is not None
    hp, hq = OWNER_ENC._tables
    assert crt.combine(hp.power(digits), hq.power(digits)) == table.power(digits)
    x = int.from_bytes(digits, "little")
    assert table.power(digits) == pow(pow(OWNER_ENC._r0, PUB.n, PUB.nsquare), x, PUB.nsquare)


def test_short_exponent_ciphertexts_have_both_jacobi_symbols() -> None:
    # phe's randomiser r^n mod n has a uniform Jacobi symbol; ours must too, or
    # fast E(0)s could be told apart from re-randomised phe ciphertexts.
    symbols = {int(gmpy2.jacobi(c % PUB.n, PUB.n)) for c in PUBLIC_ENC.encrypt_zeros(64)}
    assert symbols == {-1, 1}


def test_module_functions_accept_the_owner_encryptor() -> None:
    cts = paillier.encrypt(PUB, [5, -5], encryptor=OWNER_ENC)
    zeros = paillier.encrypt_zeros(PUB, 2, encryptor=OWNER_ENC, secure_randomiser=True)
    fresh = paillier.rerandomise(PUB, cts + zeros, encryptor=OWNER_ENC)
    assert paillier.decrypt_batch(PRIV, fresh) == [5, -5, 0, 0]
    assert paillier.shared_encryptor(PUB) is paillier.shared_encryptor(PUB)


def test_pickled_encryptor_rebuilds_the_same_table_without_showing_secrets() -> None:
    clone = pickle.loads(pickle.dumps(OWNER_ENC))
    digits = os.urandom(40)
    assert [t.power(digits) for t in clone._tables] == [t.power(digits) for t in OWNER_ENC._tables]
    assert str(PRIV.p) not in repr(clone) and str(OWNER_ENC._r0) not in repr(clone)


def test_worker_pool_encrypts_in_order() -> None:
    values = [i % 3 for i in range(24)]
    cts = OWNER_ENC.encrypt(values, workers=2)
    assert paillier.decrypt_batch(PRIV, cts) == values
    zeros = PUBLIC_ENC.encrypt_zeros(9, workers=2)
    again = PUBLIC_ENC.rerandomise(cts[:9], workers=2, secure_randomiser=True)
    assert paillier.decrypt_batch(PRIV, zeros + again) == [0] * 9 + values[:9]
    assert len(set(zeros)) == 9


# -- known answers computed by phe (tests/vectors/paillier_phe.json) ------------


def test_vectors_decrypt() -> None:
    p, q = int(VECTORS["p"]), int(VECTORS["q"])
    priv = phe.PaillierPrivateKey(phe.PaillierPublicKey(p * q), p, q)
    cases = VECTORS["full_randomiser"] + VECTORS["short_exponent"]["cases"]
    assert [paillier.decrypt(priv, int(v["c"])) for v in cases] == [v["m"] for v in cases]


def test_vectors_full_randomiser_by_crt() -> None:
    # The owner's secure path draws a_p = r^q mod p and raises it to p mod p^2;
    # with r from the vector this must reproduce phe's ciphertext exactly.
    p, q = int(VECTORS["p"]), int(VECTORS["q"])
    n = p * q
    crt = _Crt(p, q)
    for v in VECTORS["full_randomiser"]:
        r = int(v["r"])
        rp = pow(pow(r, q, p), p, p * p)
        rq = pow(pow(r, p, q), q, q * q)
        sealed = _seal(gmpy2.mpz(n), gmpy2.mpz(n * n), v["m"] % n, crt.combine(rp, rq))
        assert sealed == int(v["c"])


@pytest.mark.parametrize("owner", [False, True])
def test_vectors_short_exponent_tables(owner: bool) -> None:
    p, q = int(VECTORS["p"]), int(VECTORS["q"])
    n = p * q
    short = VECTORS["short_exponent"]
    enc = paillier.Encryptor(
        n, p if owner else None, q if owner else None, int(short["r0"]), short["exponent_bits"]
    )
    for v in short["cases"]:
        digits = int(v["x"]).to_bytes(short["exponent_bits"] // 8, "little")
        powers = [t.power(digits) for t in enc._tables]
        r = enc._crt.combine(*powers) if enc._crt is not None else powers[0]
        assert _seal(enc._n, enc._nsq, v["m"] % n, r) == int(v["c"])


# -- misuse ---------------------------------------------------------------------

OTHER_PUB, OTHER_PRIV = paillier.generate_keypair(1024)


@pytest.mark.parametrize(
    "call",
    [
        lambda: paillier.encrypt(OTHER_PUB, [1], encryptor=OWNER_ENC),
        lambda: paillier.encrypt_zeros(OTHER_PUB, 1, encryptor=PUBLIC_ENC),
        lambda: paillier.rerandomise(OTHER_PUB, [1], encryptor=PUBLIC_ENC),
        lambda: PUBLIC_ENC.check_key(OTHER_PUB),
    ],
)
def test_encryptor_for_another_key_is_refused(call: Callable[[], object]) -> None:
    with pytest.raises(InvalidRequest, match="another key"):
        call()


@pytest.mark.parametrize(
    "value",
    [PUB.max_plaintext + 1, -PUB.max_plaintext - 1, PUB.n, 1.0, True, "1", None],
)
@pytest.mark.parametrize("who", sorted(ENCRYPTORS))
def test_out_of_range_plaintexts_are_refused(who: str, value: object) -> None:
    with pytest.raises(InvalidRequest):
        ENCRYPTORS[who].encrypt([0, value])  # type: ignore[list-item]
    with pytest.raises(InvalidRequest):
        paillier.encrypt(PUB, [value])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"exponent_bits": 256},  # below the justified minimum
        {"exponent_bits": 321},  # not whole bytes
        {"exponent_bits": 2048},  # longer than the 1024-bit modulus
        {"exponent_bits": True},
    ],
)
def test_bad_exponent_lengths_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(InvalidRequest):
        paillier.Encryptor.for_public_key(PUB, **kwargs)


def test_bad_private_parts_are_refused() -> None:
    p, q = int(PRIV.p), int(PRIV.q)
    with pytest.raises(InvalidRequest):
        paillier.Encryptor(PUB.n, p, None, None, 320)
    with pytest.raises(InvalidRequest):
        paillier.Encryptor(PUB.n, int(OTHER_PRIV.p), q, None, 320)
    with pytest.raises(InvalidRequest):  # a table base with Jacobi symbol +1
        paillier.Encryptor(PUB.n, None, None, 4, 320)


@pytest.mark.parametrize(
    "call",
    [
        lambda: PUBLIC_ENC.encrypt_zeros(-1),
        lambda: PUBLIC_ENC.encrypt_zeros(2, workers=0),
        lambda: PUBLIC_ENC.encrypt([1], workers=65),
        lambda: PUBLIC_ENC.randomisers(True),
    ],
)
def test_bad_counts_and_workers_are_refused(call: Callable[[], object]) -> None:
    with pytest.raises(InvalidRequest):
        call()


@pytest.mark.parametrize("bad", [0, -1, PUB.nsquare, PUB.nsquare + 5])
def test_rerandomising_out_of_range_ciphertexts_is_refused(bad: int) -> None:
    with pytest.raises(InvalidCiphertext):
        PUBLIC_ENC.rerandomise([bad])
    with pytest.raises(InvalidCiphertext):
        paillier.to_bytes_batch(PUB, [bad])


# -- batched streaming helpers --------------------------------------------------


def test_bytes_batch_round_trip() -> None:
    cts = paillier.encrypt(PUB, [0, 1, 2])
    data = paillier.to_bytes_batch(PUB, cts)
    assert data == [paillier.to_bytes(PUB, c) for c in cts]
    assert paillier.from_bytes_batch(PUB, data) == cts
    assert paillier.from_bytes_batch(PUB, []) == []


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        (0).to_bytes(PUB.ciphertext_bytes, "big"),
        PUB.nsquare.to_bytes(PUB.ciphertext_bytes + 1, "big")[-PUB.ciphertext_bytes :],
        PUB.n.to_bytes(PUB.ciphertext_bytes, "big"),  # shares a factor with n
        (int(PRIV.p) * 12345).to_bytes(PUB.ciphertext_bytes, "big"),
    ],
)
def test_from_bytes_batch_refuses_any_bad_item(bad: bytes) -> None:
    good = paillier.to_bytes_batch(PUB, paillier.encrypt(PUB, [1, 2]))
    with pytest.raises(InvalidCiphertext):
        paillier.from_bytes_batch(PUB, [good[0], bad, good[1]])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(), max_size=30), st.integers(1, 8))
def test_chunks_cover_the_sequence_in_order(items: list[int], size: int) -> None:
    parts = list(paillier.chunks(items, size))
    assert [x for part in parts for x in part] == items
    assert all(len(part) == size for part in parts[:-1])
    assert all(1 <= len(part) <= size for part in parts)


@pytest.mark.parametrize("size", [0, -1, True])
def test_chunks_refuse_bad_sizes(size: int) -> None:
    with pytest.raises(InvalidRequest):
        list(paillier.chunks([1, 2], size))

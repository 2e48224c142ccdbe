"""Proven ciphertexts (headcount.crypto.paillier.proofs): honest proofs verify and
decrypt to their values; every way of proving a value outside the set fails."""

from __future__ import annotations

import hashlib
import secrets

import gmpy2
import pytest

from headcount.crypto import paillier
from headcount.crypto.paillier import proofs
from headcount.errors import InvalidProof, InvalidRequest

BITS = 1024


@pytest.fixture(scope="module")
def keypair() -> tuple[paillier.PublicKey, object]:
    return paillier.generate_keypair(BITS)


@pytest.fixture(scope="module")
def layout(keypair: tuple[paillier.PublicKey, object]) -> paillier.ProofLayout:
    return paillier.ProofLayout(keypair[0], (0, 1), b"query-1")


def test_honest_proofs_verify_and_decrypt_to_their_values(
    keypair: tuple[paillier.PublicKey, object], layout: paillier.ProofLayout
) -> None:
    values = [secrets.randbelow(2) for _ in range(60)]
    proven = paillier.Prover(layout).encrypt(values)
    assert all(len(p) == layout.width for p in proven)
    cts = paillier.verify_batch(layout, proven)
    assert paillier.decrypt_batch(keypair[1], cts) == values  # type: ignore[arg-type]
    assert [
        paillier.from_bytes(layout.key, paillier.ciphertext_of(layout, p)) for p in proven
    ] == cts


def test_packed_values_with_many_branches(keypair: tuple[paillier.PublicKey, object]) -> None:
    values = (0, 1, 1 << 40, 1 << 80, 1 << 120)
    layout = paillier.ProofLayout(keypair[0], values, b"q")
    plain = [values[i % len(values)] for i in range(12)]
    cts = paillier.verify_batch(layout, paillier.Prover(layout).encrypt(plain))
    assert paillier.decrypt_batch(keypair[1], cts) == plain  # type: ignore[arg-type]


def test_a_value_outside_the_set_cannot_be_encrypted(layout: paillier.ProofLayout) -> None:
    with pytest.raises(InvalidRequest, match="not one of the values"):
        paillier.Prover(layout).encrypt([0, 2])


def test_a_proof_for_another_value_set_fails(
    keypair: tuple[paillier.PublicKey, object], layout: paillier.ProofLayout
) -> None:
    other = paillier.ProofLayout(keypair[0], (0, 5), layout.context)
    honest = paillier.Prover(layout).encrypt([1, 0, 1])
    forged = paillier.Prover(other).encrypt([5])
    with pytest.raises(InvalidProof):
        paillier.verify_batch(layout, [*honest, *forged])


def test_a_proof_for_another_query_fails(
    keypair: tuple[paillier.PublicKey, object], layout: paillier.ProofLayout
) -> None:
    elsewhere = paillier.ProofLayout(keypair[0], (0, 1), b"query-2")
    with pytest.raises(InvalidProof):
        paillier.verify_batch(layout, paillier.Prover(elsewhere).encrypt([1]))


def _simulated(layout: paillier.ProofLayout, m: int) -> bytes:
    """A cheater's best try for E(m), m outside the set: every branch simulated,
    with challenge shares of its choosing (the only way to pass each check)."""
    base = proofs._Base.of(layout.key.n)
    n, nsq = base.n, base.nsq
    width = layout.key.ciphertext_bytes
    x = secrets.randbits(proofs.SHORT_EXPONENT_BITS)
    c = (1 + m * n) * base.power(x) % nsq
    parts = [int(c).to_bytes(width, "big")]
    for v in layout.values:
        e = secrets.randbits(proofs.CHALLENGE_BITS)
        g = secrets.randbits(proofs.BETA_BITS)
        u = c * gmpy2.invert(1 + v * n, nsq) % nsq
        a = base.power(g) * gmpy2.invert(gmpy2.powmod(u, e, nsq), nsq) % nsq
        parts += [
            int(a).to_bytes(width, "big"),
            e.to_bytes(16, "big"),
            g.to_bytes(proofs._RESPONSE_BYTES, "big"),
        ]
    return b"".join(parts)


def test_an_all_simulated_proof_fails_on_its_challenge(layout: paillier.ProofLayout) -> None:
    # Each branch's check holds by construction; only the challenge sum binds.
    forged = _simulated(layout, 5)
    with pytest.raises(InvalidProof, match="does not verify"):
        paillier.verify_batch(layout, [forged])


def test_a_proof_whose_challenge_matches_but_checks_fail_is_caught_by_the_batch(
    layout: paillier.ProofLayout,
) -> None:
    """Fix the last share so the challenge sums right: then a branch's check
    fails, and the batch must notice it among honest proofs."""
    forged = bytearray(_simulated(layout, 5))
    width = layout.key.ciphertext_bytes
    step = width + 16 + proofs._RESPONSE_BYTES
    c = bytes(forged[:width])
    commits = [bytes(forged[width + j * step : width + j * step + width]) for j in range(2)]
    shares = [
        int.from_bytes(forged[width + j * step + width : width + j * step + width + 16], "big")
        for j in range(2)
    ]
    digest = hashlib.sha256(layout.header() + c + b"".join(commits)).digest()
    e = int.from_bytes(digest[:16], "big")
    at = width + step + width
    forged[at : at + 16] = ((e - shares[0]) % (1 << 128)).to_bytes(16, "big")
    honest = paillier.Prover(layout).encrypt([0, 1] * 20)
    with pytest.raises(InvalidProof, match="does not verify"):
        paillier.verify_batch(layout, [*honest, bytes(forged)])


@pytest.mark.parametrize("where", ["ciphertext", "commitment", "share", "response"])
def test_any_flipped_bit_fails(layout: paillier.ProofLayout, where: str) -> None:
    width = layout.key.ciphertext_bytes
    offset = {"ciphertext": 3, "commitment": width + 5, "share": 2 * width + 1}.get(
        where, 2 * width + 16 + 7
    )
    item = bytearray(paillier.Prover(layout).encrypt([1])[0])
    item[offset] ^= 0x10
    with pytest.raises(InvalidProof):
        paillier.verify_batch(layout, [bytes(item)])


def test_wrong_lengths_and_ranges_are_refused(layout: paillier.ProofLayout) -> None:
    good = paillier.Prover(layout).encrypt([1])[0]
    with pytest.raises(InvalidProof, match="bytes"):
        paillier.verify_batch(layout, [good[:-1]])
    width = layout.key.ciphertext_bytes
    zero = bytes(width) + good[width:]
    with pytest.raises(InvalidProof, match="out of range"):
        paillier.verify_batch(layout, [zero])


def test_layouts_refuse_bad_value_sets(keypair: tuple[paillier.PublicKey, object]) -> None:
    with pytest.raises(InvalidRequest):
        paillier.ProofLayout(keypair[0], (), b"")
    with pytest.raises(InvalidRequest):
        paillier.ProofLayout(keypair[0], (1, 1), b"")
    with pytest.raises(InvalidRequest):
        paillier.ProofLayout(keypair[0], (0, keypair[0].n), b"")


def test_the_public_base_is_derived_from_the_key(
    keypair: tuple[paillier.PublicKey, object],
) -> None:
    n = keypair[0].n
    r0 = proofs.proof_base(n)
    assert r0 == proofs.proof_base(n) and 1 < r0 < n and gmpy2.jacobi(r0, n) == -1


def test_multi_power_matches_one_at_a_time() -> None:
    modulus = gmpy2.mpz(secrets.randbits(512) | 1)
    for count in (1, 3, 40, 300):
        bases = [gmpy2.mpz(secrets.randbelow(int(modulus))) for _ in range(count)]
        exps = [secrets.randbits(secrets.choice([1, 64, 200])) for _ in range(count)]
        want = gmpy2.mpz(1)
        for b, e in zip(bases, exps, strict=True):
            want = want * gmpy2.powmod(b, e, modulus) % modulus
        assert proofs.multi_power(bases, exps, modulus) == want


@pytest.mark.parametrize("parallel", [False, True])
def test_a_streamed_batch_catches_one_bad_proof_among_many(
    keypair: tuple[paillier.PublicKey, object],
    layout: paillier.ProofLayout,
    monkeypatch: pytest.MonkeyPatch,
    parallel: bool,
) -> None:
    """Sub-batches (in worker processes for a large hop) each check their own
    share; the verdict covers all of them, and the ciphertexts come back at once."""
    monkeypatch.setattr(proofs, "SUB_BATCH", 16)
    monkeypatch.setattr(proofs, "PARALLEL_FROM", 10 if parallel else 10**9)
    values = [i % 2 for i in range(50)]
    honest = paillier.Prover(layout).encrypt(values)
    verifier = paillier.BatchVerifier(layout, len(honest))
    cts = [c for i in range(0, 50, 7) for c in verifier.add(honest[i : i + 7])]
    verifier.finish()
    assert paillier.decrypt_batch(keypair[1], cts) == values  # type: ignore[arg-type]

    scaled = list(honest)
    width = layout.key.ciphertext_bytes
    c = paillier.from_bytes(layout.key, scaled[33][:width])
    scaled[33] = paillier.to_bytes(layout.key, pow(c, 5, layout.key.nsquare)) + scaled[33][width:]
    verifier = paillier.BatchVerifier(layout, len(scaled))
    for i in range(0, 50, 7):
        verifier.add(scaled[i : i + 7])
    with pytest.raises(InvalidProof, match="does not verify"):
        verifier.finish()


def test_the_base_cache_keeps_only_the_most_recent_keys() -> None:
    """A node that sees a new key every ceremony must not keep every table."""
    keys = [paillier.generate_keypair(512)[0] for _ in range(proofs._CACHED_BASES + 3)]
    for key in keys:
        proofs._Base.of(key.n)
    cached = set(proofs._Base._cache)
    assert len(cached) <= proofs._CACHED_BASES
    assert keys[-1].n in cached and keys[0].n not in cached

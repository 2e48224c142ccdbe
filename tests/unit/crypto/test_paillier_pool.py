"""Randomiser pools: pooled ciphertexts decrypt, and no randomiser is used twice."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterator

import phe
import pytest

from headcount.crypto import paillier
from headcount.errors import InvalidRequest

PUB, PRIV = paillier.generate_keypair(1024)


def _phe_decrypt(c: int) -> int:
    # phe's own private key, not our decrypt: the pooled path must stay phe-compatible.
    value = PRIV.decrypt(phe.EncryptedNumber(PRIV.public_key, c))
    assert isinstance(value, int)
    return value


@pytest.fixture(params=[("public", True), ("owner", True), ("owner", False)])
def pooled(request: pytest.FixtureRequest) -> Iterator[paillier.Encryptor]:
    # (key holder, refill in a child process rather than in the refill thread)
    who, in_process = request.param
    enc = (
        paillier.Encryptor.for_public_key(PUB)
        if who == "public"
        else paillier.Encryptor.for_private_key(PRIV)
    )
    pool = enc.start_pool(64, refill_in_process=in_process)
    assert pool.wait_full(timeout_s=60)
    yield enc
    enc.stop_pool()


def test_pooled_encryptions_decrypt_with_phe(pooled: paillier.Encryptor) -> None:
    values = [0, 1, 42, -7, PUB.max_plaintext]
    assert [_phe_decrypt(c) for c in pooled.encrypt(values)] == values
    assert [_phe_decrypt(c) for c in paillier.encrypt(PUB, values, encryptor=pooled)] == values


def test_pooled_zeros_decrypt_to_zero_and_are_distinct(pooled: paillier.Encryptor) -> None:
    zeros = pooled.encrypt_zeros(10)
    assert len(set(zeros)) == 10
    assert all(_phe_decrypt(z) == 0 for z in zeros)


def test_pooled_rerandomise_keeps_plaintext_and_changes_bits(pooled: paillier.Encryptor) -> None:
    cts = paillier.encrypt(PUB, [1, 0, 5])
    fresh = pooled.rerandomise(cts)
    assert [_phe_decrypt(c) for c in fresh] == [1, 0, 5]
    assert all(a != b for a, b in zip(cts, fresh, strict=True))
    again = paillier.rerandomise(PUB, fresh, encryptor=pooled)
    assert not set(again) & set(fresh)


def test_taking_draws_down_the_pool(pooled: paillier.Encryptor) -> None:
    pool = pooled.pool
    assert pool is not None
    taken = pool.take(10)
    assert len({int(r) for r in taken}) == 10
    # The refill thread pauses while pools are being drawn on.
    assert pool.ready == 54


def test_refill_runs_where_asked(
    pooled: paillier.Encryptor, request: pytest.FixtureRequest
) -> None:
    pool = pooled.pool
    assert pool is not None
    assert pool.computed >= 64
    assert pool.refill_cpu_s > 0
    # A pool asked to refill in the child process must not have fallen back.
    _, in_process = request.node.callspec.params["pooled"]
    assert pool.refills_in_process is in_process


def test_no_randomiser_is_handed_out_twice_across_threads() -> None:
    enc = paillier.Encryptor.for_public_key(PUB)
    pool = enc.start_pool(400)
    assert pool.wait_full(timeout_s=60)
    taken: list[list[int]] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        mine: list[int] = []
        for _ in range(10):
            mine.extend(int(r) for r in pool.take(7))
        with lock:
            taken.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [r for part in taken for r in part]
    # 560 wanted from 400 ready: some were computed on the spot, none repeated.
    assert len(flat) == 560
    assert len(set(flat)) == 560
    enc.stop_pool()


def test_shortfall_is_computed_when_the_pool_is_empty() -> None:
    enc = paillier.Encryptor.for_private_key(PRIV)
    pool = enc.start_pool(0)
    assert pool.ready == 0
    zeros = enc.encrypt_zeros(5)
    assert len(set(zeros)) == 5
    assert all(_phe_decrypt(z) == 0 for z in zeros)
    assert [_phe_decrypt(c) for c in enc.encrypt([3, -3])] == [3, -3]
    enc.stop_pool()


def test_pool_shortfall_may_use_worker_processes() -> None:
    enc = paillier.Encryptor.for_public_key(PUB)
    enc.start_pool(0)
    zeros = enc.encrypt_zeros(4100, workers=2)
    assert len(set(zeros)) == 4100
    assert all(_phe_decrypt(z) == 0 for z in zeros[:: 4100 // 8])
    enc.stop_pool()


def test_stop_stops_the_thread_and_drops_the_randomisers() -> None:
    enc = paillier.Encryptor.for_public_key(PUB)
    pool = enc.start_pool(16)
    assert pool.wait_full(timeout_s=60)
    assert pool.running
    enc.stop_pool()
    assert not pool.running
    assert pool.ready == 0
    assert not pool.thread_alive
    assert enc.pool is None
    # Without a pool the encryptor falls back to today's path.
    assert _phe_decrypt(enc.encrypt([9])[0]) == 9


def test_start_pool_again_grows_the_same_pool() -> None:
    enc = paillier.Encryptor.for_public_key(PUB)
    first = enc.start_pool(4)
    second = enc.start_pool(32)
    assert first is second
    assert first.capacity == 32
    assert first.wait_full(timeout_s=60)
    enc.stop_pool()


@pytest.mark.parametrize("capacity", [-1, True, 1.5, paillier.pool_limit(PUB) + 1])
def test_bad_capacities_are_refused(capacity: object) -> None:
    enc = paillier.Encryptor.for_public_key(PUB)
    with pytest.raises(InvalidRequest):
        enc.start_pool(capacity)  # type: ignore[arg-type]
    assert enc.pool is None


def test_secure_randomiser_bypasses_the_pool(pooled: paillier.Encryptor) -> None:
    pool = pooled.pool
    assert pool is not None
    cts = pooled.encrypt([1, 2], secure_randomiser=True)
    assert [_phe_decrypt(c) for c in cts] == [1, 2]
    assert pool.ready == 64


def test_pool_is_never_pickled_and_pickled_encryptor_has_none(
    pooled: paillier.Encryptor,
) -> None:
    assert pooled.pool is not None
    with pytest.raises(TypeError):
        pickle.dumps(pooled.pool)
    clone = pickle.loads(pickle.dumps(pooled))
    assert clone.pool is None
    assert "ready" in repr(pooled.pool)

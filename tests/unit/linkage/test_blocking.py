"""Tests for headcount.linkage.blocking: keyed LSH blocks and blocked scoring.

Sampled positions are recomputed here from the documented construction with
the standard library (HMAC-SHA256 counter stream), not read back from the
module; blocked results are checked against full scoring restricted, by brute
force, to the pairs that share a block; and recall is measured on a synthetic
population encoded with the default CLK schema.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headcount.linkage.blocking import (
    DEFAULT_BANDS,
    DEFAULT_BITS_PER_BAND,
    BlockingStats,
    blocking_stats,
    candidate_pairs_blocked,
    candidate_pairs_blocked_many,
    lsh_blocks,
)
from headcount.linkage.clk import encode_clks
from headcount.linkage.dice import Candidates, score_pairs
from headcount.linkage.normalise import Identity, normalise_identity
from headcount.synth import generate_population

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
LINKAGE_SECRET = bytes(range(100, 132))


@pytest.fixture(autouse=True, scope="module")
def _compiled() -> Iterator[None]:
    # Compile (or load from numba's cache) before any timed hypothesis example.
    ones = np.ones((4, 8), dtype=np.uint8)
    candidate_pairs_blocked(ones, ones, 0.5, seed_key=KEY, bands=2, bits_per_band=3)
    yield


def _positions(key: bytes, filter_bits: int, bands: int, bits_per_band: int) -> list[list[int]]:
    """The documented position stream: HMAC(key, domain || band || counter), 32-bit words."""
    out = []
    for band in range(bands):
        chosen: list[int] = []
        counter = 0
        while len(chosen) < bits_per_band:
            message = b"headcount/blocking/lsh/v1" + struct.pack(">II", band, counter)
            digest = hmac.new(key, message, hashlib.sha256).digest()
            for word in struct.unpack(">8I", digest):
                if word % filter_bits not in chosen and len(chosen) < bits_per_band:
                    chosen.append(word % filter_bits)
            counter += 1
        out.append(chosen)
    return out


def _as_dict(result: Candidates) -> dict[tuple[int, int], float]:
    return {
        (i, j): s
        for i, j, s in zip(
            result.left.tolist(), result.right.tolist(), result.score.tolist(), strict=True
        )
    }


# --- lsh_blocks --------------------------------------------------------------


def test_block_keys_are_the_filter_bits_at_keyed_positions() -> None:
    rng = np.random.default_rng(1)
    clks = np.packbits(rng.random((20, 1024)) < 0.4, axis=1)
    keys = lsh_blocks(clks, bands=5, bits_per_band=12, seed_key=KEY)
    assert keys.shape == (20, 5) and keys.dtype == np.uint64
    bits = np.unpackbits(clks, axis=1)  # bit j of a row is column j, MSB first
    for band, positions in enumerate(_positions(KEY, 1024, 5, 12)):
        assert len(set(positions)) == 12
        expected = sum(
            bits[:, p].astype(np.uint64) << np.uint64(k) for k, p in enumerate(positions)
        )
        np.testing.assert_array_equal(keys[:, band], expected)


def test_positions_depend_on_the_key() -> None:
    rng = np.random.default_rng(2)
    clks = np.packbits(rng.random((50, 1024)) < 0.4, axis=1)
    ours = lsh_blocks(clks, bands=4, bits_per_band=16, seed_key=KEY)
    theirs = lsh_blocks(clks, bands=4, bits_per_band=16, seed_key=OTHER_KEY)
    assert not np.array_equal(ours, theirs)
    np.testing.assert_array_equal(ours, lsh_blocks(clks, bands=4, bits_per_band=16, seed_key=KEY))
    # Adding bands leaves the earlier ones as they were.
    more = lsh_blocks(clks, bands=6, bits_per_band=16, seed_key=KEY)
    np.testing.assert_array_equal(more[:, :4], ours)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed_key": b"short"}, "seed_key"),
        ({"seed_key": "x" * 32}, "seed_key"),
        ({"bands": 0}, "bands"),
        ({"bands": 1025}, "bands"),
        ({"bands": True}, "bands"),
        ({"bits_per_band": 0}, "bits_per_band"),
        ({"bits_per_band": 65}, "bits_per_band"),
        ({"bits_per_band": 2.0}, "bits_per_band"),
    ],
)
def test_bad_parameters_are_rejected(kwargs: dict[str, object], message: str) -> None:
    clks = np.ones((3, 128), dtype=np.uint8)
    params: dict[str, object] = {"bands": 4, "bits_per_band": 8, "seed_key": KEY, **kwargs}
    with pytest.raises(ValueError, match=message):
        lsh_blocks(clks, **params)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        candidate_pairs_blocked(clks, clks, 0.8, **params)  # type: ignore[arg-type]


def test_bits_per_band_cannot_exceed_the_filter() -> None:
    with pytest.raises(ValueError, match="bits_per_band"):
        lsh_blocks(np.ones((2, 1), dtype=np.uint8), bands=1, bits_per_band=9, seed_key=KEY)


def test_malformed_clks_are_rejected() -> None:
    good = np.ones((2, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        lsh_blocks(good.astype(np.int64), bands=1, bits_per_band=4, seed_key=KEY)
    with pytest.raises(ValueError, match="widths differ"):
        candidate_pairs_blocked(good, np.ones((2, 16), dtype=np.uint8), 0.8, seed_key=KEY)
    with pytest.raises(ValueError, match="threshold"):
        candidate_pairs_blocked(good, good, 0.0, seed_key=KEY)


# --- candidate_pairs_blocked -------------------------------------------------


@st.composite
def _blocked_cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, float, int, int]:
    width = draw(st.sampled_from([2, 8, 16, 40]))
    n_left = draw(st.integers(0, 25))
    n_right = draw(st.integers(0, 25))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    bits = width * 8
    left = np.packbits(rng.random((n_left, bits)) < 0.3, axis=1)
    right = np.packbits(rng.random((n_right, bits)) < 0.3, axis=1)
    for j in range(n_right):
        if n_left and rng.random() < 0.6:
            flips = np.packbits(rng.random(bits) < rng.choice([0.0, 0.02, 0.08]))
            right[j] = left[rng.integers(n_left)] ^ flips
    threshold = draw(st.floats(0.3, 1.0))
    bands = draw(st.integers(1, 8))
    bits_per_band = draw(st.integers(1, min(12, bits)))
    return left, right, threshold, bands, bits_per_band


@settings(max_examples=120, deadline=None)
@given(_blocked_cases(), st.sampled_from([1, 2]), st.sampled_from([1, 64 * 2**20]))
def test_blocked_scoring_is_full_scoring_restricted_to_shared_blocks(
    case: tuple[np.ndarray, np.ndarray, float, int, int], threads: int, max_block_bytes: int
) -> None:
    left, right, threshold, bands, bits_per_band = case
    result = candidate_pairs_blocked(
        left,
        right,
        threshold,
        seed_key=KEY,
        bands=bands,
        bits_per_band=bits_per_band,
        threads=threads,
        max_block_bytes=max_block_bytes,
    )
    full = _as_dict(score_pairs(left, right, threshold))
    if len(left) and len(right):
        left_keys = lsh_blocks(left, bands=bands, bits_per_band=bits_per_band, seed_key=KEY)
        right_keys = lsh_blocks(right, bands=bands, bits_per_band=bits_per_band, seed_key=KEY)
        share = (left_keys[:, None, :] == right_keys[None, :, :]).any(axis=2)
        expected = {pair: s for pair, s in full.items() if share[pair]}
    else:
        expected = {}
    assert _as_dict(result) == expected  # same pairs, same scores
    assert len(result) == len(expected)  # each pair once, however many bands it shares
    keys = list(
        zip((-result.score).tolist(), result.left.tolist(), result.right.tolist(), strict=True)
    )
    assert keys == sorted(keys)


@settings(max_examples=60, deadline=None)
@given(_blocked_cases())
def test_stats_count_the_pairs_each_band_compares(
    case: tuple[np.ndarray, np.ndarray, float, int, int],
) -> None:
    left, right, _, bands, bits_per_band = case
    stats = blocking_stats(left, right, seed_key=KEY, bands=bands, bits_per_band=bits_per_band)
    total = len(left) * len(right)
    assert stats.pairs_total == total
    if total:
        left_keys = lsh_blocks(left, bands=bands, bits_per_band=bits_per_band, seed_key=KEY)
        right_keys = lsh_blocks(right, bands=bands, bits_per_band=bits_per_band, seed_key=KEY)
        per_band = (left_keys[:, None, :] == right_keys[None, :, :]).sum()
        assert stats.pairs_compared == per_band
        assert stats.reduction_ratio == pytest.approx(max(0.0, 1 - per_band / total))
    else:
        assert stats == BlockingStats(0, 0, 0.0)


def test_blocking_stats_checks_its_fields() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        BlockingStats(-1, 0, 0.0)
    with pytest.raises(ValueError, match="reduction_ratio"):
        BlockingStats(10, 1, 1.5)
    with pytest.raises(ValueError, match="reduction_ratio"):
        BlockingStats(10, 1, float("nan"))


@settings(max_examples=60, deadline=None)
@given(_blocked_cases(), st.integers(0, 30), st.sampled_from([1, 2]))
def test_many_pairs_at_once_equal_each_pair_alone(
    case: tuple[np.ndarray, np.ndarray, float, int, int], n_third: int, threads: int
) -> None:
    left, right, threshold, bands, bits_per_band = case
    rng = np.random.default_rng(n_third)
    third = np.packbits(rng.random((n_third, left.shape[1] * 8)) < 0.3, axis=1)
    if len(left):  # some near-copies, so the third party links too
        third[: n_third // 2] = left[rng.integers(len(left), size=n_third // 2)]
    parties = [left, right, third]
    pairs = [(0, 1, threshold), (0, 2, 0.5), (2, 1, threshold), (1, 0, 0.9)]
    together = candidate_pairs_blocked_many(
        parties,
        pairs,
        seed_key=KEY,
        bands=bands,
        bits_per_band=bits_per_band,
        threads=threads,
        max_block_bytes=64,
    )
    assert len(together) == len(pairs)
    for (a, b, cut), got in zip(pairs, together, strict=True):
        alone = candidate_pairs_blocked(
            parties[a], parties[b], cut, seed_key=KEY, bands=bands, bits_per_band=bits_per_band
        )
        np.testing.assert_array_equal(got.left, alone.left)
        np.testing.assert_array_equal(got.right, alone.right)
        np.testing.assert_array_equal(got.score, alone.score)


def test_many_pairs_check_their_parties() -> None:
    narrow = np.ones((3, 8), dtype=np.uint8)
    wide = np.ones((3, 16), dtype=np.uint8)
    assert candidate_pairs_blocked_many([narrow], [], seed_key=KEY) == []
    with pytest.raises(ValueError, match="out of range"):
        candidate_pairs_blocked_many([narrow, narrow], [(0, 2, 0.8)], seed_key=KEY)
    with pytest.raises(ValueError, match="widths differ"):
        candidate_pairs_blocked_many([narrow, wide], [(0, 1, 0.8)], seed_key=KEY)
    with pytest.raises(ValueError, match="widths differ"):
        candidate_pairs_blocked_many(
            [narrow, narrow, wide, wide], [(0, 1, 0.8), (2, 3, 0.8)], seed_key=KEY
        )
    with pytest.raises(ValueError, match="threshold"):
        candidate_pairs_blocked_many([narrow, narrow], [(0, 1, 1.5)], seed_key=KEY)


def test_concurrent_callers_get_their_own_results() -> None:
    rng = np.random.default_rng(9)
    left = np.packbits(rng.random((200, 1024)) < 0.3, axis=1)
    right = left ^ np.packbits(rng.random((200, 1024)) < 0.03, axis=1)
    expected = candidate_pairs_blocked(left, right, 0.8, seed_key=KEY)
    assert len(expected) > 150
    outcomes: list[Candidates] = []

    def run() -> None:
        outcomes.append(candidate_pairs_blocked(left, right, 0.8, seed_key=KEY))

    workers = [threading.Thread(target=run) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(outcomes) == 4
    for got in outcomes:
        np.testing.assert_array_equal(got.left, expected.left)
        np.testing.assert_array_equal(got.right, expected.right)
        np.testing.assert_array_equal(got.score, expected.score)


# --- recall on realistic data ------------------------------------------------


def _department_identities(path: Path) -> list[Identity]:
    """Identity columns of a department file, normalised as a party node does."""
    with path.open(newline="", encoding="utf-8") as fh:
        return [
            normalise_identity(
                row["first_name"],
                row["last_name"],
                row["date_of_birth"],
                row["sex"],
                row["postcode"],
            )
            for row in csv.DictReader(fh)
        ]


@pytest.fixture(scope="module")
def population_clks(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    """Education and health CLKs of a 20,000-person synthetic population."""
    out = tmp_path_factory.mktemp("synth")
    generate_population(20_000, 7, out)
    education = encode_clks(_department_identities(out / "education.csv"), LINKAGE_SECRET)
    health = encode_clks(_department_identities(out / "health.csv"), LINKAGE_SECRET)
    return education, health


def test_blocking_keeps_99_percent_of_matches_on_realistic_data(
    population_clks: tuple[np.ndarray, np.ndarray],
) -> None:
    education, health = population_clks
    assert education.shape[1] == 128  # 1024-bit CLKs
    full = score_pairs(education, health, 0.8)
    blocked = candidate_pairs_blocked(education, health, 0.8, seed_key=KEY)
    stats = blocking_stats(education, health, seed_key=KEY)
    found = set(zip(full.left.tolist(), full.right.tolist(), strict=True))
    kept = set(zip(blocked.left.tolist(), blocked.right.tolist(), strict=True))
    assert kept <= found
    recall = len(kept) / len(found)
    report = (
        f"{DEFAULT_BANDS} bands x {DEFAULT_BITS_PER_BAND} bits: kept {len(kept)} of "
        f"{len(found)} pairs >= 0.8 (recall {recall:.4f}), compared {stats.pairs_compared} "
        f"of {stats.pairs_total} pairs (reduction ratio {stats.reduction_ratio:.4f})"
    )
    assert len(found) >= 2000, report  # enough pairs for the rate to mean something
    assert recall >= 0.99, report
    assert stats.reduction_ratio >= 0.95, report

"""Deduplication within one file: coherent clusters, no chaining."""

from __future__ import annotations

import numpy as np
import pytest

from headcount.linkage.dedup import AUTO_MIN_GAIN, dedup_records
from headcount.linkage.matchkeys import SUPPORT_KEYS

_SUPPORT = {spec.name: spec for spec in SUPPORT_KEYS}


def _clks(*spans: tuple[int, int], bits: int = 1024) -> np.ndarray:
    """One filter per span, with bits [start, stop) set."""
    out = np.zeros((len(spans), bits), dtype=np.uint8)
    for row, (start, stop) in enumerate(spans):
        out[row, start:stop] = 1
    return np.packbits(out, axis=1)


def test_records_of_one_person_join_one_cluster() -> None:
    # Two people, each with two near-identical records; a fifth record alone.
    clks = _clks((0, 100), (2, 102), (500, 600), (503, 603), (800, 900))
    result = dedup_records(clks, 0.8)
    labels = result.labels.tolist()
    assert labels[0] == labels[1] and labels[2] == labels[3]
    assert len(set(labels)) == 3
    pairs = zip(result.pairs.left.tolist(), result.pairs.right.tolist(), strict=True)
    assert sorted(pairs) == [(0, 1), (2, 3)]
    assert result.clusters == 3


def test_a_chain_of_resemblances_is_not_one_person() -> None:
    """A resembles B (0.8), B resembles C (0.7), A and C share little (0.5):
    single linkage would merge all three; the coherence check refuses C."""
    clks = _clks((0, 100), (20, 120), (50, 150))
    result = dedup_records(clks, 0.7)
    labels = result.labels.tolist()
    assert labels[0] == labels[1] != labels[2]
    assert result.refused == 1


def test_exact_match_keys_join_records_the_filters_keep_apart() -> None:
    clks = _clks((0, 100), (300, 400), (600, 700))
    key = bytes(range(16))
    other = bytes(range(1, 17))
    keys = [[key, key, other]]  # one level: records 0 and 1 share a key
    result = dedup_records(clks, 0.8, keys=keys)
    assert result.key_pairs == 1
    labels = result.labels.tolist()
    assert labels[0] == labels[1] != labels[2]


def test_a_key_shared_by_too_many_records_is_ignored() -> None:
    clks = _clks(*((i * 100, i * 100 + 60) for i in range(10)))
    key = bytes(range(16))
    result = dedup_records(clks, 0.8, keys=[[key] * 10])
    assert result.key_pairs == 0 and result.clusters == 10


def test_clusters_are_capped() -> None:
    clks = _clks(*((0, 100),) * 6)
    result = dedup_records(clks, 0.8, max_cluster=4)
    sizes = np.bincount(result.labels)
    assert sizes.max() == 4 and result.refused > 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 0.0}, "threshold"),
        ({"threshold": 0.8, "floor": 0.9}, "floor"),
        ({"threshold": 0.8, "max_cluster": 1}, "max_cluster"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    clks = _clks((0, 100), (2, 102))
    threshold = kwargs.pop("threshold")
    with pytest.raises(ValueError, match=message):
        dedup_records(clks, threshold, **kwargs)  # type: ignore[arg-type]


def test_a_large_file_is_scored_within_lsh_blocks() -> None:
    """Forced to block (as a file of 100,000 records would be), dedup finds the
    same near-identical duplicates as scoring every pair, and nothing else."""
    rng = np.random.default_rng(4)
    people = rng.random((300, 1024)) < 0.3
    copies = people[:100] ^ (rng.random((100, 1024)) < 0.01)  # Dice about 0.97
    clks = np.packbits(np.vstack([people, copies]), axis=1)
    full = dedup_records(clks, 0.8)
    blocked = dedup_records(clks, 0.8, min_blocked_pairs=1, blocking_key=bytes(32))
    pairs = {
        name: set(zip(r.pairs.left.tolist(), r.pairs.right.tolist(), strict=True))
        for name, r in (("full", full), ("blocked", blocked))
    }
    assert pairs["full"] == {(i, 300 + i) for i in range(100)}
    assert pairs["blocked"] <= pairs["full"] and len(pairs["blocked"]) >= 98


def test_a_supporting_key_joins_a_pair_only_above_its_floor() -> None:
    # Records 0 and 1 score 0.6 (below the 0.7 threshold); 2 and 3 score 0.2.
    # Both pairs share a supporting key: only the first reaches the 0.55 floor.
    clks = _clks((0, 100), (40, 140), (300, 400), (380, 480))
    a, b = bytes(range(16)), bytes(range(1, 17))
    support = [[a, a, b, b]]
    specs = (_SUPPORT["suplastdob"],)
    alone = dedup_records(clks, 0.7)
    helped = dedup_records(clks, 0.7, support=support, support_specs=specs)
    assert alone.clusters == 4
    labels = helped.labels.tolist()
    assert labels[0] == labels[1] and labels[2] != labels[3]
    assert helped.key_pairs == 1
    lower = dedup_records(clks, 0.7, support=support, support_specs=specs, support_floor=0.1)
    assert lower.clusters == 2


def test_pairs_joined_through_keys_count_as_sure_in_the_estimate() -> None:
    from headcount.linkage.dedup import _components

    # 0-1 and 1-2 keyed: 0 and 2 are one person too; 3-4 keyed apart; 5 alone.
    labels = _components(6, np.array([1, 0, 3]), np.array([2, 1, 4]))
    assert labels[0] == labels[1] == labels[2]
    assert labels[3] == labels[4] != labels[0]
    assert len({int(labels[5]), int(labels[0]), int(labels[3])}) == 3


def test_the_automatic_threshold_keeps_the_best_estimated_clustering() -> None:
    rng = np.random.default_rng(7)
    # 1,200 people of 256 random bits in 1,024; a third have a second record
    # with some bits moved (a typo's worth), so pairs score around 0.7-0.9.
    people = np.zeros((1200, 1024), dtype=np.uint8)
    for row in people:
        row[rng.choice(1024, 256, replace=False)] = 1
    copies = people[:400].copy()
    for row in copies:
        on, off = np.flatnonzero(row), np.flatnonzero(row == 0)
        k = int(rng.integers(10, 60))
        row[rng.choice(on, k, replace=False)] = 0
        row[rng.choice(off, k, replace=False)] = 1
    clks = np.packbits(np.vstack([people, copies]), axis=1)
    fixed = dedup_records(clks, 0.7)
    auto = dedup_records(clks, 0.7, auto_threshold=True)
    assert fixed.threshold == 0.7
    assert auto.threshold in (0.65, 0.7, 0.75)
    assert auto.quality is not None and fixed.quality is not None
    assert auto.quality.est_f1 >= fixed.quality.est_f1
    if auto.threshold != 0.7:
        assert auto.quality.est_f1 >= fixed.quality.est_f1 + AUTO_MIN_GAIN
    # Too few records to estimate from: the threshold stays as given.
    small = dedup_records(clks[:900], 0.7, auto_threshold=True)
    assert small.threshold == 0.7


def test_the_automatic_threshold_moves_only_for_a_clear_estimated_gain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An estimated gain below `AUTO_MIN_GAIN` keeps the schema's threshold."""
    import headcount.linkage.dedup as dedup

    rng = np.random.default_rng(11)
    # As above, with more bits moved: pairs score 0.61-0.79, many under 0.7.
    people = np.zeros((1200, 1024), dtype=np.uint8)
    for row in people:
        row[rng.choice(1024, 256, replace=False)] = 1
    copies = people[:400].copy()
    for row in copies:
        on, off = np.flatnonzero(row), np.flatnonzero(row == 0)
        k = int(rng.integers(55, 100))
        row[rng.choice(on, k, replace=False)] = 0
        row[rng.choice(off, k, replace=False)] = 1
    clks = np.packbits(np.vstack([people, copies]), axis=1)
    monkeypatch.setattr(dedup, "AUTO_MIN_GAIN", 0.0)
    free = dedup_records(clks, 0.7, auto_threshold=True)
    assert free.quality is not None
    monkeypatch.setattr(dedup, "AUTO_MIN_GAIN", 1.0)
    held = dedup_records(clks, 0.7, auto_threshold=True)
    assert held.threshold == 0.7
    fixed = dedup_records(clks, 0.7)
    assert fixed.quality is not None
    assert free.threshold != 0.7 and free.quality.est_f1 > fixed.quality.est_f1


def test_a_guarded_key_supports_nothing_in_a_group_that_holds_two_people() -> None:
    """A parent and child of one name at one address share a names-and-address
    key; the child's copy with its date lost shares it too. Guarded by the
    birth year and birthday, the key supports nothing where two of its records
    differ on both, and supports the copy where nobody conflicts (a mistyped
    year alone keeps the birthday)."""
    # Records 0 and 1 score 0.6 (under the 0.7 threshold, over the 0.55 floor).
    clks = _clks((0, 100), (40, 140), (500, 600))
    key = bytes(range(16))
    year = [bytes([1] * 16), None, bytes([2] * 16)]
    birthday = [bytes([3] * 16), None, bytes([4] * 16)]
    specs = tuple(_SUPPORT[k] for k in ("supnamesaddr", "supfirstyear", "supfirstday"))

    def labels(years: list[bytes | None], birthdays: list[bytes | None], n: int = 3) -> list[int]:
        support = [[key] * n, years[:n], birthdays[:n]]
        result = dedup_records(clks[:n], 0.7, support=support, support_specs=specs)
        return result.labels.tolist()

    copy_alone = labels(year, birthday, n=2)
    assert copy_alone[0] == copy_alone[1]
    with_parent = labels(year, birthday)
    assert len(set(with_parent)) == 3  # 0 and 2 differ in year and birthday
    mistyped_year = labels(year, [birthday[0], None, birthday[0]])
    assert mistyped_year[0] == mistyped_year[1]
    # A guard level supports nothing itself: records 0 and 1 sharing only a
    # guard value stay apart.
    guard_only = dedup_records(
        clks[:2], 0.7, support=[[None, None], [key, key], [None, None]], support_specs=specs
    )
    assert guard_only.clusters == 2
    with pytest.raises(ValueError, match="one spec per level"):
        dedup_records(clks, 0.7, support=[[key] * 3], support_specs=specs)
    with pytest.raises(ValueError, match="needs its guard"):
        dedup_records(clks, 0.7, support=[[key] * 3], support_specs=specs[:1])

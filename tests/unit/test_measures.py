"""Packed per-record slots: layouts both sides derive, rows, reading back, release."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headcount.domain.measures import (
    ALL_GROUP,
    Cell,
    clamp_noise,
    decoded_cells,
    make_packing,
    protect_release,
    with_intervals,
)
from headcount.errors import InvalidRequest
from headcount.protect.sdc import SdcPolicy

LAS = ("Birmingham", "Bradford", "Bristol", "Camden", "Kent", "Leeds", "Manchester", "Newham")


def test_layout_for_a_mean_by_local_authority() -> None:
    p = make_packing(
        "education", "local_authority", "absence_rate", n_bits=2048, max_summands=10**6, epsilon=0.5
    )
    assert p.categories == LAS
    assert p.kinds == 3 and p.layout.slots == 24
    assert p.layout.max_value == 1000  # absence_rate in per mille
    assert len(p.noise_specs()) == 24
    assert p.noise_specs()[0].sensitivity == 1 and p.noise_specs()[-1].sensitivity == 1000


def test_too_many_slots_for_the_key_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="do not fit"):
        make_packing(
            "education", "year_group", "absence_rate", n_bits=1024, max_summands=10**6, epsilon=0.01
        )


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(), st.sampled_from(LAS), st.sampled_from(["", "0.000", "0.043", "1.000"])
        ),
        min_size=1,
        max_size=40,
    )
)
def test_summed_rows_read_back_as_per_category_counts_and_sums(
    records: list[tuple[bool, str, str]],
) -> None:
    p = make_packing(
        "education", "local_authority", "absence_rate", n_bits=2048, max_summands=1000, epsilon=1.0
    )
    total = sum(p.layout.pack(p.row(ok, la, v)) for ok, la, v in records)
    cells = p.read(total)
    for la in LAS:
        mine = [(ok, v) for ok, cat, v in records if cat == la and ok]
        assert cells[la].count == len(mine)
        assert cells[la].valued == sum(1 for _, v in mine if v)
        assert cells[la].total == sum(round(float(v) * 1000) for _, v in mine if v)


def test_a_record_failing_the_filters_adds_nothing() -> None:
    p = make_packing("education", "", "", n_bits=1024, max_summands=10, epsilon=1.0)
    assert p.row(False, "", "") == [0]
    assert p.row(True, "", "") == [1]


def test_noise_is_clamped_to_the_layout_bound() -> None:
    assert clamp_noise([-(10**9), 3, 10**9], 100) == [-100, 3, 100]


def test_release_of_a_mean_needs_enough_values() -> None:
    p = make_packing("education", "", "absence_rate", n_bits=2048, max_summands=1000, epsilon=1.0)
    groups = [
        ("settled", {"": Cell(count=40, valued=40, total=2000)}),
        ("no_leave", {"": Cell(count=12, valued=5, total=300)}),
        ("asylum_seeker", {"": Cell(count=3, valued=3, total=90)}),
    ]
    cells, total, two_way = protect_release(p, groups, SdcPolicy(secondary=False))
    by = {c.group: c for c in cells}
    assert not two_way and total == 55
    assert by["settled"].mean == 0.05 and by["settled"].value == 40
    assert by["no_leave"].value == 10 and by["no_leave"].mean is None  # 5 values < 10
    assert by["asylum_seeker"].value is None and by["asylum_seeker"].mean is None


def test_a_noisy_mean_is_shown_as_it_is_with_an_honest_interval() -> None:
    """Noise can push a small cell's sum below zero or above count x maximum: the
    mean is the noisy sum over the noisy count, never silently clamped; its 95%
    interval lies within the attribute's declared range."""
    p = make_packing(
        "education",
        "",
        "absence_rate",
        n_bits=2048,
        max_summands=1000,
        epsilon=1.0,
        sensitivity=2,
        shareholders=2,
    )
    groups = [
        ("low", {"": Cell(count=20, valued=20, total=-3000)}),
        ("high", {"": Cell(count=20, valued=20, total=10**6)}),
    ]
    policy = SdcPolicy(secondary=False)
    cells, total, _ = protect_release(p, groups, policy)
    by = {c.group: c for c in cells}
    assert by["low"].mean == pytest.approx(-3000 / 20 / p.scale, abs=1e-3)
    assert by["high"].mean == pytest.approx(10**6 / 20 / p.scale, abs=1e-3)
    out = with_intervals(p, cells, total, policy, decoded_cells(p, groups))
    for cell in out.cells:
        assert cell.mean_interval is not None
        low, high = cell.mean_interval
        assert 0.0 <= low <= high <= 1.0
        assert cell.interval is not None and cell.interval[0] <= cell.value <= cell.interval[1]
        assert cell.noise_scale == pytest.approx(2 * 3 / 1.0)


def test_count_intervals_cover_the_truth_in_95_percent_of_releases() -> None:
    """Synthetic truth, the real share sampler, the real small-number rule."""
    from headcount.privacy.noise import draw_share

    p = make_packing(
        "education",
        "",
        "",
        n_bits=2048,
        max_summands=10_000,
        epsilon=0.5,
        sensitivity=2,
        shareholders=3,
    )
    policy = SdcPolicy(secondary=False)
    truth = 400
    trials = 2000
    scale = p.noise_specs()[0].scale
    noise = [sum(z) for z in zip(*(draw_share(scale, 3, trials) for _ in range(3)), strict=True)]
    covered = 0
    for z in noise:
        cells, total, _ = protect_release(p, [("all", {"": Cell(truth + z)})], policy)
        out = with_intervals(p, cells, total, policy)
        low, high = out.cells[0].interval  # type: ignore[misc]
        covered += low <= truth <= high
    assert 0.95 <= covered / trials <= 0.995


def test_grouping_only_at_the_origin_gives_a_one_way_table() -> None:
    p = make_packing("education", "sen", "", n_bits=1024, max_summands=1000, epsilon=1.0)
    groups = [(ALL_GROUP, {"none": Cell(50), "support": Cell(20), "ehcp": Cell(4)})]
    cells, total, two_way = protect_release(p, groups, SdcPolicy())
    assert not two_way
    # ehcp is small; support is withheld too, or 75 - 50 would give it away.
    assert [(c.group, c.value, c.status) for c in cells] == [
        ("none", 50, "released"),
        ("support", None, "secondary"),
        ("ehcp", None, "primary"),
    ]
    assert total == 75


def test_margin_intervals_cover_the_truth_though_cells_are_clipped_at_zero() -> None:
    """A total adds noisy cells with negatives as 0: small true cells bias it
    upwards; its interval must still hold the truth in >= 95% of releases."""
    from headcount.privacy.noise import draw_share

    p = make_packing(
        "education",
        "",
        "",
        n_bits=2048,
        max_summands=10_000,
        epsilon=0.5,
        sensitivity=2,
        shareholders=2,
    )
    policy = SdcPolicy()
    truth = {"a": 0, "b": 3, "c": 20, "d": 100, "e": 500, "f": 2}
    trials = 1000
    scale = p.noise_specs()[0].scale
    shares = [[draw_share(scale, 2, trials) for _ in truth] for _ in range(2)]
    covered = 0
    widths = []
    for t in range(trials):
        groups = [
            (g, {"": Cell(c + shares[0][i][t] + shares[1][i][t])})
            for i, (g, c) in enumerate(truth.items())
        ]
        cells, total, _ = protect_release(p, groups, policy)
        out = with_intervals(p, cells, total, policy)
        assert total is not None and out.total_interval is not None
        low, high = out.total_interval
        covered += low <= sum(truth.values()) <= high
        widths.append(high - low)
    assert covered / trials >= 0.95
    # Not a vacuous interval: far narrower than six cells' union bound.
    assert max(widths) < 6 * 2 * 50

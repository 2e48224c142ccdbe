"""The quality report's pieces without a federation: score histograms, the
small-number rule on them, subgroup rates from a released table, the page."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from headcount.errors import InvalidRequest
from headcount.linkage.dice import dice_reference
from headcount.linkage.scores import ScoreHistogram, score_histograms
from headcount.protect.sdc import PRIMARY, RELEASED, TOTAL, SdcPolicy
from headcount.query import unlinked_group
from headcount.report.html import render_report
from headcount.report.subgroups import (
    SubgroupPlan,
    SubgroupQuery,
    SubgroupResult,
    query_spec,
    rates_from_release,
)
from headcount.report.summary import (
    EpochSummary,
    HouseholdPair,
    PairSummary,
    PartySummary,
    ProtectedHistogram,
    share,
)

POLICY = SdcPolicy()


def _clks(rng: np.random.Generator, n: int, width: int = 64) -> np.ndarray:
    return np.packbits(rng.random((n, width * 8)) < 0.3, axis=1)


def test_histograms_bin_the_one_to_one_link_scores() -> None:
    rng = np.random.default_rng(3)
    left = _clks(rng, 60)
    right = np.concatenate([left[:40].copy(), _clks(rng, 30)])
    # Flip a few bits in some copies so not every match scores exactly 1.
    right[:10, :2] ^= 0b0000_0101
    hist = score_histograms({"a": left, "b": right}, {("a", "b"): 0.8}, 0.5, bins=10)[("a", "b")]
    assert hist.edges[0] == 0.5 and hist.edges[-1] == 1.0 and len(hist.counts) == 10
    assert hist.sampled_party == "a" and hist.sampled_records == 60
    # Each of the 60 left records has at most one link; the 40 copies are found.
    assert 40 <= hist.links <= 60
    assert hist.counts[-1] >= 30  # identical encodings land in the last bin (1.0 included)
    scores = [dice_reference(left[i].tobytes(), right[i].tobytes()) for i in range(40)]
    assert sum(s >= 0.95 for s in scores) <= hist.counts[-1] + hist.counts[-2]


def test_histogram_round_trips_and_refuses_nonsense() -> None:
    h = ScoreHistogram("a", "b", 0.5, 0.8, (0.5, 0.75, 1.0), (3, 12), "a", 15)
    assert ScoreHistogram.from_json(h.to_json()) == h
    with pytest.raises(InvalidRequest):
        ScoreHistogram("b", "a", 0.5, 0.8, (0.5, 0.75, 1.0), (3, 12), "a", 15)
    with pytest.raises(InvalidRequest):
        ScoreHistogram("a", "b", 0.5, 0.8, (0.5, 1.0), (3, 12), "a", 15)
    with pytest.raises(InvalidRequest):
        ScoreHistogram("a", "b", 0.5, 0.8, (0.5, 0.75, 1.0), (-1, 12), "a", 15)
    with pytest.raises(InvalidRequest):
        ScoreHistogram.from_json({"left": "a"})


def test_small_bins_are_withheld_and_cannot_be_recovered_from_the_total() -> None:
    h = ScoreHistogram(
        "a", "b", 0.5, 0.8, (0.5, 0.6, 0.7, 0.8, 0.9, 1.0), (4, 33, 12, 0, 912), "a", 961
    )
    p = ProtectedHistogram.protect(h, POLICY)
    assert p.counts[0] is None and p.statuses[0] == PRIMARY  # 4 < 10
    assert p.counts[3] is None and p.statuses[3] == PRIMARY  # zero is small too
    assert p.counts[4] == 910 and p.total == 960
    released = [c for c in p.counts if c is not None]
    assert all(c >= POLICY.threshold and c % POLICY.rounding_base == 0 for c in released)
    # Two primary suppressions already protect each other here; one alone would
    # have taken a second bin with it.
    single = ProtectedHistogram.protect(
        ScoreHistogram("a", "b", 0.5, 0.8, (0.5, 0.75, 1.0), (4, 500), "a", 504), POLICY
    )
    assert single.counts == (None, None) and single.statuses[1] == "secondary"


def _two_way(partner: str) -> pd.DataFrame:
    """A released frame as `Client.query` returns it for education by age_band against B."""
    unlinked = unlinked_group(partner)
    rows = [
        ("all", "0-4", 85, RELEASED),
        ("all", "5-9", 300, RELEASED),
        ("all", "18-24", None, PRIMARY),
        (unlinked, "0-4", 15, RELEASED),
        (unlinked, "5-9", None, PRIMARY),
        (unlinked, "18-24", None, PRIMARY),
        ("all", TOTAL, 390, RELEASED),
        (unlinked, TOTAL, 20, RELEASED),
        (TOTAL, "0-4", 100, RELEASED),
        (TOTAL, "5-9", 305, RELEASED),
        (TOTAL, "18-24", None, PRIMARY),
        (TOTAL, TOTAL, 410, RELEASED),
    ]
    frame = pd.DataFrame(rows, columns=["group", "education.age_band", "count", "status"])
    frame["count"] = pd.array(frame["count"].tolist(), dtype="Int64")
    return frame


def test_subgroup_rates_come_from_the_unlinked_row_and_the_margin() -> None:
    q = SubgroupQuery("education", "health", "age_band")
    rates = {
        r.group: r
        for r in rates_from_release(_two_way("health"), q, noise_scale=2.0, policy=POLICY)
    }
    assert rates["0-4"].rate == pytest.approx(0.85)
    assert rates["0-4"].half_width is not None and 0 < rates["0-4"].half_width < 0.2
    assert rates["5-9"].rate is None and "withheld" in rates["5-9"].note  # unlinked < 10
    assert rates["18-24"].total is None and rates["18-24"].rate is None
    with pytest.raises(InvalidRequest, match="not known to justice"):
        rates_from_release(
            _two_way("health"),
            SubgroupQuery("education", "justice", "age_band"),
            noise_scale=2.0,
            policy=POLICY,
        )


def test_subgroup_queries_are_ordinary_protected_queries() -> None:
    spec = query_spec(SubgroupQuery("education", "health", "local_authority"), "proj-1", 0.2)
    assert (spec.population_party, spec.population_group_by) == ("education", "local_authority")
    assert (spec.group_party, spec.group_by, spec.epsilon) == ("health", "", 0.2)
    assert spec.project_id == "proj-1" and not spec.conditions and not spec.population_filters
    with pytest.raises(InvalidRequest):
        SubgroupPlan(epsilon=0)


def _summary() -> EpochSummary:
    hist = ProtectedHistogram.protect(
        ScoreHistogram(
            "education", "health", 0.5, 0.8, (0.5, 0.75, 1.0), (4, 500), "education", 504
        ),
        POLICY,
    )
    pair = PairSummary(
        "education",
        "health",
        0.8,
        500,
        420,
        600,
        700,
        share(500, 600),
        share(500, 700),
        0.991,
        0.987,
        0.989,
        hist,
    )
    return EpochSummary(
        epoch_id="e" * 32,
        threshold=0.8,
        clusters=500,
        parties=(
            PartySummary("education", 600, 500, share(500, 600), 400, 600),
            PartySummary("health", 700, 500, share(500, 700), 450, 700),
        ),
        pairs=(pair,),
        households=(HouseholdPair("education", "health", 400, 450, 380, 0.95, 0.844),),
        policy=POLICY,
    )


def test_page_is_self_contained_and_shows_what_it_must() -> None:
    summary = _summary()
    rates = rates_from_release(
        _two_way("health"),
        SubgroupQuery("education", "health", "age_band"),
        noise_scale=2.0,
        policy=POLICY,
    )
    result = SubgroupResult(
        SubgroupQuery("education", "health", "age_band"), rates, "q" * 32, 0.1, 10.0
    )
    refused = SubgroupResult(
        SubgroupQuery("education", "health", "local_authority"), refused="budget spent"
    )
    page = render_report(
        summary, federation_name="demo", subgroups=[result, refused], project_id="p"
    )
    assert "http://" not in page and "https://" not in page
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert len(sources) == 5  # pair matrix, one histogram, precision/recall, households, subgroup
    assert "0.800" in page and "83.3%" in page  # threshold; 500 of 600 education records linked
    assert "withheld" in page and "budget spent" in page
    assert "Estimates from protected counts" in page


def test_page_says_why_subgroups_were_not_run() -> None:
    page = render_report(_summary(), federation_name="demo", subgroups_skipped="no project.")
    assert "Not run: no project." in page

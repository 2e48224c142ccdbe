"""The quality report's pieces without a federation: score histograms, the
small-number rule on them, subgroup rates from a released table, the page."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from headcount.domain.query import unlinked_group
from headcount.errors import InvalidRequest
from headcount.linkage.dice import dice_reference, score_pairs
from headcount.linkage.scores import ScoreHistogram, score_histograms
from headcount.linkage.solve import match_one_to_one
from headcount.protect.sdc import PRIMARY, RELEASED, SECONDARY, TOTAL, SdcPolicy
from headcount.report import plots
from headcount.report.html import rate_text, render_report
from headcount.report.subgroups import (
    SubgroupPlan,
    SubgroupQuery,
    SubgroupRate,
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


def test_histograms_match_binning_every_candidate() -> None:
    """Keeping each sampled record's best candidates (not all above the floor)
    links the same pairs: at a floor of 0.3 these random filters have hundreds
    of candidates a record, far more than are kept."""
    rng = np.random.default_rng(5)
    left = _clks(rng, 80)
    right = np.concatenate([left[:50].copy(), _clks(rng, 400)])
    right[:20, :3] ^= 0b0001_0001
    hist = score_histograms({"a": left, "b": right}, {("a", "b"): 0.8}, 0.3, bins=14)[("a", "b")]
    every = score_pairs(left, right, 0.3)
    assert len(every) > 100 * len(left)
    full, _ = np.histogram(match_one_to_one(every).score, bins=np.array(hist.edges))
    assert hist.counts == tuple(int(c) for c in full)


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
        ("all", "10-14", None, SECONDARY),
        ("all", "15-17", 10, RELEASED),
        ("all", "20-24", None, PRIMARY),
        (unlinked, "0-4", 15, RELEASED),
        (unlinked, "5-9", None, PRIMARY),
        (unlinked, "18-24", None, PRIMARY),
        (unlinked, "10-14", None, SECONDARY),
        (unlinked, "15-17", 15, RELEASED),
        (unlinked, "20-24", None, SECONDARY),
        ("all", TOTAL, 390, RELEASED),
        (unlinked, TOTAL, 20, RELEASED),
        (TOTAL, "0-4", 100, RELEASED),
        (TOTAL, "5-9", 305, RELEASED),
        (TOTAL, "18-24", None, PRIMARY),
        (TOTAL, "10-14", 230, RELEASED),
        (TOTAL, "15-17", 25, RELEASED),
        (TOTAL, "20-24", 100, RELEASED),
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
    zero_four = rates["0-4"]
    assert zero_four.rate == pytest.approx(0.85)
    assert zero_four.low is not None and zero_four.high is not None
    assert 0.0 <= zero_four.low < 0.85 < zero_four.high <= 1.0
    assert zero_four.high - zero_four.low < 0.4
    # Primary suppression: the unlinked count was small, so the rate is high.
    five_nine = rates["5-9"]
    assert five_nine.rate is None and five_nine.unlinked_status == PRIMARY
    assert five_nine.note.startswith("withheld (< 10 of 305 not known to health)")
    assert "primary suppression" in five_nine.note
    assert five_nine.high == 1.0 and five_nine.low is not None and 0.5 < five_nine.low < 1.0
    # Secondary suppression: large enough to publish, so never labelled "< 10".
    ten = rates["10-14"]
    assert ten.rate is None and ten.unlinked_status == SECONDARY
    assert "< 10" not in ten.note and "secondary suppression" in ten.note
    assert ten.low == 0.0 and ten.high == 1.0  # noise at scale 2 may hide a true 0
    quiet = rates_from_release(_two_way("health"), q, noise_scale=0.3, policy=POLICY)
    (ten_quiet,) = [r for r in quiet if r.group == "10-14"]
    assert ten_quiet.high is not None and 0.9 < ten_quiet.high < 1.0
    # ... and its one linked cell, withheld as secondary too, was >= 10 of 230.
    assert ten_quiet.low is not None and 0.0 < ten_quiet.low < 0.1
    assert rate_text(ten_quiet) == f"withheld; 95% range {ten_quiet.low:.1%}–{ten_quiet.high:.1%}"
    # A small linked cell (primary) takes the unlinked one with it (secondary):
    # the range says the rate is low, not that nothing is known.
    few = rates["20-24"]
    assert few.unlinked_status == SECONDARY and few.rate is None
    assert few.low == 0.0 and few.high is not None and few.high < 0.3
    # A small subgroup: the interval is bounded to [0, 1], never 40% ± 146%.
    small = rates["15-17"]
    assert small.rate == pytest.approx(0.4)
    assert small.low == 0.0 and small.high is not None and 0.4 < small.high <= 1.0
    assert rate_text(small) == f"40.0% (0.0%–{small.high:.1%})"
    noisy = rates_from_release(_two_way("health"), q, noise_scale=20.0, policy=POLICY)
    (small_noisy,) = [r for r in noisy if r.group == "15-17"]
    assert rate_text(small_noisy) == "40.0% (0.0%–100.0%)"
    # No total, no range: just withheld, with the rule that withheld the total.
    none = rates["18-24"]
    assert none.total is None and none.rate is None and none.low is None
    assert rate_text(none) == "withheld" and "primary suppression" in none.note
    with pytest.raises(InvalidRequest):
        SubgroupRate("g", 25, 15, 0.4, -0.1, 1.46)
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


def _result(frame: pd.DataFrame, noise_scale: float = 2.0) -> SubgroupResult:
    q = SubgroupQuery("education", "health", "age_band")
    rates = rates_from_release(frame, q, noise_scale=noise_scale, policy=POLICY)
    return SubgroupResult(q, rates, "q" * 32, 0.1, noise_scale)


def test_page_names_each_rule_bounds_each_rate_and_escapes_labels() -> None:
    frame = _two_way("health")
    hostile = '<script>alert("x")</script>'
    frame["education.age_band"] = frame["education.age_band"].replace("0-4", hostile)
    page = render_report(
        _summary(), federation_name="demo <i onmouseover=x>", subgroups=[_result(frame)]
    )
    assert "<script>alert" not in page and "<i onmouseover" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    table = page.split('id="subgroup-1"', 1)[1].split("</table>", 1)[0]
    rows = {
        r.split("</td>", 1)[0]: r for r in table.split("<tr><td")[1:]
    }  # first cell (with its class attribute, if any) -> the row
    five_nine = next(r for k, r in rows.items() if k.endswith(">5-9"))
    assert "withheld: &lt; 10" in five_nine and "primary suppression" in five_nine
    ten = next(r for k, r in rows.items() if k.endswith(">10-14"))
    assert "withheld: protects another cell" in ten and "&lt; 10" not in ten
    assert "40.0% (0.0%–" in table
    assert "±" not in page and "+/-" not in page
    # The embedded data holds the same figures, with no "<" to confuse a parser.
    data = page.split('id="report-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data
    doc = json.loads(data)
    shown = {r["group"]: r for r in doc["subgroups"][0]["rates"]}
    assert shown[hostile]["rate"] == 0.85 and shown["5-9"]["unlinked_status"] == PRIMARY
    assert all(r["low"] is None or 0 <= r["low"] <= r["high"] <= 1 for r in shown.values())


def test_subgroup_figure_draws_withheld_rates_as_withheld(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drawn: list[Figure] = []

    def keep(fig: Figure) -> str:
        drawn.append(fig)
        return "data:image/png;base64,"

    monkeypatch.setattr(plots, "to_data_uri", keep)
    result = _result(_two_way("health"), noise_scale=0.3)
    assert plots.subgroup_rates(result, 0.9) is not None
    (ax,) = drawn[0].axes
    groups = [r.group for r in result.rates]
    withheld = {groups.index(r.group): r for r in result.rates if r.rate is None}
    # 5-9 (primary), 18-24 (no total), 10-14 and 20-24 (secondary)
    assert set(withheld) == {1, 2, 3, 5}
    # No point is plotted for a withheld rate, at 0 or anywhere else.
    markers = [line for line in ax.lines if line.get_marker() not in (None, "None", "")]
    assert markers
    for line in markers:
        assert not {round(x) for x in np.asarray(line.get_xdata(), dtype=float)} & set(withheld)
    for collection in ax.collections:
        offsets = np.asarray(collection.get_offsets())
        assert not any(round(x) in withheld and y < 0.05 for x, y in offsets)
    # Each is labelled "withheld"; those with a released total get a band over
    # the range their suppression leaves.
    labels = [t for t in ax.texts if t.get_text() == "withheld"]
    assert sorted(round(t.xy[0]) for t in labels) == sorted(withheld)
    bands = {round(p.get_x() + p.get_width() / 2): p for p in ax.patches}
    for x, r in withheld.items():
        if r.low is None:
            assert x not in bands
        else:
            assert bands[x].get_y() == pytest.approx(r.low)
            assert bands[x].get_y() + bands[x].get_height() == pytest.approx(r.high)
    assert ax.get_ylim() == (0.0, 1.05)
    plt.close(drawn[0])

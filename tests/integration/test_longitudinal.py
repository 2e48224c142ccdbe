"""Children across time: yearly snapshots as parties of one federation.

Education and immigration take part once per year (2024, 2025, 2026) on a
synthetic population followed over those years (`headcount.synth.generate_periods`).
Checked against the ground truth the nodes never see: cross-period link
quality, the transition table of immigration status and a cohort outcome
(exact settings as in test_query_chains.py, and once with the default
protection), and that nothing the coordinator stores links one epoch's
records to another's.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest
from harness import Federation, make_federation, mean_bounds

from headcount.domain.query import unlinked_group
from headcount.domain.queryfile import load_query_spec
from headcount.longitudinal import (
    COHORT_QUERY,
    LONGITUDINAL_QUERIES,
    TRANSITION_QUERY,
    approve_project,
)

PEOPLE, SEED = 4000, 3
EPSILON = 12.5  # discrete Laplace scale 0.08: exact but for ~7e-6 per cell
QUERIES = Path(__file__).parents[2] / "docs" / "queries"


@pytest.fixture(scope="module")
def exact(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Federation, str]]:
    fed = make_federation(
        tmp_path_factory.mktemp("periods") / "fed",
        people=PEOPLE,
        seed=SEED,
        periods=True,
        suppress_below=1,
        rounding_base=1,
        secondary_suppression=False,
        epsilon_per_period=100,
        default_query_epsilon=EPSILON,
    )
    try:
        with fed.operator() as op:
            op.run_ceremony()
            epoch_id = op.run_linkage().epoch_id
        approve_project(fed)  # the queries cite the demo's project
        yield fed, epoch_id
    finally:
        fed.stop()


def _read(fed: Federation, party: str) -> pd.DataFrame:
    frame = pd.read_csv(fed.config.party(party).data, dtype=str, keep_default_na=False)
    return frame.set_index("record_id")


def _truth(fed: Federation) -> pd.DataFrame:
    return pd.read_csv(fed.ground_truth, dtype=str, keep_default_na=False)


def _f1(found: set[tuple[str, str]], true: set[tuple[str, str]]) -> float:
    precision = len(found & true) / len(found)
    recall = len(found & true) / len(true)
    return 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("immigration-2024", "immigration-2026"),
        ("education-2024", "education-2026"),
        ("education-2024", "immigration-2026"),
        ("health", "immigration-2024"),
    ],
)
def test_links_across_periods_match_ground_truth(
    exact: tuple[Federation, str], a: str, b: str
) -> None:
    """F1 >= 0.98 from the first snapshot to the third, though people moved,
    changed surname or status, and each year's extract has its own errors."""
    fed, epoch_id = exact
    truth = _truth(fed)
    true = {(x, y) for x, y in zip(truth[f"{a}_id"], truth[f"{b}_id"], strict=True) if x and y}
    assert len(true) >= 40
    found = fed.linked_record_ids(epoch_id, a, b)
    assert _f1(found, true) >= 0.98, (a, b, len(found & true), len(found), len(true))


def test_every_pair_of_parties_links_well(exact: tuple[Federation, str]) -> None:
    fed, epoch_id = exact
    truth = _truth(fed)
    checked = 0
    for a, b in itertools.combinations(sorted(fed.config.party_names), 2):
        true = {(x, y) for x, y in zip(truth[f"{a}_id"], truth[f"{b}_id"], strict=True) if x and y}
        if len(true) < 40:
            continue
        assert _f1(fed.linked_record_ids(epoch_id, a, b), true) >= 0.98, (a, b)
        checked += 1
    assert checked >= 15


def _transition_truth(fed: Federation) -> dict[tuple[str, str], int]:
    """(status in 2026 or 'not known to immigration-2026', status in 2024) -> people."""
    truth = _truth(fed)
    early, late = _read(fed, "immigration-2024"), _read(fed, "immigration-2026")
    want: dict[tuple[str, str], int] = {}
    for x, y in zip(truth["immigration-2024_id"], truth["immigration-2026_id"], strict=True):
        if not x:
            continue
        before = early.loc[x, "immigration_status"]
        after = late.loc[y, "immigration_status"] if y else unlinked_group("immigration-2026")
        want[(after, before)] = want.get((after, before), 0) + 1
    return want


def _linked_transition(fed: Federation) -> dict[tuple[str, str], int]:
    """What the chain counts before any noise: each immigration-2024 record by
    the status of the 2026 record the latest epoch links it to (or 'not known
    to immigration-2026'), as the coordinator's own links say. Intervals are
    about this count; linkage error is a separate matter (the exact test)."""
    early, late = _read(fed, "immigration-2024"), _read(fed, "immigration-2026")
    epoch = fed.coordinator.coordinator.store.latest_epoch()
    pairs = dict(fed.linked_record_ids(epoch, "immigration-2024", "immigration-2026"))
    want: dict[tuple[str, str], int] = {}
    for x in fed.record_ids("immigration-2024", epoch).values():
        before = early.loc[x, "immigration_status"]
        y = pairs.get(x)
        after = late.loc[y, "immigration_status"] if y else unlinked_group("immigration-2026")
        want[(after, before)] = want.get((after, before), 0) + 1
    return want


def _two_way(table: pd.DataFrame) -> dict[tuple[str, str], tuple[int | None, str]]:
    # The column dimension is the population's own attribute, named with its party.
    column = "immigration-2024.immigration_status"
    assert list(table.columns[:2]) == ["group", column]
    cells = table[(table.group != "Total") & (table[column] != "Total")]
    return {
        (g, s): (None if pd.isna(c) else int(c), status)
        for g, s, c, status in zip(
            cells.group, cells[column], cells["count"], cells.status, strict=True
        )
    }


def test_transition_table_matches_ground_truth(exact: tuple[Federation, str]) -> None:
    """Status in 2024 x status in 2026, with exact settings: only linkage error remains."""
    fed, _ = exact
    with fed.analyst() as analyst:
        release = analyst.query(TRANSITION_QUERY)
    assert list(release.table.columns) == [
        "group",
        "immigration-2024.immigration_status",
        "count",
        "status",
        "low",
        "high",
        "noise_scale",
    ]
    got = _two_way(release.table)
    want = _transition_truth(fed)
    assert len(got) == 6 * 5  # five statuses and "not known" by five statuses
    changed = sum(n for (after, before), n in want.items() if after != before)
    assert changed >= 30, "the synthetic years should change some statuses"
    for key in set(got) | set(want):
        count, _ = got.get(key, (0, "primary"))
        g, w = count or 0, want.get(key, 0)
        assert abs(g - w) <= max(2, 0.03 * w), (key, g, w)


def test_cohort_mean_absence_by_earlier_status(exact: tuple[Federation, str]) -> None:
    """Mean absence in 2026 of pupils, by their immigration status in 2024."""
    fed, _ = exact
    with fed.analyst() as analyst:
        release = analyst.query(COHORT_QUERY)
    truth = _truth(fed)
    pupils, imm = _read(fed, "education-2026"), _read(fed, "immigration-2024")
    values: dict[str, list[float]] = {}
    for e, i in zip(truth["education-2026_id"], truth["immigration-2024_id"], strict=True):
        if not e:
            continue
        group = imm.loc[i, "immigration_status"] if i else unlinked_group("immigration-2024")
        raw = pupils.loc[e, "absence_rate"]
        if raw:
            values.setdefault(group, []).append(float(raw))
    table = release.table
    checked = 0
    for group, mean in zip(table.group, table.mean_absence_rate, strict=True):
        if group == "Total" or pd.isna(mean):
            continue
        bounds = mean_bounds(values[group], release)
        if bounds is None:
            continue  # the noisy count may be near zero: the mean is unbounded
        assert bounds[0] <= float(mean) <= bounds[1], (group, mean, bounds)
        checked += 1
    assert checked >= 3
    assert "no_leave" in values


def test_documented_specs_are_the_longitudinal_queries() -> None:
    for name, spec in LONGITUDINAL_QUERIES:
        assert load_query_spec(QUERIES / name) == spec, name


@pytest.fixture(scope="module")
def protected(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Federation, str, str]]:
    """Default protection (suppress below 10, round to 5, secondary suppression,
    epsilon 0.5 per query); two epochs of the same data."""
    fed = make_federation(
        tmp_path_factory.mktemp("periods-protected") / "fed",
        people=PEOPLE,
        seed=SEED,
        periods=True,
    )
    try:
        with fed.operator() as op:
            op.run_ceremony()
            first = op.run_linkage().epoch_id
            second = op.run_linkage().epoch_id
        approve_project(fed)
        yield fed, first, second
    finally:
        fed.stop()


def test_transition_table_with_default_protection(
    protected: tuple[Federation, str, str],
) -> None:
    fed, _, _ = protected
    with fed.analyst() as analyst:
        release = analyst.query(TRANSITION_QUERY)
    assert release.epsilon == fed.config.privacy.default_query_epsilon
    got = _two_way(release.table)
    want = _linked_transition(fed)
    table = release.table
    intervals = {
        (g, s): (lo, hi)
        for g, s, lo, hi in zip(
            table.group,
            table["immigration-2024.immigration_status"],
            table["low"],
            table["high"],
            strict=True,
        )
        if pd.notna(lo)
    }
    # Each released cell's 95% interval holds, in 95% of releases, the count
    # the chain computed before noise (the linked count, not ground truth).
    released = covered = 0
    for key, (count, status) in got.items():
        w = want.get(key, 0)
        if status == "released":
            assert count is not None and count % 5 == 0 and count >= 10
            low, high = intervals[key]
            assert low <= count <= high
            covered += low <= w <= high
            released += 1
        else:
            assert status in ("primary", "secondary")
    assert released >= 5
    # 95% intervals: allow one miss in twenty, and a little more by chance.
    assert covered >= 0.8 * released, (covered, released)
    assert any(s == "primary" for _, s in got.values()), "small cells must be suppressed"


def test_nothing_stored_links_one_epoch_to_another(
    protected: tuple[Federation, str, str],
) -> None:
    """Two epochs of the same snapshots: no token, CLK or household key of
    one appears in the other, and neither cluster numbers nor positions
    follow a person from one epoch to the next."""
    fed, first, second = protected
    with closing(sqlite3.connect(fed.config.coordinator.database)) as db:
        enc = db.execute("SELECT epoch_id, party, position, token, clk, household FROM encodings")
        encodings = enc.fetchall()
        links = db.execute("SELECT epoch_id, party, cluster, token FROM links").fetchall()
    values: dict[str, dict[str, set[bytes]]] = {first: {}, second: {}}
    for epoch_id, _, _, token, clk, household in encodings:
        kinds = values[epoch_id]
        kinds.setdefault("token", set()).add(bytes(token))
        kinds.setdefault("clk", set()).add(bytes(clk))
        if household:
            kinds.setdefault("household", set()).add(bytes(household))
    for kind in ("token", "clk", "household"):
        a, b = values[first][kind], values[second][kind]
        assert len(a) > 1000 and len(b) > 1000
        assert not a & b, kind
    linked_tokens = {bytes(t) for _, _, _, t in links}
    assert linked_tokens <= values[first]["token"] | values[second]["token"]

    # Follow each record (as only its node can) into both epochs: the cluster
    # number and the position the coordinator holds must not repeat.
    cluster = {(e, bytes(t)): c for e, _, c, t in links}
    position = {(e, bytes(t)): pos for e, _, pos, t, _, _ in encodings}
    same_cluster = same_position = compared = 0
    for party in fed.config.party_names:
        ids = {e: fed.record_ids(party, e) for e in (first, second)}
        token_of = {e: {r: t for t, r in ids[e].items()} for e in ids}
        for record, t1 in token_of[first].items():
            t2 = token_of[second][record]
            compared += 1
            same_position += position[(first, t1)] == position[(second, t2)]
            c1, c2 = cluster.get((first, t1)), cluster.get((second, t2))
            same_cluster += c1 is not None and c1 == c2
    assert compared > 5000
    assert same_position <= 0.01 * compared
    assert same_cluster <= 0.01 * compared


def test_period_parties_in_the_federation_config(tmp_path: Path) -> None:
    """Period parties follow their department's contract at their own date;
    a party without a department field is its own department, as before."""
    import datetime as dt

    from headcount.federation import InitOptions, init_federation

    cfg = init_federation(
        tmp_path / "fed",
        InitOptions(
            paillier_bits=1024,
            insecure_test_keys=True,
            reference_date=dt.date(2026, 3, 31),
            periods=("2024", "2026"),
            period_departments=("immigration",),
        ),
    )
    assert cfg.party_names == (
        "education",
        "health",
        "justice",
        "immigration-2024",
        "immigration-2026",
    )
    early = cfg.party("immigration-2024")
    assert (early.department, early.period) == ("immigration", "2024")
    assert early.reference_date == dt.date(2024, 3, 31)
    assert "immigration_status" in early.approved_attributes
    education = cfg.party("education")
    assert (education.department, education.period, education.reference_date) == (
        "education",
        "",
        None,
    )
    text = (tmp_path / "fed" / "federation.toml").read_text()
    assert text.count("department = ") == 2

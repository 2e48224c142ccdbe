"""Multi-hop and household query chains, checked against ground truth.

This federation releases exact counts (suppression threshold 1, rounding base
1, no secondary suppression) and uses epsilon 12.5 per query (discrete Laplace
scale 0.08: a count is exact except with probability ~7e-6 per cell), so any
difference from the truth comes from
the hop chain or from linkage, never from protection. The protection itself is
tested elsewhere with the default policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from harness import Federation, make_federation, mean_bounds

from headcount.departments import ADULT_AGE_BANDS
from headcount.domain.query import Condition, Predicate, QuerySpec, unlinked_group
from headcount.linkage.households import household_flag_sources
from party_node.data import load_department_file

PURPOSE = "Check the hop chain's arithmetic against synthetic ground truth."
EPSILON = 12.5


@pytest.fixture(scope="module")
def exact(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    fed = make_federation(
        tmp_path_factory.mktemp("chains") / "fed",
        people=2500,
        seed=11,
        suppress_below=1,
        rounding_base=1,
        secondary_suppression=False,
        epsilon_per_period=100,
        default_query_epsilon=EPSILON,
    )
    try:
        with fed.operator() as op:
            op.run_ceremony()
            op.run_linkage()
        yield fed
    finally:
        fed.stop()


def _read(fed: Federation, name: str) -> pd.DataFrame:
    return pd.read_csv(fed.directory / "data" / f"{name}.csv", dtype=str, keep_default_na=False)


def _truth(fed: Federation) -> pd.DataFrame:
    gt = pd.read_csv(fed.ground_truth, dtype=str, keep_default_na=False)
    gt["age"] = gt["age"].astype(int)
    return gt


def _released(release_table: pd.DataFrame) -> dict[str, int]:
    """Cells as counts; with threshold 1 only zeros are suppressed (zero included)."""
    cells = release_table[release_table["group"] != "Total"]
    assert set(cells["status"]) <= {"released", "primary"}
    return {
        str(g): 0 if status == "primary" else int(c)
        for g, c, status in zip(cells["group"], cells["count"], cells["status"], strict=True)
    }


def _close(got: dict[str, int], want: dict[str, int], rel: float, floor: int) -> None:
    for group in set(got) | set(want):
        g, w = got.get(group, 0), want.get(group, 0)
        assert abs(g - w) <= max(floor, rel * w), (group, g, w)


def test_person_chain_through_a_filter_node(exact: Federation) -> None:
    """Pupils not registered with a GP, by immigration status (education, health, immigration)."""
    spec = QuerySpec(
        PURPOSE,
        "education",
        "immigration",
        "immigration_status",
        conditions=(Condition("health", (Predicate("gp_registered", ("N",)),)),),
    )
    with exact.analyst() as analyst:
        release = analyst.query(spec)
    gt = _truth(exact)
    health = _read(exact, "health").set_index("record_id")
    imm = _read(exact, "immigration").set_index("record_id")
    pupils = gt[(gt.education_id != "") & (gt.health_id != "")]
    no_gp = pupils[pupils.health_id.map(health["gp_registered"]) == "N"]
    want: dict[str, int] = {}
    for _, p in no_gp.iterrows():
        group = (
            imm.loc[p.immigration_id, "immigration_status"]
            if p.immigration_id
            else unlinked_group("immigration")
        )
        want[group] = want.get(group, 0) + 1
    assert sum(want.values()) >= 5, "the synthetic data should hold some such pupils"
    _close(_released(release.table), want, rel=0.1, floor=2)


def test_household_chain_children_with_an_adult_in_custody(exact: Federation) -> None:
    """Pupils living with an adult in custody, by local authority: justice -> education."""
    spec = QuerySpec(
        PURPOSE,
        "education",
        "education",
        "local_authority",
        conditions=(
            Condition(
                "justice",
                (Predicate("sentence", ("custody",)), Predicate("age_band", ADULT_AGE_BANDS)),
                link="household",
            ),
        ),
        epsilon=EPSILON,
    )
    with exact.analyst() as analyst:
        release = analyst.query(spec)
    got = _released(release.table)

    # What the chain must compute, in the clear from the coordinator's store
    # and the justice node's own attributes: justice flags each of its own
    # (raw) households with a record in custody; each resolved household takes
    # the flag of one raw key, and each raw key's flag goes to one household
    # (household_flag_sources); a pupil counts when its resolved household
    # carries a flag.
    store = exact.coordinator.coordinator.store
    epoch = store.latest_epoch()
    justice_data = load_department_file(
        exact.directory / "data" / "justice.csv", "justice", exact.config.reference_date
    )
    attrs = justice_data.attributes.set_index(_read(exact, "justice").record_id)
    passes = (attrs.sentence == "custody") & attrs.age_band.isin(ADULT_AGE_BANDS)
    justice_ids = exact.record_ids("justice", epoch)
    raw = store.households(epoch, "justice")
    resolved = store.resolved_households(epoch, "justice")
    flagged_raw = {raw[t] for t in raw if passes[justice_ids[t]]}
    keyed = list(raw)
    sources = household_flag_sources([raw[t] for t in keyed], [resolved.get(t, b"") for t in keyed])
    flagged = {hh for hh, r in sources.items() if r in flagged_raw}
    pupils = store.resolved_households(epoch, "education")
    education = _read(exact, "education").set_index("record_id")
    # The household cap (1 by default): the first pupil of each flagged
    # household in the coordinator's token order carries its flag, so one
    # adult moves a count by at most the cap the noise is sized for.
    cap = exact.config.privacy.household_cap
    assert cap == 1
    ids = exact.record_ids("education", epoch)
    taken: dict[bytes, int] = {}
    want: dict[str, int] = {}
    uncapped = 0
    for token in store.tokens(epoch, "education"):
        hh = pupils.get(token)
        if hh not in flagged:
            continue
        uncapped += 1
        if taken.get(hh, 0) < cap:
            taken[hh] = taken.get(hh, 0) + 1
            la = education.loc[ids[token], "local_authority"]
            want[la] = want.get(la, 0) + 1
    assert uncapped > sum(want.values()), "some households hold several pupils"
    assert set(got) == set(
        ("Birmingham", "Bradford", "Bristol", "Camden", "Kent", "Leeds", "Manchester", "Newham")
    )
    _close(got, want, rel=0.0, floor=1)  # discrete Laplace noise at epsilon 12.5

    # Against the true households: those with a pupil and an adult in custody.
    gt = _truth(exact)
    custody = set(passes[passes].index)
    hh = set(gt[(gt.age >= 18) & gt.justice_id.isin(custody)].household_id)
    true_households = gt[(gt.education_id != "") & gt.household_id.isin(hh)].household_id
    assert sum(got.values()) >= 0.9 * true_households.nunique() - 1


def test_a_coordinator_announcing_less_noise_is_refused(
    exact: Federation, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every node re-derives the noise plan from the query: a coordinator that
    announces a smaller sensitivity (or fewer share-holders) is refused, and
    the refused query charges nothing."""
    from headcount.errors import PolicyRefused
    from headcount.privacy.sensitivity import NoisePlan

    def smaller(parties: list[str], spec: object, household_cap: int) -> NoisePlan:
        return NoisePlan(1, ("coordinator", *parties[1:]))

    monkeypatch.setattr("coordinator.queries.plan_noise", smaller)
    spent = {p: r.node.ledger.spent() for p, r in exact.nodes.items()}
    with exact.analyst() as analyst, pytest.raises(PolicyRefused, match="noise"):
        analyst.query(
            QuerySpec(PURPOSE, "education", "immigration", "immigration_status", epsilon=EPSILON)
        )
    assert {p: r.node.ledger.spent() for p, r in exact.nodes.items()} == spent


def test_household_keys_never_reach_a_node(exact: Federation) -> None:
    """Households are resolved and summed at the coordinator: no node receives
    a household key (its own, another's, or a resolved one), and the
    population node gets one ciphertext for each of its tokens, so it cannot
    tell which of its records sit in a flagged household."""
    store = exact.coordinator.coordinator.store
    epoch = store.latest_epoch()
    parties = exact.config.party_names
    own = {p: store.households(epoch, p) for p in parties}
    resolved = {p: store.resolved_households(epoch, p) for p in parties}
    assert any(resolved[p] != own[p] for p in parties), "resolution changed no record"
    keys = {k for p in parties for k in (*own[p].values(), *resolved[p].values())}
    mark = len(exact.recorder.messages)
    spec = QuerySpec(
        PURPOSE,
        "education",
        "education",
        "local_authority",
        conditions=(
            Condition("justice", (Predicate("sentence", ("custody",)),), link="household"),
        ),
        epsilon=1.0,
    )
    with exact.analyst() as analyst:
        analyst.query(spec)
    received = [(w, m, msg) for w, m, msg in exact.recorder.messages[mark:] if w != "coordinator"]
    assert {m for _, m, _ in received} >= {"EncryptIndicators", "AggregateByGroup"}
    for party in parties:
        blob = b"".join(msg.SerializeToString() for w, _, msg in received if w == party)
        assert not [k for k in keys if k in blob], party
    tokens = [
        t
        for w, m, msg in received
        if w == "education" and m == "AggregateByGroup" and msg.HasField("chunk")
        for t in msg.chunk.tokens
    ]
    assert sorted(tokens) == sorted(store.tokens(epoch, "education"))


def test_planner_refuses_what_it_cannot_plan(exact: Federation) -> None:
    from headcount.errors import InvalidRequest

    with exact.analyst() as analyst:
        with pytest.raises(InvalidRequest, match="population's own attribute"):
            analyst.query(QuerySpec(PURPOSE, "education", "education", "sen", epsilon=EPSILON))
        with pytest.raises(InvalidRequest, match="only once"):
            analyst.query(
                QuerySpec(
                    PURPOSE,
                    "education",
                    "immigration",
                    "immigration_status",
                    conditions=(Condition("education"),),
                    epsilon=EPSILON,
                )
            )


def test_filter_node_output_is_unlinkable(exact: Federation) -> None:
    """The coordinator cannot tell which records passed the filter node's predicate:
    every returned ciphertext is new (no kept ciphertext is returned unchanged)."""
    sent = [
        ct
        for m, msg in exact.recorder.of("health")
        if m == "ApplyPredicate" and msg.HasField("chunk")
        for ct in msg.chunk.ciphertexts
    ]
    returned = [
        ct
        for m, msg in exact.recorder.of("coordinator")
        if m == "ApplyPredicate"
        for ct in msg.ciphertexts
    ]
    assert sent and len(returned) == len(sent)
    assert not set(sent) & set(returned)
    assert len(set(returned)) == len(returned)


def test_cli_runs_a_documented_spec_file(exact: Federation, tmp_path: Path) -> None:

    from click.testing import CliRunner

    from headcount.cli import cli
    from headcount.demo import DEMO_PROJECT

    # The documented spec cites the demo's project: propose and approve it here.
    exact.approve_project(
        DEMO_PROJECT, "Demo project", "Count children across departments, never name them."
    )
    spec = Path(__file__).parents[2] / "docs" / "queries" / "children-with-adult-in-custody.yaml"
    out = tmp_path / "table.csv"
    result = CliRunner().invoke(
        cli,
        [
            "query",
            "--config",
            str(exact.directory / "federation.toml"),
            "--analyst",
            "commissioner",
            "--spec",
            str(spec),
            "--csv",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "living with an adult in custody" in result.output
    table = pd.read_csv(out)
    assert list(table.columns) == ["group", "count", "status", "low", "high", "noise_scale"]
    assert table["group"].iloc[-1] == "Total"


def _status_of(fed: Federation) -> tuple[pd.DataFrame, pd.DataFrame]:
    gt = _truth(fed)
    imm = _read(fed, "immigration").set_index("record_id")
    return gt, imm


def test_two_way_table_packs_the_populations_own_attribute(exact: Federation) -> None:
    """Pupils by immigration status x local authority: the origin packs 8 LA slots."""
    spec = QuerySpec(
        PURPOSE,
        "education",
        "immigration",
        "immigration_status",
        population_group_by="local_authority",
        epsilon=EPSILON,
    )
    with exact.analyst() as analyst:
        release = analyst.query(spec)
    table = release.table
    column = "education.local_authority"  # named with the population's party
    assert list(table.columns) == ["group", column, "count", "status", "low", "high", "noise_scale"]
    cells = table[(table.group != "Total") & (table[column] != "Total")]
    got = {
        (g, la): 0 if s == "primary" else int(c)
        for g, la, c, s in zip(
            cells.group, cells[column], cells["count"], cells.status, strict=True
        )
    }
    gt, imm = _status_of(exact)
    edu = _read(exact, "education").set_index("record_id")
    want: dict[tuple[str, str], int] = {}
    for _, p in gt[gt.education_id != ""].iterrows():
        status = (
            imm.loc[p.immigration_id, "immigration_status"]
            if p.immigration_id
            else unlinked_group("immigration")
        )
        key = (status, edu.loc[p.education_id, "local_authority"])
        want[key] = want.get(key, 0) + 1
    assert len(got) == 6 * 8
    for key in set(got) | set(want):
        g, w = got.get(key, 0), want.get(key, 0)
        assert abs(g - w) <= max(2, 0.1 * w), (key, g, w)


def test_mean_of_a_numeric_attribute(exact: Federation) -> None:
    """Mean absence rate of pupils, by immigration status (sum and count packed)."""
    spec = QuerySpec(
        PURPOSE,
        "education",
        "immigration",
        "immigration_status",
        measure="mean",
        measure_attribute="absence_rate",
        epsilon=EPSILON,
    )
    with exact.analyst() as analyst:
        release = analyst.query(spec)
    table = release.table
    assert "mean_absence_rate" in table.columns and "sum_absence_rate" in table.columns
    gt, imm = _status_of(exact)
    edu = _read(exact, "education").set_index("record_id")
    values: dict[str, list[float]] = {}
    for _, p in gt[gt.education_id != ""].iterrows():
        status = (
            imm.loc[p.immigration_id, "immigration_status"]
            if p.immigration_id
            else unlinked_group("immigration")
        )
        raw = edu.loc[p.education_id, "absence_rate"]
        if raw:
            values.setdefault(status, []).append(float(raw))
    checked = 0
    for group, mean in zip(table.group, table.mean_absence_rate, strict=True):
        if pd.isna(mean):
            assert len(values.get(group, [])) < 30 or group == "Total"
            continue
        total = sum(values[group])
        summed = float(table.loc[table.group == group, "sum_absence_rate"].iloc[0])
        # The sum's noise: twelve scales (see harness.mean_bounds) plus linkage error.
        bound = 12 * release.sensitivity * 3 / release.epsilon + 2 * max(values[group])
        assert abs(summed - total) <= bound + 0.05, (group, summed, total)
        bounds = mean_bounds(values[group], release)
        if bounds is None:
            continue  # the noisy count may be near zero: the mean is unbounded
        assert bounds[0] <= float(mean) <= bounds[1], (group, mean, bounds)
        checked += 1
    assert checked >= 2


def test_grouping_by_the_populations_own_attribute_with_a_condition(exact: Federation) -> None:
    """Pupils by local authority among those with an insecure status: the last condition sums."""
    insecure = ("limited_leave_nrpf", "asylum_seeker", "no_leave")
    spec = QuerySpec(
        PURPOSE,
        "education",
        "education",
        "local_authority",
        conditions=(Condition("immigration", (Predicate("immigration_status", insecure),)),),
        epsilon=EPSILON,
    )
    with exact.analyst() as analyst:
        release = analyst.query(spec)
    got = _released(release.table)
    assert "not known to immigration" not in got  # a condition, not a grouping
    gt, imm = _status_of(exact)
    edu = _read(exact, "education").set_index("record_id")
    want: dict[str, int] = {}
    for _, p in gt[(gt.education_id != "") & (gt.immigration_id != "")].iterrows():
        if imm.loc[p.immigration_id, "immigration_status"] in insecure:
            la = edu.loc[p.education_id, "local_authority"]
            want[la] = want.get(la, 0) + 1
    assert sum(want.values()) >= 10
    _close(got, want, rel=0.1, floor=2)

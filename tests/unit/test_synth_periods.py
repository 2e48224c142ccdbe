"""Tests for the multi-year synthetic population (headcount.synth.generate_periods).

The change between years is checked on the evaluation files against what the
department files say, so a generator that forgot to move people or advance
school years fails here rather than only making linkage look easy.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from headcount.errors import InvalidRequest
from headcount.synth import PeriodsSummary, generate_periods, snapshot_date
from party_node.data import load_department_file

PEOPLE, SEED = 3000, 5
YEARS = (2024, 2025, 2026)
PARTIES = (
    "education-2024",
    "immigration-2024",
    "education-2025",
    "immigration-2025",
    "education-2026",
    "health",
    "justice",
    "immigration-2026",
)


def _read(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / f"{name}.csv", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[PeriodsSummary, Path]:
    out = tmp_path_factory.mktemp("periods") / "data"
    return generate_periods(PEOPLE, SEED, out, years=YEARS), out


@pytest.fixture(scope="module")
def yearly(generated: tuple[PeriodsSummary, Path]) -> pd.DataFrame:
    frame = _read(generated[1], "ground_truth_periods")
    frame["age"] = frame["age"].astype(int)
    return frame


def _years_apart(yearly: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """People present in both years, one row each, columns suffixed _a and _b."""
    return yearly[yearly.period == a].merge(
        yearly[yearly.period == b], on="person_id", suffixes=("_a", "_b")
    )


def test_one_file_per_party_and_the_truth(generated: tuple[PeriodsSummary, Path]) -> None:
    summary, out = generated
    assert set(summary.records) == set(PARTIES)
    names = {p.stem for p in out.glob("*.csv")}
    assert names == {*PARTIES, "ground_truth", "ground_truth_periods"}
    for party, n in summary.records.items():
        assert len(_read(out, party)) == n > 0


def test_every_file_follows_its_departments_contract(
    generated: tuple[PeriodsSummary, Path],
) -> None:
    _, out = generated
    for party in PARTIES:
        department, _, year = party.partition("-")
        day = snapshot_date(int(year)) if year else snapshot_date(YEARS[-1])
        data = load_department_file(out / f"{party}.csv", department, day)
        assert data.records > 0


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    generate_periods(300, 1, a)
    generate_periods(300, 1, b)
    for path in a.iterdir():
        assert path.read_bytes() == (b / path.name).read_bytes(), path.name


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest):
        generate_periods(0, 1, tmp_path)
    with pytest.raises(InvalidRequest, match="increasing"):
        generate_periods(10, 1, tmp_path, years=(2025, 2024))
    with pytest.raises(InvalidRequest, match="unknown"):
        generate_periods(10, 1, tmp_path, period_departments=("police",))


def test_ground_truth_is_consistent(generated: tuple[PeriodsSummary, Path]) -> None:
    """Each record belongs to one person; each person's records in a year
    are in that year's truth; ids do not repeat across years."""
    _, out = generated
    truth = _read(out, "ground_truth")
    yearly = _read(out, "ground_truth_periods")
    assert truth.person_id.is_unique
    assert set(yearly.person_id) == set(truth.person_id)
    assert not yearly.duplicated(["person_id", "period"]).any()
    present = set(zip(yearly.person_id, yearly.period, strict=True))
    for party in PARTIES:
        ids = truth[f"{party}_id"]
        held = ids[ids != ""]
        assert held.is_unique and set(held) == set(_read(out, party).record_id), party
        year = party.partition("-")[2] or str(YEARS[-1])
        people = truth.person_id[ids != ""]
        assert all((p, year) in present for p in people), party
    # Record ids are the extract's own: a person's ids differ from year to year.
    both = truth[(truth["immigration-2024_id"] != "") & (truth["immigration-2026_id"] != "")]
    assert len(both) > 100
    assert (both["immigration-2024_id"] != both["immigration-2026_id"]).all()


def test_people_move_and_change_local_authority(yearly: pd.DataFrame) -> None:
    pairs = _years_apart(yearly, "2024", "2026")
    moved = (pairs.address_a != pairs.address_b).mean()
    other_la = (pairs.local_authority_a != pairs.local_authority_b).mean()
    assert 0.08 <= moved <= 0.30, moved
    assert 0.02 <= other_la < moved, other_la
    assert (pairs.age_b == pairs.age_a + 2).all()


def test_immigration_statuses_change(yearly: pd.DataFrame) -> None:
    pairs = _years_apart(yearly, "2024", "2026")
    non_british = pairs[pairs.british_a == "N"]
    changed = non_british[non_british.immigration_status_a != non_british.immigration_status_b]
    moves = set(zip(changed.immigration_status_a, changed.immigration_status_b, strict=True))
    assert len(changed) >= 0.05 * len(non_british)
    assert ("asylum_seeker", "limited_leave") in moves
    assert ("no_leave", "limited_leave") in moves or ("no_leave", "limited_leave_nrpf") in moves
    # Settled people naturalise: British a year later, with no status.
    year = _years_apart(yearly, "2025", "2026")
    naturalised = year[(year.british_a == "N") & (year.british_b == "Y")]
    assert len(naturalised) > 0
    assert set(naturalised.immigration_status_a) == {"settled"}
    assert set(naturalised.immigration_status_b) == {""}
    # Statuses only change for people who are not British.
    british = pairs[pairs.british_a == "Y"]
    assert set(british.immigration_status_b) == {""}


def test_the_immigration_files_follow_the_true_status(
    generated: tuple[PeriodsSummary, Path], yearly: pd.DataFrame
) -> None:
    _, out = generated
    truth = _read(out, "ground_truth").set_index("person_id")
    for year in YEARS:
        party = f"immigration-{year}"
        recorded = _read(out, party).set_index("record_id").immigration_status
        true = yearly[yearly.period == str(year)].set_index("person_id").immigration_status
        ids = truth[f"{party}_id"]
        held = ids[ids != ""]
        assert (recorded.loc[held.to_numpy()].to_numpy() == true.loc[held.index].to_numpy()).all()


def test_school_years_advance_and_pupils_enter_and_leave(
    generated: tuple[PeriodsSummary, Path], yearly: pd.DataFrame
) -> None:
    _, out = generated
    truth = _read(out, "ground_truth")
    e24 = _read(out, "education-2024").set_index("record_id")
    e25 = _read(out, "education-2025").set_index("record_id")
    both = truth[(truth["education-2024_id"] != "") & (truth["education-2025_id"] != "")]
    before = e24.loc[both["education-2024_id"], "year_group"].astype(int).to_numpy()
    after = e25.loc[both["education-2025_id"], "year_group"].astype(int).to_numpy()
    assert len(both) > 200
    assert (after == before + 1).all()
    # Leaving after year 13: nobody in year 13 in 2024 is at school in 2025.
    left = truth[truth["education-2024_id"].isin(e24.index[e24.year_group == "13"])]
    assert len(left) > 0 and (left["education-2025_id"] == "").all()
    # Reception: new pupils in 2025 in year 0 who were not at school in 2024.
    entered = truth[(truth["education-2025_id"] != "") & (truth["education-2024_id"] == "")]
    groups = e25.loc[entered["education-2025_id"], "year_group"]
    assert (groups == "0").sum() > 10
    # Ages at each snapshot say who may be at school.
    ages = yearly.set_index(["person_id", "period"]).age
    for year in YEARS:
        ids = truth[truth[f"education-{year}_id"] != ""].person_id
        at = ages.loc[[(p, str(year)) for p in ids]]
        assert at.between(4, 17).all()


def test_births_deaths_and_arrivals(
    generated: tuple[PeriodsSummary, Path], yearly: pd.DataFrame
) -> None:
    summary, _ = generated
    first = set(yearly.person_id[yearly.period == "2024"])
    last = yearly[yearly.period == "2026"]
    assert len(first) == PEOPLE
    assert summary.people > PEOPLE
    newcomers = last[~last.person_id.isin(first)]
    babies = newcomers[newcomers.age <= 1]
    assert len(babies) > 20
    assert len(newcomers) > len(babies)  # households arrived too
    gone = first - set(last.person_id)
    assert 0.01 * PEOPLE <= len(gone) <= 0.15 * PEOPLE


def test_snapshot_dates() -> None:
    assert snapshot_date(2024) == dt.date(2024, 3, 31)

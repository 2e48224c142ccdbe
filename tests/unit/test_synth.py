"""Tests for the synthetic population generator (headcount.synth).

Expected formats and categories are written out here rather than read back from
the module under test, so a silent change to what the generator writes fails.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pytest

from headcount import departments
from headcount.errors import InvalidRequest
from headcount.synth import REFERENCE_DATE, SynthSummary, generate_population

FILES = (*departments.DEPARTMENTS, "ground_truth")
DATE_FORMATS = {
    "education": "%Y-%m-%d",
    "health": "%d/%m/%Y",
    "justice": "%d %b %Y",
    "immigration": "%Y%m%d",
}
SEX_LABELS = {
    "education": {"F", "M", ""},
    "health": {"Female", "Male", ""},
    "justice": {"F", "M", ""},
    "immigration": {"F", "M", ""},
}
PEOPLE = 2000


def _read(out_dir: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out_dir / f"{name}.csv", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[SynthSummary, Path]:
    out_dir = tmp_path_factory.mktemp("synth") / "nested"  # must be created by the generator
    return generate_population(PEOPLE, 7, out_dir), out_dir


@pytest.fixture(scope="module")
def truth(generated: tuple[SynthSummary, Path]) -> pd.DataFrame:
    gt = _read(generated[1], "ground_truth")
    gt["age"] = gt["age"].astype(int)
    return gt


def _matched(out_dir: Path, truth: pd.DataFrame, dept: str) -> pd.DataFrame:
    """Each department record joined to its person's true row (true columns end in _t)."""
    frame = _read(out_dir, dept)
    covered = truth[truth[f"{dept}_id"] != ""]
    return covered.merge(frame, left_on=f"{dept}_id", right_on="record_id", suffixes=("_t", ""))


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_population(400, 11, a)
    generate_population(400, 11, b)
    generate_population(400, 12, c)
    for name in FILES:
        assert (a / f"{name}.csv").read_bytes() == (b / f"{name}.csv").read_bytes(), name
        assert (a / f"{name}.csv").read_bytes() != (c / f"{name}.csv").read_bytes(), name


@pytest.mark.parametrize("people", [0, -5])
def test_fewer_than_one_person_is_refused(tmp_path: Path, people: int) -> None:
    with pytest.raises(InvalidRequest):
        generate_population(people, 1, tmp_path)


def test_a_single_person_is_allowed(tmp_path: Path) -> None:
    summary = generate_population(1, 3, tmp_path)
    assert summary.people == 1
    assert summary.households == 1
    assert len(_read(tmp_path, "ground_truth")) == 1


def test_summary_matches_files(generated: tuple[SynthSummary, Path], truth: pd.DataFrame) -> None:
    summary, out_dir = generated
    assert summary.people == PEOPLE == len(truth)
    assert summary.households == truth["household_id"].nunique()
    assert summary.out_dir == out_dir
    assert set(summary.records) == set(departments.DEPARTMENTS)
    for dept in departments.DEPARTMENTS:
        assert summary.records[dept] == len(_read(out_dir, dept))


@pytest.mark.parametrize("dept", departments.DEPARTMENTS)
def test_department_file_follows_contract(generated: tuple[SynthSummary, Path], dept: str) -> None:
    frame = _read(generated[1], dept)
    assert tuple(frame.columns) == departments.columns(dept)
    assert len(frame) > 0
    assert frame["record_id"].is_unique
    assert (frame["record_id"] != "").all()
    for attr in departments.ATTRIBUTES[dept]:
        values = frame[attr.name]
        if attr.is_numeric:
            assert attr.minimum is not None and attr.maximum is not None
            numbers = values.astype(float)
            assert numbers.between(attr.minimum, attr.maximum).all(), attr.name
            assert values.str.fullmatch(r"\d\.\d{3}").all(), attr.name
        else:
            assert set(values) <= set(attr.categories), attr.name
    assert set(frame["sex"]) <= SEX_LABELS[dept]
    assert ((frame["first_name"].str.strip() != "") | (frame["last_name"].str.strip() != "")).all()


def test_ground_truth_columns(truth: pd.DataFrame) -> None:
    assert list(truth.columns) == [
        "person_id",
        "household_id",
        "first_name",
        "last_name",
        "date_of_birth",
        "sex",
        "postcode",
        "address",
        "local_authority",
        "age",
        "education_id",
        "health_id",
        "justice_id",
        "immigration_id",
    ]
    assert truth["person_id"].is_unique
    assert set(truth["sex"]) == {"F", "M"}
    assert set(truth["local_authority"]) <= set(departments.LOCAL_AUTHORITIES)


@pytest.mark.parametrize("dept", departments.DEPARTMENTS)
def test_every_record_belongs_to_exactly_one_person(
    generated: tuple[SynthSummary, Path], truth: pd.DataFrame, dept: str
) -> None:
    frame = _read(generated[1], dept)
    ids = truth[f"{dept}_id"]
    linked = ids[ids != ""]
    assert linked.is_unique
    assert set(linked) == set(frame["record_id"])


def test_row_order_does_not_follow_person_order(
    generated: tuple[SynthSummary, Path], truth: pd.DataFrame
) -> None:
    frame = _read(generated[1], "health")
    person_of = dict(zip(truth["health_id"], truth.index, strict=True))
    positions = pd.Series([person_of[r] for r in frame["record_id"]])
    # Positions are ranks already, so Pearson here is Spearman's rank correlation.
    assert abs(positions.corr(pd.Series(range(len(positions))))) < 0.1


def test_ages_match_dates_of_birth(truth: pd.DataFrame) -> None:
    for dob_text, age in zip(truth["date_of_birth"], truth["age"], strict=True):
        dob = date.fromisoformat(dob_text)
        had_birthday = (REFERENCE_DATE.month, REFERENCE_DATE.day) >= (dob.month, dob.day)
        assert REFERENCE_DATE.year - dob.year - (0 if had_birthday else 1) == age
    assert truth["age"].between(0, 85).all()


def test_households_look_like_households(truth: pd.DataFrame) -> None:
    children = truth["age"] < 18
    assert 0.18 <= children.mean() <= 0.28
    by_household = truth.groupby("household_id")
    # Every household has an adult, and its members share postcode and address.
    assert (by_household["age"].max() >= 18).all()
    assert (by_household["postcode"].nunique() == 1).all()
    assert (by_household["address"].nunique() == 1).all()
    # ... and no two households share an address (else keyed addresses merge them).
    homes = by_household[["address", "postcode"]].first()
    assert not homes.duplicated().any()
    sizes = by_household.size()
    assert sizes.min() == 1
    assert sizes.max() >= 5
    leaders = by_household["last_name"].transform("first")
    assert 0.8 <= (truth["last_name"] == leaders).mean() < 1.0
    # Non-British households bring accented names.
    assert truth["last_name"].str.contains(r"[^\x00-\x7f]").any()


def test_coverage_is_realistic(generated: tuple[SynthSummary, Path], truth: pd.DataFrame) -> None:
    age = truth["age"]
    in_education = truth["education_id"] != ""
    school_age = age.between(4, 17)
    assert in_education[school_age].mean() >= 0.85
    assert not in_education[~school_age].any()
    assert 0.93 <= (truth["health_id"] != "").mean() <= 0.995
    in_justice = truth["justice_id"] != ""
    assert 0.01 <= in_justice[age >= 18].mean() <= 0.06
    assert not in_justice[age < 10].any()
    in_immigration = truth["immigration_id"] != ""
    # Immigration holds whole households at a time, and only a minority of them.
    household_share = in_immigration.groupby(truth["household_id"]).mean()
    touched = household_share[household_share > 0]
    assert 0.04 <= len(touched) / len(household_share) <= 0.2
    assert (touched >= 0.5).mean() >= 0.9
    frame = _read(generated[1], "immigration")
    assert set(frame["immigration_status"]) == set(departments.STATUSES)


@pytest.mark.parametrize("dept", departments.DEPARTMENTS)
def test_department_attributes_are_the_households(
    generated: tuple[SynthSummary, Path], truth: pd.DataFrame, dept: str
) -> None:
    matched = _matched(generated[1], truth, dept)
    assert (matched["local_authority"] == matched["local_authority_t"]).all()
    if dept == "education":
        expected = (matched["age"] - 4).clip(0, 13).astype(str)
        assert (matched["year_group"] == expected).all()


@pytest.mark.parametrize("dept", departments.DEPARTMENTS)
def test_dates_use_the_department_format(
    generated: tuple[SynthSummary, Path], truth: pd.DataFrame, dept: str
) -> None:
    matched = _matched(generated[1], truth, dept)
    recorded = matched.loc[matched["date_of_birth"] != ""]
    assert len(recorded) >= 0.98 * len(matched)
    parsed = [datetime.strptime(d, DATE_FORMATS[dept]).date() for d in recorded["date_of_birth"]]
    true = [date.fromisoformat(d) for d in recorded["date_of_birth_t"]]
    same = sum(p == t for p, t in zip(parsed, true, strict=True)) / len(parsed)
    assert same >= 0.97


def test_recording_errors_appear_at_roughly_the_stated_rates(
    generated: tuple[SynthSummary, Path], truth: pd.DataFrame
) -> None:
    edu = _matched(generated[1], truth, "education")
    assert 0.03 <= (edu["first_name"] != edu["first_name_t"]).mean() <= 0.20

    health = _matched(generated[1], truth, "health")
    assert 0.02 <= (health["last_name"] != health["last_name_t"]).mean() <= 0.15
    assert 0.03 <= (health["first_name"] != health["first_name_t"]).mean() <= 0.20
    assert 0.005 <= (health["postcode"] == "").mean() <= 0.05
    assert 0.0 < (health["sex"] == "").mean() <= 0.03
    moved = (health["postcode"] != health["postcode_t"]) & (health["postcode"] != "")
    assert 0.02 <= moved.mean() <= 0.10
    recorded = health[health["date_of_birth"] != ""]
    parsed = pd.to_datetime(recorded["date_of_birth"], format="%d/%m/%Y")
    true = pd.to_datetime(recorded["date_of_birth_t"], format="%Y-%m-%d")
    swapped = (parsed != true) & (parsed.dt.day == true.dt.month) & (parsed.dt.month == true.dt.day)
    assert 0.0 < swapped.mean() <= 0.02
    # The same person is recorded differently by different departments.
    both = health.merge(edu[["person_id", "first_name"]], on="person_id", suffixes=("", "_edu"))
    assert (both["first_name"] != both["first_name_edu"]).any()

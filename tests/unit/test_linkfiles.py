"""headcount link-files: the federation's engine on local files, checked against truth."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from headcount.cli import cli
from headcount.errors import InvalidInput, InvalidRequest
from headcount.linkage.normalise import normalise_date
from headcount.linkage.schema import DEFAULT_LINKAGE_SCHEMA
from headcount.linkfiles import link_files
from headcount.synth import generate_population


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("linkfiles")
    generate_population(1500, 5, out)
    return out


def test_two_files_match_ground_truth(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs.csv"
    result = CliRunner().invoke(
        cli,
        ["link-files", str(data / "education.csv"), str(data / "health.csv"), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    pairs = pd.read_csv(out, dtype=str)
    assert list(pairs.columns) == ["id_a", "id_b", "score"]
    scores = pairs["score"].astype(float)
    # Exact match-key links may score below the Dice threshold (a moved
    # address, a nickname); the rest are CLK links at or above it.
    assert ((scores >= 0) & (scores <= 1)).all()
    assert (scores >= DEFAULT_LINKAGE_SCHEMA.threshold).mean() >= 0.95
    truth = pd.read_csv(data / "ground_truth.csv", dtype=str, keep_default_na=False)
    true_pairs = {
        (e, h) for e, h in zip(truth.education_id, truth.health_id, strict=True) if e and h
    }
    found = set(zip(pairs.id_a, pairs.id_b, strict=True))
    precision = len(found & true_pairs) / len(found)
    recall = len(found & true_pairs) / len(true_pairs)
    assert precision >= 0.97 and recall >= 0.95, (precision, recall)


def test_three_files_name_their_parties(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs.csv"
    summary = link_files(
        [data / "education.csv", data / "health.csv", data / "immigration.csv"], out, threshold=0.8
    )
    pairs = pd.read_csv(out, dtype=str)
    assert list(pairs.columns) == ["party_a", "id_a", "party_b", "id_b", "score"]
    assert set(pairs.party_a) | set(pairs.party_b) <= {"education", "health", "immigration"}
    assert summary.pairs_written == len(pairs) > 0
    # At most one record per party per cluster: no id is linked twice to one party.
    for party in ("education", "health", "immigration"):
        left = pairs[pairs.party_a == party][["id_a", "party_b"]]
        assert not left.duplicated().any()


def test_a_bad_file_writes_nothing(data: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("record_id,first_name\n1,Ann\n")
    out = tmp_path / "pairs.csv"
    with pytest.raises(InvalidInput, match="missing column"):
        link_files([data / "health.csv", bad], out, threshold=0.8)
    assert not out.exists()
    assert not (tmp_path / "pairs.csv.partial").exists()


def test_id_a_comes_from_the_first_file_named(data: Path, tmp_path: Path) -> None:
    """Named health first: id_a is a health id, although "education" sorts first."""
    out = tmp_path / "pairs.csv"
    link_files([data / "health.csv", data / "education.csv"], out, threshold=0.8, seed=7)
    pairs = pd.read_csv(out, dtype=str)
    health = set(pd.read_csv(data / "health.csv", dtype=str).record_id)
    education = set(pd.read_csv(data / "education.csv", dtype=str).record_id)
    assert len(pairs) > 0
    assert set(pairs.id_a) <= health and set(pairs.id_b) <= education
    # Three files: party_a is always the one named earlier on the command line.
    three = tmp_path / "three.csv"
    link_files(
        [data / "immigration.csv", data / "health.csv", data / "education.csv"],
        three,
        threshold=0.8,
        seed=7,
    )
    rank = {"immigration": 0, "health": 1, "education": 2}
    got = pd.read_csv(three, dtype=str)
    assert (got.party_a.map(rank) < got.party_b.map(rank)).all()


def test_a_seed_makes_the_run_repeatable(data: Path, tmp_path: Path) -> None:
    files = [data / "education.csv", data / "health.csv"]
    runs = []
    for name in ("a.csv", "b.csv"):
        link_files(files, tmp_path / name, threshold=0.8, seed=42)
        runs.append((tmp_path / name).read_bytes())
    assert runs[0] == runs[1]
    link_files(files, tmp_path / "c.csv", threshold=0.8, seed=43)
    # Another seed gives other keys: the same links (scores move only with
    # the keyed hashing), never a different file format.
    other = pd.read_csv(tmp_path / "c.csv", dtype=str)
    assert list(other.columns) == ["id_a", "id_b", "score"] and len(other) > 0


def test_the_output_directory_is_made_or_refused_before_any_work(
    data: Path, tmp_path: Path
) -> None:
    files = [data / "education.csv", data / "health.csv"]
    deep = tmp_path / "new" / "dir" / "pairs.csv"
    link_files(files, deep, threshold=0.8, seed=1)
    assert deep.exists()
    # A path through a regular file cannot become a directory: refused at once,
    # before the (bad) input is even read.
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    bad = tmp_path / "bad.csv"
    bad.write_text("record_id,first_name\n1,Ann\n")
    result = CliRunner().invoke(
        cli, ["link-files", str(bad), str(files[1]), "--out", str(blocker / "pairs.csv")]
    )
    assert result.exit_code != 0
    assert "output directory" in result.output and "Traceback" not in result.output
    assert "missing column" not in result.output
    with pytest.raises(InvalidRequest, match="is a directory"):
        link_files(files, tmp_path, threshold=0.8)


def _foreign(src: Path, dst: Path, date_style: str) -> None:
    """The synthetic file as a non-UK register writes it: other column names, no
    sex, 4-digit postcodes, another date style, and one impossible date."""
    frame = pd.read_csv(src, dtype=str, keep_default_na=False)
    iso = [normalise_date(d) for d in frame.date_of_birth]  # UK files: day-first
    dates = pd.to_datetime(pd.Series(iso).replace("", None), format="%Y-%m-%d")
    out = pd.DataFrame(
        {
            "record_id": frame.record_id,
            "given_name": frame.first_name,
            "surname": frame.last_name,
            "dob": dates.dt.strftime(date_style).fillna(""),
            # One code per UK postcode, as a stand-in for any 4-digit system.
            "postcode": [
                f"{int.from_bytes(p.encode(), 'big') % 9000 + 1000}" if p else ""
                for p in frame.postcode
            ],
        }
    )
    out.loc[0, "dob"] = "19450493"
    out.to_csv(dst, index=False)


def test_a_non_uk_file_links_through_its_schema(data: Path, tmp_path: Path) -> None:
    """Renamed columns, no sex, 4-digit postcodes, month-first dates on one side
    and year/month/day on the other, an impossible date in each."""
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    _foreign(data / "education.csv", a, "%m/%d/%Y")
    _foreign(data / "health.csv", b, "%Y/%m/%d")
    args = ["link-files", str(a), str(b), "--column", "first_name=given_name"]
    args += ["--column", "last_name=surname", "--column", "date_of_birth=dob"]
    args += ["--postcodes", "any", "--seed", "3"]
    out = tmp_path / "pairs.csv"
    refused = CliRunner().invoke(cli, [*args, "--out", str(out)])
    # Without --blank-invalid the impossible date refuses the file, naming
    # line and column and the accepted styles.
    assert refused.exit_code != 0 and not out.exists()
    assert "line 2, column 'dob'" in refused.output and "MM/DD/YYYY" in refused.output
    result = CliRunner().invoke(cli, [*args, "--blank-invalid", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "month-first" in result.output and "1 unreadable values blanked" in result.output
    assert "no column for: sex" in result.output
    truth = pd.read_csv(data / "ground_truth.csv", dtype=str, keep_default_na=False)
    true_pairs = {
        (e, h) for e, h in zip(truth.education_id, truth.health_id, strict=True) if e and h
    }
    pairs = pd.read_csv(out, dtype=str)
    found = set(zip(pairs.id_a, pairs.id_b, strict=True))
    precision = len(found & true_pairs) / len(found)
    recall = len(found & true_pairs) / len(true_pairs)
    assert precision >= 0.97 and recall >= 0.95, (precision, recall)
    # Match-keys still work without sex: the derived hierarchy found links.
    assert "match-keys: mk1" in result.output
    assert " 0 by match-key" not in result.output

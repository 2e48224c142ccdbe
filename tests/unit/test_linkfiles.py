"""headcount link-files: the federation's engine on local files, checked against truth."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from headcount.cli import cli
from headcount.errors import InvalidInput
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

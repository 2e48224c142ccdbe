"""The demo as a user runs it: real OS processes on loopback, checked against ground truth.

``headcount demo`` starts four party nodes and a coordinator as separate
processes, runs the ceremony, a linkage epoch and the demo queries, and writes
the released tables. Each released cell must agree with the count computed
directly from the synthetic ground truth, within the rounding, the noise and a
small linkage error; each suppressed cell must be one that could be small.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from headcount.query import unlinked_group

PEOPLE = 1500


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("demo") / "run"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "headcount.cli",
            "demo",
            "--people",
            str(PEOPLE),
            "--paillier-bits",
            "1024",
            "--dir",
            str(directory),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Children in education by immigration status" in result.stdout
    return directory


def _truth_counts(directory: Path, spec: dict[str, object]) -> dict[str, int]:
    truth = pd.read_csv(
        directory / "evaluation" / "ground_truth.csv", dtype=str, keep_default_na=False
    )
    pop, grp = str(spec["population_party"]), str(spec["group_party"])
    attr = str(spec["group_by"])
    pop_file = pd.read_csv(directory / "data" / f"{pop}.csv", dtype=str, keep_default_na=False)
    grp_file = pd.read_csv(directory / "data" / f"{grp}.csv", dtype=str, keep_default_na=False)
    keep = pd.Series(True, index=pop_file.index)
    for column, values in dict(spec["population_filters"]).items():  # type: ignore[call-overload]
        keep &= pop_file[column].isin(values)
    members = set(pop_file.loc[keep, "record_id"])
    value_of = dict(zip(grp_file["record_id"], grp_file[attr], strict=True))
    counts: dict[str, int] = {}
    for _, person in truth[truth[f"{pop}_id"].isin(members)].iterrows():
        gid = person[f"{grp}_id"]
        group = value_of[gid] if gid else unlinked_group(grp)
        counts[group] = counts.get(group, 0) + 1
    return counts


def test_demo_processes_stop_cleanly(demo_dir: Path) -> None:
    logs = {p.name: p.read_text() for p in (demo_dir / "logs").glob("*.log")}
    assert set(logs) == {
        "education.log",
        "health.log",
        "justice.log",
        "immigration.log",
        "coordinator.log",
    }
    for name, text in logs.items():
        assert "stopping" in text, f"{name} did not shut down gracefully"
        assert "Traceback" not in text, f"{name} logged an error"


def test_released_counts_match_ground_truth(demo_dir: Path) -> None:
    summary = json.loads((demo_dir / "releases" / "summary.json").read_text())
    assert summary["people"] == PEOPLE
    checked = 0
    for q in summary["queries"]:
        table = pd.read_csv(demo_dir / "releases" / q["file"], dtype={"count": "Int64"})
        truth = _truth_counts(demo_dir, q["spec"])
        cells = table[table["group"] != "Total"]
        scale = 1 / q["epsilon"]
        # |discrete Laplace| exceeds this with probability < 1e-6 over the table.
        noise = scale * math.log(2 * len(cells) * 1e6)
        for _, cell in cells.iterrows():
            t = truth.get(cell["group"], 0)
            linkage = max(5.0, 0.05 * t)
            if cell["status"] == "released":
                assert abs(int(cell["count"]) - t) <= 2.5 + noise + linkage, (
                    q["title"],
                    cell["group"],
                )
                assert int(cell["count"]) % 5 == 0 and int(cell["count"]) >= 10
                checked += 1
            elif cell["status"] == "primary":
                assert pd.isna(cell["count"])
                assert t < 10 + noise + linkage, (q["title"], cell["group"])
            else:
                assert cell["status"] == "secondary" and pd.isna(cell["count"])
        total = table[table["group"] == "Total"].iloc[0]
        if total["status"] == "released":
            n = sum(truth.values())
            assert abs(int(total["count"]) - n) <= 2.5 + noise * math.sqrt(len(cells)) + max(
                5, 0.02 * n
            )
    assert checked >= 5

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

from headcount.departments import age_band
from headcount.domain.query import unlinked_group

PEOPLE = 5000


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
    assert "living with an adult in custody" in result.stdout
    # Every table is printed with its 95% intervals, and the guessing bound.
    assert "95% interval" in result.stdout
    assert "73.1% sure" in result.stdout
    return directory


def _band(age: int) -> str:
    return age_band(age)


def _passes(record: pd.Series, filters: list[dict[str, object]], age: int) -> bool:
    for f in filters:
        attr, values = str(f["attribute"]), list(f["values"])  # type: ignore[call-overload]
        value = _band(age) if attr == "age_band" else record[attr]
        if value not in values:
            return False
    return True


def _truth_counts(directory: Path, spec: dict[str, object]) -> tuple[dict[str, int], bool]:
    """True counts for a demo spec from the ground truth; and whether it uses households."""
    truth = pd.read_csv(
        directory / "evaluation" / "ground_truth.csv", dtype=str, keep_default_na=False
    )
    truth["age"] = truth["age"].astype(int)
    files = {
        d: pd.read_csv(directory / "data" / f"{d}.csv", dtype=str, keep_default_na=False).set_index(
            "record_id"
        )
        for d in ("education", "health", "justice", "immigration")
    }
    pop, grp, attr = str(spec["population_party"]), str(spec["group_party"]), str(spec["group_by"])
    conditions = list(spec["conditions"])  # type: ignore[call-overload]

    def ok(person: pd.Series, party: str, filters: list[dict[str, object]]) -> bool:
        rid = person[f"{party}_id"]
        return bool(rid) and _passes(files[party].loc[rid], filters, int(person["age"]))

    flagged_households: set[str] | None = None
    for c in conditions:
        if c["link"] == "household":
            flagged_households = {
                p["household_id"] for _, p in truth.iterrows() if ok(p, c["party"], c["filters"])
            }
    counts: dict[str, int] = {}
    for _, person in truth.iterrows():
        if not ok(person, pop, spec["population_filters"]):  # type: ignore[arg-type]
            continue
        if flagged_households is not None and person["household_id"] not in flagged_households:
            continue
        if not all(
            ok(person, c["party"], c["filters"]) for c in conditions if c["link"] == "person"
        ):
            continue
        gid = person[f"{grp}_id"]
        group = files[grp].loc[gid, attr] if gid else unlinked_group(grp)
        counts[group] = counts.get(group, 0) + 1
    return counts, flagged_households is not None


def test_demo_processes_stop_cleanly(demo_dir: Path) -> None:
    logs = {p.name: p.read_text() for p in (demo_dir / "logs").glob("*.log")}
    assert set(logs) == {
        "education.log",
        "health.log",
        "justice.log",
        "immigration.log",
        "coordinator.log",
        "register.log",
    }
    for name, text in logs.items():
        assert "Traceback" not in text, f"{name} logged an error"
        if name != "register.log":  # a plain HTTP server: nothing to drain
            assert "stopping" in text, f"{name} did not shut down gracefully"


def test_demo_writes_the_quality_report_and_the_register(demo_dir: Path) -> None:
    """What the demo prints the locations of exists, is self-contained and is right."""
    reports = list((demo_dir / "reports").glob("quality-*.html"))
    assert len(reports) == 1
    report = reports[0].read_text(encoding="utf-8")
    assert "http://" not in report and "https://" not in report
    assert report.count("data:image/png;base64,") >= 3
    index = (demo_dir / "register" / "index.html").read_text(encoding="utf-8")
    assert "Audit log verified" in index
    summary = json.loads((demo_dir / "releases" / "summary.json").read_text())
    # Every demo query and every quality-report query is listed on the register.
    released = [q for q in summary["queries"] if q["file"]]
    assert index.count('href="query-') >= len(released)
    assert "children-across-time" not in index  # another federation, another register


def test_demo_releases_the_children_across_time_tables(demo_dir: Path) -> None:
    releases = demo_dir / "longitudinal" / "releases"
    transition = pd.read_csv(releases / "transition-immigration-status.csv")
    cohort = pd.read_csv(releases / "cohort-absence-no-leave.csv")
    assert transition["group"].iloc[-1] == "Total" and len(transition) > 10
    assert "mean_absence_rate" in cohort.columns
    # A mean is the noisy sum over the noisy count, shown as it is (it may fall
    # outside [0, 1] when noise outweighs a small sum); its 95% interval lies
    # within the attribute's declared range.
    shown = cohort.dropna(subset=["mean_absence_rate"])
    assert len(shown) >= 1
    assert ((shown["mean_low"] >= 0) & (shown["mean_low"] <= shown["mean_high"])).all()
    assert (shown["mean_high"] <= 1).all()


def test_released_counts_match_ground_truth(demo_dir: Path) -> None:
    summary = json.loads((demo_dir / "releases" / "summary.json").read_text())
    assert summary["people"] == PEOPLE
    checked = 0
    for q in summary["queries"]:
        truth, households = _truth_counts(demo_dir, q["spec"])
        if q["refused"]:
            # Only the minimum-population rule may refuse a demo query, and
            # only when the population really is small.
            assert "minimum" in q["refused"]
            continue
        table = pd.read_csv(demo_dir / "releases" / q["file"], dtype={"count": "Int64"})
        cells = table[table["group"] != "Total"]
        scale = 1 / q["epsilon"]
        # |discrete Laplace| exceeds this with probability < 1e-6 over the table.
        noise = scale * math.log(2 * len(cells) * 1e6)
        for _, cell in cells.iterrows():
            t = truth.get(cell["group"], 0)
            # Household links also miss people recorded at an old address.
            linkage = max(5.0, (0.2 if households else 0.05) * t)
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
            slack = max(5, (0.2 if households else 0.02) * n)
            assert abs(int(total["count"]) - n) <= 2.5 + noise * math.sqrt(len(cells)) + slack
    assert checked >= 3

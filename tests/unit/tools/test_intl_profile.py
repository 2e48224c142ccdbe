"""The international synthetic profile: shape, truth, errors, date styles, duplicates."""

from __future__ import annotations

import csv
import datetime as dt
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from headcount.errors import InvalidRequest
from headcount.linkage.normalise import normalise_name
from headcount.tools.intl_profile import COLUMNS, dedup_file, make_people, two_files
from party_node.data import ReadOptions, read_identity_file

N = 800


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as fh:
        return next(csv.reader(fh))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("intl")
    two_files(N, 5, out)
    dedup_file(N, 5, out)
    return out


def test_columns_and_no_sex(files: Path) -> None:
    for name in ("a.csv", "b.csv", "dups.csv"):
        header = _header(files / name)
        assert tuple(header) == COLUMNS
        assert not {"sex", "gender"} & {h.lower() for h in header}


def test_same_seed_same_bytes_and_another_seed_differs(files: Path, tmp_path: Path) -> None:
    two_files(N, 5, tmp_path / "again")
    dedup_file(N, 5, tmp_path / "again")
    for name in ("a.csv", "b.csv", "truth.csv", "dups.csv", "dups_truth.csv"):
        assert (tmp_path / "again" / name).read_bytes() == (files / name).read_bytes()
    two_files(N, 6, tmp_path / "other")
    assert (tmp_path / "other" / "b.csv").read_bytes() != (files / "b.csv").read_bytes()


def test_truth_is_consistent_and_most_people_are_in_both(files: Path) -> None:
    a = {r["record_id"]: r for r in _rows(files / "a.csv")}
    b = {r["record_id"]: r for r in _rows(files / "b.csv")}
    truth = _rows(files / "truth.csv")
    assert len(a) == len(_rows(files / "a.csv")) and len(b) == len(_rows(files / "b.csv"))
    assert {t["id_a"] for t in truth} <= set(a) and {t["id_b"] for t in truth} <= set(b)
    assert len({t["id_a"] for t in truth}) == len({t["id_b"] for t in truth}) == len(truth)
    assert 0.75 * N < len(truth) < 0.85 * N
    assert 0.85 * N < len(a) < 0.95 * N and 0.85 * N < len(b) < 0.95 * N
    # A true pair shares its date of birth more often than not (B's errors aside),
    # and a random pairing almost never does.
    same_year = sum(
        a[t["id_a"]]["date_of_birth"][:4] in b[t["id_b"]]["date_of_birth"] for t in truth
    )
    assert same_year > 0.8 * len(truth)


def test_b_is_corrupted_more_heavily_than_a(files: Path) -> None:
    people = make_people(N, 5)
    clean = {
        normalise_name(f"{g} {s}") for g, s in zip(people.given_name, people.surname, strict=True)
    }

    def dirty(path: Path) -> float:
        rows = _rows(path)
        return sum(
            normalise_name(f"{r['given_name']} {r['surname']}") not in clean for r in rows
        ) / len(rows)

    assert dirty(files / "a.csv") < 0.08
    assert dirty(files / "b.csv") > 0.2
    assert dirty(files / "b.csv") > 3 * dirty(files / "a.csv")


def test_b_has_every_kind_of_error(files: Path) -> None:
    a = {r["record_id"]: r for r in _rows(files / "a.csv")}
    b = {r["record_id"]: r for r in _rows(files / "b.csv")}
    pairs = [(a[t["id_a"]], b[t["id_b"]]) for t in _rows(files / "truth.csv")]
    swapped = sum(
        x["given_name"] == y["surname"] and x["surname"] == y["given_name"] for x, y in pairs
    )
    blank = Counter(
        k
        for _, y in pairs
        for k in ("given_name", "surname", "date_of_birth", "postcode")
        if not y[k]
    )
    ocr = sum(bool(re.search(r"[0-9]", y["given_name"] + y["surname"])) for _, y in pairs)
    truncated = sum(len(y["given_name"]) == 1 for _, y in pairs)
    assert swapped > 0 and ocr > 0 and truncated > 0
    assert blank["date_of_birth"] > 0 and blank["postcode"] > 0
    assert sum(not y["reference"] for _, y in pairs) > 0.3 * len(pairs)


def _is_date(y: str, m: str, d: str) -> bool:
    try:
        dt.date(int(y), int(m), int(d))
    except ValueError:
        return False
    return True


def test_date_styles_differ_between_files_and_b_has_impossible_dates(files: Path) -> None:
    a_dates = [r["date_of_birth"] for r in _rows(files / "a.csv") if r["date_of_birth"]]
    assert all(re.fullmatch(r"\d{8}", d) for d in a_dates)
    styles: Counter[str] = Counter()
    impossible = 0
    for r in _rows(files / "b.csv"):
        d = r["date_of_birth"]
        if m := re.fullmatch(r"(\d{2})/(\d{2})/(\d{4})", d):
            styles["DD/MM/YYYY"] += 1
            impossible += not _is_date(m[3], m[2], m[1])
        elif m := re.fullmatch(r"(\d{4})/(\d{2})/(\d{2})", d):
            styles["YYYY/MM/DD"] += 1
            impossible += not _is_date(m[1], m[2], m[3])
        else:
            styles["other"] += 1  # blank, or a digit turned into a letter
    assert styles["DD/MM/YYYY"] > styles["YYYY/MM/DD"] > 0.3 * N
    assert impossible > 0


def test_link_files_reads_both_files(files: Path) -> None:
    options = ReadOptions(
        columns={"first_name": "given_name", "last_name": "surname"},
        postcodes="any",
        blank_invalid=True,
        optional=frozenset({"date_of_birth", "sex", "postcode"}),
    )
    a = read_identity_file(files / "a.csv", options)
    b = read_identity_file(files / "b.csv", options)
    assert len(a.identities) == len(_rows(files / "a.csv"))
    assert b.report.date_order.order == "day-first"
    four_digits = sum(bool(re.fullmatch(r"\d{4}", i.postcode)) for i in a.identities)
    assert four_digits > 0.95 * len(a.identities)  # A's few slips aside


def test_dedup_file_has_duplicates_and_a_consistent_truth(files: Path) -> None:
    rows = _rows(files / "dups.csv")
    truth = _rows(files / "dups_truth.csv")
    assert [t["record_id"] for t in truth] == [r["record_id"] for r in rows]
    assert len({r["record_id"] for r in rows}) == len(rows)
    per_person = Counter(t["person_id"] for t in truth)
    assert len(per_person) == N
    assert max(per_person.values()) <= 4
    duplicated = sum(n > 1 for n in per_person.values())
    assert 0.25 * N < duplicated < 0.35 * N
    assert len(rows) == N + sum(n - 1 for n in per_person.values())
    # Copies differ: most duplicated people's records are not all identical.
    by_person: dict[str, set[tuple[str, ...]]] = {}
    for r, t in zip(rows, truth, strict=True):
        by_person.setdefault(t["person_id"], set()).add(
            tuple(v for k, v in r.items() if k != "record_id")
        )
    varied = sum(len(v) > 1 for p, v in by_person.items() if per_person[p] > 1)
    assert varied > 0.8 * duplicated


def test_too_few_people_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest):
        two_files(0, 1, tmp_path)
    with pytest.raises(InvalidRequest):
        dedup_file(0, 1, tmp_path)


def test_five_thousand_people_take_well_under_thirty_seconds(tmp_path: Path) -> None:
    start = time.perf_counter()
    two_files(5000, 1, tmp_path)
    assert time.perf_counter() - start < 15

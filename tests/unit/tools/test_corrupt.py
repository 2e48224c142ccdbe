"""The corruption tool: determinism, rates, each error's effect, files and the command line."""

from __future__ import annotations

import csv
import datetime as dt
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headcount.errors import InvalidInput, InvalidRequest
from headcount.tools.corrupt import (
    DEFAULT_ERRORS,
    ERRORS,
    CorruptionSpec,
    Table,
    corrupt_file,
    corrupt_table,
    corrupt_value,
    main,
    read_table,
)

HEADER = ("record_id", "first_name", "last_name", "date_of_birth", "postcode", "address", "note")
COLUMNS = {
    "first_name": "name",
    "last_name": "name",
    "date_of_birth": "date",
    "postcode": "code",
    "address": "text",
}
FIRST = ("Charlotte", "Phillip", "Katie", "Jessica", "Mohammed", "Zofia", "Rebecca", "Liam")
LAST = ("Thompson", "O'Brien", "McKenzie", "Nguyen", "Kowalski", "Beckett", "Hayes", "Li")


def _table(n: int = 2000) -> Table:
    rows = []
    for i in range(n):
        day = dt.date(1950, 1, 1) + dt.timedelta(days=37 * i % 25000)
        rows.append(
            (
                f"R{i:05d}",
                FIRST[i % len(FIRST)],
                LAST[(i // 3) % len(LAST)],
                day.isoformat(),
                f"{2000 + i % 900:04d}" if i % 2 else f"SW1A {i % 9}AA",
                f"{1 + i % 200} Wattle Street",
                "keep me",
            )
        )
    return Table(HEADER, tuple(rows))


SPEC = CorruptionSpec(columns=COLUMNS, rate=0.3, id_column="record_id")


def test_same_seed_same_output_and_another_seed_differs() -> None:
    table = _table()
    one, two = corrupt_table(table, SPEC, 7), corrupt_table(table, SPEC, 7)
    assert one == two
    assert corrupt_table(table, SPEC, 8).table != one.table


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.6])
def test_share_of_records_changed_is_the_rate(rate: float) -> None:
    table = _table(3000)
    result = corrupt_table(table, CorruptionSpec(columns=COLUMNS, rate=rate), 1)
    share = len(result.changed_rows) / len(table.rows)
    assert abs(share - rate) < 0.035
    changed = {
        r for r, (a, b) in enumerate(zip(table.rows, result.table.rows, strict=True)) if a != b
    }
    assert changed == result.changed_rows
    assert {c.row for c in result.changes} == changed


def test_rate_zero_changes_nothing_and_rate_one_changes_every_record() -> None:
    table = _table(500)
    assert corrupt_table(table, CorruptionSpec(columns=COLUMNS, rate=0.0), 1).table == table
    assert (
        len(corrupt_table(table, CorruptionSpec(columns=COLUMNS, rate=1.0), 1).changed_rows) == 500
    )


def test_errors_per_record_are_one_to_max_and_fewer_are_likelier() -> None:
    result = corrupt_table(_table(3000), CorruptionSpec(columns=COLUMNS, rate=1.0), 2)
    per_row = np.bincount([c.row for c in result.changes], minlength=3000)
    counts = np.bincount(per_row)
    assert per_row.min() >= 1 and per_row.max() <= 3
    assert counts[1] > counts[2] > counts[3] > 0


def test_id_and_other_columns_are_never_touched() -> None:
    table = _table()
    out = corrupt_table(table, CorruptionSpec(columns=COLUMNS, rate=1.0, id_column="record_id"), 3)
    assert out.table.column("record_id") == table.column("record_id")
    assert out.table.column("note") == table.column("note")


def test_every_default_error_occurs_and_invalid_date_only_when_asked() -> None:
    table = _table(3000)
    seen = {
        c.error for c in corrupt_table(table, CorruptionSpec(columns=COLUMNS, rate=1.0), 4).changes
    }
    assert seen == DEFAULT_ERRORS
    every = CorruptionSpec(columns=COLUMNS, rate=1.0, errors=frozenset(ERRORS))
    assert "invalid_date" in {c.error for c in corrupt_table(table, every, 4).changes}


def test_a_record_keeps_a_name() -> None:
    spec = CorruptionSpec(
        columns=COLUMNS, rate=1.0, max_errors=10, errors=frozenset({"missing", "truncate", "ocr"})
    )
    out = corrupt_table(_table(), spec, 5).table
    for first, last in zip(out.column("first_name"), out.column("last_name"), strict=True):
        assert re.search(r"[A-Za-z]", first + last)


def test_swap_exchanges_first_and_last_name() -> None:
    table = _table(200)
    spec = CorruptionSpec(columns=COLUMNS, rate=1.0, max_errors=1, errors=frozenset({"swap"}))
    out = corrupt_table(table, spec, 6)
    assert out.table.column("first_name") == table.column("last_name")
    assert out.table.column("last_name") == table.column("first_name")
    assert {c.column for c in out.changes} == {"first_name+last_name"}


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize(
    ("value", "layout", "transposed"),
    [
        ("1984-03-07", r"\d{4}-\d{2}-\d{2}", "1984-07-03"),
        ("19840307", r"\d{8}", "19840703"),
        ("07/03/1984", r"\d{2}/\d{2}/\d{4}", "03/07/1984"),
        ("1984/03/07", r"\d{4}/\d{2}/\d{2}", "1984/07/03"),
    ],
)
def test_date_errors_keep_the_layout(value: str, layout: str, transposed: str) -> None:
    for seed in range(30):
        for error in ("date_transpose", "date_shift", "invalid_date"):
            new = corrupt_value(value, "date", error, _rng(seed))
            assert new is not None and re.fullmatch(layout, new), (error, new)
        assert corrupt_value(value, "date", "date_transpose", _rng(seed)) == transposed


def _ymd(value: str) -> tuple[int, int, int]:
    digits = re.sub(r"\D", "", value)
    if re.fullmatch(r"\d{2}/\d{2}/\d{4}", value):
        return int(digits[4:]), int(digits[2:4]), int(digits[:2])
    return int(digits[:4]), int(digits[4:6]), int(digits[6:])


def test_date_shift_is_one_day_or_one_year_and_invalid_date_is_impossible() -> None:
    born = dt.date(1984, 3, 7)
    for seed in range(50):
        y, m, d = _ymd(corrupt_value("07/03/1984", "date", "date_shift", _rng(seed)) or "")
        moved = dt.date(y, m, d)
        assert abs((moved - born).days) == 1 or (
            moved.replace(year=1984) == born and abs(y - 1984) == 1
        )
        y, m, d = _ymd(corrupt_value("1984-02-07", "date", "invalid_date", _rng(seed)) or "")
        assert (y, m) == (1984, 2) and d > 29
        with pytest.raises(ValueError):
            dt.date(y, m, d)


def test_date_transpose_only_where_both_readings_are_dates() -> None:
    assert corrupt_value("1984-03-07", "date", "date_transpose", _rng()) == "1984-07-03"
    assert corrupt_value("1984-03-25", "date", "date_transpose", _rng()) is None
    assert corrupt_value("1984-05-05", "date", "date_transpose", _rng()) is None


def test_character_errors_do_what_they_say() -> None:
    for seed in range(40):
        typo = corrupt_value("g", "name", "keyboard", _rng(seed))
        assert typo in set("fhtyvb")
        ocr = corrupt_value("Kelly 0", "code", "ocr", _rng(seed))
        assert ocr in {
            "Kclly 0",  # e/c
            "Ke1ly 0",  # l/1
            "KeIly 0",  # l/I
            "Kel1y 0",
            "KelIy 0",
            "Kelly O",  # 0/O
            "Kelly o",
            "Kelly D",
        }
        assert corrupt_value("Phillip", "name", "missing", _rng(seed)) == ""
        short = corrupt_value("Phillip", "name", "truncate", _rng(seed))
        assert short and "Phillip".startswith(short) and short != "Phillip"
        moved = corrupt_value("Charlotte", "name", "transpose", _rng(seed))
        assert moved and sorted(moved.lower()) == sorted("charlotte") and moved != "Charlotte"
        assert len(corrupt_value("Charlotte", "name", "insert", _rng(seed)) or "") == 10
        assert len(corrupt_value("Charlotte", "name", "delete", _rng(seed)) or "") == 8
    said = {corrupt_value("Phillip", "name", "phonetic", _rng(s)) for s in range(200)}
    assert {"Fillip", "Philip", "Phyllip"} <= said  # ph/f, a doubled letter undone, i/y


def test_unsupported_combinations_are_refused() -> None:
    with pytest.raises(InvalidRequest):
        corrupt_value("2001", "code", "phonetic", _rng())
    with pytest.raises(InvalidRequest):
        corrupt_value("x", "colour", "missing", _rng())
    assert corrupt_value("", "name", "missing", _rng()) is None


@settings(max_examples=200, deadline=None)
@given(
    value=st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFXYZ0158 -'", min_size=0, max_size=20),
    kind=st.sampled_from(["name", "text", "code"]),
    error=st.sampled_from(
        ["keyboard", "insert", "delete", "transpose", "ocr", "missing", "truncate"]
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_an_applied_error_always_changes_the_value(
    value: str, kind: str, error: str, seed: int
) -> None:
    new = corrupt_value(value, kind, error, _rng(seed))
    assert new is None or new != value


@pytest.mark.parametrize(
    "bad",
    [
        {"columns": {}},
        {"columns": {"a": "colour"}},
        {"columns": {"a": "name"}, "rate": 1.5},
        {"columns": {"a": "name"}, "max_errors": 0},
        {"columns": {"a": "name"}, "errors": frozenset({"smudge"})},
        {"columns": {"a": "name"}, "id_column": "a"},
        {"columns": {"a": "name", "b": "name"}, "swap": ("a", "c")},
        {"columns": {"a": "name"}, "date_order": "year-first"},
    ],
)
def test_a_bad_spec_is_refused(bad: dict[str, object]) -> None:
    args: dict[str, object] = {"rate": 0.5, **bad}
    with pytest.raises(InvalidRequest):
        CorruptionSpec(**args)  # type: ignore[arg-type]


def test_a_missing_column_is_reported() -> None:
    with pytest.raises(InvalidInput, match="not in the file"):
        corrupt_table(_table(3), CorruptionSpec(columns={"surname": "name"}, rate=1.0), 1)


def _write(path: Path, table: Table) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(table.header)
        writer.writerows(table.rows)


def test_file_truth_maps_new_ids_back(tmp_path: Path) -> None:
    table = _table(400)
    src, out, truth = tmp_path / "in.csv", tmp_path / "out.csv", tmp_path / "truth.csv"
    _write(src, table)
    summary = corrupt_file(src, out, SPEC, 9, truth_path=truth, new_ids="X")
    written = read_table(out)
    mapping = {r[0]: r[1] for r in read_table(truth).rows}
    errors = {r[1]: r[2] for r in read_table(truth).rows}
    assert summary.records == 400 and len(mapping) == 400
    assert sorted(mapping.values()) == sorted(written.column("record_id"))
    back = {new: old for old, new in mapping.items()}
    assert [back[r[0]] for r in written.rows] != list(table.column("record_id"))  # shuffled
    original = {r[0]: r for r in table.rows}
    for row in written.rows:
        before = original[next(k for k, v in mapping.items() if v == row[0])]
        assert (row[1:] == before[1:]) == (errors[row[0]] == "")
    assert sum(1 for e in errors.values() if e) == summary.corrupted


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src, out, truth = tmp_path / "in.csv", tmp_path / "out.csv", tmp_path / "truth.csv"
    _write(src, _table(300))
    argv = [
        str(src),
        str(out),
        "--columns",
        "first_name=name,last_name=name,date_of_birth=date",
        "--columns",
        "postcode=code",
        "--rate",
        "0.5",
        "--seed",
        "1",
        "--id-column",
        "record_id",
        "--truth",
        str(truth),
    ]
    assert main(argv) == 0
    first = out.read_bytes()
    assert main(argv) == 0
    assert out.read_bytes() == first
    assert "records corrupted" in capsys.readouterr().err
    rows = read_table(truth).rows
    assert all(a == b for a, b, _ in rows)
    assert 100 < sum(1 for *_, e in rows if e) < 200
    assert (
        main([str(src), str(out), "--columns", "first_name=colour", "--rate", "1", "--seed", "1"])
        == 2
    )
    assert (
        main(
            [
                str(tmp_path / "nope.csv"),
                str(out),
                "--columns",
                "a=name",
                "--rate",
                "1",
                "--seed",
                "1",
            ]
        )
        == 2
    )


def test_the_headcount_cli_runs_it(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from headcount.cli import cli

    source = tmp_path / "in.csv"
    source.write_text("record_id,name\n" + "".join(f"r{i},Margaret\n" for i in range(50)))
    out = tmp_path / "out.csv"
    args = ["corrupt", str(source), str(out), "--columns", "name=name", "--rate", "1"]
    result = CliRunner().invoke(cli, [*args, "--seed", "1", "--id-column", "record_id"])
    assert result.exit_code == 0, result.output
    written = out.read_text().splitlines()
    assert written[0] == "record_id,name" and len(written) == 51
    assert sum(1 for line in written[1:] if not line.endswith(",Margaret")) >= 45
    bad = CliRunner().invoke(cli, ["corrupt", str(source), str(out), "--rate", "1"])
    assert bad.exit_code == 2

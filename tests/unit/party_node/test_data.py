"""Department files: every problem named by file, line and column; values kept local."""

from __future__ import annotations

from pathlib import Path

import pytest

from headcount.departments import columns
from headcount.errors import InvalidInput
from party_node.data import DepartmentFileError, load_department_file

HEADER = ",".join(columns("immigration"))
GOOD = [
    "IMM-1,Anna,Nowak,20110307,F,B1 1AA,1 High St,Birmingham,settled",
    "IMM-2,Jan,Kowalski,20090514,M,B1 1AB,2 High St,Birmingham,no_leave",
]


def _write(tmp_path: Path, lines: list[str], name: str = "immigration.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_good_file_loads(tmp_path: Path) -> None:
    data = load_department_file(_write(tmp_path, [HEADER, *GOOD]), "immigration")
    assert data.records == 2
    assert data.identities[0].first_name == "anna"
    assert data.identities[0].date_of_birth == "2011-03-07"
    assert list(data.attributes["immigration_status"]) == ["settled", "no_leave"]
    assert list(data.attributes["sex"]) == ["female", "male"]  # derived, for subgroup counts


def test_missing_columns_are_named(tmp_path: Path) -> None:
    header = HEADER.replace(",immigration_status", "").replace(",postcode", "")
    path = _write(tmp_path, [header, "IMM-1,Anna,Nowak,20110307,F,1 High St,Birmingham"])
    with pytest.raises(InvalidInput) as info:
        load_department_file(path, "immigration")
    msg = str(info.value)
    assert str(path) in msg and "line 1" in msg
    assert "postcode" in msg and "immigration_status" in msg


def test_wrong_values_name_line_and_column_but_not_the_value(tmp_path: Path) -> None:
    lines = [
        HEADER,
        GOOD[0],
        "IMM-2,Jan,Kowalski,31/02/2009,M,B1 1AB,2 High St,Birmingham,no_leave",
        "IMM-3,Ola,Wisniewska,20100101,X,B1 1AC,3 High St,Birmingham,banished",
    ]
    path = _write(tmp_path, lines)
    with pytest.raises(DepartmentFileError) as info:
        load_department_file(path, "immigration")
    msg, detail = str(info.value), info.value.detail
    assert "line 3, column 'date_of_birth'" in msg
    assert "line 4, column 'sex'" in msg
    assert "line 4, column 'immigration_status'" in msg
    assert "nothing was stored" in msg
    # The message may reach the coordinator: it must not quote the data.
    for value in ("31/02/2009", "'X'", "banished"):
        assert value not in msg
        assert value in detail


def test_duplicate_ids_point_at_both_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, [HEADER, GOOD[0], GOOD[1].replace("IMM-2", "IMM-1")])
    with pytest.raises(InvalidInput, match=r"line 3, column 'record_id': duplicate.*line 2"):
        load_department_file(path, "immigration")


def test_bad_encoding_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "immigration.csv"
    body = "\n".join([HEADER, GOOD[0], GOOD[1]]).encode("utf-8")
    path.write_bytes(
        body.replace(b"Kowalski", "Kowalski\u0142".encode("latin-1", "ignore") + b"\xb3")
    )
    with pytest.raises(InvalidInput, match=r"line 3: not valid UTF-8"):
        load_department_file(path, "immigration")


def test_ragged_and_empty_files(tmp_path: Path) -> None:
    ragged = _write(tmp_path, [HEADER, GOOD[0] + ",extra,fields"], "ragged.csv")
    with pytest.raises(InvalidInput, match="not a well-formed CSV"):
        load_department_file(ragged, "immigration")
    empty = _write(tmp_path, [""], "empty.csv")
    with pytest.raises(InvalidInput, match="empty"):
        load_department_file(empty, "immigration")
    with pytest.raises(InvalidInput, match="not found"):
        load_department_file(tmp_path / "absent.csv", "immigration")


def test_numeric_attribute_checks(tmp_path: Path) -> None:
    header = ",".join(columns("education"))
    row = "EDU-1,Amy,Lee,2015-01-02,F,B1 1AA,1 High St,Birmingham,5,expected,none,N,{}"
    path = tmp_path / "education.csv"
    path.write_text(
        "\n".join(
            [
                header,
                row.format("0.05"),
                row.replace("EDU-1", "EDU-2").format("lots"),
                row.replace("EDU-1", "EDU-3").format("1.5"),
            ]
        )
    )
    with pytest.raises(DepartmentFileError) as info:
        load_department_file(path, "education")
    assert "line 3, column 'absence_rate': not a number" in str(info.value)
    assert "line 4, column 'absence_rate': value out of range" in str(info.value)

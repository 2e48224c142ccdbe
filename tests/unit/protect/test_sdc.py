"""Small-number rule: worked examples from the rule, then properties over random tables."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from headcount.errors import InvalidRequest
from headcount.protect.sdc import (
    ProtectedCell,
    ProtectedTable2D,
    SdcPolicy,
    protect_counts,
    protect_counts_2d,
)


def _statuses(table_cells: tuple[ProtectedCell, ...]) -> dict[str, str]:
    return {c.group: c.status for c in table_cells}


def _values(table_cells: tuple[ProtectedCell, ...]) -> dict[str, int | None]:
    return {c.group: c.value for c in table_cells}


# --- worked examples ---------------------------------------------------------------


def test_one_small_cell_triggers_secondary_suppression_of_the_smallest_other() -> None:
    table = protect_counts({"a": 3, "b": 25, "c": 12, "d": 40})
    assert _statuses(table.cells) == {
        "a": "primary",
        "b": "released",
        "c": "secondary",
        "d": "released",
    }
    assert _values(table.cells) == {"a": None, "b": 25, "c": None, "d": 40}
    assert table.total == 80  # 3 + 25 + 12 + 40


def test_without_secondary_suppression_the_small_cell_would_be_total_minus_rest() -> None:
    table = protect_counts({"a": 3, "b": 25, "c": 12, "d": 40}, SdcPolicy(secondary=False))
    assert _values(table.cells) == {"a": None, "b": 25, "c": 10, "d": 40}
    assert table.total == 80


def test_rounding_is_to_nearest_base_with_ties_half_up() -> None:
    values = {str(n): n for n in (10, 12, 13, 17, 18, 22, 23)}
    table = protect_counts(values, SdcPolicy(secondary=False))
    assert [c.value for c in table.cells] == [10, 10, 15, 15, 20, 20, 25]

    tens = SdcPolicy(threshold=10, rounding_base=10, secondary=False)
    table = protect_counts({"a": 14, "b": 15, "c": 25, "d": 35}, tens)
    assert [c.value for c in table.cells] == [10, 20, 30, 40]  # .5 ties go up


def test_zero_and_negative_counts_are_suppressed_and_count_as_zero_in_total() -> None:
    table = protect_counts({"a": -3, "b": 0, "c": 50, "d": 60})
    assert _statuses(table.cells) == {
        "a": "primary",
        "b": "primary",
        "c": "released",
        "d": "released",
    }
    assert table.total == 110  # the -3 contributes 0, not -3


def test_negative_count_still_triggers_secondary_suppression() -> None:
    table = protect_counts({"a": -4, "b": 50, "c": 60})
    assert _statuses(table.cells) == {"a": "primary", "b": "secondary", "c": "released"}
    assert table.total == 110


def test_two_primary_cells_need_no_secondary() -> None:
    table = protect_counts({"a": 1, "b": 2, "c": 50})
    assert _statuses(table.cells) == {"a": "primary", "b": "primary", "c": "released"}
    assert table.total == 55  # 53 rounds to 55


def test_total_below_threshold_is_suppressed() -> None:
    table = protect_counts({"a": 2, "b": 3})
    assert table.total is None
    assert all(c.value is None for c in table.cells)


def test_secondary_tie_break_is_by_group_name_and_order_is_kept() -> None:
    table = protect_counts({"z": 20, "y": 20, "x": 1})
    assert [c.group for c in table.cells] == ["z", "y", "x"]
    assert _statuses(table.cells) == {"z": "released", "y": "secondary", "x": "primary"}


def test_secondary_choice_uses_published_values_not_noisy_counts() -> None:
    # 12 and 11 both publish as 10; choosing "b" because 11 < 12 would reveal the
    # order of two counts the table shows as equal.
    table = protect_counts({"a": 12, "b": 11, "c": 1})
    assert _statuses(table.cells) == {"a": "secondary", "b": "released", "c": "primary"}


def test_threshold_off_the_rounding_grid_never_publishes_below_threshold() -> None:
    policy = SdcPolicy(threshold=11, rounding_base=5, secondary=False)
    table = protect_counts({"a": 10, "b": 11, "c": 12, "d": 13}, policy)
    assert [c.value for c in table.cells] == [None, 15, 15, 15]


def test_empty_table() -> None:
    table = protect_counts({})
    assert table.cells == ()
    assert table.total is None


def test_to_frame_has_nullable_counts_and_a_total_row() -> None:
    frame = protect_counts({"a": 3, "b": 25, "c": 12, "d": 40}).to_frame()
    assert list(frame.columns) == ["group", "count", "status"]
    assert str(frame["count"].dtype) == "Int64"
    assert list(frame["group"]) == ["a", "b", "c", "d", "Total"]
    assert frame["count"].isna().tolist() == [True, False, True, False, False]
    assert frame["count"].iloc[-1] == 80
    assert frame["status"].iloc[-1] == "released"


def test_two_way_worked_example() -> None:
    counts = {
        ("r1", "x"): 3,
        ("r1", "y"): 20,
        ("r2", "x"): 30,
        ("r2", "y"): 40,
        ("r3", "x"): 15,
        ("r3", "y"): 15,
    }
    table = protect_counts_2d(counts)
    # r1/x is small; r1/y goes with it (row r1), then column x needs a second cell
    # (r3/x, the smallest), then row r3 needs its other cell too.
    assert {(c.row, c.column): c.status for c in table.cells} == {
        ("r1", "x"): "primary",
        ("r1", "y"): "secondary",
        ("r2", "x"): "released",
        ("r2", "y"): "released",
        ("r3", "x"): "secondary",
        ("r3", "y"): "secondary",
    }
    assert [m.value for m in table.row_totals] == [25, 70, 30]
    assert [m.value for m in table.column_totals] == [50, 75]
    assert table.total == 125  # 123 rounds to 125
    assert table.cell("r2", "y").value == 40


def test_two_way_missing_pairs_are_zero_and_suppressed() -> None:
    table = protect_counts_2d({("a", "x"): 50, ("b", "y"): 60})
    assert table.cell("a", "y").status == "primary"
    assert table.cell("b", "x").status == "primary"
    # Each row then has one small cell, so the other cell must go as well.
    assert table.cell("a", "x").value is None
    assert table.cell("b", "y").value is None


def test_two_way_to_frame_has_margins() -> None:
    counts = {("r1", "x"): 30, ("r1", "y"): 20, ("r2", "x"): 45, ("r2", "y"): 11}
    frame = protect_counts_2d(counts).to_frame()
    assert list(frame.columns) == ["x", "y", "Total"]
    assert list(frame.index) == ["r1", "r2", "Total"]
    assert all(str(t) == "Int64" for t in frame.dtypes)
    assert frame.loc["r2", "y"] == 10
    assert frame.loc["Total", "Total"] == 105  # 106 rounds to 105
    assert frame.loc["Total", "x"] == 75


def test_unknown_cell_raises() -> None:
    with pytest.raises(InvalidRequest):
        protect_counts_2d({("a", "x"): 50}).cell("a", "nope")


@pytest.mark.parametrize(
    "kwargs",
    [{"threshold": 0}, {"rounding_base": 0}, {"threshold": True}, {"rounding_base": 2.5}],
)
def test_bad_policy_raises(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        SdcPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "counts",
    [{"a": 1.5}, {"a": True}, {"Total": 40}, {3: 40}],
)
def test_bad_counts_raise(counts: dict[object, object]) -> None:
    with pytest.raises(InvalidRequest):
        protect_counts(counts)  # type: ignore[arg-type]


def test_bad_two_way_keys_raise() -> None:
    with pytest.raises(InvalidRequest):
        protect_counts_2d({("a",): 40})  # type: ignore[dict-item]
    with pytest.raises(InvalidRequest):
        protect_counts_2d({("a", "Total"): 40})


def test_cell_status_and_value_must_agree() -> None:
    with pytest.raises(InvalidRequest):
        ProtectedCell("a", None, "released")
    with pytest.raises(InvalidRequest):
        ProtectedCell("a", 10, "primary")
    with pytest.raises(InvalidRequest):
        ProtectedCell("a", 10, "published")


# --- properties --------------------------------------------------------------------

policies = st.builds(
    SdcPolicy,
    threshold=st.integers(1, 30),
    rounding_base=st.integers(1, 20),
    secondary=st.booleans(),
)
counts_1d = st.dictionaries(st.text(min_size=1, max_size=4), st.integers(-20, 200), max_size=8)
labels = st.sampled_from(["a", "b", "c", "d"])
counts_2d = st.dictionaries(st.tuples(labels, labels), st.integers(-20, 200), max_size=16)


def _check_released(value: int | None, count: int, policy: SdcPolicy) -> None:
    if max(count, 0) < policy.threshold:
        assert value is None, "a cell below the threshold was released"
    if value is not None:
        assert value % policy.rounding_base == 0
        assert value >= policy.threshold
        assert abs(value - count) < policy.rounding_base


@given(counts_1d, policies)
def test_one_way_properties(counts: dict[str, int], policy: SdcPolicy) -> None:
    table = protect_counts(counts, policy)
    assert [c.group for c in table.cells] == list(counts)
    for cell in table.cells:
        count = counts[cell.group]
        _check_released(cell.value, count, policy)
        assert (cell.status == "primary") == (count < policy.threshold)
        if not policy.secondary:
            assert cell.status != "secondary"
    true_total = sum(max(c, 0) for c in counts.values())
    _check_released(table.total, true_total, policy)
    assert (table.total is None) == (true_total < policy.threshold)
    if policy.secondary and table.total is not None:
        assert sum(c.value is None for c in table.cells) != 1


def _assert_no_singleton(
    margin: ProtectedCell | int | None, line: list[int | None], what: str
) -> None:
    released = margin.value if isinstance(margin, ProtectedCell) else margin
    if released is not None:
        assert sum(v is None for v in line) != 1, f"{what} has exactly one suppressed entry"


@given(counts_2d, policies)
def test_two_way_properties(counts: dict[tuple[str, str], int], policy: SdcPolicy) -> None:
    table: ProtectedTable2D = protect_counts_2d(counts, policy)
    assert list(table.rows) == list(dict.fromkeys(r for r, _ in counts))
    assert list(table.columns) == list(dict.fromkeys(c for _, c in counts))
    for cell in table.cells:
        _check_released(cell.value, counts.get((cell.row, cell.column), 0), policy)
    for margin, r in zip(table.row_totals, table.rows, strict=True):
        _check_released(
            margin.value, sum(max(v, 0) for (k, _), v in counts.items() if k == r), policy
        )
    for margin, c in zip(table.column_totals, table.columns, strict=True):
        _check_released(
            margin.value, sum(max(v, 0) for (_, k), v in counts.items() if k == c), policy
        )
    _check_released(table.total, sum(max(v, 0) for v in counts.values()), policy)
    if not policy.secondary:
        return
    for margin, r in zip(table.row_totals, table.rows, strict=True):
        line = [table.cell(r, c).value for c in table.columns]
        _assert_no_singleton(margin, line, f"row {r}")
    for margin, c in zip(table.column_totals, table.columns, strict=True):
        line = [table.cell(r, c).value for r in table.rows]
        _assert_no_singleton(margin, line, f"column {c}")
    _assert_no_singleton(table.total, [m.value for m in table.row_totals], "row margins")
    _assert_no_singleton(table.total, [m.value for m in table.column_totals], "column margins")


def test_frames_are_dataframes() -> None:
    assert isinstance(protect_counts({"a": 40}).to_frame(), pd.DataFrame)
    assert isinstance(protect_counts_2d({("a", "x"): 40}).to_frame(), pd.DataFrame)

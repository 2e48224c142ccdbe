"""Statistical disclosure control: the small-number rule applied before release.

Input counts are already noisy (differential privacy is added first, under
encryption); this module is the last layer before anything leaves the federation.

* Primary suppression: a count below ``threshold`` (zero included) is withheld,
  because small cells single out people. A negative count, which noise can
  produce, is treated as 0.
* Rounding: every released count is rounded to the nearest ``rounding_base``
  (ties round half up), so exact differences between tables are not published.
* Secondary suppression: a table with published margins obeys additive
  constraints (each row sums to its margin). If exactly one entry of such a line is
  withheld, it equals the margin minus the rest, so a second entry is withheld too.

Every additive line of the table (the cells of a row plus its margin, and so on)
must not have exactly one suppressed entry. This is the classic "no singleton"
rule, not a full linear-programming audit of the suppression pattern; rounding
means a withheld cell could at best be recovered to within an interval anyway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from headcount.errors import InvalidRequest

RELEASED = "released"
PRIMARY = "primary"
SECONDARY = "secondary"
STATUSES: tuple[str, ...] = (RELEASED, PRIMARY, SECONDARY)

TOTAL = "Total"  # label of margins in frames; reserved, so no group may use it


@dataclass(frozen=True, slots=True)
class SdcPolicy:
    """Disclosure-control settings.

    ``threshold``: counts below it (zero included) are suppressed; int >= 1.
    ``rounding_base``: released counts are rounded to a multiple of it; int >= 1.
    ``secondary``: suppress further cells so no withheld cell follows from margins.
    Raises ``InvalidRequest`` on an out-of-range setting.
    """

    threshold: int = 10
    rounding_base: int = 5
    secondary: bool = True

    def __post_init__(self) -> None:
        for name in ("threshold", "rounding_base"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidRequest(f"{name} must be an int >= 1, got {value!r}")
        if not isinstance(self.secondary, bool):
            raise InvalidRequest("secondary must be a bool")

    def release_value(self, count: int) -> int | None:
        """The published value of one (noisy) count, or None if it is primary-suppressed.

        Rounds half up to the nearest ``rounding_base``; when ``threshold`` is not a
        multiple of the base, a result below the threshold is lifted to the first
        multiple at or above it, since publishing a value under the threshold would
        say the true count sat in the thin band just above it.
        """
        if count < self.threshold:
            return None
        base = self.rounding_base
        rounded = (2 * count + base) // (2 * base) * base  # floor(count / base + 1/2) * base
        floor_value = -(-self.threshold // base) * base  # smallest multiple >= threshold
        return max(rounded, floor_value)


def _check_cell(value: int | None, status: str) -> None:
    if status not in STATUSES:
        raise InvalidRequest(f"status must be one of {STATUSES}, got {status!r}")
    if (value is None) != (status != RELEASED):
        raise InvalidRequest("a cell has a value exactly when its status is 'released'")
    if value is not None and value < 0:
        raise InvalidRequest("a released value is never negative")


@dataclass(frozen=True, slots=True)
class ProtectedCell:
    """One published cell: ``value`` is a non-negative multiple of the rounding base,
    or None when ``status`` is "primary" (small number) or "secondary" (withheld to
    protect another cell)."""

    group: str
    value: int | None
    status: str

    def __post_init__(self) -> None:
        _check_cell(self.value, self.status)


@dataclass(frozen=True, slots=True)
class ProtectedTable:
    """A protected one-way table, cells in input order.

    ``total`` is the rounded total of all counts (negatives as 0), or None when the
    total is below the threshold.
    """

    cells: tuple[ProtectedCell, ...]
    total: int | None

    def to_frame(self) -> pd.DataFrame:
        """Columns ``group``, ``count`` (nullable Int64), ``status``; last row "Total"."""
        total_status = RELEASED if self.total is not None else PRIMARY
        return pd.DataFrame(
            {
                "group": [c.group for c in self.cells] + [TOTAL],
                "count": pd.array([c.value for c in self.cells] + [self.total], dtype="Int64"),
                "status": [c.status for c in self.cells] + [total_status],
            }
        )


@dataclass(frozen=True, slots=True)
class ProtectedCell2D:
    """One published interior cell of a two-way table; value/status as ProtectedCell."""

    row: str
    column: str
    value: int | None
    status: str

    def __post_init__(self) -> None:
        _check_cell(self.value, self.status)


@dataclass(frozen=True, slots=True)
class ProtectedTable2D:
    """A protected two-way table.

    ``cells`` holds every (row, column) pair in row-major order of first appearance.
    ``row_totals`` / ``column_totals`` are the margins (``group`` is the row or
    column label); ``total`` is the grand total, None when withheld.
    """

    rows: tuple[str, ...]
    columns: tuple[str, ...]
    cells: tuple[ProtectedCell2D, ...]
    row_totals: tuple[ProtectedCell, ...]
    column_totals: tuple[ProtectedCell, ...]
    total: int | None

    def __post_init__(self) -> None:
        if len(self.cells) != len(self.rows) * len(self.columns):
            raise InvalidRequest("a two-way table needs one cell per (row, column)")
        if len(self.row_totals) != len(self.rows) or len(self.column_totals) != len(self.columns):
            raise InvalidRequest("a two-way table needs one margin per row and per column")

    def cell(self, row: str, column: str) -> ProtectedCell2D:
        """The cell at (row, column); raises InvalidRequest for an unknown label."""
        try:
            index = self.rows.index(row) * len(self.columns) + self.columns.index(column)
        except ValueError:
            raise InvalidRequest(f"no cell ({row!r}, {column!r})") from None
        return self.cells[index]

    def to_frame(self) -> pd.DataFrame:
        """Rows x columns of nullable Int64 counts, with a "Total" column and row.

        Withheld entries are <NA>; their reason is in ``cells``/``*_totals``.
        """
        data: dict[str, pd.arrays.IntegerArray] = {}
        for j, column in enumerate(self.columns):
            values = [self.cells[i * len(self.columns) + j].value for i in range(len(self.rows))]
            data[column] = pd.array([*values, self.column_totals[j].value], dtype="Int64")
        data[TOTAL] = pd.array([m.value for m in self.row_totals] + [self.total], dtype="Int64")
        return pd.DataFrame(data, index=pd.Index([*self.rows, TOTAL], name="group"))


class _Entry:
    """Working state of one table entry (cell or margin) during suppression."""

    __slots__ = ("count", "key", "margin", "status", "value")

    def __init__(self, count: int, key: tuple[str, ...], policy: SdcPolicy, margin: bool) -> None:
        self.count = count
        self.key = key  # labels, for the deterministic tie-break
        self.margin = margin
        self.value = policy.release_value(count)
        self.status = RELEASED if self.value is not None else PRIMARY

    def suppress(self) -> None:
        self.value = None
        self.status = SECONDARY


def _secondary_suppress(lines: Sequence[Sequence[_Entry]]) -> None:
    """Withhold entries until no additive line has exactly one withheld entry.

    Each line is a set of entries that sum to one of them (its margin). Prefer an
    interior cell over a margin, then the smallest published value, then the
    labels: choosing by the published (rounded) value rather than the noisy count
    means the choice itself reveals nothing that was not about to be released.
    Terminates because every pass withholds at least one more entry.
    """
    changed = True
    while changed:
        changed = False
        for line in lines:
            if sum(e.value is None for e in line) != 1:
                continue
            released = [e for e in line if e.value is not None]
            if not released:  # a line of one entry (an empty table) constrains nothing
                continue
            victim = min(released, key=lambda e: (e.margin, e.value, e.key))
            victim.suppress()
            changed = True


def _checked_count(label: object, count: object) -> int:
    if isinstance(count, bool) or not isinstance(count, int):
        raise InvalidRequest(f"count for {label!r} must be an int")
    # Noise can push a small count below zero; a negative count says nothing more
    # than "small", so it is clamped to 0 and suppressed like any small number.
    return max(count, 0)


def _checked_label(label: object) -> str:
    if not isinstance(label, str):
        raise InvalidRequest(f"group labels must be strings, got {label!r}")
    if label == TOTAL:
        raise InvalidRequest(f"{TOTAL!r} is reserved for margins and cannot be a group")
    return label


def protect_counts(counts: Mapping[str, int], policy: SdcPolicy = SdcPolicy()) -> ProtectedTable:
    """Apply the small-number rule to a one-way table of (noisy) counts.

    Cells keep the input order. The total is published whenever it reaches the
    threshold; with ``policy.secondary``, if exactly one cell is primary-suppressed
    the smallest released cell (ties by group name) is withheld too.
    Raises ``InvalidRequest`` for a non-int count or a non-string or "Total" group.
    """
    entries = [
        _Entry(_checked_count(g, c), (_checked_label(g),), policy, margin=False)
        for g, c in counts.items()
    ]
    total = _margin(TOTAL, entries, policy)
    if policy.secondary:
        _secondary_suppress([[*entries, total]])
    cells = tuple(ProtectedCell(e.key[0], e.value, e.status) for e in entries)
    return ProtectedTable(cells=cells, total=total.value)


def protect_counts_2d(
    counts: Mapping[tuple[str, str], int], policy: SdcPolicy = SdcPolicy()
) -> ProtectedTable2D:
    """Apply the small-number rule to a two-way table keyed by (row, column).

    Rows and columns keep their order of first appearance; a (row, column) pair
    missing from ``counts`` is a count of 0. Row margins, column margins and the
    grand total are published when they reach the threshold. With
    ``policy.secondary``, entries are withheld over rows, columns and the margin
    lines until none of them has exactly one withheld entry.
    Raises ``InvalidRequest`` for a non-int count, a key that is not a pair of
    strings, or a "Total" label.
    """
    for key in counts:
        if not isinstance(key, tuple) or len(key) != 2:
            raise InvalidRequest(f"two-way keys must be (row, column) pairs, got {key!r}")
    rows = tuple(dict.fromkeys(_checked_label(r) for r, _ in counts))
    columns = tuple(dict.fromkeys(_checked_label(c) for _, c in counts))
    grid = [
        [
            _Entry(_checked_count((r, c), counts.get((r, c), 0)), (r, c), policy, False)
            for c in columns
        ]
        for r in rows
    ]
    by_column = [[line[j] for line in grid] for j in range(len(columns))]
    row_margins = [_margin(r, line, policy) for r, line in zip(rows, grid, strict=True)]
    col_margins = [_margin(c, line, policy) for c, line in zip(columns, by_column, strict=True)]
    grand = _margin(TOTAL, row_margins, policy)
    if policy.secondary:
        # Every additive constraint a reader could use: each row with its margin,
        # each column with its margin, and each set of margins with the grand total.
        lines = [[*line, m] for line, m in zip(grid, row_margins, strict=True)]
        lines += [[*line, m] for line, m in zip(by_column, col_margins, strict=True)]
        lines += [[*row_margins, grand], [*col_margins, grand]]
        _secondary_suppress(lines)
    return ProtectedTable2D(
        rows=rows,
        columns=columns,
        cells=tuple(
            ProtectedCell2D(e.key[0], e.key[1], e.value, e.status) for line in grid for e in line
        ),
        row_totals=tuple(ProtectedCell(m.key[0], m.value, m.status) for m in row_margins),
        column_totals=tuple(ProtectedCell(m.key[0], m.value, m.status) for m in col_margins),
        total=grand.value,
    )


def _margin(label: str, line: Sequence[_Entry], policy: SdcPolicy) -> _Entry:
    return _Entry(sum(e.count for e in line), (label,), policy, margin=True)

"""A released table: the protected cells and how they were made, as the
decrypting node releases it, the coordinator records it and the analyst
receives it (`headcount.wire.convert` carries it over the wire)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from headcount.domain.measures import ReleasedCell
from headcount.protect.sdc import TOTAL

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["QueryOutcome", "ReleasedTable", "release_frame"]


@dataclass(frozen=True, slots=True)
class ReleasedTable:
    """A table after noise and the small-number rule: the only form in which a
    count leaves the decrypting node. Margins of a two-way table are cells
    whose group or column is "Total"; the grand total is apart."""

    query_id: str
    cells: tuple[ReleasedCell, ...]
    total: int | None  # None: withheld
    # Holds the true total in ``interval_coverage`` of releases; None exactly
    # when the total is withheld.
    total_interval: tuple[int, int] | None
    epsilon: float  # privacy loss charged for this release
    noise_scale: float  # discrete Laplace scale of the full noise on each count
    mechanism: str = "discrete_laplace"
    suppression_threshold: int = 0
    rounding_base: int = 0
    column_attribute: str = ""  # the second dimension of a two-way table, if any
    measure_attribute: str = ""  # the attribute whose mean is reported, if any
    shareholders: int = 0  # parties whose noise shares were added
    interval_coverage: float = 0.95
    sensitivity: int = 0  # how far one person's record can move a count


@dataclass(frozen=True, slots=True)
class QueryOutcome:
    """What an analyst's query comes back as: the released table, the epoch it
    was answered in and the least budget any department of the query has left."""

    query_id: str
    epoch_id: str
    title: str
    table: ReleasedTable
    budget_remaining: float


def release_frame(table: ReleasedTable) -> pd.DataFrame:
    """A released table as a DataFrame: one row per cell, then the total.

    Columns: ``group``, the column attribute (two-way tables only), ``count``
    (nullable Int64, <NA> when suppressed), ``status``, ``low`` and ``high``
    (the interval holding the true count in 95% of releases), ``noise_scale``,
    and ``mean_<attribute>`` with ``mean_low``/``mean_high`` and
    ``sum_<attribute>`` when a measure was asked for.
    """
    import pandas as pd

    column = table.column_attribute
    rows: dict[str, list[Any]] = {"group": []}
    if column:
        rows[column] = []
    rows["count"], rows["status"], rows["low"], rows["high"] = [], [], [], []
    rows["noise_scale"] = []
    mean_col = f"mean_{table.measure_attribute}" if table.measure_attribute else ""
    sum_col = f"sum_{table.measure_attribute}" if table.measure_attribute else ""
    if mean_col:
        rows[mean_col], rows["mean_low"], rows["mean_high"], rows[sum_col] = [], [], [], []
    for x in table.cells:
        rows["group"].append(x.group)
        if column:
            rows[column].append(x.column)
        released = x.status == "released"
        interval = x.interval if released else None
        rows["count"].append(x.value if released else None)
        rows["status"].append(x.status)
        rows["low"].append(interval[0] if interval else None)
        rows["high"].append(interval[1] if interval else None)
        rows["noise_scale"].append(x.noise_scale or table.noise_scale)
        if mean_col:
            rows[mean_col].append(x.mean)
            rows["mean_low"].append(x.mean_interval[0] if x.mean_interval else None)
            rows["mean_high"].append(x.mean_interval[1] if x.mean_interval else None)
            rows[sum_col].append(x.sum)
    rows["group"].append(TOTAL)
    if column:
        rows[column].append(TOTAL)
    rows["count"].append(table.total)
    rows["status"].append("primary" if table.total is None else "released")
    # The wire has no flag for the total's interval: one up to 0 stands for none.
    total_interval = table.total_interval
    if total_interval is not None and total_interval[1] <= 0:
        total_interval = None
    rows["low"].append(total_interval[0] if total_interval else None)
    rows["high"].append(total_interval[1] if total_interval else None)
    rows["noise_scale"].append(table.noise_scale)
    if mean_col:
        for col in (mean_col, "mean_low", "mean_high", sum_col):
            rows[col].append(None)
    frame = pd.DataFrame(rows)
    for col in ("count", "low", "high"):
        frame[col] = pd.array(rows[col], dtype="Int64")
    if mean_col:
        for col in (mean_col, "mean_low", "mean_high", sum_col):
            frame[col] = pd.array(rows[col], dtype="Float64")
    return frame

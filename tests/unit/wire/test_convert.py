"""Protobuf <-> dataclass conversions keep every field the wire carries."""

from __future__ import annotations

from headcount.domain.measures import ReleasedCell
from headcount.domain.release import ReleasedTable, release_frame
from headcount.domain.status import LinkageSummary, PairLinks
from headcount.wire import common_pb2, coordinator_pb2
from headcount.wire import convert as cv


def _two_way() -> ReleasedTable:
    return ReleasedTable(
        "q1",
        (
            ReleasedCell("a", "x", 20, "released", 3.5, 70.0, 1.5, (15, 25), (3.0, 4.0)),
            ReleasedCell("a", "y", None, "primary", noise_scale=1.5),
            ReleasedCell("a", "Total", 0, "released", noise_scale=1.5, interval=(0, 6)),
        ),
        40,
        (31, 49),
        epsilon=0.5,
        noise_scale=1.5,
        suppression_threshold=10,
        rounding_base=5,
        column_attribute="sex",
        measure_attribute="age",
        shareholders=3,
        sensitivity=2,
    )


def test_a_released_table_crosses_the_wire_unchanged() -> None:
    table = _two_way()
    wire = cv.table_to_pb(table)
    again = cv.table_from_pb(common_pb2.ProtectedTable.FromString(wire.SerializeToString()))
    assert again == table
    assert cv.table_to_pb(again).SerializeToString() == wire.SerializeToString()


def test_a_withheld_total_has_no_interval() -> None:
    table = ReleasedTable("q2", (), None, None, epsilon=0.1, noise_scale=2.0)
    wire = cv.table_to_pb(table)
    assert wire.total_suppressed and wire.total == 0
    assert cv.table_from_pb(wire) == table
    frame = release_frame(table)
    assert frame["status"].tolist() == ["primary"]
    assert frame["count"].isna().all()


def test_a_linkage_summary_keeps_each_estimate_and_its_basis() -> None:
    summary = LinkageSummary(
        "e" * 32,
        {"a": 10, "b": 12, "c": 3},
        (
            PairLinks("a", "b", 9, 0.7, 8, 0.99, 0.98, "own"),
            PairLinks("a", "c", 2, 0.7, 2, 1.0, 0.97, "pooled"),
            PairLinks("b", "c", 0, 0.7, 0),  # too few scores to fit
        ),
        clusters=10,
        threshold=0.7,
        schema_fingerprint="f" * 64,
    )
    wire = cv.linkage_to_pb(summary)
    again = cv.linkage_from_pb(coordinator_pb2.LinkageSummary.FromString(wire.SerializeToString()))
    assert again == summary

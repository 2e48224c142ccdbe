"""The planner turns query specs into hop chains, or says why it cannot."""

from __future__ import annotations

import pytest

from coordinator.planner import FILTER, GROUP, ORIGIN, plan_query
from headcount.domain.query import Condition, Predicate, QuerySpec
from headcount.errors import InvalidRequest

PARTIES = ("education", "health", "justice", "immigration")
PURPOSE = "A purpose long enough to be stated."


def test_person_chain() -> None:
    spec = QuerySpec(
        PURPOSE,
        "education",
        "immigration",
        "immigration_status",
        conditions=(Condition("health", (Predicate("gp_registered", ("N",)),)),),
    )
    plan = plan_query(spec, PARTIES)
    assert [(h.party, h.role, h.link) for h in plan.hops] == [
        ("education", ORIGIN, ""),
        ("health", FILTER, "person"),
        ("immigration", GROUP, "person"),
    ]
    assert plan.unlinked_cell
    assert plan.hops[-1].group_by == "immigration_status"


def test_household_chain_grouped_at_the_population() -> None:
    spec = QuerySpec(
        PURPOSE,
        "education",
        "education",
        "local_authority",
        conditions=(Condition("justice", (Predicate("sentence", ("custody",)),), "household"),),
    )
    plan = plan_query(spec, PARTIES)
    assert [(h.party, h.role, h.link) for h in plan.hops] == [
        ("justice", ORIGIN, ""),
        ("education", GROUP, "household"),
    ]
    assert plan.hops[0].per_household
    assert not plan.unlinked_cell


def test_household_chain_grouped_elsewhere() -> None:
    spec = QuerySpec(
        PURPOSE,
        "education",
        "immigration",
        "immigration_status",
        conditions=(Condition("justice", link="household"),),
    )
    plan = plan_query(spec, PARTIES)
    assert plan.parties == ["justice", "education", "immigration"]
    assert plan.hops[1].role == FILTER and plan.hops[1].link == "household"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (QuerySpec(PURPOSE, "education", "police", "x"), "unknown party"),
        (QuerySpec(PURPOSE, "education", "education", "sen"), "own attribute"),
        (
            QuerySpec(
                PURPOSE,
                "education",
                "health",
                "gp_registered",
                conditions=(
                    Condition("justice", link="household"),
                    Condition("immigration", link="household"),
                ),
            ),
            "at most one household",
        ),
        (
            QuerySpec(
                PURPOSE, "education", "health", "gp_registered", conditions=(Condition("health"),)
            ),
            "only once",
        ),
    ],
)
def test_refusals(spec: QuerySpec, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        plan_query(spec, PARTIES)


def test_condition_link_is_checked() -> None:
    with pytest.raises(InvalidRequest, match="link"):
        Condition("health", link="neighbour")

"""Sensitivity from the query's join, and who holds the noise shares."""

from __future__ import annotations

import pytest

from headcount.domain.measures import make_packing
from headcount.errors import InvalidRequest
from headcount.privacy.sensitivity import (
    COORDINATOR,
    NoisePlan,
    count_sensitivity,
    is_household_query,
    plan_noise,
)

PERSON = {"conditions": [{"party": "health", "link": "person", "filters": []}]}
HOUSEHOLD = {"conditions": [{"party": "justice", "link": "household", "filters": []}]}


def test_a_changed_record_moves_two_cells() -> None:
    assert count_sensitivity(household=False, household_cap=3) == 2


def test_household_fan_out_is_charged_as_capped() -> None:
    assert count_sensitivity(household=True, household_cap=1) == 2
    assert count_sensitivity(household=True, household_cap=3) == 6


def test_household_queries_are_recognised() -> None:
    assert is_household_query(HOUSEHOLD)
    assert not is_household_query(PERSON)
    assert not is_household_query({})


def test_share_holders_are_the_coordinator_and_every_node_but_the_origin() -> None:
    plan = plan_noise(["justice", "education", "health"], HOUSEHOLD, household_cap=2)
    assert plan.shareholders == (COORDINATOR, "education", "health")
    assert plan.nodes == ("education", "health")
    assert plan.sensitivity == 4
    assert NoisePlan.from_json(plan.to_json()) == plan


def test_plans_that_leave_a_share_holder_out_are_refused() -> None:
    with pytest.raises(InvalidRequest):
        NoisePlan(2, (COORDINATOR,))
    with pytest.raises(InvalidRequest):
        NoisePlan(2, ("health", COORDINATOR))
    with pytest.raises(InvalidRequest):
        NoisePlan(2, (COORDINATOR, "health", "health"))
    with pytest.raises(InvalidRequest):
        NoisePlan(0, (COORDINATOR, "health"))
    with pytest.raises(InvalidRequest):
        plan_noise(["education"], PERSON, household_cap=1)
    with pytest.raises(InvalidRequest):
        NoisePlan.from_json({"sensitivity": "2", "shareholders": [COORDINATOR, "x"]})


def test_the_noise_scale_grows_with_sensitivity_and_the_slots_make_room() -> None:
    kw = {"n_bits": 2048, "max_summands": 10_000, "epsilon": 0.5}
    plain = make_packing("education", "", "", **kw)  # type: ignore[arg-type]
    capped = make_packing("education", "", "", sensitivity=6, shareholders=3, **kw)  # type: ignore[arg-type]
    assert capped.noise_specs()[0].scale == pytest.approx(6 * plain.noise_specs()[0].scale)
    # Each of three share-holders adds a share clamped to 60 full scales.
    assert capped.layout.noise_bound >= 3 * 60 * capped.noise_specs()[0].scale
    assert capped.share_bound * 3 <= capped.layout.noise_bound

"""Query spec files: every documented example loads and plans; bad files are explained."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.planner import plan_query
from headcount.departments import DEPARTMENTS
from headcount.domain.queryfile import load_query_spec, spec_from_dict
from headcount.errors import InvalidInput, InvalidRequest
from headcount.federation import party_specs
from headcount.longitudinal import period_options

EXAMPLES = sorted((Path(__file__).parents[2] / "docs" / "queries").glob("*.yaml"))


def test_there_are_documented_examples() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_each_documented_example_loads_and_plans(path: Path) -> None:
    spec = load_query_spec(path)
    # Longitudinal examples name yearly snapshots (headcount.longitudinal).
    periods = tuple(p.name for p in party_specs(period_options()))
    plan = plan_query(spec, (*DEPARTMENTS, *periods))
    assert len(plan.hops) >= 2
    assert spec.title


def test_a_spec_dict_round_trips_every_part() -> None:
    spec = spec_from_dict(
        {
            "purpose": "A purpose long enough to be stated.",
            "population": {"party": "education", "filters": {"fsm": ["Y"]}},
            "conditions": [
                {"party": "justice", "link": "household", "filters": {"sentence": ["custody"]}}
            ],
            "group_by": "education.local_authority",
            "epsilon": 0.25,
        }
    )
    assert spec.population_filters[0].values == ("Y",)
    assert spec.conditions[0].link == "household"
    assert (spec.group_party, spec.group_by, spec.epsilon) == ("education", "local_authority", 0.25)


def test_every_problem_is_listed(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "purpose: short\n"
        "population: {party: education, colour: blue}\n"
        "group_by: nodot\n"
        "epsilon: -1\n"
    )
    with pytest.raises(InvalidRequest) as info:
        load_query_spec(path)
    msg = str(info.value)
    assert str(path) in msg and "problem(s)" in msg  # group_by reports once per accepted shape
    for field in ("purpose", "population.colour", "group_by", "epsilon"):
        assert field in msg


def test_not_yaml_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("purpose: [unclosed\n")
    with pytest.raises(InvalidInput, match="not valid YAML"):
        load_query_spec(path)
    with pytest.raises(InvalidInput, match="no such file"):
        load_query_spec(tmp_path / "absent.yaml")


def test_demo_queries_are_the_documented_examples() -> None:
    from headcount.demo import DEMO_QUERIES

    folder = Path(__file__).parents[2] / "docs" / "queries"
    for name, spec in DEMO_QUERIES:
        assert load_query_spec(folder / name) == spec, name


def test_measures_in_a_spec_file() -> None:
    base = {
        "purpose": "A purpose long enough to be stated.",
        "population": {"party": "education"},
        "group_by": "immigration.immigration_status",
    }
    assert spec_from_dict({**base, "measure": {"sum": "absence_rate"}}).measure == "sum"
    mean = spec_from_dict({**base, "measure": {"mean": "absence_rate"}})
    assert (mean.measure, mean.measure_attribute) == ("mean", "absence_rate")
    with pytest.raises(InvalidRequest, match="measure"):
        spec_from_dict({**base, "measure": {"median": "absence_rate"}})

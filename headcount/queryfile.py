"""Query spec files (YAML) and their dictionary form, for analysts.

A spec file states why the table is needed and what to count::

    purpose: Plan school support for children by immigration status.
    title: Children in education by immigration status
    population:
      party: education
      filters: {fsm: [Y]}          # optional, on the population's own attributes
    conditions:                     # optional
      - party: justice
        link: household             # or: person
        filters: {sentence: [custody], age_band: [18-24, 25-64, 65+]}
    group_by: immigration.immigration_status
    group_filters: {}               # optional, on the grouping department
    epsilon: 0.5                    # optional; the federation default otherwise

``load_query_spec`` validates the whole file and reports every problem at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from headcount.errors import InvalidInput, InvalidRequest
from headcount.query import Condition, Predicate, QuerySpec

Filters = dict[str, list[str]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Population(_Strict):
    party: str = Field(min_length=1)
    filters: Filters = {}


class _Condition(_Strict):
    party: str = Field(min_length=1)
    link: Literal["person", "household"] = "person"
    filters: Filters = {}


class _Spec(_Strict):
    purpose: str = Field(min_length=10, max_length=2000)
    title: str = ""
    population: _Population
    conditions: list[_Condition] = []
    group_by: str = Field(pattern=r"^[a-z_]+\.[a-z_]+$")
    group_filters: Filters = {}
    epsilon: float = Field(0.0, ge=0)


def _predicates(filters: Filters) -> tuple[Predicate, ...]:
    return tuple(Predicate(attr, tuple(str(v) for v in values)) for attr, values in filters.items())


def spec_from_dict(data: Any, *, source: str = "query spec") -> QuerySpec:
    """Build a QuerySpec from a dict (a parsed file); InvalidRequest listing every problem."""
    try:
        m = _Spec.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
            for e in exc.errors()
        ]
        raise InvalidRequest(
            f"{source}: {len(problems)} problem(s):\n  " + "\n  ".join(problems)
        ) from None
    group_party, group_by = m.group_by.split(".", 1)
    return QuerySpec(
        purpose=m.purpose,
        title=m.title,
        population_party=m.population.party,
        population_filters=_predicates(m.population.filters),
        group_party=group_party,
        group_by=group_by,
        group_filters=_predicates(m.group_filters),
        conditions=tuple(Condition(c.party, _predicates(c.filters), c.link) for c in m.conditions),
        epsilon=m.epsilon,
    )


def load_query_spec(path: Path) -> QuerySpec:
    """Read a YAML spec file; InvalidInput if it is not YAML, InvalidRequest if invalid."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"{path}: no such file") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{path}: not valid YAML: {exc}") from None
    return spec_from_dict(data, source=str(path))

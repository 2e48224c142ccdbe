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
    group_by: immigration.immigration_status     # or a list of two, the second the
                                    # population's own: [immigration.immigration_status,
                                    #                    education.local_authority]
    group_filters: {}               # optional, on the grouping department
    measure: count                  # or {mean: absence_rate} / {sum: ...} (the population's)
    # Period snapshots are parties too: a transition table groups the
    # population (immigration-2024) by its own status and by the status of
    # the same person in a later snapshot:
    #   group_by: [immigration-2026.immigration_status, immigration-2024.immigration_status]
    epsilon: 0.5                    # optional; the federation default otherwise
    project: childrens-commissioner-2026   # the approved project it serves

``load_query_spec`` validates the whole file and reports every problem at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from headcount.domain.query import Condition, Predicate, QuerySpec
from headcount.errors import InvalidInput, InvalidRequest

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


# party.attribute; a party may be a period snapshot such as immigration-2024.
GroupBy = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*\.[a-z_]+$")]


class _Spec(_Strict):
    purpose: str = Field(min_length=10, max_length=2000)
    title: str = ""
    population: _Population
    conditions: list[_Condition] = []
    group_by: GroupBy | list[GroupBy] = Field(min_length=1)
    group_filters: Filters = {}
    measure: Literal["count"] | dict[Literal["mean", "sum"], str] = "count"
    epsilon: float = Field(0.0, ge=0)
    project: str = ""


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
    dims = [m.group_by] if isinstance(m.group_by, str) else list(m.group_by)
    if len(dims) > 2:
        raise InvalidRequest(f"{source}: group_by takes at most two attributes")
    group_party, group_by = dims[0].split(".", 1)
    population_group_by = ""
    if len(dims) == 2:
        party, population_group_by = dims[1].split(".", 1)
        if party != m.population.party:
            raise InvalidRequest(
                f"{source}: the second group_by must be the population's "
                f"({m.population.party}) own attribute"
            )
    kind, attr = ("count", "")
    if isinstance(m.measure, dict):
        if len(m.measure) != 1:
            raise InvalidRequest(f"{source}: measure names one of mean or sum")
        ((kind, attr),) = m.measure.items()
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
        population_group_by=population_group_by,
        measure=kind,
        measure_attribute=attr,
        project_id=m.project,
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

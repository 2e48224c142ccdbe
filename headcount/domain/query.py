"""What an analyst may ask: a count, sum or mean over linked records.

A query counts one department's records (the population, optionally filtered
on its own approved attributes) grouped by an approved categorical attribute
held by another department, and optionally by one of the population's own (a
two-way table). Conditions add departments the records must be linked to,
person to person or through a household. A sum or mean is of a numeric
attribute of the population, clipped to the catalogue's bounds. Records of
the population with no linked record in the grouping department are counted
in their own group, so the table adds up to the population.

A party may be one period snapshot of a department (``immigration-2024``,
``PartyConfig.department``); its attributes are its department's. A
transition table is then a two-way table whose population is the earlier
snapshot and whose grouping party is the later one, and a cohort outcome a
measure of the later snapshot grouped (or conditioned) by the earlier one
(``headcount/longitudinal.py``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import asdict, dataclass
from typing import Any

from headcount.departments import ATTRIBUTES, Attribute, attributes
from headcount.errors import InvalidRequest, PolicyRefused

MAX_PURPOSE_CHARS = 2000
MAX_TITLE_CHARS = 200
# A category list is short (the catalogue's largest has a few dozen values).
MAX_FILTER_VALUES = 256
# Filters per list (one per approved attribute is all a query needs) and
# conditions per query (one per other department).
MAX_FILTERS = 32
MAX_CONDITIONS = 32
# The smallest epsilon a query may spend: below it the noise scale (2/epsilon
# for a count) is beyond any useful table, and tiny or denormal numbers would
# overflow the noise arithmetic.
MIN_QUERY_EPSILON = 0.001


def check_purpose(purpose: str) -> None:
    """Refuse (InvalidRequest) a purpose a query may not state: under 10
    characters, or over `MAX_PURPOSE_CHARS`."""
    if len(purpose.strip()) < 10:
        raise InvalidRequest("state the purpose of the query (at least 10 characters)")
    if len(purpose) > MAX_PURPOSE_CHARS:
        raise InvalidRequest(f"purpose is longer than {MAX_PURPOSE_CHARS} characters")


@dataclass(frozen=True, slots=True)
class Predicate:
    """``attribute`` IN ``values`` on one department's categorical attribute."""

    attribute: str
    values: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.attribute or not self.values:
            raise InvalidRequest("a filter needs an attribute and at least one value")
        if len(self.values) > MAX_FILTER_VALUES:
            raise InvalidRequest(
                f"a filter takes at most {MAX_FILTER_VALUES} values, not {len(self.values)}"
            )


def check_filters(what: str, filters: Sized) -> None:
    """Refuse (InvalidRequest) more than `MAX_FILTERS` filters in one list."""
    if len(filters) > MAX_FILTERS:
        raise InvalidRequest(f"{what} take at most {MAX_FILTERS} filters, not {len(filters)}")


LINKS = ("person", "household")
MEASURES = ("count", "mean", "sum")


@dataclass(frozen=True, slots=True)
class Condition:
    """Counted records must be linked to a record at ``party`` (``link="person"``)
    or live in a household with one (``link="household"``) that passes ``filters``."""

    party: str
    filters: tuple[Predicate, ...] = ()
    link: str = "person"

    def __post_init__(self) -> None:
        if self.link not in LINKS:
            raise InvalidRequest(f"a condition's link is one of {LINKS}, not {self.link!r}")
        check_filters("a condition's filters", self.filters)


@dataclass(frozen=True, slots=True)
class QuerySpec:
    purpose: str
    population_party: str
    group_party: str
    group_by: str
    population_filters: tuple[Predicate, ...] = ()
    group_filters: tuple[Predicate, ...] = ()
    epsilon: float = 0.0  # 0: the federation default
    title: str = ""
    conditions: tuple[Condition, ...] = ()
    # A second dimension: the population's own attribute (a two-way table).
    population_group_by: str = ""
    # "count", or "mean" / "sum" of measure_attribute per cell (both are
    # released either way: they come from the same noisy slots).
    measure: str = "count"
    measure_attribute: str = ""  # a numeric attribute of the population
    project_id: str = ""  # the approved project the query serves

    def __post_init__(self) -> None:
        check_purpose(self.purpose)
        if self.measure not in MEASURES:
            raise InvalidRequest(f"measure is one of {MEASURES}, not {self.measure!r}")
        if (self.measure != "count") != bool(self.measure_attribute):
            raise InvalidRequest("a mean or sum needs a measure_attribute; a count takes none")
        if not math.isfinite(self.epsilon) or self.epsilon < 0:
            raise InvalidRequest("epsilon must be finite and >= 0 (0 = federation default)")
        if 0 < self.epsilon < MIN_QUERY_EPSILON:
            raise InvalidRequest(
                f"epsilon must be 0 (the federation default) or at least {MIN_QUERY_EPSILON}"
            )
        if len(self.title) > MAX_TITLE_CHARS:
            raise InvalidRequest(f"title is longer than {MAX_TITLE_CHARS} characters")
        check_filters("population_filters", self.population_filters)
        check_filters("group_filters", self.group_filters)
        if len(self.conditions) > MAX_CONDITIONS:
            raise InvalidRequest(
                f"a query takes at most {MAX_CONDITIONS} conditions, not {len(self.conditions)}"
            )


def spec_to_json(spec: QuerySpec) -> dict[str, Any]:
    """The spec as plain JSON (lists, not tuples), for the audit log and the store."""
    loaded: dict[str, Any] = json.loads(json.dumps(asdict(spec)))
    return loaded


def unlinked_group(party: str) -> str:
    """Label of the cell counting population records with no link into ``party``."""
    return f"not known to {party}"


def _known(party: str, department: str) -> dict[str, Attribute]:
    """The attributes of ``department`` (``party`` itself when empty) by name."""
    dept = department or party
    return {a.name: a for a in attributes(dept)} if dept in ATTRIBUTES else {}


def _named(attribute: str, known: Mapping[str, Attribute]) -> str:
    """An attribute as a published refusal may name it: quoted when it is one
    of the department's catalogue attributes, else not at all. Refusals are
    published in the audit log, and a string that is no attribute could be
    anything the analyst typed (a child's name); the analyst's own reply
    quotes it."""
    return repr(attribute) if attribute in known else "an attribute not in its catalogue"


def check_predicates(
    party: str, approved: Iterable[str], predicates: Sequence[Predicate], *, department: str = ""
) -> None:
    """Refuse filters on attributes ``party`` has not approved, or unknown values.

    ``department`` names the file contract when it is not the party's name
    (a period snapshot such as ``immigration-2024`` follows ``immigration``'s).
    """
    approved_set = set(approved)
    known = _known(party, department)
    for p in predicates:
        if p.attribute not in approved_set:
            raise PolicyRefused(
                f"{party} does not allow filtering on {p.attribute!r}",
                public=f"{party} does not allow filtering on {_named(p.attribute, known)}",
            )
        attr = known[p.attribute]
        bad = [v for v in p.values if v not in attr.categories]
        if bad:
            # The values are not quoted: a refusal may be logged and published,
            # and a value that is not a category could be anything (a name).
            raise InvalidRequest(
                f"{party}.{p.attribute}: {len(bad)} value(s) are not among its categories; "
                f"allowed: {list(attr.categories)}"
            )


def check_measure(
    party: str, approved: Iterable[str], attribute: str, *, department: str = ""
) -> Attribute:
    """An approved numeric attribute to average; PolicyRefused otherwise."""
    known = _known(party, department)
    attr = known.get(attribute)
    if attr is None or attribute not in set(approved) or not attr.is_numeric:
        raise PolicyRefused(
            f"{party} does not allow averaging {attribute!r}",
            public=f"{party} does not allow averaging {_named(attribute, known)}",
        )
    return attr


def check_group_by(
    party: str, approved: Iterable[str], attribute: str, *, department: str = ""
) -> tuple[str, ...]:
    """The categories of an approved group-by attribute; PolicyRefused otherwise."""
    known = _known(party, department)
    if attribute not in set(approved) or attribute not in known:
        raise PolicyRefused(
            f"{party} does not allow grouping by {attribute!r}",
            public=f"{party} does not allow grouping by {_named(attribute, known)}",
        )
    attr = known[attribute]
    if attr.is_numeric:
        raise PolicyRefused(f"{party}.{attribute} is numeric; grouping by it would isolate people")
    return attr.categories

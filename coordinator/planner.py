"""Turn a query spec into a chain of hops through the linkage graph.

A chain starts at an *origin* node, which encrypts a 0/1 indicator per record
under its own Paillier key; passes through *filter* nodes, each of which keeps
(re-randomised) or replaces with E(0) the ciphertext aligned to each of its
records; and ends at the *group* node, which sums per category of its
attribute. Between hops the coordinator aligns ciphertexts to the next node's
tokens through a person link (one-to-one clusters) or a household link (sum of
the previous node's ciphertexts at the same keyed address).

Two shapes are planned:

* person chain: population -> person conditions... -> grouping department;
* household chain: household condition's department (one flag per household)
  -> population (by household) -> person conditions... -> grouping department,
  where the grouping department may be the population itself.

Parties are planned by name, so a period snapshot (``immigration-2024``) is a
department like any other here: a transition table is a person chain from
the earlier snapshot (packing its own attribute) to the later one, and a
cohort mean is measured at the population (origin), which is why a cohort
takes the later snapshot as population and the earlier as group or condition.
"""

from __future__ import annotations

from dataclasses import dataclass

from headcount.domain.query import Predicate, QuerySpec
from headcount.errors import InvalidRequest

ORIGIN, FILTER, GROUP = "origin", "filter", "group"


@dataclass(frozen=True, slots=True)
class Hop:
    party: str
    role: str  # ORIGIN | FILTER | GROUP
    filters: tuple[Predicate, ...] = ()
    link: str = ""  # how ciphertexts reach this hop: "" (origin), "person" or "household"
    group_by: str = ""
    per_household: bool = False
    condition: bool = False  # this department is a condition of the query

    def __post_init__(self) -> None:
        if (self.role == ORIGIN) != (self.link == ""):
            raise InvalidRequest("only the origin hop has no incoming link")


@dataclass(frozen=True, slots=True)
class Plan:
    hops: tuple[Hop, ...]
    # Packed at the origin: one count slot per category of origin_group_by
    # (a single slot when empty), then as many sum slots of measure_attribute.
    origin_group_by: str = ""
    measure_attribute: str = ""

    @property
    def origin(self) -> str:
        return self.hops[0].party

    @property
    def parties(self) -> list[str]:
        return [h.party for h in self.hops]

    @property
    def unlinked_cell(self) -> bool:
        """Whether records with no link into the grouping department get their own cell."""
        last = self.hops[-1]
        return last.link == "person" and not last.condition

    def __post_init__(self) -> None:
        if len(self.hops) < 2 or self.hops[0].role != ORIGIN or self.hops[-1].role != GROUP:
            raise InvalidRequest("a plan runs from an origin hop to a group hop")
        parties = [h.party for h in self.hops]
        if len(set(parties)) != len(parties):
            raise InvalidRequest(f"a department may appear only once in a query chain: {parties}")


def plan_query(spec: QuerySpec, parties: tuple[str, ...]) -> Plan:
    """The hop chain for ``spec``; InvalidRequest naming what cannot be planned."""
    named = [spec.population_party, spec.group_party, *(c.party for c in spec.conditions)]
    unknown = sorted({p for p in named if p not in parties})
    if unknown:
        raise InvalidRequest(f"unknown party {unknown[0]!r}; the federation has {list(parties)}")
    households = [c for c in spec.conditions if c.link == "household"]
    persons = [c for c in spec.conditions if c.link == "person"]
    if len(households) > 1:
        raise InvalidRequest("at most one household condition per query")
    middle = tuple(Hop(c.party, FILTER, c.filters, "person", condition=True) for c in persons)
    pop, grp = spec.population_party, spec.group_party
    if households:
        if spec.population_group_by or spec.measure_attribute:
            raise InvalidRequest(
                "two-way tables and means are not supported with a household condition yet"
            )
        h = households[0]
        origin = Hop(h.party, ORIGIN, h.filters, per_household=True, condition=True)
        if grp == pop:
            if persons:
                raise InvalidRequest(
                    "with a household condition and grouping by the population's own "
                    "attribute, person conditions are not supported yet"
                )
            hops: tuple[Hop, ...] = (
                origin,
                Hop(pop, GROUP, spec.population_filters, "household", spec.group_by),
            )
        else:
            hops = (
                origin,
                Hop(pop, FILTER, spec.population_filters, "household"),
                *middle,
                Hop(grp, GROUP, spec.group_filters, "person", spec.group_by),
            )
        return Plan(hops)
    if grp == pop:
        # Grouping by the population's own attribute: the origin packs one
        # count slot per category, and the last condition sums everything.
        if not persons:
            raise InvalidRequest(
                "grouping by the population's own attribute needs a condition in another "
                "department (a table of one department alone is that department's to publish)"
            )
        if spec.population_group_by:
            raise InvalidRequest("both dimensions would be the population's own attributes")
        *rest, last = middle
        hops = (
            Hop(pop, ORIGIN, spec.population_filters),
            *rest,
            Hop(last.party, GROUP, last.filters, "person", "", condition=True),
        )
        return Plan(hops, origin_group_by=spec.group_by, measure_attribute=spec.measure_attribute)
    hops = (
        Hop(pop, ORIGIN, spec.population_filters),
        *middle,
        Hop(grp, GROUP, spec.group_filters, "person", spec.group_by),
    )
    return Plan(
        hops,
        origin_group_by=spec.population_group_by,
        measure_attribute=spec.measure_attribute,
    )

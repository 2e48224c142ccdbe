"""How far one person's record can move a query's released counts, and who adds noise.

Neighbouring datasets differ in one person's record in one department: the
record is added, removed, or changed (the attack games play both "target in
or out" and "status A or B"). A table of counts (every query has a group-by,
and a person chain adds a "not known to X" cell) then moves by at most 2 in L1
norm for each record the change touches: a changed record leaves one cell and
enters another. A household chain multiplies that by the number of
population records one flagged household may contribute (the federation's
``household_cap``), since one adult's record flags a household and every
counted child in it moves with the flag.

The noise of every query is the sum of shares drawn by its *share-holders*:
the coordinator and every node of the chain except the origin, which decrypts
and so must not know any share (``headcount.privacy.noise``). Both facts are
announced in the query's signed audit event and re-derived by every node
before it takes part, so a coordinator cannot shrink them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from headcount.errors import InvalidRequest

COORDINATOR = "coordinator"  # the share-holder that is not a node

# A changed record leaves one cell and enters another.
CHANGE_FACTOR = 2


def count_sensitivity(*, household: bool, household_cap: int) -> int:
    """L1 sensitivity of a query's count vector under one record's change.

    ``household``: the query counts population records through a household
    condition, each flagged household contributing at most ``household_cap``
    of them (an int >= 1).
    """
    if isinstance(household_cap, bool) or not isinstance(household_cap, int):
        raise InvalidRequest("household_cap must be an int")
    if household_cap < 1:
        raise InvalidRequest(f"household_cap must be >= 1, got {household_cap}")
    return CHANGE_FACTOR * (household_cap if household else 1)


def is_household_query(spec: Mapping[str, Any]) -> bool:
    """Whether a query spec (as JSON, ``domain.query.spec_to_json``) has a household link."""
    conditions = spec.get("conditions") or ()
    if not isinstance(conditions, list | tuple):
        raise InvalidRequest("a query's conditions must be a list")
    return any(isinstance(c, Mapping) and c.get("link") == "household" for c in conditions)


@dataclass(frozen=True, slots=True)
class NoisePlan:
    """The noise a query's release carries, as announced in its audit event.

    ``sensitivity``: L1 sensitivity of each count slot (sum slots multiply it
    by the attribute's scaled maximum). ``shareholders``: the coordinator, then
    each non-origin node of the chain in chain order; at least two.
    """

    sensitivity: int
    shareholders: tuple[str, ...]

    def __post_init__(self) -> None:
        if isinstance(self.sensitivity, bool) or not isinstance(self.sensitivity, int):
            raise InvalidRequest("sensitivity must be an int")
        if self.sensitivity < 1:
            raise InvalidRequest(f"sensitivity must be >= 1, got {self.sensitivity}")
        if len(self.shareholders) < 2 or self.shareholders[0] != COORDINATOR:
            raise InvalidRequest("noise needs the coordinator and at least one other share-holder")
        if len(set(self.shareholders)) != len(self.shareholders):
            raise InvalidRequest("a share-holder may appear only once")

    @property
    def nodes(self) -> tuple[str, ...]:
        """The share-holders that are party nodes, in the order they add shares."""
        return self.shareholders[1:]

    def to_json(self) -> dict[str, Any]:
        return {"sensitivity": self.sensitivity, "shareholders": list(self.shareholders)}

    @classmethod
    def from_json(cls, data: object) -> NoisePlan:
        if not isinstance(data, Mapping):
            raise InvalidRequest("a query's noise plan must be an object")
        holders = data.get("shareholders")
        if not isinstance(holders, list) or not all(isinstance(h, str) for h in holders):
            raise InvalidRequest("a noise plan names its share-holders")
        sensitivity = data.get("sensitivity")
        if not isinstance(sensitivity, int):
            raise InvalidRequest("a noise plan states its sensitivity")
        return cls(sensitivity, tuple(holders))


def plan_noise(chain: Sequence[str], spec: Mapping[str, Any], *, household_cap: int) -> NoisePlan:
    """The noise plan for a query whose hop chain is ``chain`` (origin first)."""
    if len(chain) < 2:
        raise InvalidRequest("a query chain has an origin and at least one more node")
    return NoisePlan(
        count_sensitivity(household=is_household_query(spec), household_cap=household_cap),
        (COORDINATOR, *chain[1:]),
    )

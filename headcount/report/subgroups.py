"""Link rates by subgroup, from ordinary protected queries.

Whether a child's records link can depend on who the child is: names
transliterated in several ways, dates of birth recorded differently, families
that move often. Linkage error that differs between groups biases every count
built on the links, against exactly the children who most need to be seen.

The coordinator cannot measure this: subgroups are department attributes it
must never see. And no node may be told which of its records are linked
elsewhere (that would be a lookup). So the rates are asked for as what any
analyst may ask for, through the hop chain, under an approved project, charged
to each department's privacy budget: a two-way table of department A's
records by A's own attribute (``population_group_by``) against department B.
Its "not known to B" row (`headcount.domain.query.unlinked_group`) counts, per
subgroup of A, the records with no link into B, and the column margin counts
all of A's records in the subgroup, so

    link rate(subgroup) = 1 - unlinked / total,

both numbers noisy (discrete Laplace, added under encryption) and rounded or
suppressed by the decrypting node before release. The rate is therefore an
*estimate from protected counts*; `SubgroupRate.low` and `high` bound it
within [0, 1] in 95% of releases. A withheld count is shown as withheld, with
the range of rates its suppression still allows.

By default B is grouped by nothing (one "linked" cell): the margin is then
the sum of only two noisy cells, which keeps the noise on the rate smallest.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from headcount.client import Client, Release
from headcount.config import FederationConfig
from headcount.domain.query import QuerySpec, unlinked_group
from headcount.errors import BudgetExhausted, InvalidRequest, PolicyRefused
from headcount.privacy.noise import interval_halfwidth, margin_bounds
from headcount.protect.labels import WITHHELD, status_label
from headcount.protect.sdc import PRIMARY, RELEASED, SECONDARY, TOTAL, SdcPolicy

log = logging.getLogger(__name__)

DEFAULT_POPULATIONS: tuple[str, ...] = ("education", "health")
DEFAULT_ATTRIBUTES: tuple[str, ...] = ("age_band", "sex", "local_authority")
# Per query: with four departments, 18 queries cost education and health 1.2
# each (9 of their own, 3 as the other's partner) and the other two 0.6 each.
DEFAULT_EPSILON = 0.1
DEFAULT_MAX_QUERIES = 18
PURPOSE = (
    "Linkage quality report: measure whether {population} records link to {partner} "
    "at different rates across {attribute}, since linkage error that differs between "
    "groups biases counts of the children most in need of being seen."
)


@dataclass(frozen=True, slots=True)
class SubgroupPlan:
    """Which subgroup link rates to ask for, and what each query may spend.

    ``populations``: departments whose records are counted (A); those not in
    the federation are skipped. ``partners``: departments linked into (B);
    empty means every other department. ``attributes``: A's own attributes to
    break down by, one query each. ``partner_attribute``: B's attribute the
    linked records are grouped by ("" = one linked cell, the least noisy).
    ``epsilon``: spent per query, by every department in it. ``max_queries``:
    at most this many queries are run, in plan order.

    Raises:
        InvalidRequest: a non-positive epsilon or query count.
    """

    populations: tuple[str, ...] = DEFAULT_POPULATIONS
    attributes: tuple[str, ...] = DEFAULT_ATTRIBUTES
    partners: tuple[str, ...] = ()
    partner_attribute: str = ""
    epsilon: float = DEFAULT_EPSILON
    max_queries: int = DEFAULT_MAX_QUERIES

    def __post_init__(self) -> None:
        if not math.isfinite(self.epsilon) or self.epsilon <= 0:
            raise InvalidRequest("the subgroup queries' epsilon must be > 0")
        if self.max_queries < 1:
            raise InvalidRequest("max_queries must be >= 1")


@dataclass(frozen=True, slots=True)
class SubgroupQuery:
    """One query: A's records by A's ``attribute``, linked or not into B."""

    population: str
    partner: str
    attribute: str
    partner_attribute: str = ""


def plan_queries(federation: FederationConfig, plan: SubgroupPlan) -> list[SubgroupQuery]:
    """The queries ``plan`` asks for in this federation, at most ``plan.max_queries``.

    An attribute the population's node has not approved for grouping is
    skipped (the node would refuse it anyway).
    """
    names = federation.party_names
    out: list[SubgroupQuery] = []
    for population in plan.populations:
        if population not in names:
            continue
        approved = set(federation.party(population).approved_attributes)
        partners = [p for p in (plan.partners or names) if p in names and p != population]
        for partner in partners:
            for attribute in plan.attributes:
                if attribute in approved:
                    out.append(
                        SubgroupQuery(population, partner, attribute, plan.partner_attribute)
                    )
    return out[: plan.max_queries]


@dataclass(frozen=True, slots=True)
class SubgroupRate:
    """The link rate of one subgroup, estimated from protected counts.

    ``total``: released count of A's records in the subgroup (None: withheld).
    ``unlinked``: released count of those with no link into B (None: withheld).
    ``total_status`` / ``unlinked_status``: each count's status under the
    small-number rule (released, primary or secondary). ``rate``:
    ``1 - unlinked / total``, clipped to [0, 1]; None when either is withheld.
    ``low``/``high``: an interval within [0, 1] that holds the true rate in 95%
    of releases (noise and rounding); for a withheld rate, the range the
    suppression leaves, when the total was released; else None. ``note``
    explains a gap.
    """

    group: str
    total: int | None
    unlinked: int | None
    rate: float | None
    low: float | None
    high: float | None
    note: str = ""
    total_status: str = RELEASED
    unlinked_status: str = RELEASED

    def __post_init__(self) -> None:
        for name in ("rate", "low", "high"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise InvalidRequest(f"a rate's {name} lies in [0, 1], got {value!r}")
        if (self.low is None) != (self.high is None):
            raise InvalidRequest("a rate's interval has both ends or neither")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise InvalidRequest("a rate's interval must not be reversed")

    @property
    def withheld(self) -> bool:
        return self.rate is None

    def to_json(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 4)

        return {
            "group": self.group,
            "total": self.total,
            "unlinked": self.unlinked,
            "total_status": self.total_status,
            "unlinked_status": self.unlinked_status,
            "rate": r(self.rate),
            "low": r(self.low),
            "high": r(self.high),
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class SubgroupResult:
    """A subgroup query's released rates, or why it was not answered."""

    query: SubgroupQuery
    rates: tuple[SubgroupRate, ...] = ()
    query_id: str = ""
    epsilon: float = 0.0
    noise_scale: float = 0.0
    refused: str = ""  # the reason, when the federation refused the query

    def to_json(self) -> dict[str, Any]:
        return {
            "population": self.query.population,
            "partner": self.query.partner,
            "attribute": self.query.attribute,
            "partner_attribute": self.query.partner_attribute,
            "query_id": self.query_id,
            "epsilon": self.epsilon,
            "noise_scale": self.noise_scale,
            "refused": self.refused,
            "rates": [r.to_json() for r in self.rates],
        }


def query_spec(query: SubgroupQuery, project_id: str, epsilon: float) -> QuerySpec:
    """The protected two-way query behind one subgroup result."""
    return QuerySpec(
        purpose=PURPOSE.format(
            population=query.population, partner=query.partner, attribute=query.attribute
        ),
        title=(
            f"Linkage quality: {query.population} records by {query.attribute}, "
            f"linked to {query.partner} or not"
        ),
        population_party=query.population,
        population_group_by=query.attribute,
        group_party=query.partner,
        group_by=query.partner_attribute,
        epsilon=epsilon,
        project_id=project_id,
    )


@dataclass(frozen=True, slots=True)
class _Slack:
    """How far each released count may sit from the truth, at 97.5% each (so the
    rate's interval, which uses both, holds in >= 95% of releases: a union bound).

    ``unlinked``: the unlinked cell's noise plus half the rounding base;
    ``above``/``below``: how far the subgroup margin (a sum of noisy cells, each
    clipped at 0) may overstate or understate the truth, rounding included.
    """

    unlinked: int
    above: int
    below: int

    @classmethod
    def of(
        cls, noise_scale: float, shareholders: int, margin_cells: int, policy: SdcPolicy
    ) -> _Slack:
        rounding = policy.rounding_base // 2
        holders = max(2, shareholders)
        above, below = margin_bounds(noise_scale, holders, margin_cells, 0.975)
        unlinked = interval_halfwidth(noise_scale, holders, 0.975) + rounding
        return cls(unlinked, above + rounding, below + rounding)


def _rate_interval(total: int, unlinked: int, slack: _Slack) -> tuple[float, float]:
    """The interval, within [0, 1], that the two counts' intervals allow."""
    total_low = max(1, total - slack.above)
    total_high = total + slack.below
    low = 1.0 - (unlinked + slack.unlinked) / total_low
    high = 1.0 - max(0, unlinked - slack.unlinked) / total_high
    return _clip(low), _clip(high)


def _withheld_range(
    total: int, unlinked_status: str, slack: _Slack, policy: SdcPolicy
) -> tuple[float, float]:
    """The rates a withheld unlinked count leaves possible (95%), given the total.

    Primary suppression says the noisy count was below the threshold, so the
    rate is high; secondary suppression says it was at least the threshold
    (large enough to publish), so the rate is at most what that allows.
    """
    total_low = max(1, total - slack.above)
    total_high = total + slack.below
    if unlinked_status == PRIMARY:
        return _clip(1.0 - (policy.threshold - 1 + slack.unlinked) / total_low), 1.0
    if unlinked_status == SECONDARY:
        return 0.0, _clip(1.0 - max(0, policy.threshold - slack.unlinked) / total_high)
    return 0.0, 1.0


def _linked_range(
    total: int, linked: int | None, status: str, slack: _Slack, policy: SdcPolicy
) -> tuple[float, float]:
    """The rates the single linked cell allows (95%): its interval over the total's
    when released; below what the threshold allows when primary-suppressed."""
    total_low = max(1, total - slack.above)
    total_high = total + slack.below
    if linked is not None:
        return (
            _clip(max(0, linked - slack.unlinked) / total_high),
            _clip((linked + slack.unlinked) / total_low),
        )
    if status == PRIMARY:
        return 0.0, _clip((policy.threshold - 1 + slack.unlinked) / total_low)
    if status == SECONDARY:
        return _clip(max(0, policy.threshold - slack.unlinked) / total_high), 1.0
    return 0.0, 1.0


def _clip(value: float) -> float:
    return min(1.0, max(0.0, value))


def rates_from_release(
    table: pd.DataFrame,
    query: SubgroupQuery,
    *,
    noise_scale: float,
    policy: SdcPolicy,
    shareholders: int = 2,
) -> tuple[SubgroupRate, ...]:
    """Per-subgroup link rates from a released two-way table (`Client.query`'s frame).

    ``table`` has columns ``group`` (B's categories, "not known to B", "Total"),
    ``A.attribute`` (A's subgroups, "Total"; the population node names a
    two-way table's column with its party), ``count`` and ``status``.

    Raises:
        InvalidRequest: the table lacks the subgroup column or the unlinked row.
    """
    attribute = f"{query.population}.{query.attribute}"
    if attribute not in table.columns:
        raise InvalidRequest(f"the release is not broken down by {attribute!r}")
    unlinked_label = unlinked_group(query.partner)
    if not (table["group"] == unlinked_label).any():
        raise InvalidRequest(f"the release has no {unlinked_label!r} row")
    linked_groups = {g for g in table["group"] if g not in (unlinked_label, TOTAL)}
    # The margin is the sum of the linked cells and the unlinked cell.
    margin_cells = len(linked_groups) + 1
    subgroups = [g for g in dict.fromkeys(table[attribute]) if g != TOTAL]

    def cell(group: str, column: str) -> tuple[int | None, str]:
        rows = table[(table["group"] == group) & (table[attribute] == column)]
        if rows.empty:
            return None, WITHHELD
        status = str(rows["status"].iloc[0])
        return (int(rows["count"].iloc[0]), status) if status == RELEASED else (None, status)

    slack = _Slack.of(noise_scale, shareholders, margin_cells, policy)
    out: list[SubgroupRate] = []
    for g in subgroups:
        (total, total_status), (unlinked, unlinked_status) = (
            cell(TOTAL, g),
            cell(unlinked_label, g),
        )
        if not total:
            why = status_label(total_status, policy).long
            out.append(
                SubgroupRate(
                    g,
                    None,
                    unlinked,
                    None,
                    None,
                    None,
                    f"subgroup total {why}",
                    total_status,
                    unlinked_status,
                )
            )
            continue
        if unlinked is None:
            low, high = _withheld_range(total, unlinked_status, slack, policy)
            if len(linked_groups) == 1:
                # One linked cell: the rate is also linked / total, so that
                # cell's own value or suppression narrows the range.
                linked, linked_status = cell(next(iter(linked_groups)), g)
                by_linked = _linked_range(total, linked, linked_status, slack, policy)
                low, high = max(low, by_linked[0]), min(high, by_linked[1])
                low, high = (low, high) if low <= high else (0.0, 1.0)
            out.append(
                SubgroupRate(
                    g,
                    total,
                    None,
                    None,
                    low,
                    high,
                    _withheld_note(unlinked_status, total, query.partner, policy),
                    total_status,
                    unlinked_status,
                )
            )
            continue
        rate = _clip(1.0 - unlinked / total)
        low, high = _rate_interval(total, unlinked, slack)
        out.append(
            SubgroupRate(
                g,
                total,
                unlinked,
                rate,
                min(low, rate),
                max(high, rate),
                "",
                total_status,
                unlinked_status,
            )
        )
    return tuple(out)


def _withheld_note(status: str, total: int, partner: str, policy: SdcPolicy) -> str:
    if status == PRIMARY:
        return (
            f"withheld (< {policy.threshold} of {total:,} not known to {partner}): "
            "primary suppression"
        )
    if status == SECONDARY:
        return (
            f"withheld (>= {policy.threshold} of {total:,} not known to {partner}): "
            "secondary suppression, to protect another cell"
        )
    return f"withheld ({status_label(status, policy).long})"


def run_subgroup_queries(
    client: Client,
    queries: Sequence[SubgroupQuery],
    *,
    project_id: str,
    epsilon: float,
    policy: SdcPolicy,
) -> list[SubgroupResult]:
    """Ask each query as the analyst behind ``client``; a refusal is a result.

    A query refused by policy or budget is reported with its reason rather
    than stopping the report (a spent budget is the protection working).
    """
    results: list[SubgroupResult] = []
    for q in queries:
        try:
            release: Release = client.query(query_spec(q, project_id, epsilon))
        except (PolicyRefused, BudgetExhausted) as exc:
            log.info("subgroup query %s x %s by %s refused", q.population, q.partner, q.attribute)
            results.append(SubgroupResult(q, refused=str(exc)))
            continue
        rates = rates_from_release(
            release.frame(),
            q,
            noise_scale=release.noise_scale,
            policy=policy,
            shareholders=release.shareholders,
        )
        results.append(
            SubgroupResult(
                q,
                rates,
                query_id=release.query_id,
                epsilon=release.epsilon,
                noise_scale=release.noise_scale,
            )
        )
    return results

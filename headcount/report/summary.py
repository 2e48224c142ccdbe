"""What the coordinator knows about an epoch, reduced to protected aggregates.

The coordinator holds pseudonymous links: it knows, per department pair, how
many records were linked, the scores behind them and which tokens share a
keyed household. This module reads that from its store and applies the
federation's small-number rule (`headcount.protect.sdc`) to every count before
it reaches a report: counts below the threshold are suppressed, others
rounded, and a suppressed histogram bin cannot be recovered from the total.
Rates are computed from the *released* (rounded) counts, so a reader can
recompute every rate from the numbers shown and learns nothing more.

No token, household key or record-level value leaves this module; the
dataclasses below hold only labels, released counts and rates.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from coordinator.store import CoordinatorStore
from headcount.config import FederationConfig
from headcount.linkage.scores import ScoreHistogram
from headcount.protect.sdc import SdcPolicy, protect_counts


def policy_of(federation: FederationConfig) -> SdcPolicy:
    """The federation's output policy as an `SdcPolicy`."""
    out = federation.output
    return SdcPolicy(out.suppress_below, out.rounding_base, out.secondary_suppression)


def share(numerator: int | None, denominator: int | None) -> float | None:
    """``numerator / denominator`` of two released counts; None if either is withheld or 0."""
    if numerator is None or not denominator:
        return None
    return min(1.0, numerator / denominator)


@dataclass(frozen=True, slots=True)
class ProtectedHistogram:
    """A score histogram after the small-number rule.

    ``counts[i]`` is the released count of bin ``[edges[i], edges[i+1])`` or
    None when withheld, with its reason in ``statuses[i]`` ("primary": below the
    threshold; "secondary": withheld so a suppressed bin cannot be recovered
    from the total). ``total`` is the released number of links binned.
    """

    edges: tuple[float, ...]
    counts: tuple[int | None, ...]
    statuses: tuple[str, ...]
    total: int | None
    threshold: float
    floor: float
    sampled_party: str
    sampled_records: int | None

    @classmethod
    def protect(cls, histogram: ScoreHistogram, policy: SdcPolicy) -> ProtectedHistogram:
        labels = [
            f"{lo:.3f}-{hi:.3f}" for lo, hi in itertools.pairwise(histogram.edges)
        ]  # unique: edges increase
        table = protect_counts(dict(zip(labels, histogram.counts, strict=True)), policy)
        return cls(
            edges=histogram.edges,
            counts=tuple(c.value for c in table.cells),
            statuses=tuple(c.status for c in table.cells),
            total=table.total,
            threshold=histogram.threshold,
            floor=histogram.floor,
            sampled_party=histogram.sampled_party,
            sampled_records=policy.release_value(histogram.sampled_records),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "edges": [round(e, 4) for e in self.edges],
            "counts": list(self.counts),
            "statuses": list(self.statuses),
            "total": self.total,
            "threshold": round(self.threshold, 4),
            "floor": round(self.floor, 4),
            "sampled_party": self.sampled_party,
            "sampled_records": self.sampled_records,
        }


@dataclass(frozen=True, slots=True)
class PairSummary:
    """Person links between two departments (``left < right``), as released.

    ``left_rate``: share of ``left``'s records linked to a ``right`` record
    (and vice versa), from released counts. Estimates come from the EM fit on
    the score distribution (`headcount.linkage.quality`), None when too few
    candidates were scored to fit.
    """

    left: str
    right: str
    threshold: float
    links: int | None
    key_links: int | None
    left_records: int | None
    right_records: int | None
    left_rate: float | None
    right_rate: float | None
    est_precision: float | None
    est_recall: float | None
    est_f1: float | None
    histogram: ProtectedHistogram | None
    # What the estimate rests on (`linkage.quality.ESTIMATE_BASES`).
    estimate_basis: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "left": self.left,
            "right": self.right,
            "threshold": round(self.threshold, 4),
            "links": self.links,
            "key_links": self.key_links,
            "left_records": self.left_records,
            "right_records": self.right_records,
            "left_rate": _round(self.left_rate),
            "right_rate": _round(self.right_rate),
            "est_precision": self.est_precision,
            "est_recall": self.est_recall,
            "est_f1": self.est_f1,
            "estimate_basis": self.estimate_basis,
            "histogram": None if self.histogram is None else self.histogram.to_json(),
        }


@dataclass(frozen=True, slots=True)
class HouseholdPair:
    """Keyed households (addresses) two departments share, as released.

    ``left_households``: distinct household keys among ``left``'s records;
    ``shared``: keys found at both; ``left_rate = shared / left_households``.
    """

    left: str
    right: str
    left_households: int | None
    right_households: int | None
    shared: int | None
    left_rate: float | None
    right_rate: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "left": self.left,
            "right": self.right,
            "left_households": self.left_households,
            "right_households": self.right_households,
            "shared": self.shared,
            "left_rate": _round(self.left_rate),
            "right_rate": _round(self.right_rate),
        }


@dataclass(frozen=True, slots=True)
class PartySummary:
    """One department in the epoch: records, how many link anywhere, households."""

    party: str
    records: int | None
    linked: int | None  # records linked to at least one other department
    linked_rate: float | None
    households: int | None  # distinct keyed households
    with_household: int | None  # records with a household key

    def to_json(self) -> dict[str, Any]:
        return {
            "party": self.party,
            "records": self.records,
            "linked": self.linked,
            "linked_rate": _round(self.linked_rate),
            "households": self.households,
            "with_household": self.with_household,
        }


@dataclass(frozen=True, slots=True)
class EpochSummary:
    """Everything the coordinator contributes to a quality report, protected."""

    epoch_id: str
    threshold: float
    clusters: int | None
    parties: tuple[PartySummary, ...]
    pairs: tuple[PairSummary, ...]
    households: tuple[HouseholdPair, ...]
    policy: SdcPolicy

    def pair(self, left: str, right: str) -> PairSummary:
        """The pair summary for two departments, in either order; KeyError if absent."""
        a, b = sorted((left, right))
        for p in self.pairs:
            if (p.left, p.right) == (a, b):
                return p
        raise KeyError(f"no pair {a} x {b}")

    def link_rate(self, population: str, partner: str) -> float | None:
        """Share of ``population``'s records linked to ``partner``, from released counts."""
        p = self.pair(population, partner)
        return p.left_rate if p.left == population else p.right_rate

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch_id": self.epoch_id,
            "threshold": round(self.threshold, 4),
            "clusters": self.clusters,
            "policy": {
                "threshold": self.policy.threshold,
                "rounding_base": self.policy.rounding_base,
                "secondary": self.policy.secondary,
            },
            "parties": [p.to_json() for p in self.parties],
            "pairs": [p.to_json() for p in self.pairs],
            "households": [h.to_json() for h in self.households],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _estimate(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def summarise_epoch(
    store: CoordinatorStore, epoch_id: str, policy: SdcPolicy | None = None
) -> EpochSummary:
    """Read an epoch's links, scores and households from the coordinator's store,
    protected by ``policy`` (default: the small-number rule's defaults).

    Raises:
        UnknownJob: no such epoch.
        InvalidRequest: a stored score histogram is malformed.
    """
    policy = policy or SdcPolicy()
    info = store.epoch(epoch_id)
    parties = tuple(sorted(info.records))
    released = policy.release_value
    records = {p: released(n) for p, n in info.records.items()}
    stored_histograms = store.score_histograms(epoch_id)

    linked_tokens: dict[str, set[bytes]] = {p: set() for p in parties}
    pairs: list[PairSummary] = []
    for a, b in itertools.combinations(parties, 2):
        # linked(left, right) maps right-party tokens to left-party tokens.
        link_map = store.linked(epoch_id, a, b)
        linked_tokens[b].update(link_map)
        linked_tokens[a].update(link_map.values())
        quality = info.quality.get((a, b))
        links = released(info.pair_links.get((a, b), 0))
        raw_histogram = stored_histograms.get((a, b))
        histogram = (
            None
            if raw_histogram is None
            else ProtectedHistogram.protect(ScoreHistogram.from_json(raw_histogram), policy)
        )
        pairs.append(
            PairSummary(
                left=a,
                right=b,
                threshold=quality.threshold if quality else info.threshold,
                links=links,
                key_links=released(quality.key_links if quality else 0),
                left_records=records[a],
                right_records=records[b],
                left_rate=share(links, records[a]),
                right_rate=share(links, records[b]),
                est_precision=_estimate(quality.est_precision if quality else None),
                est_recall=_estimate(quality.est_recall if quality else None),
                est_f1=_estimate(quality.est_f1 if quality else None),
                histogram=histogram,
                estimate_basis=quality.estimate_basis if quality else None,
            )
        )

    household_keys = {p: store.households(epoch_id, p) for p in parties}
    distinct = {p: set(keys.values()) for p, keys in household_keys.items()}
    party_rows: list[PartySummary] = []
    for p in parties:
        linked = released(len(linked_tokens[p]))
        party_rows.append(
            PartySummary(
                party=p,
                records=records[p],
                linked=linked,
                linked_rate=share(linked, records[p]),
                households=released(len(distinct[p])),
                with_household=released(len(household_keys[p])),
            )
        )
    households = tuple(
        _household_pair(a, b, distinct[a], distinct[b], policy)
        for a, b in itertools.combinations(parties, 2)
    )
    return EpochSummary(
        epoch_id=epoch_id,
        threshold=info.threshold,
        clusters=released(info.clusters),
        parties=tuple(party_rows),
        pairs=tuple(pairs),
        households=households,
        policy=policy,
    )


def _household_pair(
    a: str, b: str, keys_a: set[bytes], keys_b: set[bytes], policy: SdcPolicy
) -> HouseholdPair:
    left, right = policy.release_value(len(keys_a)), policy.release_value(len(keys_b))
    shared = policy.release_value(len(keys_a & keys_b))
    return HouseholdPair(a, b, left, right, shared, share(shared, left), share(shared, right))

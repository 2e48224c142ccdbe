"""What the coordinator and the client hand back about the federation: typed
values, never protobuf messages (`headcount.wire.convert` carries them)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

__all__ = [
    "CeremonySummary",
    "FederationStatus",
    "LinkageSummary",
    "PairLinks",
    "PartyStatus",
    "ProjectView",
]


@dataclass(frozen=True, slots=True)
class PartyStatus:
    party: str
    healthy: bool
    records: int  # in the current epoch; 0 before the first
    epsilon_spent: float  # this period, as the coordinator mirrors the node's ledger
    epsilon_left: float


@dataclass(frozen=True, slots=True)
class FederationStatus:
    federation: str
    ceremony_id: str  # "" before the first ceremony
    epoch_id: str  # "" before the first linkage epoch
    parties: tuple[PartyStatus, ...]
    queries: int
    audit_head: str
    period: str  # e.g. "2026"
    epsilon_per_period: float

    def budgets(self) -> pd.DataFrame:
        """Epsilon spent and left per department this period, one row each."""
        return pd.DataFrame(
            [
                {
                    "party": p.party,
                    "period": self.period,
                    "epsilon_per_period": self.epsilon_per_period,
                    "epsilon_spent": p.epsilon_spent,
                    "epsilon_left": p.epsilon_left,
                }
                for p in self.parties
            ],
            columns=["party", "period", "epsilon_per_period", "epsilon_spent", "epsilon_left"],
        )


@dataclass(frozen=True, slots=True)
class ProjectView:
    """A project as the coordinator lists it, with its approvals and status."""

    project_id: str
    title: str
    purpose: str
    analyst: str
    parties: tuple[str, ...]
    expires: dt.date
    approved_by: tuple[str, ...]
    revoked: bool
    status: str  # "proposed", "approved", "revoked" or "expired"


@dataclass(frozen=True, slots=True)
class CeremonySummary:
    ceremony_id: str
    parties: tuple[str, ...]
    confirmed: bool  # every node derived the same secret


@dataclass(frozen=True, slots=True)
class PairLinks:
    """Links between two departments in an epoch, as the operator sees them."""

    left: str
    right: str
    links: int
    threshold: float  # Dice threshold used for this pair
    key_links: int  # links found by exact keyed match-keys
    # Estimated from the score distribution, no ground truth; None when too
    # few scores to fit.
    est_precision: float | None = None
    est_recall: float | None = None
    # What the estimate rests on (`linkage.quality.ESTIMATE_BASES`); None
    # without an estimate.
    estimate_basis: str | None = None


@dataclass(frozen=True, slots=True)
class LinkageSummary:
    """A linkage epoch as the operator sees it: exact statistics that stay
    within the coordinator's trust domain (never in the audit log)."""

    epoch_id: str
    records: dict[str, int]  # party -> records encoded
    pairs: tuple[PairLinks, ...]
    clusters: int
    threshold: float
    schema_fingerprint: str

"""The client the operator and analysts use to talk to the coordinator.

Every call goes over mutual TLS with the caller's own certificate; the
coordinator authorises by the role inside it. Errors come back as
``HeadcountError`` subclasses with the coordinator's explanation.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from headcount import rpc, tls
from headcount.config import Credential, FederationConfig
from headcount.domain.audit import AuditEvent, verify_chain
from headcount.domain.projects import ProjectDecision, ProjectDoc, ProjectProposal, sign_decision
from headcount.domain.query import QuerySpec
from headcount.domain.release import release_frame
from headcount.domain.status import CeremonySummary, FederationStatus, LinkageSummary, ProjectView
from headcount.errors import ConfigError, UnknownJob
from headcount.protect.sdc import TOTAL
from headcount.wire.coordinator_client import CoordinatorClient


@dataclass(frozen=True, slots=True)
class Release:
    """A released table: what an analyst receives, and all they receive."""

    query_id: str
    epoch_id: str
    title: str
    # The cells, margins apart (so ``table["count"].sum()`` adds cells only).
    # Columns: group, [the population's own attribute, for a two-way table],
    # count (nullable Int64, <NA> when suppressed), status, low and high (the
    # 95% interval of the true count), noise_scale, [mean_<attribute>, mean_low,
    # mean_high, sum_<attribute>]. ``table.attrs`` holds the release's metadata
    # (query id, title, epsilon, noise scale, share-holders, sensitivity,
    # mechanism, interval coverage, budget left).
    table: pd.DataFrame
    # The margins, same columns: each row's and column's total (two-way
    # tables) and the grand total (group and column "Total"), last.
    margins: pd.DataFrame
    epsilon: float
    noise_scale: float  # discrete Laplace scale of the full noise on each count
    budget_remaining: float  # the least any department of the query has left this period
    shareholders: int = 2  # parties whose noise shares make up the noise
    sensitivity: int = 2  # how far one person's record moves the count vector

    @property
    def total(self) -> int | None:
        """The released grand total, or None when it is withheld."""
        last = self.margins["count"].iloc[-1]
        return None if pd.isna(last) else int(last)

    def frame(self) -> pd.DataFrame:
        """Cells then margins in one frame, as the CSV and JSON exports write them."""
        out = pd.concat([self.table, self.margins], ignore_index=True)
        out.attrs.update(self.table.attrs)
        return out


class Client:
    """Talk to the federation's coordinator as the operator or a named analyst."""

    def __init__(
        self,
        federation: FederationConfig,
        *,
        analyst: str | None = None,
        steward: str | None = None,
    ) -> None:
        """Act as the operator (default), a named analyst, or a department's data
        steward (``steward``: the party name; uses that party's certificate)."""
        self.federation = federation
        self._steward = steward
        cred: Credential
        if steward is not None:
            cred = federation.party(steward).tls
        elif analyst is None:
            cred = federation.operator
        else:
            match = [a for a in federation.analysts if a.name == analyst]
            if not match:
                known = ", ".join(a.name for a in federation.analysts) or "none"
                raise ConfigError(f"no analyst {analyst!r} in the federation (known: {known})")
            cred = match[0].tls
        address = federation.coordinator.address
        channel = rpc.secure_channel(
            address,
            tls.channel_credentials(cred.cert, cred.key, federation.ca_cert),
            max_message_bytes=federation.max_message_bytes,
        )
        self._coordinator = CoordinatorClient(address, channel, federation.rpc_timeout_s * 4)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._coordinator.close()

    def wait_ready(self, timeout_s: float = 30) -> None:
        self._coordinator.wait_ready(timeout_s)

    def run_ceremony(self) -> CeremonySummary:
        return self._coordinator.run_ceremony()

    def run_linkage(self, threshold: float = 0.0) -> LinkageSummary:
        """A linkage epoch's exact statistics (the operator's view)."""
        return self._coordinator.run_linkage(threshold)

    def query(self, spec: QuerySpec) -> Release:
        outcome = self._coordinator.submit_query(spec)
        released = outcome.table
        frame = release_frame(released)
        margin = frame["group"].eq(TOTAL)
        if released.column_attribute:
            margin |= frame[released.column_attribute].eq(TOTAL)
        attrs = {
            "query_id": outcome.query_id,
            "epoch_id": outcome.epoch_id,
            "title": outcome.title,
            "epsilon": released.epsilon,
            "noise_scale": released.noise_scale,
            "mechanism": released.mechanism or "discrete_laplace",
            "shareholders": released.shareholders,
            "sensitivity": released.sensitivity,
            "interval_coverage": released.interval_coverage,
            "budget_remaining": outcome.budget_remaining,
        }
        table = frame[~margin].reset_index(drop=True)
        margins = frame[margin].reset_index(drop=True)
        table.attrs.update(attrs)
        margins.attrs.update(attrs)
        return Release(
            query_id=outcome.query_id,
            epoch_id=outcome.epoch_id,
            title=outcome.title,
            table=table,
            margins=margins,
            epsilon=released.epsilon,
            noise_scale=released.noise_scale,
            budget_remaining=outcome.budget_remaining,
            shareholders=released.shareholders,
            sensitivity=released.sensitivity,
        )

    # -- projects (Five Safes) ------------------------------------------------------
    def propose_project(
        self, project_id: str, title: str, purpose: str, parties: Sequence[str], expires: dt.date
    ) -> ProjectView:
        proposal = ProjectProposal(project_id, title, purpose, tuple(parties), expires)
        return self._coordinator.propose_project(proposal)

    def projects(self) -> list[ProjectView]:
        return self._coordinator.list_projects()

    def _decide(self, project_id: str, decision: str) -> ProjectView:
        signature = b""
        if self._steward is not None:
            match = [p for p in self.projects() if p.project_id == project_id]
            if not match:
                raise UnknownJob(f"no project {project_id!r}")
            p = match[0]
            doc = ProjectDoc(p.project_id, p.title, p.purpose, p.analyst, p.parties, p.expires)
            key = tls.load_private_key(self.federation.party(self._steward).tls.key)
            signature = sign_decision(doc, decision, self._steward, key)
        request = ProjectDecision(project_id, signature)
        if decision == "approve":
            return self._coordinator.approve_project(request)
        return self._coordinator.revoke_project(request)

    def approve_project(self, project_id: str) -> ProjectView:
        """As a data steward: sign and record approval of the project as listed."""
        return self._decide(project_id, "approve")

    def revoke_project(self, project_id: str) -> ProjectView:
        return self._decide(project_id, "revoke")

    def status(self) -> FederationStatus:
        return self._coordinator.status()

    def budgets(self) -> pd.DataFrame:
        """Epsilon spent and left this period per department (`FederationStatus.budgets`)."""
        return self.status().budgets()

    def audit_log(self) -> tuple[list[AuditEvent], str]:
        """The audit events, verified here (not trusted from the server); returns (events, head)."""
        events = list(self._coordinator.audit_log().events)
        head = verify_chain(events, self.federation.audit_verifier)
        return events, head

"""Governance at the coordinator: safe projects (Five Safes) and the mirror of
every department's privacy ledger."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from coordinator.audit_sync import AuditSync
from coordinator.store import CoordinatorStore
from headcount.config import FederationConfig
from headcount.domain.events import ProjectApproved, ProjectProposed, ProjectRevoked
from headcount.domain.projects import ProjectDoc, check_project_id, verify_decision
from headcount.domain.status import ProjectView
from headcount.errors import FailedPrecondition, InvalidRequest, NotAuthorised, PolicyRefused
from headcount.privacy.accountant import compose, period_of
from headcount.tls import Principal, Role


class Governance:
    def __init__(
        self, federation: FederationConfig, store: CoordinatorStore, audit: AuditSync
    ) -> None:
        self.federation, self.store, self.audit = federation, store, audit
        self.parties: tuple[str, ...] = federation.party_names

    # -- projects (Five Safes: safe projects) ------------------------------------------
    def _project_status(self, doc: ProjectDoc, approvals: dict[str, str], revoked: bool) -> str:
        if revoked:
            return "revoked"
        if doc.expires < dt.date.today():
            return "expired"
        return "approved" if set(approvals) >= set(doc.parties) else "proposed"

    def project_view(self, project_id: str) -> ProjectView:
        raw, approvals, revoked = self.store.project(project_id)
        doc = ProjectDoc.from_json(raw)
        return ProjectView(
            project_id=doc.project_id,
            title=doc.title,
            purpose=doc.purpose,
            analyst=doc.analyst,
            parties=tuple(doc.parties),
            expires=doc.expires,
            approved_by=tuple(sorted(approvals)),
            revoked=revoked,
            status=self._project_status(doc, approvals, revoked),
        )

    def propose_project(self, doc: ProjectDoc) -> ProjectView:
        self.federation.check_accredited(doc.analyst)
        unknown = [p for p in doc.parties if p not in self.parties]
        if unknown:
            raise InvalidRequest(
                f"unknown party {unknown}; the federation has {list(self.parties)}"
            )
        if doc.expires <= dt.date.today():
            raise InvalidRequest("a project must expire in the future")
        self.store.add_project(doc.project_id, doc.to_json())
        self.audit.log(ProjectProposed(doc, doc.digest()))
        return self.project_view(doc.project_id)

    def decide_project(
        self, project_id: str, decision: str, by: Principal, signature: bytes, cert_pem: bytes
    ) -> ProjectView:
        check_project_id(project_id)
        raw, _, revoked = self.store.project(project_id)
        doc = ProjectDoc.from_json(raw)
        if revoked:
            raise FailedPrecondition(f"project {project_id} is revoked")
        if by.role is Role.PARTY:
            if by.name not in doc.parties:
                raise NotAuthorised(f"project {project_id} does not use {by.name}'s data")
            verify_decision(doc, decision, by.name, signature, cert_pem)
        elif decision != "revoke":
            raise NotAuthorised("only a department's data steward approves a project")
        if decision == "approve":
            self.store.set_approval(project_id, by.name, signature.hex())
            decided: type[ProjectApproved | ProjectRevoked] = ProjectApproved
        else:
            self.store.revoke_project(project_id)
            decided = ProjectRevoked
        self.audit.log(decided(project_id, doc.digest(), by.name, by.role.value, signature.hex()))
        return self.project_view(project_id)

    def check_project(self, project_id: str, analyst: str, parties: Sequence[str]) -> None:
        """Refuse a query whose project is not approved by every department it uses."""
        if not project_id:
            if self.federation.require_projects:
                raise PolicyRefused("cite an approved project (Five Safes: safe projects)")
            return
        check_project_id(project_id)
        self.federation.check_accredited(analyst)
        raw, approvals, revoked = self.store.project(project_id)
        doc = ProjectDoc.from_json(raw)
        status = self._project_status(doc, approvals, revoked)
        if doc.analyst != analyst:
            raise NotAuthorised(f"project {project_id} belongs to analyst {doc.analyst!r}")
        if status in ("revoked", "expired"):
            raise PolicyRefused(f"project {project_id} is {status}")
        outside = [p for p in parties if p not in doc.parties]
        if outside:
            raise PolicyRefused(f"project {project_id} does not cover {outside}")
        missing = [p for p in parties if p not in approvals]
        if missing:
            raise PolicyRefused(f"project {project_id} awaits approval by {missing}")

    # -- budgets -------------------------------------------------------------------------
    def current_period(self) -> str:
        return period_of(dt.datetime.now(dt.UTC).date(), self.federation.privacy.period)

    def budgets_spent(self, period: str | None = None) -> dict[str, float]:
        """Epsilon charged to each party in ``period`` (default: the current one).

        Mirrors each node's own ledger: every query announced to the party
        counts unless its origin abandoned it or it was refused before any
        node took part. Composed by OpenDP's accountant
        (headcount.privacy.accountant). One read of the store for every party."""
        period = period or self.current_period()
        kind = self.federation.privacy.period
        charges: dict[str, list[float]] = {p: [] for p in self.parties}
        for spec, day in self.store.charged_specs_with_dates():
            if period_of(day, kind) == period:
                for party in spec["parties"]:
                    charges.setdefault(party, []).append(float(spec["epsilon"]))
        return {party: compose(eps) for party, eps in charges.items()}

    def budget_spent(self, party: str, period: str | None = None) -> float:
        """Epsilon charged to ``party`` in ``period`` (default: the current one)."""
        return self.budgets_spent(period).get(party, 0.0)

    def left(self, spent: float) -> float:
        return max(0.0, self.federation.privacy.epsilon_per_period - spent)

    def budgets_remaining(self, period: str | None = None) -> dict[str, float]:
        """Epsilon each party has left in ``period`` (default: the current one)."""
        return {p: self.left(spent) for p, spent in self.budgets_spent(period).items()}

    def budget_remaining(self, party: str, period: str | None = None) -> float:
        """Epsilon ``party`` has left in ``period`` (default: the current one)."""
        return self.left(self.budget_spent(party, period))

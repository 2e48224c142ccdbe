"""A query's life at the coordinator: admitted (or refused) on the query, the
catalogue, projects and ledgers alone, announced, run, and released or abandoned."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from coordinator.audit_sync import AuditSync
from coordinator.executor import HopExecutor
from coordinator.governance import Governance
from coordinator.nodes import NodeClients
from coordinator.planner import Plan, plan_query
from coordinator.store import CoordinatorStore
from headcount.config import FederationConfig
from headcount.crypto.attest import Abandonment, verify_abandonment
from headcount.domain.events import QueryAnnounced, QueryRefused, TableReleased
from headcount.domain.measures import Packing
from headcount.domain.query import (
    QuerySpec,
    check_group_by,
    check_measure,
    check_predicates,
    check_purpose,
    spec_to_json,
)
from headcount.domain.release import QueryOutcome, ReleasedTable
from headcount.errors import (
    BudgetExhausted,
    HeadcountError,
    InvalidProof,
    InvalidRequest,
    NotAuthorised,
    PeerUnavailable,
    PolicyRefused,
)
from headcount.privacy.accountant import compose
from headcount.privacy.sensitivity import NoisePlan, plan_noise

log = logging.getLogger(__name__)

# What the public log says of a malformed query (see QueryDesk.refuse_invalid).
INVALID_REASON = "invalid request: the query was malformed (the analyst was told what)"


class QueryDesk:
    def __init__(
        self,
        federation: FederationConfig,
        store: CoordinatorStore,
        nodes: NodeClients,
        audit: AuditSync,
        governance: Governance,
        executor: HopExecutor,
    ) -> None:
        self.federation, self.store, self.nodes, self.audit = federation, store, nodes, audit
        self.governance, self.executor = governance, executor
        self.parties: tuple[str, ...] = federation.party_names

    def run_query(self, spec: QuerySpec, analyst: str) -> QueryOutcome:
        try:
            plan, epoch_id, epsilon, spec_json, noise, packing = self._admit(spec, analyst)
        except (PolicyRefused, BudgetExhausted, NotAuthorised, PeerUnavailable) as exc:
            self._refuse(uuid.uuid4().hex, analyst, spec.purpose, exc.public)
            raise
        except InvalidRequest:
            self.refuse_invalid(analyst, spec.purpose)
            raise
        parties = plan.parties
        query_id = uuid.uuid4().hex
        self.store.save_query(query_id, epoch_id, analyst, spec.purpose, spec_json)
        try:
            self.audit.log(
                QueryAnnounced(
                    query_id,
                    epoch_id,
                    spec.purpose,
                    tuple(parties),
                    epsilon,
                    project_id=spec.project_id,
                    analyst=analyst,
                    role="analyst",
                    spec=spec_json,
                    # Re-derived by every node before it takes part.
                    noise=noise.to_json(),
                    packing=packing.to_json(),
                ),
                required=parties,
            )
            outcome = self.executor.execute(query_id, epoch_id, spec, plan, epsilon, packing, noise)
        except Exception as exc:
            # Nodes of the chain may have charged their ledgers. With the
            # origin's signed promise never to decrypt, every node refunds and
            # the query charged nothing anywhere; without it, every charge
            # stands (the origin may have decrypted) and so does the mirror.
            abandonment = self._abandon(query_id, plan.origin)
            self.store.finish_query(query_id, "refused" if abandonment else "failed", None)
            reason = exc.public if isinstance(exc, HeadcountError) else "internal error"
            self._refuse(query_id, analyst, spec.purpose, reason, abandonment)
            raise
        release = release_json(outcome.title, outcome.table)
        self.store.finish_query(query_id, "released", release)
        left_by = self.governance.budgets_remaining()
        left = {p: left_by[p] for p in parties}
        self.audit.log(
            TableReleased(
                query_id,
                epoch_id,
                analyst,
                spec.purpose,
                tuple(parties),
                epsilon,
                period=self.governance.current_period(),
                budget_remaining=left,
                table=release,
            )
        )
        remaining = min(left.values())
        return QueryOutcome(query_id, epoch_id, outcome.title, outcome.table, remaining)

    def refuse_invalid(self, analyst: str, purpose: str) -> None:
        """Record the refusal of a malformed query (an unknown party or value,
        an impossible epsilon, an oversized field) like any other, but with a
        fixed reason: its message may quote what the analyst sent, and the log
        is public. The analyst gets the full message in the reply. The purpose
        is kept only when it is one a query may state."""
        try:
            check_purpose(purpose)
        except InvalidRequest:
            purpose = ""
        self._refuse(uuid.uuid4().hex, analyst, purpose, INVALID_REASON)

    def _refuse(
        self,
        query_id: str,
        analyst: str,
        purpose: str,
        reason: str,
        abandonment: Abandonment | None = None,
    ) -> None:
        """Record a refusal in the audit log: every refusal is public, and each
        depends only on the query, the catalogue, projects and the ledgers."""
        self.audit.log(QueryRefused(query_id, analyst, purpose, reason, abandonment))

    def _admit(
        self, spec: QuerySpec, analyst: str
    ) -> tuple[Plan, str, float, dict[str, Any], NoisePlan, Packing]:
        """Everything decided before a query is announced: nothing is charged yet."""
        plan = plan_query(spec, self.parties)
        parties = plan.parties
        self._check_catalogue(plan)
        self.governance.check_project(spec.project_id, analyst, parties)
        epoch_id = self.store.latest_epoch()
        epsilon = spec.epsilon or self.federation.privacy.default_query_epsilon
        budget = self.federation.privacy.epsilon_per_period
        spent_by = self.governance.budgets_spent()
        for party in parties:
            spent = spent_by.get(party, 0.0)
            if compose([spent, epsilon]) > budget + 1e-9:
                raise BudgetExhausted(
                    f"{party}'s privacy budget for {self.governance.current_period()} has "
                    f"{max(0.0, budget - spent):.3g} left; the query needs {epsilon:.3g}"
                )
        spec_json = {**spec_to_json(spec), "epsilon": epsilon, "parties": parties}
        noise = plan_noise(parties, spec_json, household_cap=self.federation.privacy.household_cap)
        packing = self.executor.packing(epoch_id, plan, epsilon, noise)
        # Every node in the chain must answer before anything is announced or
        # charged, so a node that is down costs nobody any budget.
        down = [p for p in parties if not self.nodes.healthy(p)]
        if down:
            raise PeerUnavailable(
                f"{', '.join(down)}: not reachable; the query was not started "
                "and no budget was charged"
            )
        return plan, epoch_id, epsilon, spec_json, noise, packing

    def _check_catalogue(self, plan: Plan) -> None:
        """Refuse, before anything is stored or published, a filter, group-by or
        measure that a department's policy does not approve or whose values are
        not its categories: names, dates, postcodes or free text never enter
        the store or the audit log. Each node checks again for itself."""
        for hop in plan.hops:
            party = self.federation.party(hop.party)
            approved, dept = party.approved_attributes, party.department
            check_predicates(hop.party, approved, hop.filters, department=dept)
            if hop.group_by:
                check_group_by(hop.party, approved, hop.group_by, department=dept)
        origin = self.federation.party(plan.origin)
        if plan.origin_group_by:
            check_group_by(
                plan.origin,
                origin.approved_attributes,
                plan.origin_group_by,
                department=origin.department,
            )
        if plan.measure_attribute:
            check_measure(
                plan.origin,
                origin.approved_measures,
                plan.measure_attribute,
                department=origin.department,
            )

    def _abandon(self, query_id: str, origin: str) -> Abandonment | None:
        """Ask the origin of a failed query to abandon it; None if it cannot (it
        is down, or it decrypted), in which case every charge stands."""
        try:
            abandonment = self.nodes.node(origin).abandon_query(query_id)
            if abandonment.query_id != query_id:
                raise InvalidProof(f"{origin} abandoned another query")
            verify_abandonment(abandonment, origin, ca_cert=self.federation.ca_cert)
        except HeadcountError as exc:
            log.warning(
                "query %s: %s did not abandon it (%s); charges stand", query_id, origin, exc
            )
            return None
        return abandonment


def release_json(title: str, table: ReleasedTable) -> dict[str, Any]:
    """A released table as the audit log and the store keep it."""

    def pair(interval: tuple[Any, Any] | None) -> list[Any] | None:
        return list(interval) if interval is not None else None

    return {
        "title": title,
        "cells": [
            {
                "group": c.group,
                "column": c.column,
                "value": c.value if c.status == "released" else None,
                "status": c.status,
                "mean": c.mean,
                "sum": c.sum,
                "interval": pair(c.interval),
                "mean_interval": pair(c.mean_interval),
            }
            for c in table.cells
        ],
        "column_attribute": table.column_attribute,
        "measure_attribute": table.measure_attribute,
        "total": table.total,
        "total_interval": pair(table.total_interval),
        "epsilon": table.epsilon,
        "noise_scale": table.noise_scale,
        "shareholders": table.shareholders,
        "sensitivity": table.sensitivity,
        "interval_coverage": table.interval_coverage,
    }

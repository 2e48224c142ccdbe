"""The coordinator: relay the ceremony, link, and run query hop chains.

The coordinator sees tokens, keyed encodings, similarity scores, clusters and
ciphertexts. It never holds the linkage secret, a raw identifier, an attribute
value or an unprotected count: the decrypting node applies the small-number rule
before a table leaves it.

`Coordinator` puts together the parts, one responsibility each: the audit
log's sync (`audit_sync`), the ceremony relay (`relay`), linkage epochs
(`epoch`), projects and ledgers (`governance`), queries (`queries`) and their
hop chains (`executor`, `alignment`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from coordinator.audit_sync import AuditSync, load_audit_key
from coordinator.epoch import EpochLinker
from coordinator.executor import HopExecutor
from coordinator.governance import Governance
from coordinator.nodes import NodeClients
from coordinator.queries import QueryDesk, release_json
from coordinator.relay import CeremonyRelay
from coordinator.store import CoordinatorStore, EpochInfo
from headcount.config import FederationConfig
from headcount.crypto import ceremony
from headcount.domain.audit import AuditLog
from headcount.domain.events import EpochAborted, EpochLinked, EpochStarted, Event, QueryAborted
from headcount.domain.projects import ProjectDoc
from headcount.domain.query import QuerySpec
from headcount.domain.release import QueryOutcome
from headcount.domain.status import CeremonySummary, FederationStatus, PartyStatus, ProjectView
from headcount.errors import HeadcountError
from headcount.linkage.schema_file import federation_schema
from headcount.tls import Principal

__all__ = [
    "Coordinator",
    "NodeClients",
    "QueryOutcome",
    "release_json",
]

log = logging.getLogger(__name__)


class Coordinator:
    def __init__(
        self,
        federation: FederationConfig,
        nodes: NodeClients | None = None,
    ) -> None:
        self.federation = federation
        self.store = CoordinatorStore(federation.coordinator.database)
        self.audit = AuditLog(
            federation.coordinator.database,
            signer=load_audit_key(federation.coordinator.audit_key),
            verifier=federation.audit_verifier,
        )
        self.nodes = nodes or NodeClients(federation)
        self.parties = federation.party_names
        self.schema = federation_schema(federation.linkage_schema)
        self.audit_sync = AuditSync(self.audit, self.nodes, self.parties)
        self.relay = CeremonyRelay(federation, self.store, self.nodes, self.audit_sync)
        self.executor = HopExecutor(federation, self.store, self.nodes)
        self.epochs = EpochLinker(
            federation,
            self.schema,
            self.store,
            self.nodes,
            self.audit_sync,
        )
        self.governance = Governance(federation, self.store, self.audit_sync)
        self.queries = QueryDesk(
            federation, self.store, self.nodes, self.audit_sync, self.governance, self.executor
        )
        self._close_unfinished()

    def _close_unfinished(self) -> None:
        """Close work a previous run of this coordinator left half done (it died).

        A query still marked running is aborted: no table was released (a
        release is stored before it is returned), but nodes may have charged
        their budgets, so it stays counted. An epoch that started and never
        finished is marked aborted; the latest finished epoch stays current.
        """
        for query_id in self.store.running_queries():
            self.store.finish_query(query_id, "aborted", None)
            self.audit_sync.log(QueryAborted(query_id, "coordinator restarted"))
            log.warning("query %s was left running by a previous run; aborted", query_id)
        kinds = (EpochStarted.KIND, EpochLinked.KIND, EpochAborted.KIND)
        events = [e.typed() for e in self.audit.events() if e.kind in kinds]
        closed = {e.epoch_id for e in events if isinstance(e, EpochLinked | EpochAborted)}
        for e in events:
            if isinstance(e, EpochStarted) and e.epoch_id not in closed:
                self.audit_sync.log(EpochAborted(e.epoch_id, "coordinator restarted"))
                log.warning("epoch %s was left unfinished by a previous run; aborted", e.epoch_id)

    def use_config(self, federation: FederationConfig) -> None:
        """Take a changed federation config (accreditations, policy) without a restart."""
        self.federation = federation
        for part in (self.relay, self.executor, self.epochs, self.governance, self.queries):
            part.federation = federation

    # -- each part's public face -----------------------------------------------------
    def sync_audit(self, party: str) -> int:
        return self.audit_sync.sync(party)

    def log(self, event: Event, *, required: Sequence[str] = ()) -> None:
        self.audit_sync.log(event, required=required)

    def collect_identities(self) -> dict[str, ceremony.Identity]:
        return self.relay.collect_identities()

    def run_ceremony(self) -> CeremonySummary:
        return self.relay.run_ceremony()

    def run_linkage(self, threshold: float = 0.0) -> EpochInfo:
        return self.epochs.run_linkage(threshold)

    def project_view(self, project_id: str) -> ProjectView:
        return self.governance.project_view(project_id)

    def propose_project(self, doc: ProjectDoc) -> ProjectView:
        return self.governance.propose_project(doc)

    def decide_project(
        self, project_id: str, decision: str, by: Principal, signature: bytes, cert_pem: bytes
    ) -> ProjectView:
        return self.governance.decide_project(project_id, decision, by, signature, cert_pem)

    def check_project(self, project_id: str, analyst: str, parties: Sequence[str]) -> None:
        self.governance.check_project(project_id, analyst, parties)

    def current_period(self) -> str:
        return self.governance.current_period()

    def budgets_spent(self, period: str | None = None) -> dict[str, float]:
        return self.governance.budgets_spent(period)

    def budget_spent(self, party: str, period: str | None = None) -> float:
        return self.governance.budget_spent(party, period)

    def budgets_remaining(self, period: str | None = None) -> dict[str, float]:
        return self.governance.budgets_remaining(period)

    def budget_remaining(self, party: str, period: str | None = None) -> float:
        return self.governance.budget_remaining(party, period)

    def run_query(self, spec: QuerySpec, analyst: str) -> QueryOutcome:
        return self.queries.run_query(spec, analyst)

    def status(self) -> FederationStatus:
        try:
            epoch_id = self.store.latest_epoch()
            records = self.store.epoch(epoch_id).records
        except HeadcountError:
            epoch_id, records = "", {}
        try:
            ceremony_id = self.store.latest_ceremony()
        except HeadcountError:
            ceremony_id = ""
        spent_by = self.governance.budgets_spent()
        return FederationStatus(
            federation=self.federation.name,
            ceremony_id=ceremony_id,
            epoch_id=epoch_id,
            parties=tuple(
                PartyStatus(
                    party=p,
                    healthy=self.nodes.healthy(p),
                    records=records.get(p, 0),
                    epsilon_spent=spent_by.get(p, 0.0),
                    epsilon_left=self.governance.left(spent_by.get(p, 0.0)),
                )
                for p in self.parties
            ),
            queries=self.store.query_count(),
            audit_head=self.audit.head(),
            period=self.governance.current_period(),
            epsilon_per_period=self.federation.privacy.epsilon_per_period,
        )

    def close(self) -> None:
        self.executor.close()
        self.nodes.close()

"""A node's replica of the signed audit log, and what it decides from it: which
work was announced (a node takes part in nothing else), which projects its
steward approved, and which queries were abandoned."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import TypeVar

from headcount.config import FederationConfig, PartyConfig
from headcount.crypto import paillier
from headcount.crypto.attest import Abandonment, sign_abandonment, verify_abandonment
from headcount.domain.audit import GENESIS_HASH, AuditEvent, AuditLog, verify_chain
from headcount.domain.events import (
    EpochLinked,
    EpochStarted,
    ProjectApproved,
    ProjectProposed,
    ProjectRevoked,
    QueryAborted,
    QueryAnnounced,
    QueryRefused,
    TypedEvent,
)
from headcount.domain.measures import Packing, contribution_layout, make_packing
from headcount.domain.projects import ProjectDoc, verify_decision
from headcount.errors import FailedPrecondition, InvalidProof, InvalidRequest, PolicyRefused
from headcount.privacy.accountant import PeriodLedger
from headcount.privacy.sensitivity import NoisePlan, plan_noise
from headcount.tls import load_private_key
from party_node.ids import check_id
from party_node.store import NodeStore

log = logging.getLogger(__name__)

# The events that announce work a node takes part in; each lists its parties.
_Announced = TypeVar("_Announced", QueryAnnounced, EpochStarted)
_Typed = TypeVar("_Typed", bound=TypedEvent)
_PROJECT_EVENTS: dict[str, type[ProjectProposed | ProjectApproved | ProjectRevoked]] = {
    t.KIND: t for t in (ProjectProposed, ProjectApproved, ProjectRevoked)
}


def _read(event: AuditEvent, kind: type[_Typed]) -> _Typed:
    """``event`` as ``kind``; a malformed one is refused, never taken part in."""
    try:
        return kind.from_body(event.body)
    except InvalidRequest as exc:
        raise PolicyRefused(f"audit event {event.seq} is malformed: {exc}") from None


class Replica:
    def __init__(
        self,
        federation: FederationConfig,
        config: PartyConfig,
        name: str,
        store: NodeStore,
        ledger: PeriodLedger,
    ) -> None:
        self.federation, self.config, self.name = federation, config, name
        self.store, self.ledger = store, ledger
        # This node's replica of the coordinator's signed audit log.
        self.audit = AuditLog(config.database, verifier=federation.audit_verifier)
        # (next seq, head) of the replica as last verified whole (verify_replica).
        self._verified: tuple[int, str] = (0, GENESIS_HASH)
        self._verified_lock = threading.Lock()

    def sync(self, events: Sequence[AuditEvent]) -> tuple[int, str]:
        """Append events after this replica's head; returns (next seq, head hash).

        A query the log records as refused or aborted is abandoned here if this
        node encrypted for it and has not decrypted it: it will never decrypt
        it. A refusal carrying the origin's signed abandonment refunds this
        node's charge for it (``_refund_abandoned``); without one, every node
        keeps its charge, since none can know the origin did not decrypt.
        """
        for event in events:
            self.audit.import_event(event)
        # Abandoning is idempotent, so events resent in a batch are harmless.
        for event in events:
            if event.kind not in (QueryRefused.KIND, QueryAborted.KIND):
                continue
            try:
                typed = event.typed()
            except InvalidRequest as exc:
                log.warning("%s: audit event %d is malformed: %s", self.name, event.seq, exc)
                continue
            if isinstance(typed, QueryRefused | QueryAborted):
                self._abandon(typed.query_id)
            if isinstance(typed, QueryRefused) and typed.abandonment is not None:
                self._refund_abandoned(typed.query_id, typed.abandonment)
        return self.audit.next_head()

    def _abandon(self, query_id: str) -> None:
        # The log records the query's failure: never decrypt it. The charge
        # stays: only a signed abandonment (abandon_query), which every node of
        # the chain sees, refunds, so every ledger and the coordinator's mirror
        # agree on what was charged.
        if self.store.abandon_origin_query(query_id) is not None:
            log.info("%s: query %s failed before decryption; abandoned", self.name, query_id)

    def _refund_abandoned(self, query_id: str, abandonment: Abandonment) -> None:
        """Refund this node's charge for a query its origin signed it will never decrypt.

        Only the origin's own signature counts: a coordinator alone cannot make
        nodes refund a query whose result it may hold.
        """
        if not self.ledger.charged(query_id):
            return
        origin = ""
        for event in self.audit.find(QueryAnnounced.KIND, "$.query_id", query_id)[:1]:
            origin = _read(event, QueryAnnounced).origin
        if not origin:
            return
        try:
            verify_abandonment(abandonment, origin, ca_cert=self.federation.ca_cert)
        except InvalidProof as exc:
            log.warning("%s: abandonment of %s not accepted: %s", self.name, query_id, exc)
            return
        refunded = self.ledger.refund(query_id)
        log.info("%s: query %s abandoned by its origin; %g refunded", self.name, query_id, refunded)

    def abandon_query(self, query_id: str) -> Abandonment:
        """As the origin of a failed query: never decrypt it, refund, sign the promise.

        Raises PolicyRefused if this node is not the announced query's origin,
        FailedPrecondition if it already decrypted it.
        """
        check_id("query_id", query_id)
        query = self.announced_query(query_id)
        if query.origin != self.name:
            raise PolicyRefused(f"{self.name} is not the origin of query {query_id}")
        self.store.abandon(query_id, query.epoch_id)
        refunded = self.ledger.refund(query_id)
        log.info("%s: query %s abandoned; %g refunded", self.name, query_id, refunded)
        return sign_abandonment(
            query_id,
            self.name,
            load_private_key(self.config.tls.key),
            self.config.tls.cert.read_bytes(),
        )

    def epoch_records(self, epoch_id: str) -> Mapping[str, int]:
        """Each department's record count as the signed ``epoch`` event publishes it."""
        self.verify_replica()
        for event in reversed(self.audit.find(EpochLinked.KIND, "$.epoch_id", epoch_id)):
            return _read(event, EpochLinked).records
        raise FailedPrecondition(f"{self.name} has no signed audit event for epoch {epoch_id}")

    def announced_query(self, query_id: str) -> QueryAnnounced:
        """The signed announcement of ``query_id`` (see ``_announced``)."""
        return self._announced(QueryAnnounced, "query_id", query_id)

    def announced_epoch(self, epoch_id: str) -> EpochStarted:
        """The signed announcement of linkage epoch ``epoch_id`` (see ``_announced``)."""
        return self._announced(EpochStarted, "epoch_id", epoch_id)

    def _announced(self, kind: type[_Announced], key: str, value: str) -> _Announced:
        """The latest signed ``kind`` event whose ``key`` is ``value``.

        The replica is verified first (chain and signatures): the events that
        arrived since the last check, from the head verified then, so the cost
        of a query step does not grow with the log's age. Raises
        FailedPrecondition when no such event exists: a node takes part only in
        work the public audit log already records; PolicyRefused when it does
        not list this node, or is malformed.
        """
        self.verify_replica()
        for event in reversed(self.audit.find(kind.KIND, f"$.{key}", value)):
            announced = _read(event, kind)
            if self.name not in announced.parties:
                raise PolicyRefused(f"{kind.KIND} {value} does not list {self.name} as a party")
            return announced
        raise FailedPrecondition(
            f"{self.name} has no signed audit event announcing {kind.KIND} {value}; refusing"
        )

    def verify_replica(self) -> None:
        """Verify the replica's events since the last verified head (InvalidProof)."""
        with self._verified_lock:
            fresh = self.audit.events(since=self._verified[0])
            head = verify_chain(fresh, self.federation.audit_verifier, start=self._verified)
            self._verified = (self._verified[0] + len(fresh), head)

    def check_query_announced(self, query_id: str, epsilon: float, purpose: str) -> QueryAnnounced:
        query = self.announced_query(query_id)
        # Written so that NaN fails: every comparison with NaN is False.
        same_epsilon = abs(float(query.epsilon) - epsilon) <= 1e-12
        if not same_epsilon or query.purpose != purpose:
            raise PolicyRefused(f"query {query_id} differs from what the audit log announced")
        self.check_project(query.project_id or "")
        return query

    def noise_plan(self, query: QueryAnnounced) -> NoisePlan:
        """The announced query's noise plan, refused unless it is the one this node derives.

        The sensitivity comes from the query's join and the federation's
        household cap, the share-holders from its chain: a coordinator cannot
        announce less noise or fewer share-holders than the query needs.
        """
        if query.spec is None:
            raise PolicyRefused("the announced query names no chain")
        own = plan_noise(
            list(query.parties), query.spec, household_cap=self.federation.privacy.household_cap
        )
        if NoisePlan.from_json(query.noise) != own:
            raise PolicyRefused("the announced noise is not what the query needs")
        return own

    def announced_packing(self, query: QueryAnnounced, plan: NoisePlan, n_bits: int) -> Packing:
        """The announced slot layout, re-derived here from public facts."""
        raw = query.packing
        if raw is None:
            raise PolicyRefused("the announced query carries no slot layout")
        try:
            asked = Packing.from_json(raw)
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyRefused("the announced slot layout is malformed") from exc
        own = make_packing(
            self.federation.party(query.origin).department,
            asked.group_by,
            asked.measure_attribute,
            n_bits=n_bits,
            max_summands=asked.layout.max_summands,
            epsilon=float(query.epsilon),
            sensitivity=plan.sensitivity,
            shareholders=len(plan.shareholders),
        )
        if own != asked:
            raise PolicyRefused("the announced slot layout is not the one the query needs")
        return own

    def contribution_layout(
        self, query: QueryAnnounced, key: paillier.PublicKey
    ) -> paillier.ProofLayout | None:
        """What each of the origin's ciphertexts must prove it holds (None: sent
        unproven), from the announced slot layout, which is re-derived here."""
        if not self.federation.privacy.contribution_proofs:
            return None
        packing = self.announced_packing(query, self.noise_plan(query), key.n.bit_length())
        return contribution_layout(packing, key, query.query_id, proofs=True)

    def check_project(self, project_id: str) -> None:
        """Take part only in a project this node's own steward approved (Five Safes).

        The approval is checked in this node's replica of the signed log and
        its signature verified with this node's own certificate, so neither a
        coordinator nor another department can approve on its behalf.
        """
        if not project_id:
            if self.federation.require_projects:
                raise PolicyRefused("the query cites no approved project")
            return
        doc: ProjectDoc | None = None
        approved = revoked = False
        found = sorted(
            [
                *self.audit.find(ProjectProposed.KIND, "$.project.project_id", project_id),
                *self.audit.find(ProjectApproved.KIND, "$.project_id", project_id),
                *self.audit.find(ProjectRevoked.KIND, "$.project_id", project_id),
            ],
            key=lambda e: e.seq,
        )
        # A malformed event is refused (PolicyRefused), not skipped: skipping a
        # revocation would let the query through.
        for event in (_read(e, _PROJECT_EVENTS[e.kind]) for e in found):
            if isinstance(event, ProjectProposed):
                doc = event.project
            elif isinstance(event, ProjectRevoked):
                revoked = True
            elif event.party == self.name and doc:
                verify_decision(
                    doc,
                    "approve",
                    self.name,
                    bytes.fromhex(event.signature),
                    self.config.tls.cert.read_bytes(),
                )
                approved = True
        if doc is None or not approved:
            raise PolicyRefused(f"{self.name} has not approved project {project_id}")
        # Safe people, checked here too: the project's analyst must hold a
        # current accreditation in the federation's config.
        self.federation.check_accredited(doc.analyst)
        if revoked:
            raise PolicyRefused(f"project {project_id} is revoked")
        if doc.expires < dt.date.today():
            raise PolicyRefused(f"project {project_id} expired on {doc.expires}")

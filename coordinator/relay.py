"""The key ceremony, relayed: the coordinator carries sealed envelopes between
nodes and records the commitments; it never learns the linkage secret."""

from __future__ import annotations

import logging
import uuid

from coordinator.audit_sync import AuditSync
from coordinator.nodes import NodeClients, each
from coordinator.store import CoordinatorStore
from headcount.config import FederationConfig
from headcount.crypto import ceremony
from headcount.domain.events import CeremonyHeld
from headcount.domain.status import CeremonySummary
from headcount.errors import InvalidProof
from headcount.wire import convert as cv

log = logging.getLogger(__name__)


class CeremonyRelay:
    def __init__(
        self,
        federation: FederationConfig,
        store: CoordinatorStore,
        nodes: NodeClients,
        audit: AuditSync,
    ) -> None:
        self.federation, self.store, self.nodes, self.audit = federation, store, nodes, audit
        self.parties: tuple[str, ...] = federation.party_names

    def collect_identities(self) -> dict[str, ceremony.Identity]:
        replies = each(self.parties, lambda p: self.nodes.node(p).get_identity())
        out = {}
        for party, identity in replies.items():
            if identity.party != party:
                raise InvalidProof(f"node at {party}'s address claims to be {identity.party!r}")
            ceremony.verify_identity(identity, self.federation.ca_cert)
            self.store.save_identity(party, cv.identity_to_bytes(identity))
            out[party] = identity
        return out

    def run_ceremony(self) -> CeremonySummary:
        identities = self.collect_identities()
        ceremony_id = uuid.uuid4().hex
        roster = [identities[p] for p in self.parties]
        contributions = each(
            self.parties, lambda p: self.nodes.node(p).contribute(ceremony_id, roster)
        )
        commitments = [c.commitment for c in contributions.values()]
        envelopes = [e for c in contributions.values() for e in c.envelopes]
        for party, c in contributions.items():
            if c.commitment.party != party or any(e.sender != party for e in c.envelopes):
                raise InvalidProof(f"{party} sent a contribution in another party's name")
        confirmations = each(
            self.parties,
            lambda p: self.nodes.node(p).finish(
                ceremony_id, [e for e in envelopes if e.recipient == p], commitments
            ),
        )
        tags = {c.tag for c in confirmations.values()}
        confirmed = len(tags) == 1
        self.store.save_ceremony(
            ceremony_id,
            self.parties,
            [(e.sender, e.recipient, e.nonce, e.ciphertext) for e in envelopes],
            [(c.party, c.digest) for c in commitments],
            confirmed,
        )
        self.audit.log(
            CeremonyHeld(
                ceremony_id,
                tuple(self.parties),
                {c.party: c.digest.hex() for c in commitments},
                confirmed,
            )
        )
        if not confirmed:
            raise InvalidProof("nodes derived different linkage secrets; the ceremony failed")
        log.info("ceremony %s confirmed by %d parties", ceremony_id, len(self.parties))
        return CeremonySummary(ceremony_id, tuple(self.parties), confirmed)

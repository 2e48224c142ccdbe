"""What a party node does, as plain functions over its data, keys and state.

The servicer (``service.py``) only unpacks messages, calls these and packs the
results. Rules enforced here, whoever calls:

* a node only ever encrypts under its own Paillier key and refuses per-record
  ciphertexts under its own key (it would be able to read them);
* every record of an epoch gets a fresh random token, sent in shuffled order;
* per-record values leave only as ciphertexts; group sums are re-randomised so
  the coordinator cannot match them against the ciphertexts it sent;
* a query's aggregate is decrypted once, only by the node that encrypted for
  it, and only after the small-number rule is applied.

`PartyNode` puts together the parts, one responsibility each: its keys
(`keys`), its audit replica and what it decides from it (`replica`), the key
ceremony (`ceremony`), an epoch's encodings (`encode`), a query's hops
(`hops`) and its release (`release`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from headcount.config import FederationConfig, PartyConfig
from headcount.crypto import paillier
from headcount.crypto.attest import Abandonment, NoiseAttestation
from headcount.crypto.ceremony import Commitment, Envelope, Identity
from headcount.crypto.signed_sets import HopStatement
from headcount.domain.audit import AuditEvent, AuditLog
from headcount.domain.measures import PackingRequest
from headcount.domain.query import Predicate
from headcount.errors import ConfigError
from headcount.linkage.schema_file import federation_schema
from headcount.privacy.accountant import PeriodLedger
from headcount.wire.node_values import DecryptRequest, HopHeader, HopItem
from party_node.ceremony import CeremonyParticipant
from party_node.data import DepartmentData
from party_node.encode import MATCH_KEY_BYTES, TOKEN_BYTES, EncodedEpoch, Encoder
from party_node.hops import GroupedOutput, Hops, SignedOutput
from party_node.keys import NodeKeys
from party_node.release import MAX_GROUPS, Decrypted, Release
from party_node.replica import Replica
from party_node.store import NodeStore

__all__ = [
    "MATCH_KEY_BYTES",
    "MAX_GROUPS",
    "TOKEN_BYTES",
    "Decrypted",
    "EncodedEpoch",
    "GroupedOutput",
    "HopItem",
    "PartyNode",
    "SignedOutput",
]


class PartyNode:
    """One department's node: its keys, its file and its state."""

    def __init__(self, federation: FederationConfig, party: str) -> None:
        self.federation = federation
        self.config: PartyConfig = federation.party(party)
        self.name = party
        self.store = NodeStore(self.config.database)
        # One ledger for this department's data over the period (a calendar
        # year by default): epochs come and go, the ledger does not reset.
        self.ledger = PeriodLedger(
            self.config.database,
            epsilon_per_period=federation.privacy.epsilon_per_period,
            period=federation.privacy.period,
        )
        self.schema = federation_schema(federation.linkage_schema)
        if self.schema.decoy_share:
            raise ConfigError(
                "the linkage schema asks for decoy records, which the federation protocol "
                "does not carry yet; set decoy_share = 0"
            )
        config, store = self.config, self.store
        self.keys = NodeKeys(federation, config, party, store)
        self.replica = Replica(federation, config, party, store, self.ledger)
        self.participant = CeremonyParticipant(federation, party, store, self.keys)
        self.encoder = Encoder(
            federation, config, party, self.schema, store, self.keys, self.replica
        )
        self.hops = Hops(
            federation, config, party, store, self.ledger, self.keys, self.replica, self.encoder
        )
        self.release = Release(federation, config, party, store, self.keys, self.replica)
        # After a restart: own key now, the others' after the next ceremony.
        epochs = self.store.epochs()
        if epochs:
            self.keys.warm_pools(epochs[-1].records)

    def use_config(self, federation: FederationConfig) -> None:
        """Take a changed federation config (accreditations, policy) without a restart."""
        self.federation = federation
        for part in (
            self.keys,
            self.replica,
            self.participant,
            self.encoder,
            self.hops,
            self.release,
        ):
            part.federation = federation

    @property
    def audit(self) -> AuditLog:
        """This node's replica of the signed audit log."""
        return self.replica.audit

    # -- each part's public face -----------------------------------------------------
    def identity(self) -> Identity:
        return self.keys.identity

    def sync_audit(self, events: Sequence[AuditEvent]) -> tuple[int, str]:
        return self.replica.sync(events)

    def abandon_query(self, query_id: str) -> Abandonment:
        return self.replica.abandon_query(query_id)

    def check_project(self, project_id: str) -> None:
        self.replica.check_project(project_id)

    def data(self, expect_sha256: bytes | None = None) -> DepartmentData:
        return self.encoder.data(expect_sha256)

    def contribute(
        self, ceremony_id: str, identities: Sequence[Identity]
    ) -> tuple[Commitment, list[Envelope]]:
        return self.participant.contribute(ceremony_id, identities)

    def finish(
        self, ceremony_id: str, envelopes: Sequence[Envelope], commitments: Sequence[Commitment]
    ) -> bytes:
        return self.participant.finish(ceremony_id, envelopes, commitments)

    def encode(self, epoch_id: str, ceremony_id: str) -> EncodedEpoch:
        return self.encoder.encode(epoch_id, ceremony_id)

    def encrypt_indicators(
        self,
        query_id: str,
        epoch_id: str,
        filters: Sequence[Predicate],
        epsilon: float,
        purpose: str,
        *,
        per_household: bool = False,
        packing_request: PackingRequest | None = None,
        fill_count: int = 0,
    ) -> SignedOutput:
        return self.hops.encrypt_indicators(
            query_id,
            epoch_id,
            filters,
            epsilon,
            purpose,
            per_household=per_household,
            packing_request=packing_request,
            fill_count=fill_count,
        )

    def apply_predicate(
        self, h: HopHeader, items: Iterable[HopItem]
    ) -> Iterator[tuple[int, list[bytes], list[bytes], HopStatement | None, bool]]:
        return self.hops.apply_predicate(h, items)

    def aggregate(self, h: HopHeader, items: Iterable[HopItem]) -> GroupedOutput:
        return self.hops.aggregate(h, items)

    def add_noise(
        self, query_id: str, key: paillier.PublicKey, groups: Sequence[tuple[str, bytes]]
    ) -> tuple[list[tuple[str, bytes]], NoiseAttestation]:
        return self.release.add_noise(query_id, key, groups)

    def decrypt(self, request: DecryptRequest) -> Decrypted:
        return self.release.decrypt(request)

    def close(self) -> None:
        """Stop keeping randomisers ready (the pools' threads and their memory)."""
        self.keys.close()

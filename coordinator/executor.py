"""A query's hop chain at the coordinator: the origin's ciphertexts aligned from
node to node, the grouped aggregates, and the noise shares added in turn."""

from __future__ import annotations

import logging

from coordinator.alignment import Sent, align, fills_for, read_signed
from coordinator.nodes import CHUNK_RECORDS, NodeClients
from coordinator.planner import Hop, Plan
from coordinator.store import CoordinatorStore
from headcount.config import FederationConfig
from headcount.crypto import paillier
from headcount.crypto.attest import NoiseAttestation
from headcount.domain.measures import (
    Packing,
    PackingRequest,
    clamp_noise,
    contribution_layout,
    make_packing,
)
from headcount.domain.query import QuerySpec
from headcount.domain.release import QueryOutcome
from headcount.errors import InvalidRequest
from headcount.privacy.noise import draw_share
from headcount.privacy.sensitivity import NoisePlan
from headcount.wire import convert as cv
from headcount.wire.node_values import DecryptRequest, HopHeader, HopInput, IndicatorRequest

log = logging.getLogger(__name__)


class HopExecutor:
    """Runs announced queries' hop chains."""

    def __init__(
        self, federation: FederationConfig, store: CoordinatorStore, nodes: NodeClients
    ) -> None:
        self.federation, self.store, self.nodes = federation, store, nodes
        self.parties: tuple[str, ...] = federation.party_names

    def origin_key(self, party: str) -> paillier.PublicKey:
        raw = self.store.identities().get(party)
        if raw is None:
            raise InvalidRequest(f"no identity registered for {party}; run the ceremony first")
        return paillier.PublicKey.from_bytes(cv.identity_from_bytes(raw).paillier_n)

    def packing(self, epoch_id: str, plan: Plan, epsilon: float, noise: NoisePlan) -> Packing:
        # No aggregate can add more per-record plaintexts than the epoch has
        # records, so that bound keeps packed slots from carrying.
        return make_packing(
            self.federation.party(plan.hops[0].party).department,
            plan.origin_group_by,
            plan.measure_attribute,
            n_bits=self.origin_key(plan.hops[0].party).n.bit_length(),
            max_summands=sum(self.store.epoch(epoch_id).records.values()),
            epsilon=epsilon,
            sensitivity=noise.sensitivity,
            shareholders=len(noise.shareholders),
        )

    def _header(
        self,
        query_id: str,
        epoch_id: str,
        spec: QuerySpec,
        epsilon: float,
        key: paillier.PublicKey,
        hop: Hop,
        records: int,
        sent: Sent,
        *,
        fill_count: int = 0,
        unlinked_cell: bool = False,
    ) -> HopHeader:
        return HopHeader(
            query_id=query_id,
            epoch_id=epoch_id,
            origin_key=key,
            group_by=hop.group_by,
            filters=hop.filters,
            epsilon=epsilon,
            expected_records=records,
            purpose=spec.purpose,
            fill_count=fill_count,
            sender=sent.statement,
            unlinked_cell=unlinked_cell,
        )

    def execute(
        self,
        query_id: str,
        epoch_id: str,
        spec: QuerySpec,
        plan: Plan,
        epsilon: float,
        packing: Packing,
        noise: NoisePlan,
    ) -> QueryOutcome:
        origin = plan.hops[0]
        key = self.origin_key(origin.party)
        origin_tokens = self.store.tokens(epoch_id, origin.party)

        # Hop 1: the origin encrypts an indicator for every record it holds,
        # and signs that set with its E(0) fills for the next hop.
        chunks = self.nodes.node(origin.party).encrypt_indicators(
            IndicatorRequest(
                query_id=query_id,
                epoch_id=epoch_id,
                filters=origin.filters,
                epsilon=epsilon,
                purpose=spec.purpose,
                chunk_records=CHUNK_RECORDS,
                per_household=origin.per_household,
                packing=PackingRequest.of(packing),
                fill_count=fills_for(self.store, epoch_id, plan, 0),
            )
        )
        layout = contribution_layout(
            packing, key, query_id, proofs=self.federation.privacy.contribution_proofs
        )
        sent = read_signed(
            origin.party, key, chunks, None, width=None if layout is None else layout.width
        )
        cap = self.federation.privacy.household_cap
        if origin.per_household:
            keys = set(self.store.households(epoch_id, origin.party).values())
            if sent.records or set(sent.households) != keys:
                raise InvalidRequest(
                    f"{origin.party}: flags do not cover exactly its epoch households"
                )
            if any(len(copies) != cap for copies in sent.households.values()):
                raise InvalidRequest(f"{origin.party}: not {cap} copies of every flag")
        elif set(sent.records) != set(origin_tokens):
            raise InvalidRequest(
                f"{origin.party}: ciphertexts do not cover exactly its epoch records"
            )

        # Filter hops: align, let the node keep or zero each ciphertext.
        prev = origin.party
        for index, hop in enumerate(plan.hops[1:-1], start=1):
            tokens = self.store.tokens(epoch_id, hop.party)
            aligned = align(self.store, cap, epoch_id, prev, sent, hop, tokens)
            header = self._header(
                query_id,
                epoch_id,
                spec,
                epsilon,
                key,
                hop,
                len(tokens),
                sent,
                fill_count=fills_for(self.store, epoch_id, plan, index),
            )
            replies = self.nodes.node(hop.party).apply_predicate(
                HopInput(header, sent.hashes(), tokens, aligned)
            )
            sent = read_signed(hop.party, key, replies, tokens)
            prev = hop.party

        # Final hop: the grouping node sums per category.
        last = plan.hops[-1]
        group_tokens = self.store.tokens(epoch_id, last.party)
        leftovers: list[bytes] = []
        aligned = align(self.store, cap, epoch_id, prev, sent, last, group_tokens)
        if plan.unlinked_cell:  # a person link into the grouping node
            # Records of the previous hop with no link into the grouping
            # department form their own cell, so the table adds up; each
            # person once (a person's further records, dedup, left out).
            # The grouping node sums them, checked against the signed set.
            skip = set(self.store.linked(epoch_id, prev, last.party).values())
            skip.update(self.store.duplicates(epoch_id, prev))
            leftovers = [c for t, c in sent.records.items() if t not in skip]
        header = self._header(
            query_id,
            epoch_id,
            spec,
            epsilon,
            key,
            last,
            len(group_tokens),
            sent,
            unlinked_cell=plan.unlinked_cell,
        )
        grouped = self.nodes.node(last.party).aggregate_by_group(
            HopInput(header, sent.hashes(), group_tokens, aligned, leftovers)
        )
        groups = grouped.groups
        if not groups or len({g for g, _ in groups}) != len(groups):
            raise InvalidRequest(f"{last.party}: malformed grouped aggregate")
        if grouped.statement is None:
            raise InvalidRequest(f"{last.party}: returned no signed statement")
        group_statement = grouped.statement

        # Noise in shares: each share-holding node adds its own under
        # encryption, starting from exactly the grouping node's signed output,
        # and signs what it did; this coordinator's share goes to the origin
        # in the clear, within the share bound, and the origin adds it. So the
        # noise is one no single party knows, and no ciphertext of this
        # coordinator's making ever enters the sum.
        holders = len(noise.shareholders)
        shares = [draw_share(s.scale, holders, len(groups)) for s in packing.noise_specs()]
        coordinator_noise = [
            v
            for i in range(len(groups))
            for v in clamp_noise([z[i] for z in shares], packing.share_bound)
        ]
        attestations: list[NoiseAttestation] = []
        for holder in noise.nodes:
            reply = self.nodes.node(holder).add_noise(query_id, key, groups)
            if [g for g, _ in reply.groups] != [g for g, _ in groups]:
                raise InvalidRequest(f"{holder}: noised other groups than it was sent")
            groups = reply.groups
            attestations.append(reply.attestation)

        # Final step: the origin checks the chain, adds this coordinator's
        # share, decrypts the noisy aggregates and applies SDC.
        table = self.nodes.node(origin.party).decrypt_aggregate(
            DecryptRequest(
                query_id,
                groups,
                tuple(attestations),
                group_statement,
                tuple(coordinator_noise),
            )
        )
        if table.query_id != query_id:
            raise InvalidRequest(f"{origin.party}: released a table for another query")
        title = spec.title or f"{spec.population_party} records by {last.party}.{last.group_by}"
        return QueryOutcome(query_id, epoch_id, title, table, 0.0)

    def close(self) -> None:
        """Nothing to release: the coordinator draws no randomness for ciphertexts
        (it only places the senders' own), so it keeps no randomiser pools."""

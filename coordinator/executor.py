"""A query's hop chain at the coordinator: the origin's ciphertexts aligned from
node to node, the grouped aggregates, and the noise shares added in turn."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from coordinator.alignment import (
    Sent,
    fills_for,
    household_align,
    person_align,
    read_signed,
)
from coordinator.nodes import CHUNK_RECORDS, NodeClients
from coordinator.planner import Hop, Plan
from coordinator.store import CoordinatorStore
from headcount.config import FederationConfig
from headcount.crypto import paillier
from headcount.crypto.attest import NoiseAttestation
from headcount.errors import InvalidRequest
from headcount.measures import Packing, clamp_noise, make_packing
from headcount.privacy.noise import draw_share
from headcount.privacy.sensitivity import NoisePlan
from headcount.query import QuerySpec
from headcount.release import ReleasedTable
from headcount.wire import common_pb2, party_node_pb2, party_node_pb2_grpc
from headcount.wire import convert as cv

log = logging.getLogger(__name__)


# Set hashes per message (32 bytes each: 3.2 MB, under the default 16 MiB limit).
HASHES_PER_MESSAGE = 100_000


@dataclass(frozen=True, slots=True)
class QueryOutcome:
    query_id: str
    epoch_id: str
    title: str
    table: ReleasedTable
    budget_remaining: float


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
        ident = common_pb2.PartyIdentity.FromString(raw)
        return paillier.PublicKey.from_bytes(ident.paillier_n)

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

    def _household_align(
        self, epoch_id: str, prev: str, sent: Sent, hop: Hop, tokens: Sequence[bytes]
    ) -> list[bytes]:
        cap = self.federation.privacy.household_cap
        return household_align(self.store, cap, epoch_id, prev, sent, hop, tokens)

    def _hop_requests(
        self,
        header: party_node_pb2.HopHeader,
        sent: Sent,
        tokens: Sequence[bytes],
        aligned: Sequence[bytes],
        leftovers: Sequence[bytes] = (),
    ) -> Iterator[party_node_pb2.HopInput]:
        yield party_node_pb2.HopInput(header=header)
        hashes = sent.hashes()
        for start in range(0, len(hashes), HASHES_PER_MESSAGE):
            yield party_node_pb2.HopInput(
                set_hashes=party_node_pb2.SetHashes(
                    hashes=hashes[start : start + HASHES_PER_MESSAGE]
                )
            )
        starts = list(range(0, len(tokens), CHUNK_RECORDS)) or [0]
        for seq, start in enumerate(starts):
            yield party_node_pb2.HopInput(
                chunk=party_node_pb2.CiphertextChunk(
                    seq=seq,
                    tokens=tokens[start : start + CHUNK_RECORDS],
                    ciphertexts=aligned[start : start + CHUNK_RECORDS],
                    last=seq == len(starts) - 1,
                )
            )
        for start in range(0, len(leftovers), CHUNK_RECORDS):
            yield party_node_pb2.HopInput(
                leftovers=party_node_pb2.Leftovers(
                    ciphertexts=leftovers[start : start + CHUNK_RECORDS]
                )
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
    ) -> party_node_pb2.HopHeader:
        header = party_node_pb2.HopHeader(
            query_id=query_id,
            epoch_id=epoch_id,
            paillier_n=key.to_bytes(),
            group_by=hop.group_by,
            filters=cv.predicates_to_pb(hop.filters),
            epsilon=epsilon,
            expected_records=records,
            purpose=spec.purpose,
            fill_count=fill_count,
            unlinked_cell=unlinked_cell,
        )
        header.sender.CopyFrom(cv.statement_to_pb(sent.statement))
        return header

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
        chunks = self.nodes.call(
            origin.party,
            lambda s: list(
                s.EncryptIndicators(
                    party_node_pb2.EncryptRequest(
                        query_id=query_id,
                        epoch_id=epoch_id,
                        filters=cv.predicates_to_pb(origin.filters),
                        epsilon=epsilon,
                        chunk_records=CHUNK_RECORDS,
                        purpose=spec.purpose,
                        per_household=origin.per_household,
                        group_by=packing.group_by,
                        measure_attribute=packing.measure_attribute,
                        layout=cv.packing_to_pb(packing),
                        fill_count=fills_for(self.store, epoch_id, plan, 0),
                    ),
                    timeout=self.nodes.timeout_s,
                )
            ),
        )
        sent = read_signed(origin.party, key, chunks, None)
        if origin.per_household:
            cap = self.federation.privacy.household_cap
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
            if hop.link == "person":
                aligned = person_align(self.store, epoch_id, prev, sent, hop, tokens)
            else:
                aligned = household_align(
                    self.store,
                    self.federation.privacy.household_cap,
                    epoch_id,
                    prev,
                    sent,
                    hop,
                    tokens,
                )
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
            requests = self._hop_requests(header, sent, tokens, aligned)

            def apply(
                stub: party_node_pb2_grpc.PartyNodeStub,
                requests: Iterator[party_node_pb2.HopInput] = requests,
            ) -> list[party_node_pb2.CiphertextChunk]:
                return list(stub.ApplyPredicate(requests, timeout=self.nodes.timeout_s))

            replies = self.nodes.call(hop.party, apply)
            sent = read_signed(hop.party, key, replies, tokens)
            prev = hop.party

        # Final hop: the grouping node sums per category.
        last = plan.hops[-1]
        group_tokens = self.store.tokens(epoch_id, last.party)
        leftovers: list[bytes] = []
        if last.link == "person":
            aligned = person_align(self.store, epoch_id, prev, sent, last, group_tokens)
            if plan.unlinked_cell:
                # Records of the previous hop with no link into the grouping
                # department form their own cell, so the table adds up; each
                # person once (a person's further records, dedup, left out).
                # The grouping node sums them, checked against the signed set.
                skip = set(self.store.linked(epoch_id, prev, last.party).values())
                skip.update(self.store.duplicates(epoch_id, prev))
                leftovers = [c for t, c in sent.records.items() if t not in skip]
        else:
            aligned = household_align(
                self.store,
                self.federation.privacy.household_cap,
                epoch_id,
                prev,
                sent,
                last,
                group_tokens,
            )
        header = self._header(
            query_id,
            epoch_id,
            spec,
            epsilon,
            key,
            last,
            len(group_tokens),
            sent,
            unlinked_cell=plan.unlinked_cell and last.link == "person",
        )
        grouped = self.nodes.call(
            last.party,
            lambda s: s.AggregateByGroup(
                self._hop_requests(header, sent, group_tokens, aligned, leftovers),
                timeout=self.nodes.timeout_s,
            ),
        )
        groups = [(g.group, g.ciphertext) for g in grouped.groups]
        if not groups or len({g for g, _ in groups}) != len(groups):
            raise InvalidRequest(f"{last.party}: malformed grouped aggregate")
        if not grouped.HasField("statement"):
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
            request = party_node_pb2.NoiseRequest(
                query_id=query_id,
                paillier_n=key.to_bytes(),
                groups=[common_pb2.GroupCiphertext(group=g, ciphertext=c) for g, c in groups],
            )

            def add_noise(
                stub: party_node_pb2_grpc.PartyNodeStub,
                request: party_node_pb2.NoiseRequest = request,
            ) -> party_node_pb2.NoisedAggregate:
                return stub.AddNoise(request, timeout=self.nodes.timeout_s)

            reply = self.nodes.call(holder, add_noise)
            returned = [(g.group, g.ciphertext) for g in reply.groups]
            if [g for g, _ in returned] != [g for g, _ in groups]:
                raise InvalidRequest(f"{holder}: noised other groups than it was sent")
            groups = returned
            attestations.append(cv.attestation_from_pb(reply.attestation))

        # Final step: the origin checks the chain, adds this coordinator's
        # share, decrypts the noisy aggregates and applies SDC.
        released = self.nodes.call(
            origin.party,
            lambda s: s.DecryptAggregate(
                party_node_pb2.DecryptRequest(
                    query_id=query_id,
                    groups=[common_pb2.GroupCiphertext(group=g, ciphertext=c) for g, c in groups],
                    attestations=[cv.attestation_to_pb(a) for a in attestations],
                    group_statement=group_statement,
                    coordinator_noise=coordinator_noise,
                ),
                timeout=self.nodes.timeout_s,
            ),
        )
        table = cv.table_from_pb(released)
        if table.query_id != query_id:
            raise InvalidRequest(f"{origin.party}: released a table for another query")
        title = spec.title or f"{spec.population_party} records by {last.party}.{last.group_by}"
        return QueryOutcome(query_id, epoch_id, title, table, 0.0)

    def close(self) -> None:
        """Nothing to release: the coordinator draws no randomness for ciphertexts
        (it only places the senders' own), so it keeps no randomiser pools."""

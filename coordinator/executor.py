"""A query's hop chain at the coordinator: the origin's ciphertexts aligned from
node to node, the grouped aggregates, and the noise shares added in turn."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from coordinator.alignment import align
from coordinator.nodes import CHUNK_RECORDS, NodeClients
from coordinator.planner import Hop, Plan
from coordinator.store import CoordinatorStore
from headcount.config import FederationConfig
from headcount.crypto import paillier
from headcount.crypto.attest import NoiseAttestation
from headcount.errors import InvalidRequest
from headcount.measures import Packing, make_packing
from headcount.privacy.noise import draw_share
from headcount.privacy.sensitivity import NoisePlan
from headcount.query import QuerySpec, unlinked_group
from headcount.wire import common_pb2, party_node_pb2, party_node_pb2_grpc
from headcount.wire import convert as cv

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class QueryOutcome:
    query_id: str
    epoch_id: str
    title: str
    table: common_pb2.ProtectedTable
    budget_remaining: float


class HopExecutor:
    """Runs announced queries' hop chains and keeps randomisers ready for them."""

    def __init__(
        self, federation: FederationConfig, store: CoordinatorStore, nodes: NodeClients
    ) -> None:
        self.federation, self.store, self.nodes = federation, store, nodes
        self.parties: tuple[str, ...] = federation.party_names
        self._pooled: list[paillier.Encryptor] = []

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

    def _align(
        self,
        epoch_id: str,
        key: paillier.PublicKey,
        prev: str,
        current: dict[bytes, int],
        hop: Hop,
        tokens: Sequence[bytes],
    ) -> list[int]:
        cap = self.federation.privacy.household_cap
        return align(self.store, cap, epoch_id, key, prev, current, hop, tokens)

    def _hop_requests(
        self,
        header: party_node_pb2.HopHeader,
        key: paillier.PublicKey,
        tokens: Sequence[bytes],
        aligned: Sequence[int],
    ) -> Iterator[party_node_pb2.HopInput]:
        yield party_node_pb2.HopInput(header=header)
        starts = list(range(0, len(tokens), CHUNK_RECORDS)) or [0]
        for seq, start in enumerate(starts):
            yield party_node_pb2.HopInput(
                chunk=party_node_pb2.CiphertextChunk(
                    seq=seq,
                    tokens=tokens[start : start + CHUNK_RECORDS],
                    ciphertexts=[
                        paillier.to_bytes(key, c) for c in aligned[start : start + CHUNK_RECORDS]
                    ],
                    last=seq == len(starts) - 1,
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
    ) -> party_node_pb2.HopHeader:
        return party_node_pb2.HopHeader(
            query_id=query_id,
            epoch_id=epoch_id,
            paillier_n=key.to_bytes(),
            group_by=hop.group_by,
            filters=cv.predicates_to_pb(hop.filters),
            epsilon=epsilon,
            expected_records=records,
            purpose=spec.purpose,
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

        # Hop 1: the origin encrypts an indicator for every record it holds.
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
                    ),
                    timeout=self.nodes.timeout_s,
                )
            ),
        )
        current: dict[bytes, int] = {}
        for seq, chunk in enumerate(chunks):
            if chunk.seq != seq or len(chunk.tokens) != len(chunk.ciphertexts):
                raise InvalidRequest(f"{origin.party}: malformed ciphertext chunk {chunk.seq}")
            for tok, ct in zip(chunk.tokens, chunk.ciphertexts, strict=True):
                current[tok] = paillier.from_bytes(key, ct)
        if not chunks or not chunks[-1].last or set(current) != set(origin_tokens):
            raise InvalidRequest(
                f"{origin.party}: ciphertexts do not cover exactly its epoch records"
            )

        # Filter hops: align, let the node keep or zero each ciphertext.
        prev = origin.party
        for hop in plan.hops[1:-1]:
            tokens = self.store.tokens(epoch_id, hop.party)
            aligned = self._align(epoch_id, key, prev, current, hop, tokens)
            header = self._header(query_id, epoch_id, spec, epsilon, key, hop, len(tokens))
            requests = self._hop_requests(header, key, tokens, aligned)

            def apply(
                stub: party_node_pb2_grpc.PartyNodeStub,
                requests: Iterator[party_node_pb2.HopInput] = requests,
            ) -> list[party_node_pb2.CiphertextChunk]:
                return list(stub.ApplyPredicate(requests, timeout=self.nodes.timeout_s))

            replies = self.nodes.call(hop.party, apply)
            received = [c for r in replies for c in r.ciphertexts]
            if len(received) != len(tokens) or not replies or not replies[-1].last:
                raise InvalidRequest(f"{hop.party}: returned {len(received)} of {len(tokens)}")
            current = {
                t: paillier.from_bytes(key, c) for t, c in zip(tokens, received, strict=True)
            }
            prev = hop.party

        # Final hop: the grouping node sums per category.
        last = plan.hops[-1]
        group_tokens = self.store.tokens(epoch_id, last.party)
        aligned = self._align(epoch_id, key, prev, current, last, group_tokens)
        header = self._header(query_id, epoch_id, spec, epsilon, key, last, len(group_tokens))
        grouped = self.nodes.call(
            last.party,
            lambda s: s.AggregateByGroup(
                self._hop_requests(header, key, group_tokens, aligned),
                timeout=self.nodes.timeout_s,
            ),
        )
        sums = [(g.group, paillier.from_bytes(key, g.ciphertext)) for g in grouped.groups]
        if not sums or len({g for g, _ in sums}) != len(sums):
            raise InvalidRequest(f"{last.party}: malformed grouped aggregate")
        if plan.unlinked_cell:
            # Records of the previous hop with no link into the grouping
            # department form their own cell, so the table adds up.
            # Records of the previous hop with no link, each person once: a
            # person's further records (dedup) are left out.
            skip = set(self.store.linked(epoch_id, prev, last.party).values())
            skip.update(self.store.duplicates(epoch_id, prev))
            unlinked = paillier.add_all(key, (c for t, c in current.items() if t not in skip))
            sums.append((unlinked_group(last.party), unlinked))

        # Noise is added under encryption, slot by slot, in shares: this
        # coordinator's, then each share-holding node's, which signs what it
        # did. The origin checks the signatures before it decrypts, so its
        # noisy aggregates carry noise that no single party knows.
        holders = len(noise.shareholders)
        shares = [draw_share(s.scale, holders, len(sums)) for s in packing.noise_specs()]
        groups = [
            (g, paillier.to_bytes(key, paillier.add_plain(key, c, packing.pack_share(shares, i))))
            for i, (g, c) in enumerate(sums)
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

        # Final step: the origin decrypts the noisy aggregates and applies SDC.
        table = self.nodes.call(
            origin.party,
            lambda s: s.DecryptAggregate(
                party_node_pb2.DecryptRequest(
                    query_id=query_id,
                    groups=[common_pb2.GroupCiphertext(group=g, ciphertext=c) for g, c in groups],
                    attestations=[cv.attestation_to_pb(a) for a in attestations],
                ),
                timeout=self.nodes.timeout_s,
            ),
        )
        if table.query_id != query_id:
            raise InvalidRequest(f"{origin.party}: released a table for another query")
        title = spec.title or f"{spec.population_party} records by {last.party}.{last.group_by}"
        return QueryOutcome(query_id, epoch_id, title, table, 0.0)

    def pools(self) -> list[paillier.RandomiserPool]:
        """The randomiser pools this coordinator keeps (for benchmarks and status)."""
        return [enc.pool for enc in self._pooled if enc.pool is not None]

    def warm_pools(self, records: Mapping[str, int]) -> None:
        """Keep randomisers ready for the next queries' alignments.

        Each alignment draws one randomiser per record of the hop it feeds
        (fresh E(0) or re-randomisation, under the origin's key, which may be
        any party's), so each party key's pool is sized to twice the largest
        department (two alignments in a three-hop chain), capped at
        ``paillier.pool_limit``. Filling happens in a low-priority child
        process; a query that comes first computes any shortfall online.
        """
        need = 2 * max(records.values(), default=0)
        for party in self.parties:
            try:
                key = self.origin_key(party)
            except InvalidRequest:
                continue
            enc = paillier.shared_encryptor(key)
            enc.start_pool(min(need, paillier.pool_limit(key)))
            if enc not in self._pooled:
                self._pooled.append(enc)

    def close(self) -> None:
        for enc in self._pooled:
            enc.stop_pool()

"""gRPC servicer for the PartyNode service: unpack, call ``PartyNode``, pack."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import grpc

from headcount.crypto import paillier
from headcount.crypto.signed_sets import HopStatement
from headcount.domain.audit import AuditEvent
from headcount.domain.query import check_filters
from headcount.domain.release import ReleasedTable
from headcount.errors import InvalidRequest
from headcount.wire import common_pb2, party_node_pb2, party_node_pb2_grpc
from headcount.wire import convert as cv
from headcount.wire.node_values import HopHeader
from party_node.hops import SignedOutput
from party_node.ids import check_id
from party_node.inbound import ChunkIn, HopItem, LeftoversIn, SetHashesIn
from party_node.node import MATCH_KEY_BYTES, PartyNode

MAX_CHUNK_RECORDS = 10_000
MAX_SET_HASHES = 100_000  # per message (headcount.wire.node_client.HASHES_PER_MESSAGE)
MAX_AUDIT_BATCH = 1_000
MAX_ATTESTATIONS = 64
# Parties of a ceremony, and envelopes and commitments of its second round:
# more than any federation has (the roster check then names the difference).
MAX_PARTIES = 64
DEFAULT_CHUNK_RECORDS = 1_000


def _epsilon(value: float) -> float:
    """The epsilon a hop is charged: finite and positive (an announced query's
    epsilon always is), else InvalidRequest before anything is looked up."""
    if not math.isfinite(value) or value <= 0:
        raise InvalidRequest("epsilon must be finite and > 0")
    return value


def _chunk_size(requested: int) -> int:
    if requested == 0:
        return DEFAULT_CHUNK_RECORDS
    if not 1 <= requested <= MAX_CHUNK_RECORDS:
        raise InvalidRequest(f"chunk_records must be 1..{MAX_CHUNK_RECORDS}")
    return requested


def _at_most(what: str, items: Any, limit: int) -> None:
    if len(items) > limit:
        raise InvalidRequest(f"at most {limit} {what}, not {len(items)}")


class PartyNodeService(party_node_pb2_grpc.PartyNodeServicer):
    def __init__(self, node: PartyNode) -> None:
        self.node = node

    def GetIdentity(
        self, request: party_node_pb2.IdentityRequest, context: Any
    ) -> common_pb2.PartyIdentity:
        return cv.identity_to_pb(self.node.identity())

    def Contribute(
        self, request: party_node_pb2.ContributeRequest, context: Any
    ) -> party_node_pb2.Contribution:
        check_id("ceremony_id", request.ceremony_id)
        _at_most("parties", request.parties, MAX_PARTIES)
        commitment, envelopes = self.node.contribute(
            request.ceremony_id, [cv.identity_from_pb(i) for i in request.parties]
        )
        return party_node_pb2.Contribution(
            commitment=cv.commitment_to_pb(commitment),
            envelopes=[cv.envelope_to_pb(e) for e in envelopes],
        )

    def Finish(
        self, request: party_node_pb2.FinishRequest, context: Any
    ) -> party_node_pb2.KeyConfirmation:
        check_id("ceremony_id", request.ceremony_id)
        _at_most("envelopes", request.envelopes, MAX_PARTIES)
        _at_most("commitments", request.commitments, MAX_PARTIES)
        tag = self.node.finish(
            request.ceremony_id,
            [cv.envelope_from_pb(e) for e in request.envelopes],
            [cv.commitment_from_pb(c) for c in request.commitments],
        )
        return party_node_pb2.KeyConfirmation(party=self.node.name, tag=tag)

    def Encode(
        self, request: party_node_pb2.EncodeRequest, context: Any
    ) -> Iterator[party_node_pb2.EncodingChunk]:
        size = _chunk_size(request.chunk_records)
        check_id("epoch_id", request.epoch_id)
        check_id("ceremony_id", request.ceremony_id)
        encoded = self.node.encode(request.epoch_id, request.ceremony_id)
        n = len(encoded.tokens)
        width = int(encoded.clks.shape[1])
        key_width = encoded.match_key_levels * MATCH_KEY_BYTES
        starts = list(range(0, n, size)) or [0]
        if request.resume_from_seq >= len(starts):
            raise InvalidRequest(
                f"cannot resume at chunk {request.resume_from_seq}: "
                f"the epoch has {len(starts)} chunks"
            )
        for seq, start in enumerate(starts):
            if seq < request.resume_from_seq:
                continue
            last = seq == len(starts) - 1
            yield party_node_pb2.EncodingChunk(
                epoch_id=request.epoch_id,
                seq=seq,
                filter_bytes=width,
                tokens=encoded.tokens[start : start + size],
                clks=encoded.clks[start : start + size].tobytes(),
                last=last,
                total_records=n,
                schema_fingerprint=encoded.epoch.schema_fingerprint,
                dataset_commitment=encoded.epoch.commitment if last else b"",
                household_keys=encoded.households[start : start + size],
                match_keys=encoded.match_keys[start * key_width : (start + size) * key_width],
                match_key_levels=encoded.match_key_levels,
            )

    def EncryptIndicators(
        self, request: party_node_pb2.EncryptRequest, context: Any
    ) -> Iterator[party_node_pb2.CiphertextChunk]:
        size = _chunk_size(request.chunk_records)
        check_filters("filters", request.filters)
        out = self.node.encrypt_indicators(
            request.query_id,
            request.epoch_id,
            cv.predicates_from_pb(request.filters),
            _epsilon(request.epsilon),
            request.purpose,
            per_household=request.per_household,
            packing_request=(
                cv.packing_request_from_pb(request) if request.HasField("layout") else None
            ),
            fill_count=request.fill_count,
        )
        yield from _signed_chunks(out, size)

    def _hop(
        self, request_iterator: Iterator[party_node_pb2.HopInput]
    ) -> tuple[HopHeader, Iterator[HopItem]]:
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            raise InvalidRequest("a hop stream must start with a header")
        m = first.header
        check_filters("filters", m.filters)
        _epsilon(m.epsilon)
        header = cv.hop_header_from_pb(m)

        def items() -> Iterator[HopItem]:
            for item in request_iterator:
                kind = item.WhichOneof("item")
                if kind == "chunk":
                    c = item.chunk
                    _at_most("tokens in a chunk", c.tokens, MAX_CHUNK_RECORDS)
                    _at_most("ciphertexts in a chunk", c.ciphertexts, MAX_CHUNK_RECORDS)
                    yield ChunkIn(c.seq, list(c.tokens), list(c.ciphertexts), c.last)
                elif kind == "set_hashes":
                    hashes = item.set_hashes.hashes
                    _at_most("hashes in a message", hashes, MAX_SET_HASHES)
                    yield SetHashesIn(list(hashes))
                elif kind == "leftovers":
                    cts = item.leftovers.ciphertexts
                    _at_most("leftovers in a message", cts, MAX_CHUNK_RECORDS)
                    yield LeftoversIn(list(cts))
                else:
                    raise InvalidRequest("only one header is allowed")

        return header, items()

    def ApplyPredicate(
        self, request_iterator: Iterator[party_node_pb2.HopInput], context: Any
    ) -> Iterator[party_node_pb2.CiphertextChunk]:
        header, items = self._hop(request_iterator)
        for seq, cts, fills, statement, _ in self.node.apply_predicate(header, items):
            yield party_node_pb2.CiphertextChunk(seq=seq, ciphertexts=cts)
            if statement is not None:
                yield from _tail(fills, statement, seq + 1, max(1, len(cts)))

    def AggregateByGroup(
        self, request_iterator: Iterator[party_node_pb2.HopInput], context: Any
    ) -> party_node_pb2.GroupedCiphertexts:
        header, items = self._hop(request_iterator)
        out = self.node.aggregate(header, items)
        return party_node_pb2.GroupedCiphertexts(
            query_id=header.query_id,
            groups=cv.groups_to_pb(out.groups),
            statement=cv.statement_to_pb(out.statement),
        )

    def AddNoise(
        self, request: party_node_pb2.NoiseRequest, context: Any
    ) -> party_node_pb2.NoisedAggregate:
        key = paillier.PublicKey.from_bytes(request.paillier_n)
        groups, attestation = self.node.add_noise(
            request.query_id, key, cv.groups_from_pb(request.groups)
        )
        return party_node_pb2.NoisedAggregate(
            groups=cv.groups_to_pb(groups),
            attestation=cv.attestation_to_pb(attestation),
        )

    def AbandonQuery(
        self, request: party_node_pb2.AbandonRequest, context: Any
    ) -> party_node_pb2.Abandonment:
        a = self.node.abandon_query(request.query_id)
        return party_node_pb2.Abandonment(
            query_id=a.query_id,
            party=a.party,
            signature=a.signature,
            certificate_pem=a.certificate_pem,
        )

    def DecryptAggregate(
        self, request: party_node_pb2.DecryptRequest, context: Any
    ) -> common_pb2.ProtectedTable:
        if len(request.attestations) > MAX_ATTESTATIONS:
            raise InvalidRequest(f"at most {MAX_ATTESTATIONS} noise attestations")
        out = self.node.decrypt(cv.decrypt_request_from_pb(request))
        policy = self.node.federation.output
        return cv.table_to_pb(
            ReleasedTable(
                request.query_id,
                tuple(out.cells),
                out.total,
                out.total_interval,
                epsilon=out.epsilon,
                noise_scale=out.noise_scale,
                suppression_threshold=policy.suppress_below,
                rounding_base=policy.rounding_base,
                column_attribute=out.column_attribute,
                measure_attribute=out.measure_attribute,
                shareholders=out.shareholders,
                sensitivity=out.sensitivity,
            )
        )

    def SyncAudit(
        self, request: party_node_pb2.AuditBatch, context: Any
    ) -> party_node_pb2.AuditHead:
        if len(request.events_json) > MAX_AUDIT_BATCH:
            raise InvalidRequest(f"at most {MAX_AUDIT_BATCH} audit events per batch")
        next_seq, head = self.node.sync_audit(
            [AuditEvent.from_json(e) for e in request.events_json]
        )
        return party_node_pb2.AuditHead(next_seq=next_seq, head=head)


def _signed_chunks(out: SignedOutput, size: int) -> Iterator[party_node_pb2.CiphertextChunk]:
    """An origin's set as a stream: its records' (or households') chunks,
    numbered from 0, then its fills and signed statement (``_tail``)."""
    labels = out.households or out.tokens
    starts = list(range(0, len(labels), size)) or [0]
    for seq, start in enumerate(starts):
        chunk = party_node_pb2.CiphertextChunk(
            seq=seq, ciphertexts=out.ciphertexts[start : start + size]
        )
        if out.households:
            chunk.household_keys.extend(out.households[start : start + size])
        else:
            chunk.tokens.extend(out.tokens[start : start + size])
        yield chunk
    yield from _tail(out.fills, out.statement, len(starts), size)


def _tail(
    fills: list[bytes], statement: HopStatement, seq: int, size: int
) -> Iterator[party_node_pb2.CiphertextChunk]:
    """After a sender's record chunks: chunks of E(0) fills, then the last chunk,
    which carries only the signed statement over the whole set."""
    for start in range(0, len(fills), size):
        yield party_node_pb2.CiphertextChunk(seq=seq, fills=fills[start : start + size])
        seq += 1
    yield party_node_pb2.CiphertextChunk(
        seq=seq, statement=cv.statement_to_pb(statement), last=True
    )


def allowed_roles() -> dict[str, frozenset[Any]]:
    """Every PartyNode method is for the coordinator alone."""
    from headcount.tls import Role

    service = party_node_pb2.DESCRIPTOR.services_by_name["PartyNode"]
    return {
        f"/{service.full_name}/{m.name}": frozenset({Role.COORDINATOR}) for m in service.methods
    }


__all__ = ["PartyNodeService", "allowed_roles", "grpc"]

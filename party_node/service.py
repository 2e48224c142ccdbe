"""gRPC servicer for the PartyNode service: unpack, call ``PartyNode``, pack."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import grpc

from headcount.crypto.signed_sets import HopStatement
from headcount.domain.audit import AuditEvent
from headcount.domain.query import check_filters
from headcount.domain.release import ReleasedTable
from headcount.errors import InvalidRequest
from headcount.wire import common_pb2, party_node_pb2, party_node_pb2_grpc
from headcount.wire import convert as cv
from headcount.wire import node_convert as ncv
from headcount.wire.node_values import (
    AuditHead,
    ChunkIn,
    CiphertextChunk,
    Contribution,
    EncodingChunk,
    GroupedCiphertexts,
    HopHeader,
    HopItem,
    KeyConfirmation,
    LeftoversIn,
    NoisedAggregate,
    SetHashesIn,
)
from party_node.encode import EncodedEpoch
from party_node.hops import SignedOutput
from party_node.ids import check_id
from party_node.node import MATCH_KEY_BYTES, PartyNode

MAX_CHUNK_RECORDS = 10_000
MAX_SET_HASHES = 100_000  # per message (headcount.wire.node_convert.HASHES_PER_MESSAGE)
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
        r = ncv.contribute_request_from_pb(request)
        check_id("ceremony_id", r.ceremony_id)
        _at_most("parties", r.parties, MAX_PARTIES)
        commitment, envelopes = self.node.contribute(r.ceremony_id, r.parties)
        return ncv.contribution_to_pb(Contribution(commitment, tuple(envelopes)))

    def Finish(
        self, request: party_node_pb2.FinishRequest, context: Any
    ) -> party_node_pb2.KeyConfirmation:
        r = ncv.finish_request_from_pb(request)
        check_id("ceremony_id", r.ceremony_id)
        _at_most("envelopes", r.envelopes, MAX_PARTIES)
        _at_most("commitments", r.commitments, MAX_PARTIES)
        tag = self.node.finish(r.ceremony_id, r.envelopes, r.commitments)
        return ncv.key_confirmation_to_pb(KeyConfirmation(self.node.name, tag))

    def Encode(
        self, request: party_node_pb2.EncodeRequest, context: Any
    ) -> Iterator[party_node_pb2.EncodingChunk]:
        r = ncv.encode_request_from_pb(request)
        size = _chunk_size(r.chunk_records)
        check_id("epoch_id", r.epoch_id)
        check_id("ceremony_id", r.ceremony_id)
        encoded = self.node.encode(r.epoch_id, r.ceremony_id)
        for chunk in _encoding_chunks(encoded, r.epoch_id, size, r.resume_from_seq):
            yield ncv.encoding_to_pb(chunk)

    def EncryptIndicators(
        self, request: party_node_pb2.EncryptRequest, context: Any
    ) -> Iterator[party_node_pb2.CiphertextChunk]:
        r = ncv.indicator_request_from_pb(request)
        size = _chunk_size(r.chunk_records)
        check_filters("filters", r.filters)
        out = self.node.encrypt_indicators(
            r.query_id,
            r.epoch_id,
            r.filters,
            _epsilon(r.epsilon),
            r.purpose,
            per_household=r.per_household,
            packing_request=r.packing,
            fill_count=r.fill_count,
        )
        for chunk in _signed_chunks(out, size):
            yield ncv.chunk_to_pb(chunk)

    def ApplyPredicate(
        self, request_iterator: Iterator[party_node_pb2.HopInput], context: Any
    ) -> Iterator[party_node_pb2.CiphertextChunk]:
        header, items = _hop(request_iterator)
        for seq, cts, fills, statement, _ in self.node.apply_predicate(header, items):
            yield ncv.chunk_to_pb(CiphertextChunk(seq, tuple(cts)))
            if statement is not None:
                for chunk in _tail(fills, statement, seq + 1, max(1, len(cts))):
                    yield ncv.chunk_to_pb(chunk)

    def AggregateByGroup(
        self, request_iterator: Iterator[party_node_pb2.HopInput], context: Any
    ) -> party_node_pb2.GroupedCiphertexts:
        header, items = _hop(request_iterator)
        out = self.node.aggregate(header, items)
        return ncv.grouped_to_pb(
            GroupedCiphertexts(header.query_id, tuple(out.groups), out.statement)
        )

    def AddNoise(
        self, request: party_node_pb2.NoiseRequest, context: Any
    ) -> party_node_pb2.NoisedAggregate:
        r = ncv.noise_request_from_pb(request)
        groups, attestation = self.node.add_noise(r.query_id, r.origin_key, r.groups)
        return ncv.noised_to_pb(NoisedAggregate(tuple(groups), attestation))

    def AbandonQuery(
        self, request: party_node_pb2.AbandonRequest, context: Any
    ) -> party_node_pb2.Abandonment:
        return ncv.abandonment_to_pb(self.node.abandon_query(ncv.abandon_request_from_pb(request)))

    def DecryptAggregate(
        self, request: party_node_pb2.DecryptRequest, context: Any
    ) -> common_pb2.ProtectedTable:
        r = ncv.decrypt_request_from_pb(request)
        if len(r.attestations) > MAX_ATTESTATIONS:
            raise InvalidRequest(f"at most {MAX_ATTESTATIONS} noise attestations")
        out = self.node.decrypt(r)
        policy = self.node.federation.output
        return cv.table_to_pb(
            ReleasedTable(
                r.query_id,
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
        events_json = ncv.audit_batch_from_pb(request)
        if len(events_json) > MAX_AUDIT_BATCH:
            raise InvalidRequest(f"at most {MAX_AUDIT_BATCH} audit events per batch")
        next_seq, head = self.node.sync_audit([AuditEvent.from_json(e) for e in events_json])
        return ncv.audit_head_to_pb(AuditHead(next_seq, head))


def _hop(messages: Iterator[party_node_pb2.HopInput]) -> tuple[HopHeader, Iterator[HopItem]]:
    """A hop stream's header, checked for the bounds read before anything is
    looked up, and its items, each bounded as it arrives."""
    header, items = ncv.hop_from_pb(messages)
    check_filters("filters", header.filters)
    _epsilon(header.epsilon)

    def bounded() -> Iterator[HopItem]:
        for item in items:
            if isinstance(item, ChunkIn):
                _at_most("tokens in a chunk", item.tokens, MAX_CHUNK_RECORDS)
                _at_most("ciphertexts in a chunk", item.ciphertexts, MAX_CHUNK_RECORDS)
            elif isinstance(item, SetHashesIn):
                _at_most("hashes in a message", item.hashes, MAX_SET_HASHES)
            elif isinstance(item, LeftoversIn):
                _at_most("leftovers in a message", item.ciphertexts, MAX_CHUNK_RECORDS)
            yield item

    return header, bounded()


def _encoding_chunks(
    encoded: EncodedEpoch, epoch_id: str, size: int, resume_from_seq: int
) -> Iterator[EncodingChunk]:
    """An epoch's encodings in chunks of ``size`` records, from chunk
    ``resume_from_seq`` on (InvalidRequest past the last)."""
    n = len(encoded.tokens)
    width = int(encoded.clks.shape[1])
    key_width = encoded.match_key_levels * MATCH_KEY_BYTES
    starts = list(range(0, n, size)) or [0]
    if resume_from_seq >= len(starts):
        raise InvalidRequest(
            f"cannot resume at chunk {resume_from_seq}: the epoch has {len(starts)} chunks"
        )
    for seq, start in enumerate(starts):
        if seq < resume_from_seq:
            continue
        last = seq == len(starts) - 1
        yield EncodingChunk(
            epoch_id=epoch_id,
            seq=seq,
            filter_bytes=width,
            tokens=tuple(encoded.tokens[start : start + size]),
            clks=encoded.clks[start : start + size].tobytes(),
            last=last,
            total_records=n,
            schema_fingerprint=encoded.epoch.schema_fingerprint,
            dataset_commitment=encoded.epoch.commitment if last else b"",
            household_keys=tuple(encoded.households[start : start + size]),
            match_keys=encoded.match_keys[start * key_width : (start + size) * key_width],
            match_key_levels=encoded.match_key_levels,
        )


def _signed_chunks(out: SignedOutput, size: int) -> Iterator[CiphertextChunk]:
    """An origin's set as a stream: its records' (or households') chunks,
    numbered from 0, then its fills and signed statement (``_tail``)."""
    labels = out.households or out.tokens
    starts = list(range(0, len(labels), size)) or [0]
    for seq, start in enumerate(starts):
        part = slice(start, start + size)
        cts = tuple(out.ciphertexts[part])
        if out.households:
            yield CiphertextChunk(seq, cts, household_keys=tuple(out.households[part]))
        else:
            yield CiphertextChunk(seq, cts, tokens=tuple(out.tokens[part]))
    yield from _tail(out.fills, out.statement, len(starts), size)


def _tail(
    fills: list[bytes], statement: HopStatement, seq: int, size: int
) -> Iterator[CiphertextChunk]:
    """After a sender's record chunks: chunks of E(0) fills, then the last chunk,
    which carries only the signed statement over the whole set."""
    for start in range(0, len(fills), size):
        yield CiphertextChunk(seq, (), fills=tuple(fills[start : start + size]))
        seq += 1
    yield CiphertextChunk(seq, (), last=True, statement=statement)


def allowed_roles() -> dict[str, frozenset[Any]]:
    """Every PartyNode method is for the coordinator alone."""
    from headcount.tls import Role

    service = party_node_pb2.DESCRIPTOR.services_by_name["PartyNode"]
    return {
        f"/{service.full_name}/{m.name}": frozenset({Role.COORDINATOR}) for m in service.methods
    }


__all__ = ["PartyNodeService", "allowed_roles", "grpc"]

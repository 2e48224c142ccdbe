"""A typed client for one party node: one method per PartyNode RPC, taking and
returning frozen dataclasses (`node_values`, the kernel's own); protobuf stays
in this module.

Every failed call is raised as the `HeadcountError` its status stands for,
prefixed with the node's name (`headcount.rpc.raise_from_rpc`): a node that is
down gives `PeerUnavailable` naming it. Streams stay streams: replies are
converted chunk by chunk as they arrive, and hop inputs are cut into bounded
messages as gRPC sends them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from headcount import rpc
from headcount.crypto import paillier
from headcount.crypto.attest import Abandonment
from headcount.crypto.ceremony import Commitment, Envelope, Identity
from headcount.domain.audit import AuditEvent
from headcount.domain.release import ReleasedTable
from headcount.wire import convert as cv
from headcount.wire import party_node_pb2 as pn
from headcount.wire import party_node_pb2_grpc
from headcount.wire.node_values import (
    AuditHead,
    CiphertextChunk,
    Contribution,
    DecryptRequest,
    EncodingChunk,
    GroupedCiphertexts,
    Groups,
    HopInput,
    IndicatorRequest,
    KeyConfirmation,
    NoisedAggregate,
)

__all__ = ["CHUNK_RECORDS", "HASHES_PER_MESSAGE", "NodeClient"]

M = TypeVar("M")
T = TypeVar("T")

# Records per streamed chunk, uploads and hop inputs alike.
CHUNK_RECORDS = 1_000
# Set hashes per message (32 bytes each: 3.2 MB, under the default 16 MiB limit).
HASHES_PER_MESSAGE = 100_000
HEALTH_TIMEOUT_S = 3


class NodeClient:
    """The coordinator's side of one party node's channel."""

    def __init__(self, party: str, channel: grpc.Channel, timeout_s: float) -> None:
        self.party, self.timeout_s = party, timeout_s
        self._channel = channel
        self._stub = party_node_pb2_grpc.PartyNodeStub(channel)

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        try:
            yield
        except grpc.RpcError as exc:
            rpc.raise_from_rpc(exc, self.party)

    def _stream(self, call: Any, convert: Callable[[M], T]) -> Iterator[T]:
        """A reply stream converted message by message; the call is cancelled
        when the reader stops early (it refused a chunk)."""
        try:
            with self._mapped():
                for message in call:
                    yield convert(message)
        finally:
            # A gRPC call cancels; an interceptor's wrapping generator closes.
            stop = getattr(call, "cancel", None) or getattr(call, "close", None)
            if stop is not None:
                stop()

    # -- key ceremony ------------------------------------------------------------------
    def get_identity(self) -> Identity:
        with self._mapped():
            reply = self._stub.GetIdentity(pn.IdentityRequest(), timeout=self.timeout_s)
        return cv.identity_from_pb(reply)

    def contribute(self, ceremony_id: str, parties: Sequence[Identity]) -> Contribution:
        request = pn.ContributeRequest(
            ceremony_id=ceremony_id, parties=[cv.identity_to_pb(i) for i in parties]
        )
        with self._mapped():
            reply = self._stub.Contribute(request, timeout=self.timeout_s)
        return Contribution(
            cv.commitment_from_pb(reply.commitment),
            tuple(cv.envelope_from_pb(e) for e in reply.envelopes),
        )

    def finish(
        self, ceremony_id: str, envelopes: Sequence[Envelope], commitments: Sequence[Commitment]
    ) -> KeyConfirmation:
        request = pn.FinishRequest(
            ceremony_id=ceremony_id,
            envelopes=[cv.envelope_to_pb(e) for e in envelopes],
            commitments=[cv.commitment_to_pb(x) for x in commitments],
        )
        with self._mapped():
            reply = self._stub.Finish(request, timeout=self.timeout_s)
        return KeyConfirmation(reply.party, reply.tag)

    # -- linkage epoch -----------------------------------------------------------------
    def encode(
        self,
        epoch_id: str,
        ceremony_id: str,
        *,
        chunk_records: int = CHUNK_RECORDS,
        resume_from_seq: int = 0,
    ) -> Iterator[EncodingChunk]:
        request = pn.EncodeRequest(
            epoch_id=epoch_id,
            ceremony_id=ceremony_id,
            chunk_records=chunk_records,
            resume_from_seq=resume_from_seq,
        )
        return self._stream(self._stub.Encode(request, timeout=self.timeout_s), _encoding_from_pb)

    # -- query hops ----------------------------------------------------------------------
    def encrypt_indicators(self, request: IndicatorRequest) -> Iterator[CiphertextChunk]:
        p = request.packing
        message = pn.EncryptRequest(
            query_id=request.query_id,
            epoch_id=request.epoch_id,
            filters=cv.predicates_to_pb(request.filters),
            epsilon=request.epsilon,
            chunk_records=request.chunk_records,
            purpose=request.purpose,
            per_household=request.per_household,
            group_by=p.group_by,
            measure_attribute=p.measure_attribute,
            layout=cv.packing_to_pb(p),
            fill_count=request.fill_count,
        )
        call = self._stub.EncryptIndicators(message, timeout=self.timeout_s)
        return self._stream(call, _chunk_from_pb)

    def apply_predicate(self, hop: HopInput) -> Iterator[CiphertextChunk]:
        call = self._stub.ApplyPredicate(_hop_messages(hop), timeout=self.timeout_s)
        return self._stream(call, _chunk_from_pb)

    def aggregate_by_group(self, hop: HopInput) -> GroupedCiphertexts:
        with self._mapped():
            reply = self._stub.AggregateByGroup(_hop_messages(hop), timeout=self.timeout_s)
        return GroupedCiphertexts(
            reply.query_id,
            cv.groups_from_pb(reply.groups),
            cv.statement_from_pb(reply.statement) if reply.HasField("statement") else None,
        )

    def add_noise(self, query_id: str, key: paillier.PublicKey, groups: Groups) -> NoisedAggregate:
        request = pn.NoiseRequest(
            query_id=query_id, paillier_n=key.to_bytes(), groups=cv.groups_to_pb(groups)
        )
        with self._mapped():
            reply = self._stub.AddNoise(request, timeout=self.timeout_s)
        return NoisedAggregate(
            cv.groups_from_pb(reply.groups), cv.attestation_from_pb(reply.attestation)
        )

    def abandon_query(self, query_id: str) -> Abandonment:
        with self._mapped():
            reply = self._stub.AbandonQuery(
                pn.AbandonRequest(query_id=query_id), timeout=self.timeout_s
            )
        return Abandonment(reply.query_id, reply.party, reply.signature, reply.certificate_pem)

    def decrypt_aggregate(self, request: DecryptRequest) -> ReleasedTable:
        message = cv.decrypt_request_to_pb(request)
        with self._mapped():
            reply = self._stub.DecryptAggregate(message, timeout=self.timeout_s)
        return cv.table_from_pb(reply)

    # -- audit replica and health ----------------------------------------------------------
    def sync_audit(self, events: Sequence[AuditEvent] = ()) -> AuditHead:
        """Append ``events`` to the node's replica; none asks for its head."""
        request = pn.AuditBatch(events_json=[e.to_json() for e in events])
        with self._mapped():
            reply = self._stub.SyncAudit(request, timeout=self.timeout_s)
        return AuditHead(int(reply.next_seq), reply.head)

    def healthy(self) -> bool:
        try:
            reply = health_pb2_grpc.HealthStub(self._channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=HEALTH_TIMEOUT_S
            )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def close(self) -> None:
        self._channel.close()


def _encoding_from_pb(m: pn.EncodingChunk) -> EncodingChunk:
    return EncodingChunk(
        epoch_id=m.epoch_id,
        seq=m.seq,
        filter_bytes=m.filter_bytes,
        tokens=tuple(m.tokens),
        clks=m.clks,
        last=m.last,
        total_records=m.total_records,
        schema_fingerprint=m.schema_fingerprint,
        dataset_commitment=m.dataset_commitment,
        household_keys=tuple(m.household_keys),
        match_keys=m.match_keys,
        match_key_levels=m.match_key_levels,
    )


def _chunk_from_pb(m: pn.CiphertextChunk) -> CiphertextChunk:
    return CiphertextChunk(
        seq=m.seq,
        ciphertexts=tuple(m.ciphertexts),
        last=m.last,
        tokens=tuple(m.tokens),
        household_keys=tuple(m.household_keys),
        fills=tuple(m.fills),
        statement=cv.statement_from_pb(m.statement) if m.HasField("statement") else None,
    )


def _hop_messages(hop: HopInput) -> Iterator[pn.HopInput]:
    """A hop's input as gRPC sends it: the header, the set's hashes, the aligned
    chunks numbered from 0 (one empty chunk when there are none), then the
    leftovers; each message made only when gRPC asks for it."""
    yield pn.HopInput(header=cv.hop_header_to_pb(hop.header))
    hashes = hop.set_hashes
    for start in range(0, len(hashes), HASHES_PER_MESSAGE):
        yield pn.HopInput(
            set_hashes=pn.SetHashes(hashes=hashes[start : start + HASHES_PER_MESSAGE])
        )
    tokens, aligned = hop.tokens, hop.ciphertexts
    starts = list(range(0, len(tokens), CHUNK_RECORDS)) or [0]
    for seq, start in enumerate(starts):
        yield pn.HopInput(
            chunk=pn.CiphertextChunk(
                seq=seq,
                tokens=tokens[start : start + CHUNK_RECORDS],
                ciphertexts=aligned[start : start + CHUNK_RECORDS],
                last=seq == len(starts) - 1,
            )
        )
    for start in range(0, len(hop.leftovers), CHUNK_RECORDS):
        yield pn.HopInput(
            leftovers=pn.Leftovers(ciphertexts=hop.leftovers[start : start + CHUNK_RECORDS])
        )

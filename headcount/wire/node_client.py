"""A typed client for one party node: one method per PartyNode RPC, taking and
returning frozen dataclasses (`node_values`, the kernel's own); protobuf stays
in this module and `node_convert`.

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
from headcount.wire import node_convert as ncv
from headcount.wire import party_node_pb2 as pn
from headcount.wire import party_node_pb2_grpc
from headcount.wire.node_convert import CHUNK_RECORDS, HASHES_PER_MESSAGE
from headcount.wire.node_values import (
    AuditHead,
    CiphertextChunk,
    ContributeRequest,
    Contribution,
    DecryptRequest,
    EncodeRequest,
    EncodingChunk,
    FinishRequest,
    GroupedCiphertexts,
    Groups,
    HopInput,
    IndicatorRequest,
    KeyConfirmation,
    NoisedAggregate,
    NoiseRequest,
)

__all__ = ["CHUNK_RECORDS", "HASHES_PER_MESSAGE", "NodeClient"]

M = TypeVar("M")
T = TypeVar("T")

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
        request = ncv.contribute_request_to_pb(ContributeRequest(ceremony_id, tuple(parties)))
        with self._mapped():
            reply = self._stub.Contribute(request, timeout=self.timeout_s)
        return ncv.contribution_from_pb(reply)

    def finish(
        self, ceremony_id: str, envelopes: Sequence[Envelope], commitments: Sequence[Commitment]
    ) -> KeyConfirmation:
        request = ncv.finish_request_to_pb(
            FinishRequest(ceremony_id, tuple(envelopes), tuple(commitments))
        )
        with self._mapped():
            reply = self._stub.Finish(request, timeout=self.timeout_s)
        return ncv.key_confirmation_from_pb(reply)

    # -- linkage epoch -----------------------------------------------------------------
    def encode(
        self,
        epoch_id: str,
        ceremony_id: str,
        *,
        chunk_records: int = CHUNK_RECORDS,
        resume_from_seq: int = 0,
    ) -> Iterator[EncodingChunk]:
        request = ncv.encode_request_to_pb(
            EncodeRequest(epoch_id, ceremony_id, chunk_records, resume_from_seq)
        )
        call = self._stub.Encode(request, timeout=self.timeout_s)
        return self._stream(call, ncv.encoding_from_pb)

    # -- query hops ----------------------------------------------------------------------
    def encrypt_indicators(self, request: IndicatorRequest) -> Iterator[CiphertextChunk]:
        message = ncv.indicator_request_to_pb(request)
        call = self._stub.EncryptIndicators(message, timeout=self.timeout_s)
        return self._stream(call, ncv.chunk_from_pb)

    def apply_predicate(self, hop: HopInput) -> Iterator[CiphertextChunk]:
        call = self._stub.ApplyPredicate(ncv.hop_to_pb(hop), timeout=self.timeout_s)
        return self._stream(call, ncv.chunk_from_pb)

    def aggregate_by_group(self, hop: HopInput) -> GroupedCiphertexts:
        with self._mapped():
            reply = self._stub.AggregateByGroup(ncv.hop_to_pb(hop), timeout=self.timeout_s)
        return ncv.grouped_from_pb(reply)

    def add_noise(self, query_id: str, key: paillier.PublicKey, groups: Groups) -> NoisedAggregate:
        request = ncv.noise_request_to_pb(NoiseRequest(query_id, key, groups))
        with self._mapped():
            reply = self._stub.AddNoise(request, timeout=self.timeout_s)
        return ncv.noised_from_pb(reply)

    def abandon_query(self, query_id: str) -> Abandonment:
        request = ncv.abandon_request_to_pb(query_id)
        with self._mapped():
            reply = self._stub.AbandonQuery(request, timeout=self.timeout_s)
        return ncv.abandonment_from_pb(reply)

    def decrypt_aggregate(self, request: DecryptRequest) -> ReleasedTable:
        message = ncv.decrypt_request_to_pb(request)
        with self._mapped():
            reply = self._stub.DecryptAggregate(message, timeout=self.timeout_s)
        return cv.table_from_pb(reply)

    # -- audit replica and health ----------------------------------------------------------
    def sync_audit(self, events: Sequence[AuditEvent] = ()) -> AuditHead:
        """Append ``events`` to the node's replica; none asks for its head."""
        request = ncv.audit_batch_to_pb(tuple(e.to_json() for e in events))
        with self._mapped():
            reply = self._stub.SyncAudit(request, timeout=self.timeout_s)
        return ncv.audit_head_from_pb(reply)

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

"""PartyNode calls as someone holding a certificate can make them, for the attack
suite (`headcount.attacks.protocol`): typed values in and out (`node_values`),
but gRPC's own ``grpc.RpcError`` on failure, unmapped, so an attack reports the
status the node chose, and a hop's items sent exactly as given (neither
numbered nor cut to size), so a stream can be malformed on purpose. The
coordinator's client is `node_client`.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from headcount.crypto.ceremony import Identity
from headcount.wire import convert as cv
from headcount.wire import node_convert as ncv
from headcount.wire import party_node_pb2 as pn
from headcount.wire import party_node_pb2_grpc
from headcount.wire.node_values import (
    CiphertextChunk,
    ContributeRequest,
    Contribution,
    GroupedCiphertexts,
    HopHeader,
    HopItem,
    IndicatorRequest,
)

__all__ = ["RawNode"]


class RawNode:
    """One party node's channel, called without the typed client's safeguards."""

    def __init__(self, channel: grpc.Channel, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._channel = channel
        self._stub = party_node_pb2_grpc.PartyNodeStub(channel)

    def get_identity(self) -> Identity:
        reply = self._stub.GetIdentity(pn.IdentityRequest(), timeout=self.timeout_s)
        return cv.identity_from_pb(reply)

    def contribute(self, request: ContributeRequest) -> Contribution:
        message = ncv.contribute_request_to_pb(request)
        return ncv.contribution_from_pb(self._stub.Contribute(message, timeout=self.timeout_s))

    def encrypt_indicators(self, request: IndicatorRequest) -> list[CiphertextChunk]:
        message = ncv.indicator_request_to_pb(request)
        call = self._stub.EncryptIndicators(message, timeout=self.timeout_s)
        return [ncv.chunk_from_pb(m) for m in call]

    def aggregate_by_group(self, header: HopHeader, items: Sequence[HopItem]) -> GroupedCiphertexts:
        """The header, then ``items`` in the order given."""
        messages = [
            pn.HopInput(header=ncv.hop_header_to_pb(header)),
            *(ncv.hop_item_to_pb(item) for item in items),
        ]
        reply = self._stub.AggregateByGroup(iter(messages), timeout=self.timeout_s)
        return ncv.grouped_from_pb(reply)

    def close(self) -> None:
        self._channel.close()

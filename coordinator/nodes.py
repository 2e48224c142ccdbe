"""The coordinator's channels to the party nodes, and running a call on each."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from headcount import rpc, tls
from headcount.config import FederationConfig
from headcount.wire import party_node_pb2_grpc

T = TypeVar("T")
# Records per streamed chunk, uploads and hop inputs alike.
CHUNK_RECORDS = 1_000


class NodeClients:
    """One mutual-TLS channel per party node, with status mapping and deadlines."""

    def __init__(
        self,
        federation: FederationConfig,
        interceptors: Sequence[rpc.ClientInterceptor] = (),
    ) -> None:
        creds = tls.channel_credentials(
            federation.coordinator.tls.cert, federation.coordinator.tls.key, federation.ca_cert
        )
        self.timeout_s = federation.rpc_timeout_s
        self.channels = {
            p.name: rpc.secure_channel(
                p.address,
                creds,
                max_message_bytes=federation.max_message_bytes,
                interceptors=interceptors,
            )
            for p in federation.parties
        }
        self.stubs = {
            name: party_node_pb2_grpc.PartyNodeStub(ch) for name, ch in self.channels.items()
        }

    def stub(self, party: str) -> party_node_pb2_grpc.PartyNodeStub:
        return self.stubs[party]

    def call(self, party: str, fn: Callable[[party_node_pb2_grpc.PartyNodeStub], T]) -> T:
        try:
            return fn(self.stubs[party])
        except grpc.RpcError as exc:
            rpc.raise_from_rpc(exc, party)

    def healthy(self, party: str) -> bool:
        try:
            reply = health_pb2_grpc.HealthStub(self.channels[party]).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=3
            )
        except grpc.RpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    def close(self) -> None:
        for ch in self.channels.values():
            ch.close()


def each_settled(parties: Sequence[str], fn: Callable[[str], T]) -> dict[str, T | BaseException]:
    """Run ``fn`` for every party concurrently; failures are returned, not raised."""
    with ThreadPoolExecutor(max_workers=max(1, len(parties))) as pool:
        futures = {p: pool.submit(fn, p) for p in parties}
        out: dict[str, T | BaseException] = {}
        for p, f in futures.items():
            exc = f.exception()
            out[p] = exc if exc is not None else f.result()
        return out


def each(parties: Sequence[str], fn: Callable[[str], T]) -> dict[str, T]:
    """Run ``fn`` for every party concurrently; the first failure is raised."""
    with ThreadPoolExecutor(max_workers=max(1, len(parties))) as pool:
        futures = {p: pool.submit(fn, p) for p in parties}
        return {p: f.result() for p, f in futures.items()}

"""The coordinator's clients of the party nodes, and running a call on each."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from headcount import rpc, tls
from headcount.config import FederationConfig
from headcount.wire.node_client import CHUNK_RECORDS, NodeClient

__all__ = ["CHUNK_RECORDS", "NodeClients", "each", "each_settled"]

T = TypeVar("T")


class NodeClients:
    """One typed client per party node, each over its own mutual-TLS channel
    (status mapping and deadlines: `headcount.wire.node_client`)."""

    def __init__(
        self,
        federation: FederationConfig,
        interceptors: Sequence[rpc.ClientInterceptor] = (),
    ) -> None:
        creds = tls.channel_credentials(
            federation.coordinator.tls.cert, federation.coordinator.tls.key, federation.ca_cert
        )
        self.timeout_s = federation.rpc_timeout_s
        self.clients = {
            p.name: NodeClient(
                p.name,
                rpc.secure_channel(
                    p.address,
                    creds,
                    max_message_bytes=federation.max_message_bytes,
                    interceptors=interceptors,
                ),
                self.timeout_s,
            )
            for p in federation.parties
        }

    def node(self, party: str) -> NodeClient:
        return self.clients[party]

    def healthy(self, party: str) -> bool:
        return self.clients[party].healthy()

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


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

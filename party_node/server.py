"""Wiring: build a PartyNode server from the federation config and run it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from headcount import rpc, tls
from headcount.config import FederationConfig
from headcount.wire import party_node_pb2, party_node_pb2_grpc
from party_node.node import PartyNode
from party_node.service import PartyNodeService, allowed_roles

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunningNode:
    server: grpc.Server
    port: int
    node: PartyNode


def start(
    federation: FederationConfig,
    party: str,
    *,
    address: str | None = None,
    interceptors: Sequence[rpc.ServerInterceptor] = (),
) -> RunningNode:
    """Start ``party``'s node on its configured address (or ``address``); non-blocking."""
    node = PartyNode(federation, party)
    cfg = node.config
    server, port, health = rpc.make_server(
        address or cfg.address,
        tls.server_credentials(cfg.tls.cert, cfg.tls.key, federation.ca_cert),
        allowed_roles(),
        max_message_bytes=federation.max_message_bytes,
        interceptors=interceptors,
    )
    party_node_pb2_grpc.add_PartyNodeServicer_to_server(PartyNodeService(node), server)
    server.start()
    rpc.mark_serving(health, [party_node_pb2.DESCRIPTOR.services_by_name["PartyNode"].full_name])
    log.info("party node %s listening on port %d", party, port)
    return RunningNode(server, port, node)


def serve(federation: FederationConfig, party: str) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    running = start(federation, party)
    rpc.serve_until_signalled(running.server, f"party node {party}")

"""Wiring: build the Coordinator server from the federation config and run it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from coordinator.coordinator import Coordinator, NodeClients
from coordinator.service import CoordinatorService, allowed_roles
from headcount import rpc, tls
from headcount.config import FederationConfig
from headcount.wire import coordinator_pb2, coordinator_pb2_grpc

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunningCoordinator:
    server: grpc.Server
    port: int
    coordinator: Coordinator


def start(
    federation: FederationConfig,
    *,
    address: str | None = None,
    node_interceptors: Sequence[rpc.ClientInterceptor] = (),
) -> RunningCoordinator:
    """Start the coordinator on its configured address (or ``address``); non-blocking."""
    cfg = federation.coordinator
    coordinator = Coordinator(federation, NodeClients(federation, node_interceptors))
    server, port, health = rpc.make_server(
        address or cfg.address,
        tls.server_credentials(cfg.tls.cert, cfg.tls.key, federation.ca_cert),
        allowed_roles(),
        max_message_bytes=federation.max_message_bytes,
        workers=4,
    )
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(CoordinatorService(coordinator), server)
    server.start()
    rpc.mark_serving(health, [coordinator_pb2.DESCRIPTOR.services_by_name["Coordinator"].full_name])
    log.info("coordinator listening on port %d", port)
    return RunningCoordinator(server, port, coordinator)


def serve(federation: FederationConfig) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully."""
    running = start(federation)
    rpc.serve_until_signalled(running.server, "coordinator")
    running.coordinator.close()

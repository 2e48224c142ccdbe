"""Wiring: build the Coordinator server from the federation config and run it."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import grpc

from coordinator.coordinator import Coordinator, NodeClients
from coordinator.service import CoordinatorService, allowed_roles
from headcount import rpc, tls
from headcount.config import FederationConfig
from headcount.db import wal_kept
from headcount.errors import FailedPrecondition
from headcount.metrics import DEFAULT_METRICS_HOST, Metrics, MetricsEndpoint, Reading, serve_metrics
from headcount.wire import coordinator_pb2, coordinator_pb2_grpc

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunningCoordinator:
    server: grpc.Server
    port: int
    coordinator: Coordinator
    metrics: MetricsEndpoint | None = None


def _state(coordinator: Coordinator) -> Iterator[Reading]:
    """Gauges from the coordinator's state: epoch sizes and budgets, never a record."""
    try:
        epoch_id = coordinator.store.latest_epoch()
    except FailedPrecondition:  # no epoch yet
        epoch_id = ""
    records = coordinator.store.epoch(epoch_id).records if epoch_id else {}
    left = coordinator.budgets_remaining()
    for party in coordinator.parties:
        yield Reading(
            "coordinator_epoch_records",
            "Records each party contributed to the latest linkage epoch.",
            records.get(party, 0),
            party,
        )
        yield Reading(
            "coordinator_budget_remaining_epsilon",
            "Privacy budget (epsilon) each party has left in the current period.",
            left[party],
            party,
        )
    yield Reading(
        "coordinator_stored_queries",
        "Queries in the coordinator's state.",
        coordinator.store.query_count(),
    )


def start(
    federation: FederationConfig,
    *,
    address: str | None = None,
    node_interceptors: Sequence[rpc.ClientInterceptor] = (),
    metrics_port: int | None = None,
    metrics_host: str = DEFAULT_METRICS_HOST,
) -> RunningCoordinator:
    """Start the coordinator on its configured address (or ``address``); non-blocking.

    With ``metrics_port`` (0: a free port), also serve Prometheus metrics over
    plain HTTP on ``metrics_host``.
    """
    cfg = federation.coordinator
    coordinator = Coordinator(federation, NodeClients(federation, node_interceptors))
    metrics = None
    if metrics_port is not None:
        metrics = Metrics("coordinator", federation.party_names)
        metrics.add_state(lambda: _state(coordinator))
    server, port, health = rpc.make_server(
        address or cfg.address,
        tls.server_credentials(cfg.tls.cert, cfg.tls.key, federation.ca_cert),
        allowed_roles(),
        max_message_bytes=federation.max_message_bytes,
        workers=4,
        metrics=metrics,
        organisation=federation.name,
    )
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(CoordinatorService(coordinator), server)
    endpoint = None
    if metrics is not None and metrics_port is not None:
        endpoint = serve_metrics(metrics, metrics_port, metrics_host)
    server.start()
    rpc.mark_serving(health, [coordinator_pb2.DESCRIPTOR.services_by_name["Coordinator"].full_name])
    log.info("coordinator listening on port %d", port)
    return RunningCoordinator(server, port, coordinator, endpoint)


def serve(
    federation: FederationConfig,
    *,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully.

    Metrics port and host default to the coordinator's config; port 0 turns them off.
    """
    cfg = federation.coordinator
    port = cfg.metrics_port if metrics_port is None else metrics_port
    stop = rpc.stop_on_signal()
    running = start(
        federation, metrics_port=port or None, metrics_host=metrics_host or cfg.metrics_host
    )
    try:
        # The register reads this state file from a read-only mount (compose).
        with wal_kept(cfg.database):
            rpc.serve_until_signalled(running.server, "coordinator", stop=stop)
    finally:
        if running.metrics is not None:
            running.metrics.stop()
        running.coordinator.close()

"""Wiring: build a PartyNode server from the federation config and run it."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import grpc

from headcount import rpc, tls
from headcount.config import FederationConfig
from headcount.metrics import DEFAULT_METRICS_HOST, Metrics, MetricsEndpoint, Reading, serve_metrics
from headcount.wire import party_node_pb2, party_node_pb2_grpc
from party_node.node import PartyNode
from party_node.service import PartyNodeService, allowed_roles

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunningNode:
    server: grpc.Server
    port: int
    node: PartyNode
    metrics: MetricsEndpoint | None = None


def _state(node: PartyNode) -> Iterator[Reading]:
    """Gauges from the node's own state: sizes and budget only, never a record."""
    epochs = node.store.epochs()
    latest = epochs[-1] if epochs else None
    yield Reading(
        "node_records",
        "Records in the department file as encoded in the latest epoch.",
        latest.records if latest else 0,
        node.name,
    )
    yield Reading("node_stored_epochs", "Linkage epochs in this node's state.", len(epochs))
    yield Reading(
        "node_budget_remaining_epsilon",
        "Privacy budget (epsilon) this node has left in the current period.",
        node.ledger.remaining(),
        node.name,
    )


def start(
    federation: FederationConfig,
    party: str,
    *,
    address: str | None = None,
    interceptors: Sequence[rpc.ServerInterceptor] = (),
    metrics_port: int | None = None,
    metrics_host: str = DEFAULT_METRICS_HOST,
) -> RunningNode:
    """Start ``party``'s node on its configured address (or ``address``); non-blocking.

    With ``metrics_port`` (0: a free port), also serve Prometheus metrics over
    plain HTTP on ``metrics_host``.
    """
    node = PartyNode(federation, party)
    cfg = node.config
    metrics = None
    if metrics_port is not None:
        metrics = Metrics("node", federation.party_names)
        metrics.add_state(lambda: _state(node))
    server, port, health = rpc.make_server(
        address or cfg.address,
        tls.server_credentials(cfg.tls.cert, cfg.tls.key, federation.ca_cert),
        allowed_roles(),
        max_message_bytes=federation.max_message_bytes,
        interceptors=interceptors,
        metrics=metrics,
        organisation=federation.name,
    )
    party_node_pb2_grpc.add_PartyNodeServicer_to_server(PartyNodeService(node), server)
    endpoint = None
    if metrics is not None and metrics_port is not None:
        endpoint = serve_metrics(metrics, metrics_port, metrics_host)
    server.start()
    rpc.mark_serving(health, [party_node_pb2.DESCRIPTOR.services_by_name["PartyNode"].full_name])
    log.info("party node %s listening on port %d", party, port)
    return RunningNode(server, port, node, endpoint)


def serve(
    federation: FederationConfig,
    party: str,
    *,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
) -> None:
    """Run until SIGTERM or SIGINT, then stop gracefully.

    Metrics port and host default to the party's config; port 0 turns them off.
    """
    cfg = federation.party(party)
    port = cfg.metrics_port if metrics_port is None else metrics_port
    stop = rpc.stop_on_signal()
    running = start(
        federation,
        party,
        metrics_port=port or None,
        metrics_host=metrics_host or cfg.metrics_host,
    )
    try:
        rpc.serve_until_signalled(running.server, f"party node {party}", stop=stop)
    finally:
        if running.metrics is not None:
            running.metrics.stop()

"""Prometheus metrics for node and coordinator servers.

Each server process gets its own ``Metrics`` (its own ``CollectorRegistry``,
never prometheus_client's global one), so several servers in one process, as
in the tests and the attack suite, keep separate counts. ``serve_metrics``
exposes a registry as plain HTTP ``/metrics``, on loopback unless told
otherwise.

What a metric may carry: label values come only from the server's own method
table, gRPC status code names, fixed outcome words and the federation's
configured party names. Nothing from a request (no purpose, no record,
project, query or epoch id, no attribute value or count before protection)
ever becomes a label or a value. ``Metrics`` checks every label value against
those sets, so a later change cannot leak user text into a label by accident.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from headcount.config import DEFAULT_METRICS_HOST
from headcount.errors import PeerUnavailable

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_METRICS_HOST", "Metrics", "MetricsEndpoint", "Reading", "serve_metrics"]

# A method label is "Service/Method" from the server's own method table.
_METHOD = re.compile(r"^[A-Za-z][A-Za-z0-9]*/[A-Za-z][A-Za-z0-9]*$")
_CODES = frozenset(c.name for c in grpc.StatusCode)
# A call the server turned down for a reason of policy or input (the process
# worked as intended), as opposed to one that failed.
_REFUSED = frozenset(
    {
        "INVALID_ARGUMENT",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "OUT_OF_RANGE",
        "UNAUTHENTICATED",
    }
)

# Domain events read off the RPC outcome: (counter, extra label) per method.
# Hop roles follow docs/architecture.md (origin, filter, group, decrypt).
_NODE_EVENTS: Mapping[str, tuple[str, str]] = {
    "PartyNode/Encode": ("epochs", ""),
    "PartyNode/EncryptIndicators": ("hops", "origin"),
    "PartyNode/ApplyPredicate": ("hops", "filter"),
    "PartyNode/AggregateByGroup": ("hops", "group"),
    "PartyNode/DecryptAggregate": ("hops", "decrypt"),
}
_COORDINATOR_EVENTS: Mapping[str, tuple[str, str]] = {
    "Coordinator/RunLinkage": ("epochs", ""),
    "Coordinator/SubmitQuery": ("queries", ""),
    "Coordinator/RunCeremony": ("ceremonies", ""),
}

# Latency buckets (seconds): health checks take milliseconds, a linkage epoch
# or a query over a million records takes minutes.
_BUCKETS_S = (0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0, 180.0, 600.0, float("inf"))


def method_label(full_method: str) -> str:
    """``/headcount.v1.PartyNode/Encode`` -> ``PartyNode/Encode``."""
    service, _, name = full_method.lstrip("/").partition("/")
    return f"{service.rsplit('.', 1)[-1]}/{name}"


def outcome_of(code: str) -> str:
    """``ok``, ``refused`` (policy or input) or ``failed`` for a status code name."""
    if code == "OK":
        return "ok"
    return "refused" if code in _REFUSED else "failed"


@dataclass(frozen=True, slots=True)
class Reading:
    """One gauge value read from a process's state at scrape time."""

    name: str  # metric name without the headcount_ prefix, e.g. node_records
    help: str
    value: float
    party: str = ""  # a configured party name, or "" for no party label


class _StateCollector(Collector):
    """Gauges computed from the process's own state each time it is scraped."""

    def __init__(self, read: Callable[[], Iterable[Reading]], parties: frozenset[str]) -> None:
        self._read = read
        self._parties = parties

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            readings = list(self._read())
        except Exception:  # a scrape must never take the server down
            log.warning("metrics: reading state failed", exc_info=True)
            return
        families: dict[str, GaugeMetricFamily] = {}
        for r in readings:
            if r.party and r.party not in self._parties:
                # Only a programming error gets here; never let it become a label.
                log.warning("metrics: reading with an unknown party label dropped")
                continue
            family = families.get(r.name)
            if family is None:
                family = GaugeMetricFamily(
                    f"headcount_{r.name}", r.help, labels=["party"] if r.party else []
                )
                families[r.name] = family
            family.add_metric([r.party] if r.party else [], r.value)
        yield from families.values()


class Metrics:
    """One server process's metrics: RPC counts and latency, plus domain counters.

    ``role`` is ``node`` or ``coordinator``; ``parties`` are the federation's
    configured party names, the only values a ``party`` label may take.
    """

    def __init__(self, role: str, parties: Iterable[str]) -> None:
        if role not in ("node", "coordinator"):
            raise ValueError(f"role must be node or coordinator, not {role!r}")
        self.role = role
        self.registry = CollectorRegistry()
        self._parties = frozenset(parties)
        self._events = _NODE_EVENTS if role == "node" else _COORDINATOR_EVENTS
        self._rpcs = Counter(
            "headcount_rpc_requests",
            "RPCs handled, by method and gRPC status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "headcount_rpc_duration_seconds",
            "Time to handle an RPC (streams: until the last message), by method.",
            ["method"],
            buckets=_BUCKETS_S,
            registry=self.registry,
        )
        prefix = f"headcount_{role}"
        self._epochs = Counter(
            f"{prefix}_epochs",
            "Linkage epochs encoded by this node."
            if role == "node"
            else "Linkage epochs run, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self._hops = (
            Counter(
                f"{prefix}_query_hops",
                "Query hops this node took part in, by hop role and outcome.",
                ["hop", "outcome"],
                registry=self.registry,
            )
            if role == "node"
            else None
        )
        self._queries = (
            Counter(
                f"{prefix}_queries",
                "Analyst queries, by outcome (ok: a protected table was released; "
                "refused: policy, budget or input; failed: anything else).",
                ["outcome"],
                registry=self.registry,
            )
            if role == "coordinator"
            else None
        )
        self._ceremonies = (
            Counter(
                f"{prefix}_ceremonies",
                "Key ceremonies run, by outcome.",
                ["outcome"],
                registry=self.registry,
            )
            if role == "coordinator"
            else None
        )

    def observe_rpc(self, full_method: str, code: str, seconds: float) -> None:
        """Count one finished RPC; ``code`` is a ``grpc.StatusCode`` name."""
        method = method_label(full_method)
        if not _METHOD.match(method) or code not in _CODES:
            # Only a programming error gets here; never let it become a label.
            log.warning("metrics: unexpected method or code label dropped")
            return
        self._rpcs.labels(method=method, code=code).inc()
        self._latency.labels(method=method).observe(max(seconds, 0.0))
        event = self._events.get(method)
        if event is None:
            return
        kind, hop = event
        outcome = outcome_of(code)
        if kind == "epochs":
            self._epochs.labels(outcome=outcome).inc()
        elif kind == "hops" and self._hops is not None:
            self._hops.labels(hop=hop, outcome=outcome).inc()
        elif kind == "queries" and self._queries is not None:
            self._queries.labels(outcome=outcome).inc()
        elif kind == "ceremonies" and self._ceremonies is not None:
            self._ceremonies.labels(outcome=outcome).inc()

    def add_state(self, read: Callable[[], Iterable[Reading]]) -> None:
        """Add gauges that ``read`` computes from the process's state at each scrape.

        ``read`` must be cheap (a few SQLite reads); an exception in it is
        logged and leaves those gauges out of that scrape.
        """
        self.registry.register(_StateCollector(read, self._parties))


@dataclass
class MetricsEndpoint:
    """A running ``/metrics`` HTTP server; ``stop()`` closes it."""

    host: str
    port: int
    _server: WSGIServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(metrics: Metrics, port: int, host: str = DEFAULT_METRICS_HOST) -> MetricsEndpoint:
    """Serve ``metrics`` over plain HTTP at ``http://host:port/metrics`` in a thread.

    Port 0 picks a free port. Plain HTTP, so keep it on loopback or a private
    network; it carries no record-level data. Raises PeerUnavailable if the
    address cannot be bound.
    """
    try:
        server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    except OSError as exc:
        raise PeerUnavailable(f"cannot serve metrics on {host}:{port}: {exc}") from None
    bound = int(server.server_address[1])
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return MetricsEndpoint(host, bound, server, thread)

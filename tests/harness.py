"""Test harness: a real federation in this process, with wire recorders.

Servers are the real gRPC servers over mutual TLS on loopback, built by the same
``start`` functions the CLI uses. Recorders are gRPC interceptors: they capture
every message a party node receives from the coordinator and every message the
coordinator receives from the nodes, so privacy tests check what was actually
sent, not what the code intends to send.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

from headcount.client import Release
from headcount.federation import party_specs
from headcount.local import LocalFederation, start_local_federation
from headcount.longitudinal import period_options, start_period_federation

TEST_PEOPLE = 900
TEST_SEED = 7


@dataclass
class Recorder:
    """Every protobuf message seen, as (where, method, message)."""

    messages: list[tuple[str, str, Message]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, where: str, method: str, message: Message) -> None:
        with self.lock:
            self.messages.append((where, method, message))

    def of(self, where: str) -> list[tuple[str, Message]]:
        return [(m, msg) for w, m, msg in self.messages if w == where]


class ServerRecorder(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Records each request message a server receives."""

    def __init__(self, recorder: Recorder, where: str) -> None:
        self.recorder, self.where = recorder, where

    def intercept_service(self, continuation: Any, details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method.rsplit("/", 1)[-1]
        rec = self.recorder

        def unary(behaviour: Callable[..., Any]) -> Callable[..., Any]:
            def run(request: Message, context: Any) -> Any:
                rec.add(self.where, method, request)
                return behaviour(request, context)

            return run

        def stream(behaviour: Callable[..., Any]) -> Callable[..., Any]:
            def run(requests: Iterator[Message], context: Any) -> Any:
                def recorded() -> Iterator[Message]:
                    for r in requests:
                        rec.add(self.where, method, r)
                        yield r

                return behaviour(recorded(), context)

            return run

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                unary(handler.unary_unary),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                unary(handler.unary_stream),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                stream(handler.stream_unary),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            stream(handler.stream_stream),
            handler.request_deserializer,
            handler.response_serializer,
        )


class ClientRecorder(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Records each response message a client (the coordinator) receives."""

    def __init__(self, recorder: Recorder, where: str) -> None:
        self.recorder, self.where = recorder, where

    def _name(self, details: Any) -> str:
        return str(details.method).rsplit("/", 1)[-1]

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        outcome = continuation(details, request)
        if outcome.exception() is None:
            self.recorder.add(self.where, self._name(details), outcome.result())
        return outcome

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        outcome = continuation(details, requests)
        if outcome.exception() is None:
            self.recorder.add(self.where, self._name(details), outcome.result())
        return outcome

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return self.intercept_unary_stream(continuation, details, requests)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        responses = continuation(details, request)
        name = self._name(details)

        def recorded() -> Iterator[Any]:
            for r in responses:
                self.recorder.add(self.where, name, r)
                yield r

        return recorded()


@dataclass
class Federation(LocalFederation):
    """A local federation whose wire traffic is recorded."""

    recorder: Recorder = field(default_factory=Recorder)


def make_federation(
    directory: Path,
    people: int = TEST_PEOPLE,
    seed: int = TEST_SEED,
    *,
    periods: bool = False,
    **options: Any,
) -> Federation:
    """A federation with 1024-bit test keys, its data, and servers running in-process,
    with recorders on every node and on the coordinator's client side.

    ``options`` override ``InitOptions`` fields (e.g. the output policy). With
    ``periods``, education and immigration take part once per year
    (``headcount.longitudinal``: education-2024 ... immigration-2026) on a
    population followed over those years.
    """
    recorder = Recorder()
    # Project approval (Five Safes) is tested on its own in test_projects.py.
    options.setdefault("require_projects", False)
    start = start_period_federation if periods else start_local_federation
    names = (
        [p.name for p in party_specs(period_options())]
        if periods
        else ["education", "health", "justice", "immigration"]
    )
    fed = start(
        directory,
        people=people,
        seed=seed,
        node_interceptors={p: [ServerRecorder(recorder, p)] for p in names},
        coordinator_interceptors=[ClientRecorder(recorder, "coordinator")],
        **options,
    )
    return Federation(
        fed.directory, fed.config, fed.nodes, fed.coordinator, fed.ground_truth, recorder=recorder
    )


def mean_bounds(
    values: list[float], release: Release, *, linkage_slack: int = 2
) -> tuple[float, float] | None:
    """Where a released mean of ``values`` must lie, or None when it may be anything.

    The sum and the count of values each carry discrete Laplace noise of scale
    sensitivity * kinds / epsilon (three slot kinds share epsilon; a person adds
    at most 1.0 to the sum). Twelve scales bound either with probability
    1 - 1e-5; ``linkage_slack`` records of linkage error move both. When the
    noisy count may come near zero the mean is unbounded: None.
    """
    n, total = len(values), sum(values)
    bound = 12 * release.sensitivity * 3 / release.epsilon
    slack = linkage_slack * max(values)
    if n - bound - linkage_slack <= 0:
        return None
    low = (total - bound - slack) / (n + bound + linkage_slack)
    high = (total + bound + slack) / (n - bound - linkage_slack)
    return low - 0.0005, high + 0.0005  # released means are rounded to 3 decimals

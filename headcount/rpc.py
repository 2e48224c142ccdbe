"""gRPC plumbing shared by both roles: servers, channels, authorisation, errors.

One server interceptor does two jobs for every method: it checks the caller's
verified certificate role against the method's allowed roles, and it turns a
``HeadcountError`` into its status code (anything else into INTERNAL with a
generic message and a logged traceback). ``raise_from_rpc`` maps a status back
into a ``HeadcountError`` on the client.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

import grpc
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from headcount import errors
from headcount.errors import (
    BY_STATUS,
    HeadcountError,
    InvalidRequest,
    NotAuthorised,
    PeerUnavailable,
)
from headcount.tls import Principal, Role, principal_of

if TYPE_CHECKING:
    from headcount.metrics import Metrics

log = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"

if TYPE_CHECKING:
    # grpc-stubs makes these generic; the runtime classes are not subscriptable.
    ClientInterceptor: TypeAlias = (
        grpc.UnaryUnaryClientInterceptor[Any, Any]
        | grpc.UnaryStreamClientInterceptor[Any, Any]
        | grpc.StreamUnaryClientInterceptor[Any, Any]
        | grpc.StreamStreamClientInterceptor[Any, Any]
    )
    ServerInterceptor: TypeAlias = grpc.ServerInterceptor[Any, Any]
else:
    ClientInterceptor = ServerInterceptor = Any


def channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_permit_without_calls", 0),
        # Servers must accept the clients' 30 s keepalive pings during long
        # calls (linkage, queries at scale); gRPC's default allows one per
        # 5 minutes and answers more with GOAWAY "too_many_pings".
        ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
        ("grpc.http2.min_time_between_pings_ms", 20_000),
    ]


def peer_principal(context: grpc.ServicerContext, organisation: str | None = None) -> Principal:
    """The verified certificate holder on the other end; NotAuthorised if none
    (or, given ``organisation``, if the certificate is another federation's)."""
    # grpc-stubs types the values as bytes; gRPC actually returns a list of bytes.
    pems: Any = context.auth_context().get("x509_pem_cert")
    if not pems:
        raise NotAuthorised("a client certificate from the federation CA is required")
    return principal_of(x509.load_pem_x509_certificate(pems[0]), organisation)


ERROR_KEY = "headcount-error"
_BY_NAME: dict[str, type[HeadcountError]] = {
    name: cls
    for name, cls in vars(errors).items()
    if isinstance(cls, type) and issubclass(cls, HeadcountError)
}


# Status details travel in trailing metadata, which gRPC caps (16 KiB by
# default): a message quoting a huge field would reach the client as
# RESOURCE_EXHAUSTED about metadata instead of its own status and reason.
MAX_DETAIL_CHARS = 1000


def _detail(exc: HeadcountError) -> str:
    text = str(exc)
    if len(text) <= MAX_DETAIL_CHARS:
        return text
    return text[: MAX_DETAIL_CHARS - 30] + f"... ({len(text)} characters)"


def _fail(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    if isinstance(exc, HeadcountError):
        # The class name travels in trailing metadata so the client can raise
        # the same condition (PolicyRefused, not just PERMISSION_DENIED).
        name = next(c.__name__ for c in type(exc).__mro__ if _BY_NAME.get(c.__name__) is c)
        context.set_trailing_metadata(((ERROR_KEY, name),))
        context.abort(grpc.StatusCode[exc.status], _detail(exc))
    log.error("unhandled error in RPC", exc_info=exc)
    context.abort(grpc.StatusCode.INTERNAL, "internal error (see the server log)")


def peer_certificate(context: grpc.ServicerContext) -> bytes:
    """The verified peer certificate (PEM); NotAuthorised if none."""
    pems: Any = context.auth_context().get("x509_pem_cert")
    if not pems:
        raise NotAuthorised("a client certificate from the federation CA is required")
    return bytes(pems[0])


class _Malformed:
    """Stands in for a message that failed to parse, so the guard can answer
    INVALID_ARGUMENT (gRPC itself would answer INTERNAL)."""


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError and friends: reported as INVALID_ARGUMENT
            return _Malformed()

    return parse


def _checked(request: Any, stream_in: bool) -> Any:
    if not stream_in:
        if isinstance(request, _Malformed):
            raise InvalidRequest("malformed message: not a valid protobuf for this method")
        return request

    def messages() -> Iterator[Any]:
        for item in request:
            if isinstance(item, _Malformed):
                raise InvalidRequest("malformed message in the stream")
            yield item

    return messages()


def _code_name(exc: BaseException) -> str:
    """The status code name ``_fail`` answers ``exc`` with."""
    return exc.status if isinstance(exc, HeadcountError) else grpc.StatusCode.INTERNAL.name


class Guard(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Role-based authorisation plus error mapping for every RPC of a server.

    ``allowed`` maps a full method name (``/headcount.v1.PartyNode/Encode``) to
    the roles that may call it. Methods not listed are refused, except the
    standard health service, which any federation certificate may call.
    With ``metrics``, it also counts every call by method and status code and
    times it (streams until their last message).
    """

    def __init__(
        self,
        allowed: Mapping[str, frozenset[Role]],
        metrics: Metrics | None = None,
        organisation: str | None = None,
    ) -> None:
        self._allowed = dict(allowed)
        self._metrics = metrics
        self._organisation = organisation

    def _check(self, method: str, context: grpc.ServicerContext) -> None:
        principal = peer_principal(context, self._organisation)
        if method.startswith(HEALTH_PREFIX):
            return
        roles = self._allowed.get(method)
        if roles is None or principal.role not in roles:
            raise NotAuthorised(
                f"{principal.role.value} {principal.name!r} "
                f"may not call {method.rsplit('/', 1)[-1]}"
            )

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method

        h: Any = handler
        parse = _tolerant(h.request_deserializer)
        metrics = self._metrics

        def observe(code: str, started: float) -> None:
            if metrics is not None:
                metrics.observe_rpc(method, code, time.monotonic() - started)

        def unary(behaviour: Callable[..., Any], stream_in: bool) -> Callable[..., Any]:
            def run(request: Any, context: grpc.ServicerContext) -> Any:
                started, code = time.monotonic(), "OK"
                try:
                    self._check(method, context)
                    return behaviour(_checked(request, stream_in), context)
                except Exception as exc:
                    code = _code_name(exc)
                    _fail(context, exc)
                finally:
                    observe(code, started)

            return run

        def streaming(
            behaviour: Callable[..., Iterator[Any]], stream_in: bool
        ) -> Callable[..., Iterator[Any]]:
            def run(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                started, code = time.monotonic(), "OK"
                try:
                    self._check(method, context)
                    yield from behaviour(_checked(request, stream_in), context)
                except GeneratorExit:  # the client went away mid-stream
                    code = grpc.StatusCode.CANCELLED.name
                    raise
                except Exception as exc:
                    code = _code_name(exc)
                    _fail(context, exc)
                finally:
                    observe(code, started)

            return run

        if h.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                unary(h.unary_unary, False), parse, h.response_serializer
            )
        if h.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                streaming(h.unary_stream, False), parse, h.response_serializer
            )
        if h.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                unary(h.stream_unary, True), parse, h.response_serializer
            )
        return grpc.stream_stream_rpc_method_handler(
            streaming(h.stream_stream, True), parse, h.response_serializer
        )


def make_server(
    address: str,
    credentials: grpc.ServerCredentials,
    allowed: Mapping[str, frozenset[Role]],
    *,
    max_message_bytes: int,
    workers: int = 8,
    interceptors: Sequence[ServerInterceptor] = (),
    metrics: Metrics | None = None,
    organisation: str | None = None,
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A TLS server with the guard and the health service; returns (server, port, health).

    Port 0 in ``address`` picks a free port. With ``metrics``, the guard counts
    and times every call. With ``organisation`` (the federation's name), a
    certificate whose organisation is another federation's is refused, even
    from the same CA. Raises PeerUnavailable if the address cannot be bound.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        interceptors=[Guard(allowed, metrics, organisation), *interceptors],
        options=channel_options(max_message_bytes),
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise PeerUnavailable(f"cannot listen on {address}: {exc}") from None
    if port == 0:
        raise PeerUnavailable(f"cannot listen on {address} (address in use?)")
    return server, port, health_servicer


def stop_on_signal() -> threading.Event:
    """An event set by SIGTERM or SIGINT from now on.

    Call it before starting a server, so a signal that arrives while the server
    starts still stops it gracefully.
    """
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def serve_until_signalled(
    server: grpc.Server, name: str, *, grace_s: float = 5.0, stop: threading.Event | None = None
) -> None:
    """Block until SIGTERM or SIGINT (or ``stop`` from ``stop_on_signal``), then
    stop ``server`` gracefully."""
    stop = stop or stop_on_signal()
    stop.wait()
    log.info("%s stopping", name)
    server.stop(grace=grace_s).wait()


def mark_serving(health_servicer: health.HealthServicer, services: Sequence[str]) -> None:
    for name in ("", *services):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


def secure_channel(
    address: str,
    credentials: grpc.ChannelCredentials,
    *,
    max_message_bytes: int,
    interceptors: Sequence[ClientInterceptor] = (),
) -> grpc.Channel:
    channel = grpc.secure_channel(address, credentials, options=channel_options(max_message_bytes))
    if interceptors:
        channel = grpc.intercept_channel(channel, *interceptors)
    return channel


def raise_from_rpc(exc: grpc.RpcError, peer: str | None) -> NoReturn:
    """Re-raise a failed call as the HeadcountError it stands for.

    The exact class comes from the server's trailing metadata when it is one of
    ours; otherwise the status code decides. ``peer`` prefixes the message.
    """
    call: Any = exc
    code = call.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = call.details() if isinstance(exc, grpc.Call) else str(exc)
    cls: type[HeadcountError] = BY_STATUS.get(code.name, HeadcountError)
    metadata = call.trailing_metadata() if isinstance(exc, grpc.Call) else None
    pairs: list[tuple[str, Any]] = list(metadata or [])
    for key, value in pairs:
        named = _BY_NAME.get(str(value)) if key == ERROR_KEY else None
        if named is not None and named.status == code.name:
            cls = named
    if code == grpc.StatusCode.UNAVAILABLE and not details:
        details = "not reachable"
    raise cls(f"{peer}: {details}" if peer else str(details)) from None


def wait_healthy(channel: grpc.Channel, peer: str, *, timeout_s: float) -> None:
    """Block until ``peer`` reports SERVING; PeerUnavailable after ``timeout_s``."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        reply = stub.Check(
            health_pb2.HealthCheckRequest(service=""), timeout=timeout_s, wait_for_ready=True
        )
    except grpc.RpcError as exc:
        raise_from_rpc(exc, peer)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        raise PeerUnavailable(f"{peer}: not serving")

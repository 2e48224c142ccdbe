"""The whole Headcount error hierarchy and its gRPC status mapping.

Servicers raise these; one server interceptor (``headcount.rpc``) turns each into
its status code, and anything else into INTERNAL with a generic message. On the
client, ``headcount.rpc.raise_from_rpc`` maps a ``grpc.RpcError`` back.
"""

from __future__ import annotations

import grpc


class HeadcountError(Exception):
    """Base class: every error Headcount raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN


class InvalidRequest(HeadcountError):
    """A request, message or argument is malformed or out of range."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class InvalidInput(InvalidRequest):
    """A file a user supplied (department data, config, schema) is invalid."""


class InvalidCiphertext(InvalidRequest):
    """A ciphertext is out of range or under the wrong key."""


class InvalidProof(InvalidRequest):
    """A signature, MAC, commitment or proof failed to verify."""


class ConfigError(HeadcountError):
    """The configuration file is missing, malformed or inconsistent."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class NotAuthorised(HeadcountError):
    """The caller's certificate does not grant the role this call needs."""

    code = grpc.StatusCode.PERMISSION_DENIED


class PolicyRefused(HeadcountError):
    """A node's or the federation's disclosure policy refuses this query."""

    code = grpc.StatusCode.PERMISSION_DENIED


class UnknownJob(HeadcountError):
    """An epoch, query, ceremony or party the caller named does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(HeadcountError):
    """The call is valid but the federation is not in a state to serve it."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class BudgetExhausted(HeadcountError):
    """The privacy budget for this node and epoch would be exceeded."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class PeerUnavailable(HeadcountError):
    """A party node or the coordinator could not be reached."""

    code = grpc.StatusCode.UNAVAILABLE


BY_CODE: dict[grpc.StatusCode, type[HeadcountError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.PERMISSION_DENIED: NotAuthorised,
    grpc.StatusCode.NOT_FOUND: UnknownJob,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: BudgetExhausted,
    grpc.StatusCode.UNAVAILABLE: PeerUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: PeerUnavailable,
}

"""The whole Headcount error hierarchy, each class with the gRPC status it maps to.

Servicers raise these; one server interceptor (``headcount.rpc``) turns each into
its status code, and anything else into INTERNAL with a generic message. On the
client, ``headcount.rpc.raise_from_rpc`` maps a ``grpc.RpcError`` back. The
status is named here as text (a ``grpc.StatusCode`` member's name), so this
base module, and every kernel module raising these errors, loads no gRPC.
"""

from __future__ import annotations


class HeadcountError(Exception):
    """Base class: every error Headcount raises on purpose.

    ``public``: the text a published record of the error may carry (a refusal
    in the audit log), when the message itself quotes what a caller sent and
    only the caller should see that; the message by default.
    """

    status: str = "UNKNOWN"  # the grpc.StatusCode member's name

    def __init__(self, *args: object, public: str | None = None) -> None:
        super().__init__(*args)
        self.public = public if public is not None else str(self)


class InvalidRequest(HeadcountError):
    """A request, message or argument is malformed or out of range."""

    status = "INVALID_ARGUMENT"


class InvalidInput(InvalidRequest):
    """A file a user supplied (department data, config, schema) is invalid."""


class InvalidCiphertext(InvalidRequest):
    """A ciphertext is out of range or under the wrong key."""


class InvalidProof(InvalidRequest):
    """A signature, MAC, commitment or proof failed to verify."""


class ConfigError(HeadcountError):
    """The configuration file is missing, malformed or inconsistent."""

    status = "FAILED_PRECONDITION"


class NotAuthorised(HeadcountError):
    """The caller's certificate does not grant the role this call needs."""

    status = "PERMISSION_DENIED"


class PolicyRefused(HeadcountError):
    """A node's or the federation's disclosure policy refuses this query."""

    status = "PERMISSION_DENIED"


class UnknownJob(HeadcountError):
    """An epoch, query, ceremony or party the caller named does not exist."""

    status = "NOT_FOUND"


class FailedPrecondition(HeadcountError):
    """The call is valid but the federation is not in a state to serve it."""

    status = "FAILED_PRECONDITION"


class BudgetExhausted(HeadcountError):
    """The privacy budget for this node and epoch would be exceeded."""

    status = "RESOURCE_EXHAUSTED"


class PeerUnavailable(HeadcountError):
    """A party node or the coordinator could not be reached."""

    status = "UNAVAILABLE"


# Status name -> the class a client raises for it (when the server did not
# name the exact class).
BY_STATUS: dict[str, type[HeadcountError]] = {
    "INVALID_ARGUMENT": InvalidRequest,
    "PERMISSION_DENIED": NotAuthorised,
    "NOT_FOUND": UnknownJob,
    "FAILED_PRECONDITION": FailedPrecondition,
    "RESOURCE_EXHAUSTED": BudgetExhausted,
    "UNAVAILABLE": PeerUnavailable,
    "DEADLINE_EXCEEDED": PeerUnavailable,
}

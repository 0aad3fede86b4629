"""Every error k8semu.client raises, in one hierarchy.

    ClientError                 base class of everything below
    +-- UnknownKind             a kind, resource name or message class not in k8semu.api.kinds
    +-- UnexpectedObject        the server answered with an object of another kind (a bug)
    +-- APIStatusError          the API server (or the way to it) answered with a gRPC status;
        |                       `code` (grpc.StatusCode) and `message` (the server's text)
        +-- NotFound            NOT_FOUND: no such object, namespace or resource
        +-- AlreadyExists       ALREADY_EXISTS: create of a name that is taken
        +-- Conflict            ABORTED: stale resourceVersion, failed precondition, pod bound
        +-- Invalid             INVALID_ARGUMENT: bad object, field, selector or token
        +-- Gone                OUT_OF_RANGE: resourceVersion or continue token too old (410)
        +-- Unavailable         UNAVAILABLE: no API server answered, or its store did not
        |   +-- ConnectFailed   the request was not applied: no connection could be made,
        |                       or the API server refused it because it is shutting down
        +-- Timeout             DEADLINE_EXCEEDED: no answer within the call's deadline
        +-- OutcomeUnknown      a write was sent but broke off (the connection dropped, or its
                                deadline passed) and could not safely be tried again: it may
                                or may not have been applied; `code` is the underlying one
        +-- ResourceExhausted   RESOURCE_EXHAUSTED: e.g. a watch that fell too far behind
        +-- Unauthenticated     UNAUTHENTICATED
        +-- Forbidden           PERMISSION_DENIED
        +-- Unimplemented       UNIMPLEMENTED: the server does not serve this verb (yet)
        +-- ServerError         any other code (INTERNAL, UNKNOWN, ...)

grpc.aio.AioRpcError never escapes the client: `from_rpc_error` translates it at the boundary
and callers `raise ... from exc`, so the gRPC error stays on `__cause__` for debugging.
Controllers follow sample-controller: NotFound means "done", Conflict means "read again and
retry", Gone means "relist", OutcomeUnknown means "read again before writing".
"""

from __future__ import annotations

import grpc


class ClientError(Exception):
    """Base class of every error raised by k8semu.client."""


class UnknownKind(ClientError):
    """The kind registry has no such kind; the message says what was asked for."""


class UnexpectedObject(ClientError):
    """A reply carried an object of a type the request did not ask for."""


class APIStatusError(ClientError):
    """A non-OK gRPC status from the API server; `code` and `message` are as sent."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, code: grpc.StatusCode | None = None) -> None:
        if code is not None:
            self.code = code
        self.message = message
        super().__init__(f"{self.code.name}: {message}" if message else self.code.name)


class NotFound(APIStatusError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(APIStatusError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Conflict(APIStatusError):
    code = grpc.StatusCode.ABORTED


class Invalid(APIStatusError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class Gone(APIStatusError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unavailable(APIStatusError):
    code = grpc.StatusCode.UNAVAILABLE


class ConnectFailed(Unavailable):
    """The request was not applied: no connection to the API server could be made, or it
    refused the call because it is shutting down. Any call may be sent elsewhere."""


class OutcomeUnknown(APIStatusError):
    """A write that reached (or may have reached) an API server broke off before its answer,
    and was not one that can safely be sent again: it may or may not have been applied.
    Read the object again before deciding what to write."""


class Timeout(APIStatusError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ResourceExhausted(APIStatusError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(APIStatusError):
    code = grpc.StatusCode.UNAUTHENTICATED


class Forbidden(APIStatusError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unimplemented(APIStatusError):
    code = grpc.StatusCode.UNIMPLEMENTED


class ServerError(APIStatusError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[APIStatusError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        AlreadyExists,
        Conflict,
        Invalid,
        Gone,
        Unavailable,
        Timeout,
        ResourceExhausted,
        Unauthenticated,
        Forbidden,
        Unimplemented,
    )
}


# What gRPC says when it could make no connection at all, so nothing was sent: refused, no
# route, no name, or a server that stopped accepting (after its GOAWAY the client reconnects,
# and a refused stream is retried by gRPC itself until the connection fails).
_CONNECT_FAILURES = (
    "failed to connect",
    "connection refused",
    "dns resolution failed",
    "connections to all backends failing",
    "no route to host",
)


# Trailing metadata of a call an API server refused because it is shutting down (before
# doing anything): k8semu.apiserver.grpcface.NOT_APPLIED.
_NOT_APPLIED_KEY = "k8semu-not-applied"


def not_sent(exc: grpc.aio.AioRpcError) -> bool:
    """Whether `exc` says that the request was not applied: no connection was made, or the
    API server refused it while shutting down, or gRPC cancelled it at the server's stop
    before any handler ran (what grpc-core answers for calls it had received but not yet
    handed to the application: CANCELLED with the bare text "CANCELLED"; a handler cancelled
    at the end of the grace period comes out as UNAVAILABLE "Cancelling all calls")."""
    code = exc.code()
    details = exc.details() or ""
    if code == grpc.StatusCode.CANCELLED:
        return details == "CANCELLED"
    if code != grpc.StatusCode.UNAVAILABLE:
        return False
    trailing = exc.trailing_metadata() or ()
    if any(k == _NOT_APPLIED_KEY for k, _ in trailing):
        return True
    lowered = details.lower()
    return any(s in lowered for s in _CONNECT_FAILURES)


def from_rpc_error(exc: grpc.aio.AioRpcError, what: str = "") -> APIStatusError:
    """The APIStatusError for `exc`; `what` ("get pods/web") prefixes messages gRPC made up
    itself (connection failures), which do not name the request."""
    code = exc.code()
    details = exc.details() or ""
    if (
        code
        in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.CANCELLED,
        )
        and what
    ):
        details = f"{what}: {details}"
    if not_sent(exc):
        return ConnectFailed(details)
    cls = _BY_CODE.get(code)
    if cls is None:
        return ServerError(details, code=code)
    return cls(details)

"""The errors the API server returns, one class per gRPC status code (architecture "Errors").

    StatusError             base: a gRPC status code and a message naming object and field
    +-- NotFound            NOT_FOUND
    +-- AlreadyExists       ALREADY_EXISTS
    +-- Conflict            ABORTED: a stale resourceVersion or a failed precondition
    +-- Invalid             INVALID_ARGUMENT: a bad object (its field `causes`, when known)
    |   +-- BadRequest      INVALID_ARGUMENT: a bad request (selector, limit, continue,
    |                       body); Kubernetes answers 400 BadRequest, not 422 Invalid
    +-- FailedPrecondition  FAILED_PRECONDITION: a create in a namespace being terminated
                            (Kubernetes answers 403 Forbidden there)
    +-- Gone                OUT_OF_RANGE: a compacted resourceVersion or continue token
    +-- Unavailable         UNAVAILABLE: the store did not answer
    +-- MethodNotAllowed    UNIMPLEMENTED: a write to a read-only kind (metrics.k8s.io);
                            Kubernetes answers 405 MethodNotAllowed
    +-- TooManyRequests     RESOURCE_EXHAUSTED: not now (an eviction its disruption budget
                            does not allow); Kubernetes answers 429 TooManyRequests
    +-- StorageFull         RESOURCE_EXHAUSTED: the store's space quota is used up (etcd's
                            NOSPACE alarm); Kubernetes answers 500 InternalError there

The gRPC face (`grpcface.py`) turns a StatusError into `context.abort(code, message)`, the
REST face (`rest/status.py`) into a metav1.Status; anything else escaping a verb is a bug,
reported as INTERNAL without taking the server down.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc


class StatusError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class NotFound(StatusError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(StatusError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Conflict(StatusError):
    code = grpc.StatusCode.ABORTED


class Invalid(StatusError):
    """`causes`: (field path, problem) pairs of an object that failed validation, and
    `kind`/`name` the object (its Kind and name, `Deployment`, `web`); empty otherwise."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(
        self,
        message: str,
        *,
        causes: Sequence[tuple[str, str]] = (),
        kind: str = "",
        name: str = "",
    ) -> None:
        super().__init__(message)
        self.causes = tuple(causes)
        self.kind = kind
        self.name = name


class BadRequest(Invalid):
    """A request that names no valid operation (bad selector, limit, continue token, body)."""


class FailedPrecondition(StatusError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Gone(StatusError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unavailable(StatusError):
    code = grpc.StatusCode.UNAVAILABLE


class MethodNotAllowed(StatusError):
    code = grpc.StatusCode.UNIMPLEMENTED


class TooManyRequests(StatusError):
    """Not now, perhaps later (429): an eviction its PodDisruptionBudget does not allow."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class StorageFull(StatusError):
    """The store refuses writes: its database reached --quota-backend-bytes (NOSPACE).

    RESOURCE_EXHAUSTED, as etcd itself answers: not UNAVAILABLE, because another API server
    on the same store would answer the same, so clients must not fail over and retry."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


CONFLICT_MESSAGE = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


class Unauthorized(StatusError):
    """UNAUTHENTICATED (401 Unauthorized): no credentials, or none the server accepts."""

    code = grpc.StatusCode.UNAUTHENTICATED


class Forbidden(StatusError):
    """PERMISSION_DENIED (403 Forbidden): the authenticated user may not do this. `resource`
    and `name` fill the REST Status' details, as kube-apiserver's."""

    code = grpc.StatusCode.PERMISSION_DENIED

    def __init__(self, message: str, *, resource: str = "", name: str = "") -> None:
        super().__init__(message)
        self.resource = resource
        self.name = name

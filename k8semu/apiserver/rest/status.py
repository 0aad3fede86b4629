"""metav1.Status: how the REST face answers every error, with Kubernetes' reasons and codes.

A verb's StatusError (`apiserver/errors.py`) maps to one HTTP code and reason here, one to one
with its gRPC code (DESIGN "Errors and bad input"); `HTTPError` is what only HTTP can get
wrong (a path, a media type, a body too large). An Invalid that carries field causes is
worded as Kubernetes words it: `Deployment.apps "web" is invalid: spec.replicas: Invalid
value: -1: must be greater than or equal to 0`. Pure: no I/O.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

from k8semu.api import kinds
from k8semu.api.errors import UnknownKindError
from k8semu.apiserver.errors import (
    AlreadyExists,
    BadRequest,
    Conflict,
    FailedPrecondition,
    Forbidden,
    Gone,
    Invalid,
    MethodNotAllowed,
    NotFound,
    StatusError,
    StorageFull,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from k8semu.apiserver.fieldmanager import ApplyConflict
from k8semu.apiserver.watchcache import TooSlow

# StatusError class -> (HTTP code, metav1.StatusReason); subclasses before their bases.
_REASONS: tuple[tuple[type[StatusError], int, str], ...] = (
    (NotFound, 404, "NotFound"),
    (AlreadyExists, 409, "AlreadyExists"),
    (Conflict, 409, "Conflict"),
    (BadRequest, 400, "BadRequest"),
    (Invalid, 422, "Invalid"),
    (FailedPrecondition, 403, "Forbidden"),
    (Gone, 410, "Expired"),
    (Unavailable, 503, "ServiceUnavailable"),
    (MethodNotAllowed, 405, "MethodNotAllowed"),
    (StorageFull, 500, "InternalError"),
    (TooSlow, 429, "TooManyRequests"),
    (TooManyRequests, 429, "TooManyRequests"),
    (Unauthorized, 401, "Unauthorized"),
    (Forbidden, 403, "Forbidden"),
)

# The field-error types Kubernetes names causes by, from the start of a problem's text.
_CAUSES = (
    ("Required value", "FieldValueRequired"),
    ("Unsupported value", "FieldValueNotSupported"),
    ("Duplicate value", "FieldValueDuplicate"),
    ("Forbidden", "FieldValueForbidden"),
    ("Too long", "FieldValueTooLong"),
    ("Too many", "FieldValueTooMany"),
    ("Not found", "FieldValueNotFound"),
)


class HTTPError(Exception):
    """A request the REST face refuses before any verb runs (nothing is written)."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


def status(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A metav1.Status of a failure."""
    out: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        out["details"] = details
    return out


def success(details: dict[str, Any]) -> dict[str, Any]:
    """What a delete answers when the object is gone at once (metav1.Status Success)."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    }


def of_http(exc: HTTPError) -> dict[str, Any]:
    return status(exc.code, exc.reason, exc.message)


def of_error(exc: StatusError, resource: str = "", name: str = "") -> dict[str, Any]:
    """The Status of a verb's error; `resource` and `name` (of the request) fill `details`."""
    code, reason = 500, "InternalError"
    for cls, c, r in _REASONS:
        if isinstance(exc, cls):
            code, reason = c, r
            break
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if resource:
        group, kind_plural = _group_and_plural(resource)
        if group:
            details["group"] = group
        details["kind"] = kind_plural
    message = exc.message
    if isinstance(exc, Invalid) and not isinstance(exc, BadRequest):
        kind_name, name, causes = _invalid_parts(exc, resource, name)
        if causes:
            message = invalid_message(kind_name, name, causes)
            details["causes"] = [_cause(path, problem) for path, problem in causes]
            details["name"] = name
            details["kind"] = kind_name  # Invalid names the Kind, the others the resource
    if isinstance(exc, ApplyConflict):
        details["causes"] = [
            {"reason": "FieldManagerConflict", "message": problem, "field": path}
            for path, problem in exc.causes
        ]
    return status(code, reason, message, details)


# How the verbs name an object in a message: `deployments "web": ...`.
_DESCRIBED = re.compile(r'^[a-z0-9.]+ "([^"]*)": (.*)$', re.DOTALL)
_FIELD_PATH = re.compile(r"^[A-Za-z0-9_.\[\]/-]+$")


def _invalid_parts(
    exc: Invalid, resource: str, name: str
) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """(Kind, object name, causes) of an Invalid: its own, or read from its message
    (`pods "web": spec.x: problem; spec.y: problem`) when it names its fields there."""
    kind_name = exc.kind
    if not kind_name and resource:
        with contextlib.suppress(UnknownKindError):
            kind_name = kinds.for_resource(resource).kind
    if exc.causes:
        return kind_name, exc.name or name, exc.causes
    found = _DESCRIBED.match(exc.message)
    if not found or not kind_name:
        return kind_name, name, ()
    causes = []
    for part in found.group(2).split("; "):
        path, sep, problem = part.partition(": ")
        if not sep or not _FIELD_PATH.match(path):
            return kind_name, name, ()
        causes.append((path, problem))
    return kind_name, found.group(1) or name, tuple(causes)


def invalid_message(kind_name: str, name: str, causes: tuple[tuple[str, str], ...]) -> str:
    """`Deployment.apps "web" is invalid: spec.replicas: Invalid value: ...` (several
    problems in brackets, comma separated, as Kubernetes' ToAggregate prints them)."""
    qualified = kind_name
    found = next((k for k in kinds.all_kinds() if k.kind == kind_name), None)
    if found is not None and found.group:
        qualified = f"{found.kind}.{found.group}"
    problems = [f"{path}: {_worded(problem)}" for path, problem in causes]
    listed = problems[0] if len(problems) == 1 else f"[{', '.join(problems)}]"
    return f'{qualified} "{name}" is invalid: {listed}'


def _worded(problem: str) -> str:
    """A problem in Kubernetes' words: every one starts with its error type."""
    if problem.startswith(tuple(p for p, _ in _CAUSES)) or problem.startswith("Invalid value"):
        return problem
    if problem.startswith("invalid value "):
        return "Invalid value: " + problem.removeprefix("invalid value ")
    return f"Invalid value: {problem}"


def _cause(path: str, problem: str) -> dict[str, str]:
    worded = _worded(problem)
    reason = next((r for p, r in _CAUSES if worded.startswith(p)), "FieldValueInvalid")
    return {"reason": reason, "message": worded, "field": path}


def _group_and_plural(resource: str) -> tuple[str, str]:
    try:
        kind = kinds.for_resource(resource)
    except UnknownKindError:
        return "", resource
    return kind.group, kind.plural

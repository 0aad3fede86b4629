"""Kubernetes' resource paths to what a request is about (`Target`). Pure: no I/O.

    /api/v1[/watch]/namespaces/{ns}/{resource}[/{name}[/{subresource}]]
    /api/v1[/watch]/{resource}[/{name}[/{subresource}]]
    /apis/{group}/{version}/...   the same below the group's version

`/api/v1/namespaces/{name}[/{subresource}]` is the Namespace object itself: a third segment
that is no namespaced resource of the group version is a subresource of the namespace.
"""

from __future__ import annotations

from dataclasses import dataclass

from k8semu.api import kinds
from k8semu.api.kinds import Kind
from k8semu.apiserver.rest import versions
from k8semu.apiserver.rest.status import HTTPError
from k8semu.apiserver.rest.versions import Conversion

# Pods' streams (streams.py): served by the kubelet through the API server.
STREAMED = ("log", "exec", "attach", "portforward")
# `proxy` (proxy.py) takes a path after it: `pods/NAME:8080/proxy/some/path`.
PROXY = "proxy"
SUBRESOURCES = ("status", "scale", "binding", "eviction", "approval", PROXY, *STREAMED)
# Subresources that write the object's status: certificatesigningrequests/approval is its
# status for approvers (`kubectl certificate approve`), authorized apart from /status.
STATUS_WRITES = ("status", "approval")
_ONLY_OF = {"approval": ("certificatesigningrequests",), PROXY: ("pods", "services")}
# Subresources that are only ever POSTed (never read, replaced or patched).
CREATE_ONLY = ("binding", "eviction")


@dataclass(frozen=True, slots=True)
class Target:
    kind: Kind
    namespace: str  # "" for a cluster-scoped kind or a request across namespaces
    name: str  # "" for a collection
    subresource: str  # "" for the object itself
    watch: bool  # under /watch/ (deprecated in Kubernetes, still served)
    # Asked for at another version than the stored kind's (versions.py): bodies converted.
    served_as: Conversion | None = None


def kinds_of(group: str, version: str) -> list[Kind]:
    """The kinds served at /api/v1 (group "") or /apis/{group}/{version}: the stored kinds
    of those served there by conversion (versions.py) too."""
    own = [k for k in kinds.all_kinds() if k.group == group and k.version == version]
    return own + [c.stored for c in versions.conversions_of(group, version)]


def group_versions() -> dict[str, list[str]]:
    """Every API group (core "") and its versions, the stored ones (preferred) first."""
    found: dict[str, list[str]] = {}
    pairs = [(k.group, k.version) for k in kinds.all_kinds()]
    for group, version, _ in versions.CONVERSIONS:
        pairs.append((group, version))
    for group, version in pairs:
        listed = found.setdefault(group, [])
        if version not in listed:
            listed.append(version)
    return found


def _not_found(path: str) -> HTTPError:
    return HTTPError(404, "NotFound", f"the server could not find the requested resource ({path})")


def parse(path: str) -> tuple[str, str, list[str]]:
    """(group, version, the segments after the group version) of a resource path; HTTPError
    404 when it is no API path."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        raise _not_found(path)
    if version not in group_versions().get(group, []):
        raise _not_found(path)
    return group, version, rest


def target(path: str) -> Target:
    """The Target of a resource path (not a discovery one: `rest` must not be empty)."""
    group, version, rest = parse(path)
    watch = bool(rest) and rest[0] == "watch"
    if watch:
        rest = rest[1:]
    served = {k.plural: k for k in kinds_of(group, version) if k.list_message is not None}
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in served:
        if not served[rest[2]].namespaced:
            raise _not_found(path)
        namespace, rest = rest[1], rest[2:]
    if len(rest) > 3 and rest[2] == PROXY:
        rest = rest[:3]  # the rest is the proxied path
    if not rest or rest[0] not in served or len(rest) > 3:
        raise _not_found(path)
    kind = served[rest[0]]
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    if sub and (sub not in SUBRESOURCES or kind.plural not in _ONLY_OF.get(sub, (kind.plural,))):
        raise _not_found(path)
    if not all(_segment_ok(s) for s in (namespace, name)):
        raise _not_found(path)
    return Target(
        kind, namespace, name, sub, watch, versions.CONVERSIONS.get((group, version, kind.plural))
    )


def _segment_ok(segment: str) -> bool:
    # Kubernetes refuses names "." and ".." and those holding "/" or "%" (path segments).
    return segment not in (".", "..") and "%" not in segment

"""Discovery documents: /api, /apis, /api/v1, /apis/{group}/{version} and /version.

What kubectl and client libraries read before anything else: the groups and versions served,
and for each version its resources (verbs, short names, categories, singular names, scope,
kind) and subresources. Built from the server's registry rows, so a kind the server does not
serve (metrics.k8s.io without --metric-resolution) is not announced. Pure: no I/O.
"""

from __future__ import annotations

import platform
import sys
from typing import Any

from k8semu import __version__
from k8semu.api import kinds
from k8semu.apiserver.registry import Registry
from k8semu.apiserver.registry.strategy import Strategy
from k8semu.apiserver.rest.paths import kinds_of
from k8semu.apiserver.rest.versions import CONVERSIONS

# The Kubernetes minor version whose API (and kubectl) k8semu follows.
KUBERNETES_MAJOR, KUBERNETES_MINOR = "1", "32"
_WRITE_VERBS = ("create", "delete", "deletecollection", "patch", "update")
_SUB_VERBS = ["get", "patch", "update"]
# Aggregated discovery (apidiscovery.k8s.io): every group version's resources in one
# document for /api and one for /apis, what kubectl 1.32 asks for first.
_AGGREGATED_VERSIONS = ("v2", "v2beta1")


def aggregated_media_type(accept: str) -> str | None:
    """The aggregated-discovery media type the Accept header asks for (v2 preferred), None
    when it asks for the plain documents."""
    offered = []
    for clause in accept.split(","):
        media, *params = (p.strip() for p in clause.split(";"))
        opts = dict(p.partition("=")[::2] for p in params)
        if (
            media.lower() == "application/json"
            and opts.get("g") == "apidiscovery.k8s.io"
            and opts.get("as") == "APIGroupDiscoveryList"
            and opts.get("v") in _AGGREGATED_VERSIONS
        ):
            offered.append(opts["v"])
    for version in _AGGREGATED_VERSIONS:
        if version in offered:
            return f"application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"
    return None


def aggregated(registry: Registry, media: str, core: bool) -> dict[str, Any]:
    """The APIGroupDiscoveryList of /api (`core`: the core group) or /apis (every named
    group): the same resources as the per-version APIResourceLists."""
    version = media.split(";v=", 1)[1].split(";", 1)[0]
    items = []
    for group_name, versions in sorted(_served_groups(registry).items()):
        if bool(group_name) == core:
            continue
        listed = [
            {
                "version": v,
                "resources": _discovered(
                    group_name, v, resource_list(registry, group_name, v)["resources"]
                ),
                "freshness": "Current",
            }
            for v in versions
        ]
        items.append(
            {"metadata": {"name": group_name, "creationTimestamp": None}, "versions": listed}
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": f"apidiscovery.k8s.io/{version}",
        "metadata": {},
        "items": items,
    }


def _discovered(
    group_name: str, version: str, resources: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """APIResourceList entries (of `group_name`/`version`) as APIResourceDiscovery ones,
    subresources under theirs."""
    out: dict[str, dict[str, Any]] = {}
    for entry in resources:
        name, _, sub = entry["name"].partition("/")
        response = {
            "group": entry.get("group", group_name),
            "version": entry.get("version", version),
            "kind": entry["kind"],
        }
        if sub:
            out[name].setdefault("subresources", []).append(
                {"subresource": sub, "responseKind": response, "verbs": entry["verbs"]}
            )
            continue
        found: dict[str, Any] = {
            "resource": name,
            "responseKind": response,
            "scope": "Namespaced" if entry["namespaced"] else "Cluster",
            "singularResource": entry["singularName"],
            "verbs": entry["verbs"],
        }
        for key in ("shortNames", "categories"):
            if key in entry:
                found[key] = entry[key]
        out[name] = found
    return list(out.values())


def version() -> dict[str, str]:
    """/version: the Kubernetes version k8semu's API follows, k8semu's own in gitVersion."""
    return {
        "major": KUBERNETES_MAJOR,
        "minor": KUBERNETES_MINOR,
        "gitVersion": f"v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.0+k8semu-{__version__}",
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": f"python{sys.version_info.major}.{sys.version_info.minor}",
        "compiler": "cpython",
        "platform": f"{platform.system().lower()}/{platform.machine()}",
    }


def api_versions(server_address: str) -> dict[str, Any]:
    """/api: the core group's versions."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _served_groups(registry: Registry) -> dict[str, list[str]]:
    """Each served group's versions: the stored kinds' (preferred) first, then those served
    by conversion (versions.py) of a served kind."""
    groups: dict[str, list[str]] = {}
    served = {row.kind.resource for row in registry.served()}
    pairs = [(row.kind.group, row.kind.version) for row in registry.served()]
    for (group_name, version_name, _), conversion in CONVERSIONS.items():
        if conversion.stored.resource in served:
            pairs.append((group_name, version_name))
    for group_name, version_name in pairs:
        listed = groups.setdefault(group_name, [])
        if version_name not in listed:
            listed.append(version_name)
    return groups


def group_list(registry: Registry) -> dict[str, Any]:
    """/apis: every named group the registry serves."""
    groups = []
    for group, versions in sorted(_served_groups(registry).items()):
        if not group:
            continue
        listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        groups.append({"name": group, "versions": listed, "preferredVersion": listed[0]})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def group(registry: Registry, name: str) -> dict[str, Any] | None:
    """/apis/{group}: one APIGroup, None when it is not served."""
    for entry in group_list(registry)["groups"]:
        if entry["name"] == name:
            return {"kind": "APIGroup", "apiVersion": "v1", **entry}
    return None


def served(registry: Registry, group_name: str, version_name: str) -> bool:
    return version_name in _served_groups(registry).get(group_name, [])


_POD_STREAMS = (
    ("log", "Pod", ["get"]),
    ("exec", "PodExecOptions", ["create", "get"]),
    ("attach", "PodAttachOptions", ["create", "get"]),
    ("portforward", "PodPortForwardOptions", ["create", "get"]),
)


def resource_list(registry: Registry, group_name: str, version_name: str) -> dict[str, Any]:
    """/api/v1 or /apis/{group}/{version}: the APIResourceList of that group version."""
    rows = {row.kind.resource: row for row in registry.served()}
    resources: list[dict[str, Any]] = []
    for kind in kinds_of(group_name, version_name):
        row = rows.get(kind.resource)
        if row is not None:
            resources.extend(_resources(row))
    group_version = f"{group_name}/{version_name}" if group_name else version_name
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def _resources(row: Strategy) -> list[dict[str, Any]]:
    """A row's resource and its subresources."""
    kind = row.kind
    verbs = ["get", "list"] if row.reader is not None else [*_WRITE_VERBS, "get", "list", "watch"]
    main: dict[str, Any] = {
        "name": kind.plural,
        "singularName": kind.singular,
        "namespaced": kind.namespaced,
        "kind": kind.kind,
        "verbs": sorted(verbs),
    }
    if kind.short_names:
        main["shortNames"] = list(kind.short_names)
    if kind.plural in kinds.ALL_CATEGORY and not kind.qualified:
        main["categories"] = ["all"]
    out = [main]
    base = {"singularName": "", "namespaced": kind.namespaced}
    if row.status:
        out.append(
            {"name": f"{kind.plural}/status", **base, "kind": kind.kind, "verbs": _SUB_VERBS}
        )
    if row.scale:
        out.append(
            {
                "name": f"{kind.plural}/scale",
                **base,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": _SUB_VERBS,
            }
        )
    if row.bind is not None:
        out.append(
            {"name": f"{kind.plural}/binding", **base, "kind": "Binding", "verbs": ["create"]}
        )
    if row.eviction:
        out.append(
            {
                "name": f"{kind.plural}/eviction",
                **base,
                "group": "policy",
                "version": "v1",
                "kind": "Eviction",
                "verbs": ["create"],
            }
        )
    if kind.kind == "Pod" and not kind.group:  # the kubelet's streams (rest/streams.py)
        for sub, sub_kind, verbs in _POD_STREAMS:
            out.append({"name": f"pods/{sub}", **base, "kind": sub_kind, "verbs": verbs})
    return out

"""Aggregated discovery (apidiscovery.k8s.io/v2): kubectl 1.32 reads every group's resources
in two requests (/api and /apis); clients that ask for the plain documents still get them."""

from __future__ import annotations

import json
import re
from typing import Any

from .conftest import REST

V2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"


def _aggregated(rest: REST, path: str, accept: str) -> tuple[str, dict[str, Any]]:
    code, headers, raw = rest.request("GET", path, headers={"Accept": accept})
    assert code == 200, raw
    return headers["Content-Type"], json.loads(raw)


def test_kubectl_discovers_in_two_requests(rest: REST) -> None:
    out = rest.kubectl("api-resources", "-v=6", check=False)
    fetched = re.findall(r"GET \S+?/(api\S*?)\?", out)
    assert fetched == ["api", "apis"], fetched
    assert re.search(r"^deployments\s+deploy\s+apps/v1\s+true\s+Deployment$", out, re.M), out


def test_aggregated_documents(rest: REST) -> None:
    kubectl_accept = f"{V2},{V2.replace('v=v2', 'v=v2beta1')},application/json"
    media, core = _aggregated(rest, "/api", kubectl_accept)
    assert media == V2
    assert core["kind"] == "APIGroupDiscoveryList"
    [group] = core["items"]
    assert group["metadata"]["name"] == ""
    [v1] = group["versions"]
    pods = next(r for r in v1["resources"] if r["resource"] == "pods")
    assert pods["responseKind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert (pods["scope"], pods["singularResource"], pods["shortNames"]) == (
        "Namespaced",
        "pod",
        ["po"],
    )
    subresources = {s["subresource"]: s for s in pods["subresources"]}
    assert {"status", "binding", "eviction"} <= set(subresources)
    assert subresources["eviction"]["responseKind"]["group"] == "policy"

    media, named = _aggregated(rest, "/apis", V2.replace("v=v2", "v=v2beta1"))
    assert media.endswith("v=v2beta1;as=APIGroupDiscoveryList")
    apps = next(g for g in named["items"] if g["metadata"]["name"] == "apps")
    deployments = next(
        r for r in apps["versions"][0]["resources"] if r["resource"] == "deployments"
    )
    scale = next(s for s in deployments["subresources"] if s["subresource"] == "scale")
    assert scale["responseKind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}
    assert "" not in {g["metadata"]["name"] for g in named["items"]}


def test_plain_discovery_without_asking(rest: REST) -> None:
    media, doc = _aggregated(rest, "/apis", "application/json")
    assert media.startswith("application/json") and doc["kind"] == "APIGroupList"
    media, doc = _aggregated(rest, "/api", "application/json;as=Table;v=v1;g=meta.k8s.io")
    assert doc["kind"] == "APIVersions"

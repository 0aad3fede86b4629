"""Ingress and IngressClass as objects: the registry entries, kube-apiserver's checks and
messages (pure: the registry row's functions), kubectl's columns and describe."""

from __future__ import annotations

from typing import Any

import pytest

from k8semu.api import kinds, manifest
from k8semu.api.columns import COLUMNS
from k8semu.apiserver.registry import networking
from k8semu.cli._describe import describe
from k8semu.pb.api.v1 import networking_pb2


def _ingress(spec: dict[str, Any], **meta: Any) -> networking_pb2.Ingress:
    obj = manifest.from_dict(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "i", "namespace": "default", **meta},
            "spec": spec,
        }
    )
    assert isinstance(obj, networking_pb2.Ingress)
    return obj


def _errors(spec: dict[str, Any], **meta: Any) -> list[str]:
    return [str(e) for e in networking.validate(_ingress(spec, **meta))]


SVC = {"service": {"name": "web", "port": {"number": 80}}}


def test_registry() -> None:
    ing = kinds.for_resource("ing")
    assert (ing.kind, ing.api_version, ing.namespaced) == ("Ingress", "networking.k8s.io/v1", True)
    ic = kinds.for_resource("ingressclasses")
    assert (ic.kind, ic.namespaced) == ("IngressClass", False)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({}, "spec: Invalid value: null: either `defaultBackend` or `rules` must be specified"),
        (
            {"rules": [{"http": {"paths": [{"path": "/", "backend": SVC}]}}]},
            "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified",
        ),
        (
            {"rules": [{"http": {"paths": [{"path": "/", "pathType": "Regex", "backend": SVC}]}}]},
            'spec.rules[0].http.paths[0].pathType: Unsupported value: "Regex": supported values:'
            ' "Exact", "ImplementationSpecific", "Prefix"',
        ),
        (
            {"rules": [{"http": {"paths": [{"path": "a", "pathType": "Exact", "backend": SVC}]}}]},
            'spec.rules[0].http.paths[0].path: Invalid value: "a": must be an absolute path',
        ),
        (
            {
                "rules": [
                    {"http": {"paths": [{"path": "/a//b", "pathType": "Prefix", "backend": SVC}]}}
                ]
            },
            "spec.rules[0].http.paths[0].path: Invalid value: \"/a//b\": must not contain '//'",
        ),
        (
            {"rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {}}]}}]},
            'spec.rules[0].http.paths[0].backend: Invalid value: "": resource or service backend'
            " is required",
        ),
        (
            {
                "defaultBackend": {
                    "service": {"name": "web", "port": {"name": "http", "number": 80}}
                }
            },
            'spec.defaultBackend: Invalid value: "": cannot set both port name & port number',
        ),
        (
            {"defaultBackend": {"service": {"name": "web"}}},
            "spec.defaultBackend: Required value: port name or number is required",
        ),
        (
            {"defaultBackend": SVC, "rules": [{"host": "10.0.0.1"}]},
            'spec.rules[0].host: Invalid value: "10.0.0.1": must be a DNS name, not an IP address',
        ),
        (
            {"defaultBackend": SVC, "rules": [{"host": "*.*.example.com"}]},
            'spec.rules[0].host: Invalid value: "*.*.example.com": a wildcard DNS-1123 subdomain'
            " must start with '*.', followed by a valid DNS subdomain",
        ),
        (
            {"defaultBackend": SVC, "rules": [{"host": "a.com", "http": {"paths": []}}]},
            "spec.rules[0].http.paths: Required value",
        ),
    ],
)
def test_kubernetes_messages(spec: dict[str, Any], expected: str) -> None:
    assert any(e.startswith(expected) for e in _errors(spec)), _errors(spec)


def test_valid_ingresses_and_the_legacy_annotation() -> None:
    rules = [
        {
            "host": "*.example.com",
            "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": SVC}]},
        },
        {"http": {"paths": [{"pathType": "ImplementationSpecific", "backend": SVC}]}},
    ]
    assert _errors({"rules": rules, "tls": [{"hosts": ["*.example.com"], "secretName": "s"}]}) == []
    legacy = {"kubernetes.io/ingress.class": "nginx"}
    assert _errors({"defaultBackend": SVC}, annotations=legacy) == []
    assert _errors({"defaultBackend": SVC, "ingressClassName": "x"}, annotations=legacy) == [
        'metadata.annotations[kubernetes.io/ingress.class]: Invalid value: "nginx": can not be'
        " set when the class field is also set"
    ]


def test_ingress_class_checks() -> None:
    ic = networking_pb2.IngressClass()
    ic.metadata.name = "c"
    assert [str(e) for e in networking.validate_class(ic)] == ["spec.controller: Required value"]
    ic.spec.controller = "nopath"
    assert "must be a domain-prefixed path" in str(next(networking.validate_class(ic)))
    ic.spec.controller = "k8semu.io/ingress"
    assert list(networking.validate_class(ic)) == []
    new = networking_pb2.IngressClass()
    new.CopyFrom(ic)
    new.spec.controller = "example.com/other"
    assert [str(e) for e in networking.validate_class_update(new, ic)] == [
        'spec.controller: Invalid value: "example.com/other": field is immutable'
    ]


def test_columns_and_describe() -> None:
    rules = [
        {
            "host": f"h{i}.com",
            "http": {"paths": [{"path": f"/{i}", "pathType": "Prefix", "backend": SVC}]},
        }
        for i in range(5)
    ]
    ing = _ingress({"ingressClassName": "k8semu", "rules": rules, "tls": [{"hosts": ["h0.com"]}]})
    ing.status.load_balancer.ingress.add(ip="127.0.1.1")
    ing.status.load_balancer.ingress.add(ip="127.0.1.2")
    columns = COLUMNS["Ingress"]
    assert columns.header == ("NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE")
    row = columns.row(ing, 0.0)
    assert row[:5] == [
        "i",
        "k8semu",
        "h0.com,h1.com,h2.com + 2 more...",
        "127.0.1.1,127.0.1.2",
        "80, 443",
    ]
    text = describe(ing, [], 0.0)
    assert "Ingress Class:" in text and "h4.com" in text and "web:80" in text


def test_the_proxy_identity_may_run_the_ingress_controller() -> None:
    """Under RBAC, the proxy (system:kube-proxy) reads Ingresses and IngressClasses and
    writes Ingress status, nothing more of them."""
    from k8semu.apiserver.auth import policy
    from k8semu.apiserver.auth.attributes import Attributes
    from k8semu.apiserver.auth.rbac import Index
    from k8semu.apiserver.auth.user import authenticated

    index = Index((), list(policy.cluster_roles()), [], list(policy.cluster_role_bindings()))
    proxy = authenticated("system:kube-proxy")
    group = "networking.k8s.io"
    for verb, resource, sub in (
        ("list", "ingresses", ""),
        ("watch", "ingressclasses", ""),
        ("update", "ingresses", "status"),
    ):
        assert index.authorize(Attributes(proxy, verb, resource, group, sub, namespace="ns"))
    assert not index.authorize(Attributes(proxy, "update", "ingresses", group, namespace="ns"))
    assert not index.authorize(Attributes(proxy, "create", "ingressclasses", group))

"""The ingress routes on the examples of the Kubernetes Ingress docs
(concepts/services-networking/ingress): simple fanout, name-based virtual hosting, wildcard
hosts, the pathType examples table, defaultBackend, and which classes are served."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from k8semu import pki
from k8semu.api import manifest
from k8semu.pb.api.v1 import core_pb2, networking_pb2
from k8semu.proxy.ingress_table import (
    CONTROLLER,
    Routes,
    build_routes,
    normal_host,
    path_of,
)
from k8semu.proxy.ingress_tls import Certificates

OURS = networking_pb2.IngressClass()
OURS.metadata.name = "k8semu"
OURS.spec.controller = CONTROLLER


def _service(name: str, port: int = 80, port_name: str = "") -> core_pb2.Service:
    svc = core_pb2.Service()
    svc.metadata.namespace, svc.metadata.name = "default", name
    svc.spec.ports.add(port=port, name=port_name, protocol="TCP")
    return svc


def _ingress(name: str, rules: list[dict[str, Any]], **spec: Any) -> networking_pb2.Ingress:
    obj = manifest.from_dict(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"ingressClassName": "k8semu", "rules": rules, **spec},
        }
    )
    assert isinstance(obj, networking_pb2.Ingress)
    return obj


def _backend(service: str, port: int = 80) -> dict[str, Any]:
    return {"service": {"name": service, "port": {"number": port}}}


def _path(path: str, service: str, path_type: str = "Prefix") -> dict[str, Any]:
    return {"path": path, "pathType": path_type, "backend": _backend(service)}


def _rule(host: str, path: str, service: str) -> dict[str, Any]:
    """A rule of one Prefix path ("" host: every host)."""
    rule: dict[str, Any] = {"http": {"paths": [_path(path, service)]}}
    return {"host": host, **rule} if host else rule


def _routes(*ingresses: networking_pb2.Ingress, services: tuple[str, ...] = ()) -> Routes:
    names = services or ("service1", "service2", "service3", "test", "default")
    return build_routes(ingresses, [OURS], [_service(n) for n in names])


def _to(routes: Routes, host: str, path: str) -> str | None:
    found = routes.match(host, path)
    return found.service if found is not None else None


def test_simple_fanout() -> None:
    routes = _routes(
        _ingress(
            "simple-fanout-example",
            [
                {
                    "host": "foo.bar.com",
                    "http": {"paths": [_path("/foo", "service1"), _path("/bar", "service2")]},
                }
            ],
        )
    )
    assert _to(routes, "foo.bar.com", "/foo") == "service1"
    assert _to(routes, "foo.bar.com:8080", "/foo/x") == "service1"
    assert _to(routes, "FOO.bar.com", "/bar") == "service2"
    assert _to(routes, "foo.bar.com", "/baz") is None
    assert _to(routes, "other.com", "/foo") is None


def test_name_based_virtual_hosting() -> None:
    rules = [_rule("foo.bar.com", "/", "service1"), _rule("bar.foo.com", "/", "service2")]
    rules.append(_rule("", "/", "service3"))
    routes = _routes(_ingress("name-virtual-host-ingress-no-third-host", rules))
    assert _to(routes, "foo.bar.com", "/") == "service1"
    assert _to(routes, "bar.foo.com", "/anything") == "service2"
    assert _to(routes, "", "/") == "service3"  # no Host header: the rule without host
    assert _to(routes, "10.0.0.1", "/x") == "service3"


def test_wildcard_hosts() -> None:
    rules = [_rule("foo.bar.com", "/bar", "service1"), _rule("*.foo.com", "/foo", "service2")]
    routes = _routes(_ingress("ingress-wildcard-host", rules))
    assert _to(routes, "foo.bar.com", "/bar") == "service1"
    assert _to(routes, "bar.foo.com", "/foo") == "service2"
    assert _to(routes, "baz.bar.foo.com", "/foo") is None  # one label only
    assert _to(routes, "foo.com", "/foo") is None


# The docs' table: (pathType, rule paths, request path, matches which rule path or None).
EXAMPLES = [
    ("Prefix", ["/"], "/anything/at/all", "/"),
    ("Exact", ["/foo"], "/foo", "/foo"),
    ("Exact", ["/foo"], "/bar", None),
    ("Exact", ["/foo"], "/foo/", None),
    ("Exact", ["/foo/"], "/foo", None),
    ("Prefix", ["/foo"], "/foo", "/foo"),
    ("Prefix", ["/foo"], "/foo/", "/foo"),
    ("Prefix", ["/foo/"], "/foo", "/foo/"),
    ("Prefix", ["/foo/"], "/foo/", "/foo/"),
    ("Prefix", ["/aaa/bb"], "/aaa/bbb", None),
    ("Prefix", ["/aaa/bbb"], "/aaa/bbb", "/aaa/bbb"),
    ("Prefix", ["/aaa/bbb/"], "/aaa/bbb", "/aaa/bbb/"),
    ("Prefix", ["/aaa/bbb"], "/aaa/bbb/", "/aaa/bbb"),
    ("Prefix", ["/aaa/bbb"], "/aaa/bbb/ccc", "/aaa/bbb"),
    ("Prefix", ["/aaa/bbb"], "/aaa/bbbxyz", None),
    ("Prefix", ["/", "/aaa"], "/aaa/ccc", "/aaa"),
    ("Prefix", ["/", "/aaa", "/aaa/bbb"], "/aaa/bbb", "/aaa/bbb"),
    ("Prefix", ["/", "/aaa", "/aaa/bbb"], "/ccc", "/"),
    ("Prefix", ["/aaa"], "/ccc", None),
]


@pytest.mark.parametrize(("path_type", "paths", "request_path", "expected"), EXAMPLES)
def test_path_type_examples(
    path_type: str, paths: list[str], request_path: str, expected: str | None
) -> None:
    # Each rule path goes to a Service named after it, so the match names the rule.
    names = {p: f"svc{i}" for i, p in enumerate(paths)}
    ing = _ingress("paths", [{"http": {"paths": [_path(p, names[p], path_type) for p in paths]}}])
    routes = _routes(ing, services=tuple(names.values()))
    want = names[expected] if expected is not None else None
    assert _to(routes, "any.host", request_path) == want


def test_exact_beats_prefix_and_default_backend() -> None:
    ing = _ingress(
        "mixed",
        [{"http": {"paths": [_path("/foo", "service1"), _path("/foo", "service2", "Exact")]}}],
        defaultBackend=_backend("default"),
    )
    routes = _routes(ing)
    assert _to(routes, "h", "/foo") == "service2"
    assert _to(routes, "h", "/foo/") == "service1"
    assert _to(routes, "h", "/elsewhere") == "default"


def test_oldest_ingress_wins_a_conflict() -> None:
    old = _ingress("old", [{"host": "a.com", "http": {"paths": [_path("/", "service1")]}}])
    new = _ingress("new", [{"host": "a.com", "http": {"paths": [_path("/", "service2")]}}])
    old.metadata.creation_timestamp.seconds = 100
    new.metadata.creation_timestamp.seconds = 200
    assert _to(_routes(new, old), "a.com", "/") == "service1"


def test_classes_served() -> None:
    other = networking_pb2.IngressClass()
    other.metadata.name = "nginx"
    other.spec.controller = "k8s.io/ingress-nginx"
    theirs = _ingress("theirs", [{"http": {"paths": [_path("/", "service1")]}}])
    theirs.spec.ingress_class_name = "nginx"
    unnamed = _ingress("unnamed", [{"http": {"paths": [_path("/", "service2")]}}])
    unnamed.spec.ClearField("ingress_class_name")
    services = [_service("service1"), _service("service2")]
    assert build_routes([theirs, unnamed], [OURS, other], services).served == ()
    default = networking_pb2.IngressClass()
    default.CopyFrom(OURS)
    default.metadata.annotations["ingressclass.kubernetes.io/is-default-class"] = "true"
    routes = build_routes([theirs, unnamed], [default, other], services)
    assert routes.served == (("default", "unnamed"),)


def test_backend_port_by_name_and_missing_service() -> None:
    ing = _ingress(
        "ports",
        [
            {
                "http": {
                    "paths": [
                        {
                            "path": "/named",
                            "pathType": "Prefix",
                            "backend": {"service": {"name": "web", "port": {"name": "http"}}},
                        },
                        _path("/missing", "nowhere"),
                    ]
                }
            }
        ],
    )
    routes = build_routes([ing], [OURS], [_service("web", 8080, "http")])
    named = routes.match("h", "/named")
    assert named is not None and named.key is not None and named.key.port_name == "http"
    missing = routes.match("h", "/missing")
    assert missing is not None and missing.key is None


def test_host_and_path_parsing() -> None:
    assert normal_host("Foo.Bar.com:8080") == "foo.bar.com"
    assert normal_host("[::1]:80") == "[::1]"
    assert path_of("/a/b?x=1") == "/a/b"
    assert path_of("http://h/a?q") == "/a"
    assert path_of("") == "/"


def test_tls_hosts_name_their_secret_and_sni_picks_the_certificate(tmp_path: Path) -> None:
    ing = _ingress(
        "tls",
        [{"host": "a.example.com", "http": {"paths": [_path("/", "service1")]}}],
        tls=[
            {"hosts": ["a.example.com", "*.example.com"], "secretName": "wild"},
            {"hosts": ["nosecret.example.com"]},
        ],
    )
    routes = _routes(ing)
    assert routes.tls == {
        "a.example.com": ("default", "wild"),
        "*.example.com": ("default", "wild"),
    }
    ca = pki.CertificateAuthority.load_or_create(tmp_path)
    cert, key = ca.issue(pki.CertSpec("a", "a.example.com", hosts=("a.example.com",)))
    pair = (cert.public_bytes(serialization.Encoding.PEM), pki.key_pem(key))
    certs = Certificates()
    certs.update({"a.example.com": pair, "*.example.com": pair, "bad.other.com": (b"x", b"y")})
    exact = certs.for_name("A.example.com")
    assert exact is not None and certs.for_name("b.example.com") is exact  # one pair, one context
    assert certs.for_name("b.a.example.com") is None  # the default certificate
    assert certs.for_name("bad.other.com") is None  # refused, logged once
    assert certs.for_name(None) is None

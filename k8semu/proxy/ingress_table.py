"""The ingress routes: which Service port an HTTP request goes to, computed from Ingresses,
IngressClasses and Services. Pure: no sockets, no asyncio, no client.

Which Ingresses: those whose class (`spec.ingressClassName`, else the legacy annotation
`kubernetes.io/ingress.class`) is an IngressClass of this controller; one naming no class
is served while this controller's class is the default (the annotation
`ingressclass.kubernetes.io/is-default-class: "true"`). Others are ignored.

Matching, as Kubernetes documents it (concepts/services-networking/ingress):

- host: the request's Host (lower case, port dropped) equal to a rule's host; else a
  wildcard rule `*.example.com` whose suffix follows exactly one DNS label of the Host
  (`a.example.com`, never `example.com` nor `b.a.example.com`); else the rules without host.
  Rules of every served Ingress for one host are merged; for the same path and type the
  oldest Ingress wins (creationTimestamp, then namespace/name).
- path, within the chosen host: an Exact path equal to the request's path; else the
  longest Prefix path matching it element by element (`/foo` matches `/foo`, `/foo/`,
  `/foo/bar`, not `/foobar`; a trailing slash in the rule is ignored). ImplementationSpecific
  is matched as Prefix here.
- nothing matched: the defaultBackend (of the oldest served Ingress having one), else 404.

A backend is a Service port: resolved against the Service by port number or name to the
`PortKey` whose endpoints the L4 proxy already keeps, so both share endpoints and
balancing. A backend whose Service or port does not exist (yet) is `Backend(key=None)`:
503.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from k8semu.pb.api.v1 import core_pb2, networking_pb2
from k8semu.proxy.table import PortKey

CONTROLLER = "k8semu.io/ingress"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
_PREFIX_TYPES = ("Prefix", "ImplementationSpecific")


@dataclass(frozen=True, slots=True)
class Backend:
    """Where a matched request goes: `key` None when the Service or its port is missing."""

    namespace: str
    service: str
    port: str  # the backend's port as written (number or name), for messages
    key: PortKey | None


@dataclass(slots=True)
class HostRoutes:
    """The paths of one host: Exact by path, Prefix by its elements."""

    exact: dict[str, Backend] = field(default_factory=dict)
    prefix: dict[tuple[str, ...], Backend] = field(default_factory=dict)
    longest: int = 0  # the most elements of any prefix

    def match(self, path: str) -> Backend | None:
        found = self.exact.get(path)
        if found is not None:
            return found
        if not self.prefix:
            return None
        parts = tuple(p for p in path.split("/") if p)
        for n in range(min(len(parts), self.longest), -1, -1):
            found = self.prefix.get(parts[:n])
            if found is not None:
                return found
        return None


@dataclass(slots=True)
class Routes:
    hosts: dict[str, HostRoutes] = field(default_factory=dict)
    wildcards: dict[str, HostRoutes] = field(default_factory=dict)  # by suffix "example.com"
    any_host: HostRoutes | None = None
    default: Backend | None = None
    served: tuple[tuple[str, str], ...] = ()  # (namespace, name) of the Ingresses served
    #: TLS host ("a.com", "*.a.com") -> (namespace, Secret name); the oldest Ingress wins
    tls: dict[str, tuple[str, str]] = field(default_factory=dict)

    def match(self, host: str, path: str) -> Backend | None:
        """The backend of a request, or None (404)."""
        routes = self.for_host(normal_host(host))
        found = routes.match(path) if routes is not None else None
        return found if found is not None else self.default

    def for_host(self, host: str) -> HostRoutes | None:
        routes = self.hosts.get(host)
        if routes is not None:
            return routes
        _, dot, suffix = host.partition(".")
        if dot and (routes := self.wildcards.get(suffix)) is not None:
            return routes
        return self.any_host


def normal_host(host: str) -> str:
    """A Host header's name: lower case, without the port (IPv6 brackets kept)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if ":" in host else host


def path_of(target: str) -> str:
    """The path of a request target (query and fragment dropped; an absolute URI's path)."""
    if "://" in target:
        target = "/" + target.partition("://")[2].partition("/")[2]
    return target.partition("?")[0].partition("#")[0] or "/"


def class_of(ing: networking_pb2.Ingress) -> str:
    if ing.spec.HasField("ingress_class_name"):
        return ing.spec.ingress_class_name
    return ing.metadata.annotations.get(LEGACY_CLASS_ANNOTATION, "")


def our_classes(
    classes: Iterable[networking_pb2.IngressClass], controller: str = CONTROLLER
) -> tuple[set[str], bool]:
    """The names of this controller's classes, and whether one of them is the default."""
    ours = {ic.metadata.name for ic in classes if ic.spec.controller == controller}
    default = any(
        ic.metadata.annotations.get(DEFAULT_CLASS_ANNOTATION) == "true"
        for ic in classes
        if ic.metadata.name in ours
    )
    return ours, default


def served(
    ingresses: Iterable[networking_pb2.Ingress],
    classes: Iterable[networking_pb2.IngressClass],
    controller: str = CONTROLLER,
) -> list[networking_pb2.Ingress]:
    """This controller's Ingresses, oldest first."""
    ours, default = our_classes(list(classes), controller)
    out = [
        ing
        for ing in ingresses
        if (cls := class_of(ing)) in ours or (not cls and default)
        if not ing.metadata.HasField("deletion_timestamp")
    ]
    out.sort(key=_age_key)
    return out


def _age_key(ing: networking_pb2.Ingress) -> tuple[int, int, str, str]:
    ts = ing.metadata.creation_timestamp
    return (ts.seconds, ts.nanos, ing.metadata.namespace, ing.metadata.name)


def resolve(
    namespace: str,
    backend: networking_pb2.IngressBackend,
    services: Mapping[tuple[str, str], core_pb2.Service],
) -> Backend | None:
    """The Service port a backend names (None for a resource backend: not served)."""
    if not backend.HasField("service"):
        return None
    ref = backend.service
    wanted = ref.port.name or str(ref.port.number)
    svc = services.get((namespace, ref.name))
    if svc is None or svc.spec.type == "ExternalName":
        return Backend(namespace, ref.name, wanted, None)
    for sp in svc.spec.ports:
        if (sp.protocol or "TCP") != "TCP":
            continue
        if (ref.port.name and sp.name == ref.port.name) or (
            ref.port.number and sp.port == ref.port.number
        ):
            return Backend(
                namespace, ref.name, wanted, PortKey(namespace, ref.name, sp.name, "TCP")
            )
    return Backend(namespace, ref.name, wanted, None)


def build_routes(
    ingresses: Iterable[networking_pb2.Ingress],
    classes: Iterable[networking_pb2.IngressClass],
    services: Iterable[core_pb2.Service],
    controller: str = CONTROLLER,
) -> Routes:
    """The routes of every Ingress this controller serves."""
    by_name = {(s.metadata.namespace, s.metadata.name): s for s in services}
    routes = Routes()
    ours = served(ingresses, classes, controller)
    routes.served = tuple((i.metadata.namespace, i.metadata.name) for i in ours)
    for ing in ours:  # oldest first: setdefault keeps the oldest on a conflict
        ns = ing.metadata.namespace
        for tls in ing.spec.tls:
            for tls_host in tls.hosts if tls.secret_name else ():
                routes.tls.setdefault(tls_host.lower(), (ns, tls.secret_name))
        if routes.default is None and ing.spec.HasField("default_backend"):
            routes.default = resolve(ns, ing.spec.default_backend, by_name)
        for rule in ing.spec.rules:
            host = rule.host.lower()
            if not host:
                routes.any_host = table = routes.any_host or HostRoutes()
            elif host.startswith("*."):
                table = routes.wildcards.setdefault(host[2:], HostRoutes())
            else:
                table = routes.hosts.setdefault(host, HostRoutes())
            for p in rule.http.paths:
                target = resolve(ns, p.backend, by_name)
                if target is None:
                    continue
                if p.path_type == "Exact":
                    table.exact.setdefault(p.path, target)
                elif p.path_type in _PREFIX_TYPES:
                    parts = tuple(x for x in (p.path or "/").split("/") if x)
                    table.prefix.setdefault(parts, target)
                    table.longest = max(table.longest, len(parts))
    return routes

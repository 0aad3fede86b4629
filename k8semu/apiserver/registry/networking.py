"""The Ingress and IngressClass rows (networking.k8s.io/v1): checks as kube-apiserver's
(k8s.io/kubernetes pkg/apis/networking/validation), with its field paths and messages.

Ingress: `defaultBackend` or `rules` required; a rule's host is a DNS-1123 subdomain or a
wildcard one (`*.example.com`), never an IP address; a rule with `http` has at least one
path; every path has a `pathType` (Exact, Prefix, ImplementationSpecific), Exact and Prefix
paths are absolute and free of `//`, `/./`, `/../`, `%2f` and a trailing `/.` or `/..`; a
backend names a Service (name, and a port by name or number, not both) or a resource, not
both; tls hosts as rule hosts. IngressClass: `spec.controller` required, a domain-prefixed
path of at most 250 characters, immutable. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from k8semu.api import names
from k8semu.apiserver.validation import FieldError
from k8semu.pb.api.v1 import networking_pb2

PATH_TYPES = ("Exact", "ImplementationSpecific", "Prefix")
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
MAX_CONTROLLER_LENGTH = 250
# Sequences an Exact or Prefix path may not hold (Kubernetes' invalidPathSequences).
_INVALID_SEQUENCES = ("//", "/./", "/../", "%2f", "%2F")
_INVALID_SUFFIXES = ("/..", "/.")
_WILDCARD_FMT = r"\*\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_WILDCARD_RE = re.compile(_WILDCARD_FMT)
_WILDCARD_MSG = (
    "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain,"
    " which must consist of lower case alphanumeric characters, '-' or '.' and end with an"
    " alphanumeric character"
)
_PORT_NAME_CHARSET = re.compile("[-a-z0-9]+")
_DOMAIN_PREFIXED_PATH = re.compile(r"[^/]+/\S*")


def _invalid(path: str, value: object, why: str) -> FieldError:
    shown = f'"{value}"' if isinstance(value, str) else "null" if value is None else str(value)
    return FieldError(path, f"Invalid value: {shown}: {why}")


def wildcard_subdomain_errors(host: str) -> list[str]:
    """IsWildcardDNS1123Subdomain."""
    errors = []
    if len(host) > names.DNS1123_SUBDOMAIN_MAX:
        errors.append(names.max_len_error(names.DNS1123_SUBDOMAIN_MAX))
    if not _WILDCARD_RE.fullmatch(host):
        errors.append(names.regex_error(_WILDCARD_MSG, _WILDCARD_FMT, "*.example.com"))
    return errors


def port_name_errors(name: str) -> list[str]:
    """IsValidPortName: an IANA_SVC_NAME (at most 15 characters, a-z 0-9 and single
    hyphens inside, at least one letter)."""
    errors = []
    if len(name) > 15:
        errors.append(names.max_len_error(15))
    if not _PORT_NAME_CHARSET.fullmatch(name):
        errors.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not re.search("[a-z]", name):
        errors.append("must contain at least one letter (a-z)")
    if "--" in name:
        errors.append("must not contain consecutive hyphens")
    if name.startswith("-") or name.endswith("-"):
        errors.append("must not begin or end with a hyphen")
    return errors


def _host(host: str, path: str) -> Iterator[FieldError]:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        yield _invalid(path, host, "must be a DNS name, not an IP address")
    found = wildcard_subdomain_errors(host) if "*" in host else names.dns1123_subdomain_errors(host)
    for message in found:
        yield _invalid(path, host, message)


def _backend(backend: networking_pb2.IngressBackend, path: str) -> Iterator[FieldError]:
    has_service, has_resource = backend.HasField("service"), backend.HasField("resource")
    if has_service and has_resource:
        yield _invalid(path, "", "cannot set both resource and service backends")
    elif has_resource:
        ref = backend.resource
        if not ref.kind:
            yield FieldError(f"{path}.resource.kind", "Required value")
        if not ref.name:
            yield FieldError(f"{path}.resource.name", "Required value")
    elif has_service:
        yield from _service_backend(backend.service, path)
    else:
        yield _invalid(path, "", "resource or service backend is required")


def _service_backend(svc: networking_pb2.IngressServiceBackend, path: str) -> Iterator[FieldError]:
    if not svc.name:
        yield FieldError(f"{path}.service.name", "Required value")
    else:
        for message in names.dns1123_label_errors(svc.name):
            yield _invalid(f"{path}.service.name", svc.name, message)
    port = svc.port
    if port.name and port.number:
        yield _invalid(path, "", "cannot set both port name & port number")
    elif port.name:
        for message in port_name_errors(port.name):
            yield _invalid(f"{path}.service.port.name", port.name, message)
    elif port.number:
        if not 1 <= port.number <= 65535:
            yield _invalid(
                f"{path}.service.port.number", port.number, "must be between 1 and 65535, inclusive"
            )
    else:
        yield FieldError(path, "Required value: port name or number is required")


def _http_path(p: networking_pb2.HTTPIngressPath, path: str) -> Iterator[FieldError]:
    if not p.HasField("path_type"):
        yield FieldError(f"{path}.pathType", "Required value: pathType must be specified")
    elif p.path_type not in PATH_TYPES:
        supported = ", ".join(f'"{t}"' for t in PATH_TYPES)
        yield FieldError(
            f"{path}.pathType", f'Unsupported value: "{p.path_type}": supported values: {supported}'
        )
    elif p.path_type in ("Exact", "Prefix"):
        if not p.path.startswith("/"):
            yield _invalid(f"{path}.path", p.path, "must be an absolute path")
        for seq in _INVALID_SEQUENCES:
            if seq in p.path:
                yield _invalid(f"{path}.path", p.path, f"must not contain '{seq}'")
        for suffix in _INVALID_SUFFIXES:
            if p.path.endswith(suffix):
                yield _invalid(f"{path}.path", p.path, f"must not end with '{suffix}'")
    elif p.path and not p.path.startswith("/"):  # ImplementationSpecific: empty or absolute
        yield _invalid(f"{path}.path", p.path, "must be an absolute path")
    yield from _backend(p.backend, f"{path}.backend")


def _rules(spec: networking_pb2.IngressSpec) -> Iterator[FieldError]:
    for i, rule in enumerate(spec.rules):
        where = f"spec.rules[{i}]"
        if rule.host:
            yield from _host(rule.host, f"{where}.host")
        if not rule.HasField("http"):
            continue
        if not rule.http.paths:
            yield FieldError(f"{where}.http.paths", "Required value")
        for j, p in enumerate(rule.http.paths):
            yield from _http_path(p, f"{where}.http.paths[{j}]")


def validate(ing: networking_pb2.Ingress) -> Iterator[FieldError]:
    spec = ing.spec
    if not spec.rules and not spec.HasField("default_backend"):
        yield _invalid("spec", None, "either `defaultBackend` or `rules` must be specified")
    if spec.HasField("default_backend"):
        yield from _backend(spec.default_backend, "spec.defaultBackend")
    yield from _rules(spec)
    for i, tls in enumerate(spec.tls):
        for j, host in enumerate(tls.hosts):
            yield from _host(host, f"spec.tls[{i}].hosts[{j}]")
    if spec.HasField("ingress_class_name"):
        for message in names.dns1123_subdomain_errors(spec.ingress_class_name):
            yield _invalid("spec.ingressClassName", spec.ingress_class_name, message)
        legacy = ing.metadata.annotations.get(LEGACY_CLASS_ANNOTATION)
        if legacy is not None:
            yield _invalid(
                f"metadata.annotations[{LEGACY_CLASS_ANNOTATION}]",
                legacy,
                "can not be set when the class field is also set",
            )


def validate_class(ic: networking_pb2.IngressClass) -> Iterator[FieldError]:
    controller = ic.spec.controller
    if not controller:
        yield FieldError("spec.controller", "Required value")
        return
    if len(controller) > MAX_CONTROLLER_LENGTH:
        yield FieldError(
            "spec.controller", f"Too long: may not be more than {MAX_CONTROLLER_LENGTH} bytes"
        )
    if not _DOMAIN_PREFIXED_PATH.fullmatch(controller):
        yield _invalid(
            "spec.controller", controller, 'must be a domain-prefixed path (such as "acme.io/foo")'
        )
    else:
        domain = controller.split("/", 1)[0]
        for message in names.dns1123_subdomain_errors(domain):
            yield _invalid("spec.controller", domain, message)


def validate_class_update(
    new: networking_pb2.IngressClass, old: networking_pb2.IngressClass
) -> Iterator[FieldError]:
    if new.spec.controller != old.spec.controller:
        yield _invalid("spec.controller", new.spec.controller, "field is immutable")

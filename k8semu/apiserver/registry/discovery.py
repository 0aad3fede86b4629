"""The EndpointSlice row (discovery.k8s.io/v1): checks as kube-apiserver's. addressType is
required, one of IPv4, IPv6, FQDN, and immutable; at most 1000 endpoints, each with 1 to
100 addresses (IPv4 ones well formed for an IPv4 slice); at most 100 ports, each number in
1..65535. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from k8semu.apiserver.validation import FieldError
from k8semu.pb.api.v1 import discovery_pb2

ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")
MAX_ENDPOINTS = 1000
MAX_ADDRESSES = 100
MAX_PORTS = 100


def _addresses(
    endpoint: discovery_pb2.Endpoint, address_type: str, path: str
) -> Iterator[FieldError]:
    if not endpoint.addresses:
        yield FieldError(f"{path}.addresses", "Required value: must contain at least 1 address")
    elif len(endpoint.addresses) > MAX_ADDRESSES:
        yield FieldError(f"{path}.addresses", f"Too many: {len(endpoint.addresses)}: must have"
                         f" at most {MAX_ADDRESSES} items")  # fmt: skip
    if address_type != "IPv4":
        return
    for j, address in enumerate(endpoint.addresses):
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            yield FieldError(f"{path}.addresses[{j}]", f'Invalid value: "{address}": must be a'
                             " valid IPv4 address")  # fmt: skip


def validate(eps: discovery_pb2.EndpointSlice) -> Iterator[FieldError]:
    if not eps.address_type:
        yield FieldError("addressType", "Required value")
    elif eps.address_type not in ADDRESS_TYPES:
        yield FieldError("addressType", f'Unsupported value: "{eps.address_type}": supported'
                         ' values: "FQDN", "IPv4", "IPv6"')  # fmt: skip
    if len(eps.endpoints) > MAX_ENDPOINTS:
        yield FieldError("endpoints", f"Too many: {len(eps.endpoints)}: must have at most"
                         f" {MAX_ENDPOINTS} items")  # fmt: skip
    for i, endpoint in enumerate(eps.endpoints):
        yield from _addresses(endpoint, eps.address_type, f"endpoints[{i}]")
    if len(eps.ports) > MAX_PORTS:
        yield FieldError("ports", f"Too many: {len(eps.ports)}: must have at most"
                         f" {MAX_PORTS} items")  # fmt: skip
    for i, port in enumerate(eps.ports):
        if port.HasField("port") and not 1 <= port.port <= 65535:
            yield FieldError(f"ports[{i}].port", f"Invalid value: {port.port}: must be between"
                             " 1 and 65535, inclusive")  # fmt: skip


def validate_update(
    new: discovery_pb2.EndpointSlice, old: discovery_pb2.EndpointSlice
) -> Iterator[FieldError]:
    if new.address_type != old.address_type:
        yield FieldError("addressType", f'Invalid value: "{new.address_type}": field is immutable')

"""The `kubernetes` Service, its Endpoints, and each API server's Lease.

Every API server, at start and then every `lease_seconds / 3`:

1. creates Service `default/kubernetes` if missing (clusterIP = the first address of the
   service range, port 443 named `https`: the REST API, as in Kubernetes, so pods'
   KUBERNETES_SERVICE_HOST/PORT lead kubectl and client libraries there; and port 6443
   named `grpc`: the gRPC API. A server serving no REST API has only `https`, its gRPC
   port, as before the REST API existed);
2. renews its own Lease `kube-system/apiserver-<hash of its address>` (holderIdentity
   `IP:PORT` of its gRPC API, leaseDurationSeconds, renewTime; label
   `apiserver.kubernetes.io/identity: kube-apiserver`; its REST port in the annotation
   `k8semu.io/rest-port`);
3. rewrites Endpoints `default/kubernetes` from the Leases that have not lapsed (renewTime +
   leaseDurationSeconds in the future), always including itself; one subset per port (API
   servers on one host listen on different ports). Lapsed Leases are deleted, so a dead API
   server's address leaves the Endpoints within about one lease duration; a server stopping
   gracefully deletes its Lease and takes its address out at once (`withdraw`).

This is Kubernetes' "lease" endpoint reconciler, with Lease objects instead of its TTL keys
under /registry/masterleases. Writes go through the servicer's own create/update paths, so
they are validated, compare-and-swapped and watched like any client's. Clocks of API servers on
different hosts are assumed roughly in sync (as Kubernetes assumes for node leases).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from dataclasses import dataclass
from typing import cast

from k8semu.api import kinds, timestamps
from k8semu.apiserver.errors import AlreadyExists, NotFound, StatusError
from k8semu.apiserver.objects import meta
from k8semu.apiserver.registry.scheduling import SYSTEM_CLASSES, system_class
from k8semu.apiserver.service import APIServicer
from k8semu.log import get_logger
from k8semu.pb.api.v1 import coordination_pb2, core_pb2

log = get_logger(__name__)

NAMESPACE = "default"
NAME = "kubernetes"
LEASE_NAMESPACE = "kube-system"
IDENTITY_LABEL = "apiserver.kubernetes.io/identity"
IDENTITY = "kube-apiserver"
PORT_NAME = "https"
SERVICE_PORT = 443
GRPC_PORT_NAME = "grpc"
GRPC_SERVICE_PORT = 6443
REST_PORT_ANNOTATION = "k8semu.io/rest-port"
TOKEN_PORT_ANNOTATION = "k8semu.io/token-grpc-port"


@dataclass(frozen=True, slots=True)
class Address:
    """An API server: its IP, gRPC port, REST port and token gRPC port (0: none; the
    latter is APIServerConfig.token_listen_address's); named by IP:gRPC port."""

    ip: str
    port: int
    rest_port: int = 0
    token_port: int = 0

    def __str__(self) -> str:
        return f"{self.ip}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Address | None:
        ip, _, port = text.rpartition(":")
        if not ip or not port.isdigit():
            return None
        return cls(ip, int(port))


def lease_name(address: Address) -> str:
    return "apiserver-" + hashlib.sha256(str(address).encode()).hexdigest()[:16]


def kubernetes_service(cluster_ip: str, port: int, rest_port: int = 0) -> core_pb2.Service:
    svc = core_pb2.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = NAME, NAMESPACE
    svc.metadata.labels.update({"component": "apiserver", "provider": "kubernetes"})
    svc.spec.type = "ClusterIP"
    svc.spec.cluster_ip = cluster_ip
    p = svc.spec.ports.add(name=PORT_NAME, port=SERVICE_PORT, protocol="TCP")
    p.target_port.int_val = rest_port or port
    if rest_port:
        g = svc.spec.ports.add(name=GRPC_PORT_NAME, port=GRPC_SERVICE_PORT, protocol="TCP")
        g.target_port.int_val = port
    return svc


def endpoints_subsets(addresses: list[Address]) -> list[core_pb2.EndpointSubset]:
    """One subset per (gRPC port, REST port), addresses sorted: the same input always gives
    the same object. `https` is the REST port (the gRPC one for a server without REST)."""
    by_port: dict[tuple[int, int], set[str]] = {}
    for a in addresses:
        # In-cluster gRPC clients have a token, not a certificate: the token listener.
        by_port.setdefault((a.token_port or a.port, a.rest_port), set()).add(a.ip)
    return [
        core_pb2.EndpointSubset(
            addresses=[core_pb2.EndpointAddress(ip=ip) for ip in sorted(ips)],
            ports=_endpoint_ports(port, rest_port),
        )
        for (port, rest_port), ips in sorted(by_port.items())
    ]


def _endpoint_ports(port: int, rest_port: int) -> list[core_pb2.EndpointPort]:
    if not rest_port:
        return [core_pb2.EndpointPort(name=PORT_NAME, port=port, protocol="TCP")]
    return [
        core_pb2.EndpointPort(name=PORT_NAME, port=rest_port, protocol="TCP"),
        core_pb2.EndpointPort(name=GRPC_PORT_NAME, port=port, protocol="TCP"),
    ]


def alive(lease: coordination_pb2.Lease, now: float) -> bool:
    spec = lease.spec
    if not spec.HasField("renew_time") or not spec.lease_duration_seconds:
        return False
    return spec.renew_time.ToNanoseconds() / 1e9 + spec.lease_duration_seconds > now


class KubernetesService:
    """The loop above, for one API server advertising `address`."""

    def __init__(self, servicer: APIServicer, address: Address, *, lease_seconds: float) -> None:
        self.servicer = servicer
        self.address = address
        self.lease_seconds = lease_seconds
        self.lease_name = lease_name(address)
        self._classes_made = False

    async def ensure_priority_classes(self) -> None:
        """The built-in PriorityClasses, as kube-apiserver creates them at start."""
        kind = kinds.for_resource("priorityclasses")
        for name in SYSTEM_CLASSES:
            with contextlib.suppress(AlreadyExists):
                await self.servicer.create(kind, "", system_class(name))
        self._classes_made = True

    async def run(self) -> None:
        """Forever: reconcile, then wait a third of the lease duration (errors are logged)."""
        while True:
            try:
                await self.reconcile()
            except StatusError as exc:
                log.info("kubernetes service reconcile failed", error=exc.message)
            await asyncio.sleep(self.lease_seconds / 3)

    async def reconcile(self) -> None:
        if not self._classes_made:
            await self.ensure_priority_classes()
        await self.ensure_service()
        await self.renew_lease()
        await self.update_endpoints()

    async def ensure_service(self) -> None:
        kind = kinds.for_resource("services")
        svc = kubernetes_service(
            self.servicer.ranges.kubernetes_ip, self.address.port, self.address.rest_port
        )
        try:
            stored, rv = await self.servicer.get_object(kind, NAMESPACE, NAME)
        except NotFound:
            with contextlib.suppress(AlreadyExists):
                await self.servicer.create(kind, NAMESPACE, svc)
            return
        current = cast(core_pb2.Service, stored)
        names = [p.name for p in current.spec.ports]
        if self.address.rest_port and GRPC_PORT_NAME not in names:
            # Made before the API servers served REST: add the `grpc` port (clients of the
            # gRPC API in pods read KUBERNETES_SERVICE_PORT_GRPC).
            new = core_pb2.Service()
            new.CopyFrom(current)
            new.spec.ClearField("ports")
            new.spec.ports.extend(svc.spec.ports)
            await self.servicer.update_object(kind, stored, rv, new)

    async def renew_lease(self) -> None:
        kind = kinds.for_resource("leases")
        now = time.time()
        try:
            stored, rv = await self.servicer.get_object(kind, LEASE_NAMESPACE, self.lease_name)
        except NotFound:
            lease = coordination_pb2.Lease(api_version="coordination.k8s.io/v1", kind="Lease")
            lease.metadata.name, lease.metadata.namespace = self.lease_name, LEASE_NAMESPACE
            lease.metadata.labels[IDENTITY_LABEL] = IDENTITY
            self._stamp(lease, now)
            lease.spec.acquire_time.CopyFrom(lease.spec.renew_time)
            with contextlib.suppress(AlreadyExists):
                await self.servicer.create(kind, LEASE_NAMESPACE, lease)
            return
        lease = coordination_pb2.Lease()
        lease.CopyFrom(cast(coordination_pb2.Lease, stored))
        self._stamp(lease, now)
        await self.servicer.update_object(kind, stored, rv, lease)

    def _stamp(self, lease: coordination_pb2.Lease, now: float) -> None:
        lease.spec.holder_identity = str(self.address)
        for annotation, port in (
            (REST_PORT_ANNOTATION, self.address.rest_port),
            (TOKEN_PORT_ANNOTATION, self.address.token_port),
        ):
            if port:
                lease.metadata.annotations[annotation] = str(port)
            else:
                lease.metadata.annotations.pop(annotation, None)
        lease.spec.lease_duration_seconds = max(1, round(self.lease_seconds))
        lease.spec.renew_time.CopyFrom(timestamps.micro_time_at(now))

    async def withdraw(self) -> None:
        """On a graceful stop: this server's Lease goes and its address leaves the Endpoints
        now, not a lease duration later (Kubernetes' RemoveEndpoints on shutdown)."""
        kind = kinds.for_resource("leases")
        with contextlib.suppress(NotFound):
            _, rv = await self.servicer.get_object(kind, LEASE_NAMESPACE, self.lease_name)
            await self.servicer.delete_if_unchanged(kind, LEASE_NAMESPACE, self.lease_name, rv)
        await self.update_endpoints(include_self=False)

    async def live_addresses(self, *, include_self: bool = True) -> list[Address]:
        """Addresses of the API servers whose Lease has not lapsed (lapsed ones are deleted)."""
        now = time.time()
        found = [self.address] if include_self else []
        for lease in await self.servicer.list_objects(
            kinds.for_resource("leases"), LEASE_NAMESPACE, f"{IDENTITY_LABEL}={IDENTITY}"
        ):
            lease = cast(coordination_pb2.Lease, lease)
            addr = Address.parse(lease.spec.holder_identity)
            if addr is None:
                continue
            annotations = meta(lease).annotations
            rest = annotations.get(REST_PORT_ANNOTATION, "")
            token = annotations.get(TOKEN_PORT_ANNOTATION, "")
            addr = Address(
                addr.ip,
                addr.port,
                int(rest) if rest.isdigit() else 0,
                int(token) if token.isdigit() else 0,
            )
            if alive(lease, now):
                if include_self or str(addr) != str(self.address):
                    found.append(addr)
            elif str(addr) != str(self.address):
                await self.servicer.delete_if_unchanged(
                    kinds.for_resource("leases"),
                    LEASE_NAMESPACE,
                    meta(lease).name,
                    int(meta(lease).resource_version),
                )
        # One per server (named IP:gRPC port); this server's own fields win over its Lease's.
        return sorted({str(a): a for a in reversed(found)}.values(), key=str)

    async def update_endpoints(self, *, include_self: bool = True) -> None:
        kind = kinds.for_resource("endpoints")
        want = endpoints_subsets(await self.live_addresses(include_self=include_self))
        try:
            stored, rv = await self.servicer.get_object(kind, NAMESPACE, NAME)
        except NotFound:
            ep = core_pb2.Endpoints(api_version="v1", kind="Endpoints")
            ep.metadata.name, ep.metadata.namespace = NAME, NAMESPACE
            ep.metadata.labels["endpointslice.kubernetes.io/skip-mirror"] = "true"
            ep.subsets.extend(want)
            with contextlib.suppress(AlreadyExists):
                await self.servicer.create(kind, NAMESPACE, ep)
            return
        current = cast(core_pb2.Endpoints, stored)
        if list(current.subsets) == want:
            return
        ep = core_pb2.Endpoints()
        ep.CopyFrom(current)
        del ep.subsets[:]
        ep.subsets.extend(want)
        await self.servicer.update_object(kind, stored, rv, ep)

"""Endpoints: for every Service with a selector, an Endpoints object of the same name listing
the pods behind it (Kubernetes' endpoints controller).

- Pods in the Service's namespace whose labels include every selector pair are candidates;
  pods without status.podIP, being deleted, or Succeeded/Failed are left out. A candidate
  whose Ready condition is True goes to `addresses`, any other to `notReadyAddresses`
  (ip = podIP, nodeName, targetRef to the pod; hostname for a headless Service when the pod's
  spec.subdomain is the Service's name).
- Ports: each Service port becomes an EndpointPort named like it, with the protocol of the
  Service port and the port number of its targetPort: a number as it is, a name looked up in
  the pod's containers' ports (same name and protocol; a pod that does not have it is left
  out of that port). Addresses with the same set of ports share one subset (Kubernetes'
  RepackSubsets), so pods that resolve a named port to different numbers land in different
  subsets. A headless Service without ports lists its addresses with no ports; any other
  Service without ports gets no addresses.
- The Endpoints carries the Service's labels (plus `service.kubernetes.io/headless` for a
  headless Service) and is written only when what was computed differs from what is stored.
- A Service without a selector is left alone: its Endpoints are the user's. When the Service
  goes, its Endpoints go.

Pod events enqueue the Services (of the pod's namespace) that select the pod, before and
after the change, so a readiness change reaches the Endpoints within one reconcile.

Owns the Endpoints of Services with selectors; it never writes Services or Pods.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from k8semu.client import (
    NAMESPACE_INDEX,
    AlreadyExists,
    Client,
    Informer,
    index_by_namespace,
    object_key,
)
from k8semu.client.controller import run_workers
from k8semu.client.workqueue import WorkQueue
from k8semu.controllers._pods import copy_of, is_pod_ready
from k8semu.controllers.context import ControllerContext
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2, meta_pb2

log = get_logger(__name__)

HEADLESS_LABEL = "service.kubernetes.io/headless"
_TERMINAL_PHASES = ("Succeeded", "Failed")

# One address's identity in a subset, and one port's.
_PortKey = tuple[str, int, str, str]  # name, port, protocol, appProtocol


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """A Service selector (a plain map) selects labels that include every pair; an empty
    selector selects nothing here (such Services are not managed)."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def is_headless(service: core_pb2.Service) -> bool:
    return service.spec.cluster_ip == "None"


def resolve_port(pod: core_pb2.Pod, port: core_pb2.ServicePort) -> int | None:
    """The number `port`'s targetPort means on `pod`; None when a named port is not there."""
    which = port.target_port.WhichOneof("value")
    if which == "int_val" and port.target_port.int_val:
        return port.target_port.int_val
    if which == "str_val" and port.target_port.str_val:
        name = port.target_port.str_val
        if name.isdigit():
            return int(name)  # "8080" as a string: a number all the same
        protocol = port.protocol or "TCP"
        for container in pod.spec.containers:
            for cp in container.ports:
                if cp.name == name and (cp.protocol or "TCP") == protocol:
                    return cp.container_port
        return None
    return port.port  # unset targetPort: the API server defaults it to port


def _address(pod: core_pb2.Pod, service: core_pb2.Service) -> core_pb2.EndpointAddress:
    addr = core_pb2.EndpointAddress(ip=pod.status.pod_ip)
    if pod.spec.node_name:
        addr.node_name = pod.spec.node_name
    if is_headless(service) and pod.spec.hostname and pod.spec.subdomain == service.metadata.name:
        addr.hostname = pod.spec.hostname
    addr.target_ref.CopyFrom(pod_reference(pod))
    return addr


def pod_reference(pod: core_pb2.Pod) -> meta_pb2.ObjectReference:
    """The targetRef of an endpoint (Endpoints and EndpointSlices)."""
    m = pod.metadata
    return meta_pb2.ObjectReference(kind="Pod", namespace=m.namespace, name=m.name, uid=m.uid)


def _endpoint_port(port: core_pb2.ServicePort, number: int) -> core_pb2.EndpointPort:
    ep = core_pb2.EndpointPort(name=port.name, port=number, protocol=port.protocol or "TCP")
    if port.app_protocol:
        ep.app_protocol = port.app_protocol
    return ep


def _port_key(ep: core_pb2.EndpointPort) -> _PortKey:
    return (ep.name, ep.port, ep.protocol, ep.app_protocol)


def _address_key(addr: core_pb2.EndpointAddress) -> tuple[str, str, str]:
    return (addr.ip, addr.target_ref.namespace, addr.target_ref.name)


def in_endpoints(pod: core_pb2.Pod) -> bool:
    """Whether a pod is listed at all: it has an IP, is not being deleted, is not finished."""
    return (
        bool(pod.status.pod_ip)
        and not pod.metadata.HasField("deletion_timestamp")
        and pod.status.phase not in _TERMINAL_PHASES
    )


def compute_subsets(
    service: core_pb2.Service, pods: Iterable[core_pb2.Pod]
) -> list[core_pb2.EndpointSubset]:
    """The Endpoints subsets of `service` given the pods it selects (already filtered by
    selector); deterministic order: subsets by their ports, addresses by IP then pod."""
    # address key -> (address, ready, ports)
    entries: dict[tuple[str, str, str], tuple[core_pb2.EndpointAddress, bool, set[_PortKey]]] = {}
    port_messages: dict[_PortKey, core_pb2.EndpointPort] = {}
    headless_no_ports = is_headless(service) and not service.spec.ports
    for pod in pods:
        if not in_endpoints(pod):
            continue
        ports: set[_PortKey] = set()
        for port in service.spec.ports:
            number = resolve_port(pod, port)
            if number is None:
                continue
            ep = _endpoint_port(port, number)
            port_messages[_port_key(ep)] = ep
            ports.add(_port_key(ep))
        if not ports and not headless_no_ports:
            continue
        addr = _address(pod, service)
        entries[_address_key(addr)] = (addr, is_pod_ready(pod), ports)
    groups: dict[tuple[_PortKey, ...], core_pb2.EndpointSubset] = {}
    for key in sorted(entries):
        addr, ready, ports = entries[key]
        port_set = tuple(sorted(ports))
        subset = groups.get(port_set)
        if subset is None:
            subset = core_pb2.EndpointSubset(ports=[port_messages[p] for p in port_set])
            groups[port_set] = subset
        (subset.addresses if ready else subset.not_ready_addresses).append(addr)
    return [groups[k] for k in sorted(groups)]


def desired_labels(service: core_pb2.Service) -> dict[str, str]:
    labels = dict(service.metadata.labels)
    if is_headless(service):
        labels[HEADLESS_LABEL] = ""
    return labels


class EndpointsController:
    """See the module docstring. Keys are Service keys ("namespace/name")."""

    name = "endpoints"

    def __init__(self, ctx: ControllerContext) -> None:
        self._client: Client = ctx.client
        self._workers = ctx.config.workers
        self.services: Informer[core_pb2.Service] = ctx.informers.informer(
            core_pb2.Service, indexers={NAMESPACE_INDEX: index_by_namespace}
        )
        self.pods: Informer[core_pb2.Pod] = ctx.informers.informer(
            core_pb2.Pod, indexers={NAMESPACE_INDEX: index_by_namespace}
        )
        self.endpoints: Informer[core_pb2.Endpoints] = ctx.informers.informer(core_pb2.Endpoints)
        self.queue: WorkQueue[str] = WorkQueue(name="endpoints")

        def enqueue(obj: core_pb2.Service | core_pb2.Endpoints) -> None:
            self.queue.add(object_key(obj))

        self.services.add_event_handler(
            on_add=enqueue,
            on_update=lambda _o, s: enqueue(s),
            on_delete=enqueue,
        )
        # Someone else changed or deleted an Endpoints we own: put it right.
        self.endpoints.add_event_handler(
            on_update=lambda _o, e: enqueue(e),
            on_delete=enqueue,
        )
        self.pods.add_event_handler(
            on_add=lambda p: self._pod_changed(None, p),
            on_update=self._pod_changed,
            on_delete=lambda p: self._pod_changed(None, p),
        )

    def _pod_changed(self, old: core_pb2.Pod | None, new: core_pb2.Pod) -> None:
        if old is not None and old.metadata.resource_version == new.metadata.resource_version:
            return  # a resync: nothing changed (the services' own resync covers drift)
        namespace = new.metadata.namespace
        for service in self.services.cache.by_index(NAMESPACE_INDEX, namespace):
            selector = service.spec.selector
            if selects(selector, new.metadata.labels) or (
                old is not None and selects(selector, old.metadata.labels)
            ):
                self.queue.add(object_key(service))

    async def run(self) -> None:
        for informer in (self.services, self.pods, self.endpoints):
            await informer.wait_synced()
        log.info("controller started", controller=self.name, workers=self._workers)
        await run_workers(self.queue, self.reconcile, self._workers, name=self.name)

    async def reconcile(self, key: str) -> None:
        namespace, _, name = key.rpartition("/")
        service = self.services.cache.get(key)
        if service is None:
            if self.endpoints.cache.get(key) is not None:
                log.info("deleting the endpoints of a deleted service", service=key)
                # NotFound: gone already, which the worker loop takes as done.
                await self._client.delete(core_pb2.Endpoints, name, namespace=namespace)
            return
        selector = service.spec.selector
        if not selector:
            return  # user-managed Endpoints
        pods = [
            p
            for p in self.pods.cache.by_index(NAMESPACE_INDEX, namespace)
            if selects(selector, p.metadata.labels)
        ]
        subsets = compute_subsets(service, pods)
        labels = desired_labels(service)
        current = self.endpoints.cache.get(key)
        if current is None:
            ep = core_pb2.Endpoints()
            ep.metadata.name = name
            ep.metadata.namespace = namespace
            ep.metadata.labels.update(labels)
            ep.subsets.extend(subsets)
            try:
                await self._client.create(ep)
                return
            except AlreadyExists:
                # Our cache has not seen it yet (or someone made one): compare with the real one.
                current = await self._client.get(core_pb2.Endpoints, name, namespace=namespace)
        if list(current.subsets) == subsets and dict(current.metadata.labels) == labels:
            return
        new = copy_of(current)
        new.metadata.labels.clear()
        new.metadata.labels.update(labels)
        del new.subsets[:]
        new.subsets.extend(subsets)
        await self._client.update(new)

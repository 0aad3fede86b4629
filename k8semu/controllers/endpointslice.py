"""EndpointSlices (discovery.k8s.io/v1): for every Service with a selector, the slices listing
the pods behind it, kept alongside the Endpoints of `endpoints.py` (Kubernetes' endpointslice
controller). The proxy and the DNS still read Endpoints; slices are for clients that want
them (kubectl, tools written against current Kubernetes).

- The pods are those `endpoints.py` selects, with a podIP and not Succeeded/Failed; unlike
  Endpoints, pods being deleted stay listed, with `terminating: true`. Conditions as
  Kubernetes': `ready` = Ready and not terminating, `serving` = Ready, `terminating`.
  Each endpoint has the pod's IP, nodeName, targetRef, and the hostname of a headless
  Service's pod whose subdomain is the Service's name.
- Ports: each Service port with the number its targetPort means on the pod (named ports
  looked up as for Endpoints); pods with the same ports share slices, at most
  `MAX_ENDPOINTS` (100, Kubernetes' --max-endpoints-per-slice default) endpoints per slice,
  addressType IPv4.
- Slices are named `<service>-<n>` (Kubernetes picks random suffixes; fixed ones let a
  create that races the cache find its slice instead of making a second), labelled
  `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by`, with the
  Service's labels, and owned by the Service (so the garbage collector removes them with
  it; the controller also deletes its slices of a Service that has gone). A reconcile
  updates the slices whose content changed, creates what is missing and deletes the rest.

Owns the EndpointSlices it labels as managed by it; never writes Services, Pods or Endpoints.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from k8semu.client import (
    NAMESPACE_INDEX,
    AlreadyExists,
    Client,
    Informer,
    NotFound,
    index_by_namespace,
    object_key,
)
from k8semu.client.controller import run_workers
from k8semu.client.workqueue import WorkQueue
from k8semu.controllers._pods import copy_of, is_pod_ready, new_controller_ref
from k8semu.controllers.context import ControllerContext
from k8semu.controllers.endpoints import is_headless, pod_reference, resolve_port, selects
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2, discovery_pb2

log = get_logger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
MAX_ENDPOINTS = 100

_PortKey = tuple[str, int, str, str]  # name, port, protocol, appProtocol


def _endpoint(pod: core_pb2.Pod, service: core_pb2.Service) -> discovery_pb2.Endpoint:
    terminating = pod.metadata.HasField("deletion_timestamp")
    ready = is_pod_ready(pod)
    ep = discovery_pb2.Endpoint(addresses=[pod.status.pod_ip])
    ep.conditions.ready = ready and not terminating
    ep.conditions.serving = ready
    ep.conditions.terminating = terminating
    if pod.spec.node_name:
        ep.node_name = pod.spec.node_name
    if is_headless(service) and pod.spec.hostname and pod.spec.subdomain == service.metadata.name:
        ep.hostname = pod.spec.hostname
    ep.target_ref.CopyFrom(pod_reference(pod))
    return ep


def _ports(pod: core_pb2.Pod, service: core_pb2.Service) -> tuple[_PortKey, ...] | None:
    """The pod's ports for `service` (None: it has none of them, so it is not listed)."""
    keys: list[_PortKey] = []
    for port in service.spec.ports:
        number = resolve_port(pod, port)
        if number is not None:
            keys.append((port.name, number, port.protocol or "TCP", port.app_protocol))
    if not keys and not (is_headless(service) and not service.spec.ports):
        return None
    return tuple(sorted(keys))


def _slice_port(key: _PortKey) -> discovery_pb2.EndpointSlicePort:
    name, number, protocol, app_protocol = key
    port = discovery_pb2.EndpointSlicePort(name=name, port=number, protocol=protocol)
    if app_protocol:
        port.app_protocol = app_protocol
    return port


Slice = tuple[list[discovery_pb2.EndpointSlicePort], list[discovery_pb2.Endpoint]]


def slice_name(service: str, index: int) -> str:
    return f"{service}-{index}"


def desired_slices(service: core_pb2.Service, pods: Iterable[core_pb2.Pod]) -> list[Slice]:
    """(ports, endpoints) of each slice `service` should have, given the pods it selects;
    deterministic: groups by their ports, endpoints by IP then pod name."""
    groups: dict[tuple[_PortKey, ...], list[tuple[str, str, discovery_pb2.Endpoint]]] = {}
    for pod in pods:
        if not pod.status.pod_ip or pod.status.phase in ("Succeeded", "Failed"):
            continue
        ports = _ports(pod, service)
        if ports is None:
            continue
        entry = (pod.status.pod_ip, pod.metadata.name, _endpoint(pod, service))
        groups.setdefault(ports, []).append(entry)
    out: list[Slice] = []
    for ports in sorted(groups):
        endpoints = [ep for _, _, ep in sorted(groups[ports], key=lambda e: e[:2])]
        for start in range(0, len(endpoints), MAX_ENDPOINTS):
            out.append(([_slice_port(p) for p in ports], endpoints[start : start + MAX_ENDPOINTS]))
    return out


def _labels(service: core_pb2.Service) -> dict[str, str]:
    return {
        **service.metadata.labels,
        SERVICE_NAME_LABEL: service.metadata.name,
        MANAGED_BY_LABEL: MANAGED_BY,
    }


class EndpointSliceController:
    """See the module docstring. Keys are Service keys ("namespace/name")."""

    name = "endpointslice"

    def __init__(self, ctx: ControllerContext) -> None:
        self._client: Client = ctx.client
        self._workers = ctx.config.workers
        by_ns = {NAMESPACE_INDEX: index_by_namespace}
        self.services: Informer[core_pb2.Service] = ctx.informers.informer(
            core_pb2.Service, indexers=by_ns
        )
        self.pods: Informer[core_pb2.Pod] = ctx.informers.informer(core_pb2.Pod, indexers=by_ns)
        self.slices: Informer[discovery_pb2.EndpointSlice] = ctx.informers.informer(
            discovery_pb2.EndpointSlice, indexers=by_ns
        )
        self.queue: WorkQueue[str] = WorkQueue(name=self.name)
        self.services.add_event_handler(
            on_add=self._enqueue, on_update=lambda _o, s: self._enqueue(s), on_delete=self._enqueue
        )
        # Someone else changed or deleted one of our slices: put it right.
        self.slices.add_event_handler(
            on_update=lambda _o, s: self._slice_changed(s), on_delete=self._slice_changed
        )
        self.pods.add_event_handler(
            on_add=lambda p: self._pod_changed(None, p),
            on_update=self._pod_changed,
            on_delete=lambda p: self._pod_changed(None, p),
        )

    def _enqueue(self, service: core_pb2.Service) -> None:
        self.queue.add(object_key(service))

    def _slice_changed(self, eps: discovery_pb2.EndpointSlice) -> None:
        service = eps.metadata.labels.get(SERVICE_NAME_LABEL)
        if service and eps.metadata.labels.get(MANAGED_BY_LABEL) == MANAGED_BY:
            self.queue.add(f"{eps.metadata.namespace}/{service}")

    def _pod_changed(self, old: core_pb2.Pod | None, new: core_pb2.Pod) -> None:
        if old is not None and old.metadata.resource_version == new.metadata.resource_version:
            return
        for service in self.services.cache.by_index(NAMESPACE_INDEX, new.metadata.namespace):
            selector = service.spec.selector
            if selects(selector, new.metadata.labels) or (
                old is not None and selects(selector, old.metadata.labels)
            ):
                self._enqueue(service)

    async def run(self) -> None:
        for informer in (self.services, self.pods, self.slices):
            await informer.wait_synced()
        log.info("controller started", controller=self.name, workers=self._workers)
        await run_workers(self.queue, self.reconcile, self._workers, name=self.name)

    def _owned(self, namespace: str, name: str) -> list[discovery_pb2.EndpointSlice]:
        return sorted(
            (
                s
                for s in self.slices.cache.by_index(NAMESPACE_INDEX, namespace)
                if s.metadata.labels.get(SERVICE_NAME_LABEL) == name
                and s.metadata.labels.get(MANAGED_BY_LABEL) == MANAGED_BY
            ),
            key=lambda s: s.metadata.name,
        )

    async def reconcile(self, key: str) -> None:
        namespace, _, name = key.rpartition("/")
        service = self.services.cache.get(key)
        existing = {s.metadata.name: s for s in self._owned(namespace, name)}
        wanted: list[tuple[str, Slice]] = []
        if service is not None and service.spec.selector:
            pods = [
                p
                for p in self.pods.cache.by_index(NAMESPACE_INDEX, namespace)
                if selects(service.spec.selector, p.metadata.labels)
            ]
            # A Service with no endpoints still has one slice, empty.
            slices = desired_slices(service, pods) or [([], [])]
            wanted = [(slice_name(name, i), s) for i, s in enumerate(slices)]
            for slice_name_, (ports, endpoints) in wanted:
                await self._write(service, slice_name_, existing.get(slice_name_), ports, endpoints)
        for gone in sorted(set(existing) - {n for n, _ in wanted}):
            with contextlib.suppress(NotFound):
                await self._client.delete(discovery_pb2.EndpointSlice, gone, namespace=namespace)

    async def _write(
        self,
        service: core_pb2.Service,
        name: str,
        current: discovery_pb2.EndpointSlice | None,
        ports: list[discovery_pb2.EndpointSlicePort],
        endpoints: list[discovery_pb2.Endpoint],
    ) -> None:
        labels = _labels(service)
        namespace = service.metadata.namespace
        if current is None:
            eps = discovery_pb2.EndpointSlice(address_type="IPv4")
            eps.metadata.name, eps.metadata.namespace = name, namespace
            eps.metadata.labels.update(labels)
            eps.metadata.owner_references.append(
                new_controller_ref(service, api_version="v1", kind="Service")
            )
            eps.ports.extend(ports)
            eps.endpoints.extend(endpoints)
            try:
                await self._client.create(eps)
                return
            except AlreadyExists:
                # Our cache has not seen it yet (or it is someone else's): look at it.
                current = await self._client.get(
                    discovery_pb2.EndpointSlice, name, namespace=namespace
                )
                if current.metadata.labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
                    log.warning("an EndpointSlice not ours has our name", slice=name)
                    return
        if (
            list(current.ports) == ports
            and list(current.endpoints) == endpoints
            and dict(current.metadata.labels) == labels
        ):
            return
        new = copy_of(current)
        new.metadata.labels.clear()
        new.metadata.labels.update(labels)
        del new.ports[:]
        new.ports.extend(ports)
        del new.endpoints[:]
        new.endpoints.extend(endpoints)
        await self._client.update(new)

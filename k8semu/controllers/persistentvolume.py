"""The PersistentVolume controller: binds claims to volumes and provisions local volumes, as
Kubernetes' persistentvolume-binder with a local-path provisioner built in.

Per claim (and per volume), level-triggered; `decide` is the pure choice for one claim:

- **Bound claims** stay bound; a claim whose volume is gone is `Lost`.
- **Static binding**: a claim names its volume (spec.volumeName), or takes the smallest
  Available volume of its class whose access modes include the claim's and whose capacity
  covers the request. The volume's claimRef is written first, then the claim's volumeName,
  then both phases (Bound), so a crash half-way is finished by the next pass.
- **Dynamic provisioning**: otherwise, the claim's class (spec.storageClassName; unset: the
  class annotated `storageclass.kubernetes.io/is-default-class: "true"`) with provisioner
  `k8semu.io/local` gets a volume `pvc-<claim uid>`: a directory on one node, named by a
  `local` source and a node affinity to that node. Which node: WaitForFirstConsumer waits
  for a pod that uses the claim to be scheduled (the scheduler does not look at claims; the
  kubelet holds the pod's containers until the claim is bound) and takes its node;
  Immediate takes the Ready node with the fewest provisioned volumes. The directory is under
  the node's `k8semu.io/local-storage-dir` annotation (the kubelet's root dir; its kubelet
  creates the directory when a pod mounts it). A class that does not exist, or another
  provisioner, leaves the claim Pending with a Warning Event.
- **Release**: when a bound volume's claim is gone, reclaimPolicy Retain makes it Released
  (kept, with its data); Delete deletes the volume object. A provisioned volume carries the
  finalizer `k8semu.io/local-volume`: the kubelet of its node removes the directory, then
  the finalizer, so the object goes only when the data has.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from k8semu.api.quantity import parse_quantity
from k8semu.client import (
    NAMESPACE_INDEX,
    AlreadyExists,
    Conflict,
    NotFound,
    object_key,
)
from k8semu.client.events import NORMAL, WARNING
from k8semu.controllers import _pods
from k8semu.controllers.context import ControllerContext, KeyedController
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2, storage_pb2

log = get_logger(__name__)

PROVISIONER = "k8semu.io/local"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
STORAGE_DIR_ANNOTATION = "k8semu.io/local-storage-dir"
CLEANUP_FINALIZER = "k8semu.io/local-volume"
HOSTNAME_LABEL = "kubernetes.io/hostname"


def storage_request(claim: core_pb2.PersistentVolumeClaim) -> int:
    return int(parse_quantity(claim.spec.resources.requests.get("storage", "0")).amount)


def volume_node(pv: core_pb2.PersistentVolume) -> str:
    """The node a volume's node affinity names (one hostname or metadata.name), else ""."""
    for term in pv.spec.node_affinity.required.node_selector_terms:
        for req in [*term.match_expressions, *term.match_fields]:
            if req.key in (HOSTNAME_LABEL, "metadata.name") and len(req.values) == 1:
                return str(req.values[0])
    return ""


def class_of(
    claim: core_pb2.PersistentVolumeClaim, classes: Iterable[storage_pb2.StorageClass]
) -> tuple[str, storage_pb2.StorageClass | None]:
    """(class name, the class) a claim asks for; ("", None) for no class."""
    by_name = {c.metadata.name: c for c in classes}
    if claim.spec.HasField("storage_class_name"):
        name = claim.spec.storage_class_name
        return name, by_name.get(name)
    defaults = [c for c in by_name.values() if _is_default(c)]
    if not defaults:
        return "", None
    chosen = sorted(defaults, key=lambda c: c.metadata.name)[0]
    return chosen.metadata.name, chosen


def _is_default(sc: storage_pb2.StorageClass) -> bool:
    return sc.metadata.annotations.get(DEFAULT_CLASS_ANNOTATION) == "true"


def matches(pv: core_pb2.PersistentVolume, claim: core_pb2.PersistentVolumeClaim, cls: str) -> bool:
    """`pv` can serve `claim` (class `cls`): free or reserved for it, same class, modes,
    enough capacity."""
    ref = pv.spec.claim_ref
    if ref.name and (ref.namespace, ref.name) != (claim.metadata.namespace, claim.metadata.name):
        return False
    if pv.status.phase not in ("Available", "Pending", "") or pv.metadata.HasField(
        "deletion_timestamp"
    ):
        return False
    if pv.spec.storage_class_name != cls:
        return False
    if not set(claim.spec.access_modes) <= set(pv.spec.access_modes):
        return False
    capacity = int(parse_quantity(pv.spec.capacity.get("storage", "0")).amount)
    return capacity >= storage_request(claim)


@dataclass(frozen=True, slots=True)
class Decision:
    """One of: bind to `volume` (a name), provision on `node`, or wait (with `reason` and
    `message` for an Event when `warn`)."""

    volume: str = ""
    node: str = ""
    reason: str = ""
    message: str = ""
    warn: bool = False


def decide(
    claim: core_pb2.PersistentVolumeClaim,
    volumes: Iterable[core_pb2.PersistentVolume],
    classes: Iterable[storage_pb2.StorageClass],
    consumer_node: str,
    nodes: Iterable[core_pb2.Node],
) -> Decision:
    """What to do for an unbound claim; `consumer_node` is where a pod using it is bound."""
    cls_name, cls = class_of(claim, classes)
    if claim.spec.volume_name:
        return Decision(volume=claim.spec.volume_name)
    free = sorted(
        (pv for pv in volumes if matches(pv, claim, cls_name)),
        key=lambda pv: (not pv.spec.claim_ref.name, parse_quantity(
            pv.spec.capacity.get("storage", "0")).amount, pv.metadata.name),
    )  # fmt: skip
    if free:
        return Decision(volume=free[0].metadata.name)
    if not cls_name:
        return Decision(reason="FailedBinding", message="no persistent volumes available for"
                        " this claim and no storage class is set")  # fmt: skip
    if cls is None:
        return Decision(reason="ProvisioningFailed", warn=True,
                        message=f'storageclass.storage.k8s.io "{cls_name}" not found')  # fmt: skip
    if cls.provisioner != PROVISIONER:
        return Decision(reason="ExternalProvisioning", message="Waiting for a volume to be"
                        f' created by the external provisioner "{cls.provisioner}"')  # fmt: skip
    if cls.volume_binding_mode == "WaitForFirstConsumer":
        if not consumer_node:
            return Decision(reason="WaitForFirstConsumer", message="waiting for first consumer"
                            " to be created before binding")  # fmt: skip
        return Decision(node=consumer_node)
    ready = [n for n in nodes if _node_ready(n) and not n.spec.unschedulable]
    if not ready:
        return Decision(reason="ProvisioningFailed", message="no Ready node to provision on")
    load = {n.metadata.name: 0 for n in ready}
    for pv in volumes:
        if (node := volume_node(pv)) in load:
            load[node] += 1
    return Decision(node=min(load, key=lambda n: (load[n], n)))


def _node_ready(node: core_pb2.Node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)


def provisioned_volume(
    claim: core_pb2.PersistentVolumeClaim, cls: storage_pb2.StorageClass, node: core_pb2.Node
) -> core_pb2.PersistentVolume:
    """The local volume for `claim` on `node`, already reserved for the claim."""
    name = f"pvc-{claim.metadata.uid}"
    root = node.metadata.annotations.get(STORAGE_DIR_ANNOTATION) or os.path.join(
        tempfile.gettempdir(), "k8semu-local", node.metadata.name
    )
    pv = core_pb2.PersistentVolume(api_version="v1", kind="PersistentVolume")
    pv.metadata.name = name
    pv.metadata.annotations[PROVISIONED_BY] = PROVISIONER
    pv.metadata.finalizers.append(CLEANUP_FINALIZER)
    pv.spec.capacity["storage"] = claim.spec.resources.requests.get("storage", "0")
    pv.spec.access_modes.extend(claim.spec.access_modes)
    pv.spec.persistent_volume_reclaim_policy = cls.reclaim_policy or "Delete"
    pv.spec.storage_class_name = cls.metadata.name
    pv.spec.local.path = os.path.join(root, name)
    term = pv.spec.node_affinity.required.node_selector_terms.add()
    term.match_expressions.add(key=HOSTNAME_LABEL, operator="In", values=[node.metadata.name])
    _reserve(pv, claim)
    return pv


def _reserve(pv: core_pb2.PersistentVolume, claim: core_pb2.PersistentVolumeClaim) -> None:
    ref = pv.spec.claim_ref
    ref.kind, ref.api_version = "PersistentVolumeClaim", "v1"
    ref.namespace, ref.name, ref.uid = (
        claim.metadata.namespace,
        claim.metadata.name,
        claim.metadata.uid,
    )


def claim_users(pod: core_pb2.Pod) -> list[str]:
    return [v.persistent_volume_claim.claim_name for v in pod.spec.volumes if
            v.HasField("persistent_volume_claim")]  # fmt: skip


class PersistentVolumeController(KeyedController):
    """One instance per process; `run()` after the context's informers are started. Keys are
    `claim:<ns>/<name>` and `volume:<name>`."""

    name = "persistentvolume"

    def __init__(self, ctx: ControllerContext, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(ctx, clock=clock)
        self.claims = self.informer(core_pb2.PersistentVolumeClaim)
        self.volumes = ctx.informers.informer(core_pb2.PersistentVolume)
        self.classes = ctx.informers.informer(storage_pb2.StorageClass)
        self.nodes = ctx.informers.informer(core_pb2.Node)
        self.pods = self.informer(core_pb2.Pod)
        self.watch(self.claims, self._claim, deleted=self._claim_gone)
        self.watch(self.volumes, self._volume, deleted=self._volume)
        self.classes.add_event_handler(on_add=lambda sc: self._all_pending())
        self.pods.add_event_handler(
            on_add=self._pod, on_update=lambda o, n: self._pod(n) if not o.spec.node_name else None
        )

    def _claim(self, claim: core_pb2.PersistentVolumeClaim) -> None:
        self.queue.add("claim:" + object_key(claim))

    def _claim_gone(self, claim: core_pb2.PersistentVolumeClaim) -> None:
        if claim.spec.volume_name:
            self.queue.add("volume:" + claim.spec.volume_name)

    def _volume(self, pv: core_pb2.PersistentVolume) -> None:
        self.queue.add("volume:" + pv.metadata.name)
        ref = pv.spec.claim_ref
        if ref.name:
            self.queue.add(f"claim:{ref.namespace}/{ref.name}")

    def _all_pending(self) -> None:
        for claim in self.claims.cache.list():
            if claim.status.phase != "Bound":
                self._claim(claim)

    def _pod(self, pod: core_pb2.Pod) -> None:
        if pod.spec.node_name:
            for name in claim_users(pod):
                self.queue.add(f"claim:{pod.metadata.namespace}/{name}")

    async def reconcile(self, key: str) -> None:
        what, _, name = key.partition(":")
        if what == "claim":
            claim = self.claims.cache.get(name)
            if claim is not None and not claim.metadata.HasField("deletion_timestamp"):
                await self._sync_claim(claim)
        elif what == "volume":
            pv = self.volumes.cache.get(name)
            if pv is not None:
                await self._sync_volume(pv)

    def _consumer_node(self, claim: core_pb2.PersistentVolumeClaim) -> str:
        for pod in self.pods.cache.by_index(NAMESPACE_INDEX, claim.metadata.namespace):
            if pod.spec.node_name and claim.metadata.name in claim_users(pod):
                return pod.spec.node_name
        return ""

    async def _sync_claim(self, claim: core_pb2.PersistentVolumeClaim) -> None:
        if claim.status.phase == "Bound" or claim.status.phase == "Lost":
            if self.volumes.cache.get(claim.spec.volume_name) is None:
                await self._claim_status(claim, "Lost", None)
            return
        d = decide(claim, self.volumes.cache.list(), self.classes.cache.list(),
                   self._consumer_node(claim), self.nodes.cache.list())  # fmt: skip
        if d.volume:
            await self._bind(claim, d.volume)
        elif d.node:
            await self._provision(claim, d.node)
        elif d.reason:
            kind = WARNING if d.warn else NORMAL
            self.ctx.recorder.event(claim, kind, d.reason, d.message)

    async def _provision(self, claim: core_pb2.PersistentVolumeClaim, node_name: str) -> None:
        _, cls = class_of(claim, self.classes.cache.list())
        node = self.nodes.cache.get(node_name)
        if cls is None or node is None:
            return
        pv = provisioned_volume(claim, cls, node)
        try:
            await self.client.create(pv)
        except AlreadyExists:
            pass  # made by an earlier pass: bind it below
        else:
            self.ctx.recorder.event(
                claim, NORMAL, "ProvisioningSucceeded",
                f"Successfully provisioned volume {pv.metadata.name} on node {node_name}",
            )  # fmt: skip
        await self._bind(claim, pv.metadata.name)

    async def _bind(self, claim: core_pb2.PersistentVolumeClaim, volume: str) -> None:
        """Volume's claimRef, the claim's volumeName, then both Bound (each step idempotent)."""
        try:
            pv = await self.client.get(core_pb2.PersistentVolume, volume)
        except NotFound:
            self.ctx.recorder.event(claim, WARNING, "FailedBinding",
                                    f"volume {volume!r} not found")  # fmt: skip
            return
        ref = pv.spec.claim_ref
        if (
            ref.name
            and (ref.namespace, ref.name) != (claim.metadata.namespace, claim.metadata.name)
        ) or (ref.uid and ref.uid != claim.metadata.uid):
            self.ctx.recorder.event(claim, WARNING, "FailedBinding",
                                    f"volume {volume!r} is bound to another claim")  # fmt: skip
            return
        if not ref.uid:
            _reserve(pv, claim)
            pv = await self.client.update(pv)
        if pv.status.phase != "Bound":
            pv.status.phase = "Bound"
            await self.client.update_status(pv)
        if claim.spec.volume_name != volume:
            claim = _pods.copy_of(claim)
            claim.spec.volume_name = volume
            claim = await self.client.update(claim)
        await self._claim_status(claim, "Bound", pv)

    async def _claim_status(
        self,
        claim: core_pb2.PersistentVolumeClaim,
        phase: str,
        pv: core_pb2.PersistentVolume | None,
    ) -> None:
        new = _pods.copy_of(claim)
        new.status.phase = phase
        if pv is not None:
            del new.status.access_modes[:]
            new.status.access_modes.extend(pv.spec.access_modes)
            new.status.capacity.clear()
            new.status.capacity.update(pv.spec.capacity)
        if new.status != claim.status:
            try:
                await self.client.update_status(new)
            except Conflict:
                self._claim(claim)

    async def _sync_volume(self, pv: core_pb2.PersistentVolume) -> None:
        ref = pv.spec.claim_ref
        if pv.metadata.HasField("deletion_timestamp"):
            return
        if not ref.name:
            if pv.status.phase in ("", "Pending"):
                await self._volume_phase(pv, "Available")
            return
        claim = self.claims.cache.get(f"{ref.namespace}/{ref.name}")
        if claim is not None and (not ref.uid or claim.metadata.uid == ref.uid):
            return
        if not ref.uid:
            return  # reserved for a claim that is not there yet (pre-bound by a user)
        if pv.spec.persistent_volume_reclaim_policy == "Delete":
            try:
                await self.client.delete(core_pb2.PersistentVolume, pv.metadata.name)
            except NotFound:
                return
            log.info("released volume deleted", volume=pv.metadata.name)
        elif pv.status.phase != "Released":
            await self._volume_phase(pv, "Released")

    async def _volume_phase(self, pv: core_pb2.PersistentVolume, phase: str) -> None:
        new = _pods.copy_of(pv)
        new.status.phase = phase
        try:
            await self.client.update_status(new)
        except Conflict:
            self._volume(pv)

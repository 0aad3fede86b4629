"""One node's agent: its Node object and Lease, its pod IPs, and its pod workers.

`NodeAgent` registers the Node (create, or adopt an existing one: labels and the kubelet
endpoint annotation merged in, register-with-taints only on create, as Kubernetes does),
heartbeats its status (only the heartbeat times change from one beat to the next), renews
its Lease in kube-node-lease, and registers again when the Node was deleted (the store or the
API server lost it, or a user deleted it). It implements `PodHost` for its pod workers.

`Heartbeats` drives lease renewals and status beats of many agents from two loops, spreading
the agents evenly over each interval with a bounded number of requests in flight: one
kubelet and a thousand hollow nodes use the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from k8semu import __version__, aio
from k8semu.api import timestamps
from k8semu.client import (
    AlreadyExists,
    ClientError,
    Conflict,
    NotFound,
    Preconditions,
)
from k8semu.client._client import Client
from k8semu.client.events import EventRecorder
from k8semu.kubelet import metrics as kubelet_metrics
from k8semu.kubelet.config import KubeletConfig
from k8semu.kubelet.env import EnvError, referenced_names
from k8semu.kubelet.ipam import FALLBACK_POD_IP, PodIPAllocator
from k8semu.kubelet.podworker import PodWorker
from k8semu.kubelet.runtime import Projection, RecoveredPod, Runtime
from k8semu.kubelet.satoken import TokenMounter
from k8semu.kubelet.volumes import (
    LOCAL_STORAGE_DIR_ANNOTATION,
    claim_names,
    local_storage_dir,
)
from k8semu.log import get_logger
from k8semu.pb.api.v1 import coordination_pb2, core_pb2, meta_pb2

log = get_logger(__name__)

ENDPOINT_ANNOTATION = "k8semu.io/kubelet-endpoint"
# How containers are held to their limits: cgroup-v1, cgroup-v2, rlimits (no cgroups: the
# reason annotation says why) or simulated. Kubernetes has no field for it.
ISOLATION_ANNOTATION = "k8semu.io/resource-isolation"
# How long a container start waits for its pod's claims to be bound, and how often it looks.
CLAIM_WAIT = 5.0
CLAIM_POLL = 0.1
ISOLATION_REASON_ANNOTATION = "k8semu.io/resource-isolation-reason"
LEASE_NAMESPACE = "kube-node-lease"
_FALLBACK = "fallback"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def node_info(runtime: str) -> core_pb2.NodeSystemInfo:
    uname = os.uname()
    return core_pb2.NodeSystemInfo(
        machine_id=_read("/etc/machine-id"),
        boot_id=_read("/proc/sys/kernel/random/boot_id"),
        kernel_version=uname.release,
        os_image=platform.freedesktop_os_release().get("PRETTY_NAME", "Linux")
        if hasattr(platform, "freedesktop_os_release")
        else "Linux",
        container_runtime_version=f"k8semu-{runtime}://{__version__}",
        kubelet_version=__version__,
        kube_proxy_version=__version__,
        operating_system="linux",
        architecture=_ARCH.get(uname.machine, uname.machine),
    )


_NODE_INFO: dict[str, core_pb2.NodeSystemInfo] = {}


def _cached_node_info(runtime: str) -> core_pb2.NodeSystemInfo:
    if runtime not in _NODE_INFO:
        try:
            _NODE_INFO[runtime] = node_info(runtime)
        except OSError:
            _NODE_INFO[runtime] = core_pb2.NodeSystemInfo(kubelet_version=__version__)
    return _NODE_INFO[runtime]


_NODE_CONDITIONS = (
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
)


class NodeAgent:
    """See the module docstring."""

    def __init__(
        self,
        config: KubeletConfig,
        client: Client,
        runtime: Runtime,
        *,
        recorder: EventRecorder | None = None,
        services: Callable[[], list[core_pb2.Service]] = list,
        resolve_image: Callable[[str, Sequence[str], Sequence[str]], list[str] | None]
        | None = None,
        endpoint: str = "",
    ) -> None:
        self.config = config
        self.client = client
        self.tokens = TokenMounter(client)
        self.runtime = runtime
        self.recorder = recorder
        self._services = services
        self._resolve_image = resolve_image
        self.endpoint = endpoint
        self.node: core_pb2.Node | None = None
        self.registered = False
        self.recovered: dict[str, RecoveredPod] = {}
        self.workers: dict[str, PodWorker] = {}
        kubelet_metrics.RUNNING.agents.add(self)
        self._pods: dict[str, core_pb2.Pod] = {}
        self._allocators: dict[str, PodIPAllocator] = {}
        # IPs of pods found from an earlier run (not released): taken in every new allocator
        # before any pod gets one, so a live pod's IP is never handed to a new pod.
        self._held_ips: dict[str, str] = {}
        self._started = time.monotonic()
        self._cidr_changed = asyncio.Event()
        self._register_lock = asyncio.Lock()
        self._transitions: dict[str, timestamp_pb2.Timestamp] = {}
        self._lease_ok = False
        self._base_env = {
            k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "TZ") if k in os.environ
        }
        self._base_env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        self._base_env["PYTHONUNBUFFERED"] = "1"  # logs show up as written, as in a container

    # ---- identity ----

    @property
    def node_name(self) -> str:
        return self.config.node_name

    @property
    def node_ip(self) -> str:
        return self.config.node_ip

    # ---- the Node ----

    def node_status(self) -> core_pb2.NodeStatus:
        now = timestamps.now()
        st = core_pb2.NodeStatus()
        st.capacity.update(self.config.capacity)
        st.allocatable.update(self.config.allocatable())
        for type_, status, reason, message in _NODE_CONDITIONS:
            cond = st.conditions.add(type=type_, status=status, reason=reason, message=message)
            cond.last_heartbeat_time.CopyFrom(now)
            cond.last_transition_time.CopyFrom(self._transitions.setdefault(type_, now))
        st.addresses.add(type="InternalIP", address=self.node_ip)
        st.addresses.add(type="Hostname", address=self.node_name)
        st.node_info.CopyFrom(_cached_node_info(self.runtime.name))
        return st

    def _labels(self) -> dict[str, str]:
        return {
            "kubernetes.io/hostname": self.node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": _cached_node_info(self.runtime.name).architecture,
            **self.config.node_labels,
        }

    def _annotations(self) -> dict[str, str]:
        mode, reason = self.runtime.isolation()
        out = {ISOLATION_ANNOTATION: mode}
        if reason:
            out[ISOLATION_REASON_ANNOTATION] = reason
        if self.endpoint:
            out[ENDPOINT_ANNOTATION] = self.endpoint
        if mode != "simulated":
            # Where the persistentvolume controller provisions this node's local volumes.
            out[LOCAL_STORAGE_DIR_ANNOTATION] = local_storage_dir(self.config)
        return out

    def new_node(self) -> core_pb2.Node:
        node = core_pb2.Node(api_version="v1", kind="Node")
        node.metadata.name = self.node_name
        node.metadata.labels.update(self._labels())
        node.metadata.annotations.update(self._annotations())
        node.spec.taints.extend(self.config.taints)
        node.status.CopyFrom(self.node_status())
        return node

    async def register(self) -> None:
        """Create the Node, or bring an existing one up to date (labels, endpoint)."""
        async with self._register_lock:
            try:
                self.set_node(await self.client.create(self.new_node()))
                log.info("node registered", node=self.node_name)
            except AlreadyExists:
                existing = await self.client.get(core_pb2.Node, self.node_name)
                labels, notes = self._labels(), self._annotations()
                meta = existing.metadata
                stale = any(meta.labels.get(k) != v for k, v in labels.items()) or any(
                    meta.annotations.get(k) != v for k, v in notes.items()
                )
                # A reason from a run without cgroups goes when this run has them.
                gone = ISOLATION_REASON_ANNOTATION in meta.annotations.keys() - notes.keys()
                if stale or gone:
                    meta.labels.update(labels)
                    meta.annotations.pop(ISOLATION_REASON_ANNOTATION, None)
                    meta.annotations.update(notes)
                    existing = await self.client.update(existing)
                self.set_node(existing)
                await self._patch_status()
                log.info("node re-registered (it existed)", node=self.node_name)
            self.registered = True

    def set_node(self, node: core_pb2.Node) -> None:
        old_cidr = self.node.spec.pod_cidr if self.node is not None else ""
        self.node = node
        if node.spec.pod_cidr != old_cidr:
            self._cidr_changed.set()

    def node_deleted(self) -> None:
        self.registered = False
        self.node = None

    async def _patch_status(self) -> None:
        status = json_format.MessageToDict(self.node_status())
        await self.client.patch(core_pb2.Node, self.node_name, {"status": status}, status=True)

    async def sync_node(self) -> None:
        """One status beat; registers first when needed (and after a NotFound)."""
        if not self.registered:
            await self.register()
            return
        try:
            await self._patch_status()
        except NotFound:
            log.warning("node vanished; registering again", node=self.node_name)
            self.registered = False
            await self.register()

    async def renew_lease(self) -> None:
        duration = max(1, round(self.config.lease_duration))
        renew = timestamps.format_micro_time(timestamps.micro_now())
        spec: dict[str, Any] = {
            "holderIdentity": self.node_name,
            "leaseDurationSeconds": duration,
            "renewTime": renew,
        }
        try:
            await self.client.patch(
                coordination_pb2.Lease, self.node_name, {"spec": spec}, namespace=LEASE_NAMESPACE
            )
            self._lease_ok = True
            return
        except NotFound:
            pass
        lease = coordination_pb2.Lease(api_version="coordination.k8s.io/v1", kind="Lease")
        lease.metadata.name = self.node_name
        lease.metadata.namespace = LEASE_NAMESPACE
        if self.node is not None and self.node.metadata.uid:
            lease.metadata.owner_references.append(
                meta_pb2.OwnerReference(
                    api_version="v1", kind="Node", name=self.node_name, uid=self.node.metadata.uid
                )
            )
        lease.spec.holder_identity = self.node_name
        lease.spec.lease_duration_seconds = duration
        lease.spec.renew_time.CopyFrom(timestamps.parse(renew))
        try:
            await self.client.create(lease)
        except NotFound:  # the namespace
            ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
            ns.metadata.name = LEASE_NAMESPACE
            with contextlib.suppress(AlreadyExists):
                await self.client.create(ns)
            with contextlib.suppress(AlreadyExists):
                await self.client.create(lease)
        except AlreadyExists:
            pass

    # ---- pods ----

    def on_pod(self, pod: core_pb2.Pod) -> None:
        uid = pod.metadata.uid
        self._pods[uid] = pod
        worker = self.workers.get(uid)
        if worker is None:
            worker = PodWorker(self, pod, recovered=self.recovered.pop(uid, None))
            self.workers[uid] = worker
            worker.start()
        else:
            worker.notify()

    def on_pod_deleted(self, pod: core_pb2.Pod) -> None:
        uid = pod.metadata.uid
        self._pods.pop(uid, None)
        worker = self.workers.get(uid)
        if worker is not None:
            worker.notify()

    def find_worker(self, namespace: str, name: str) -> PodWorker | None:
        for worker in self.workers.values():
            if worker.namespace == namespace and worker.name == name:
                return worker
        return None

    async def stop_workers(self) -> None:
        """Stop the pod workers (the containers keep running; a next kubelet adopts them)."""
        await aio.cancel_and_wait([w.task for w in self.workers.values()])

    # ---- PodHost ----

    def adopt(self, recovered: dict[str, RecoveredPod]) -> None:
        """Pods found from an earlier kubelet run: their workers adopt them, their IPs are
        held (a pod that finished has none left: its IP was released)."""
        self.recovered = dict(recovered)
        self._held_ips = {uid: pod.pod_ip for uid, pod in recovered.items() if pod.pod_ip}

    def current_pod(self, uid: str) -> core_pb2.Pod | None:
        return self._pods.get(uid)

    def _cidr(self) -> str:
        if self.node is not None and self.node.spec.pod_cidr:
            return self.node.spec.pod_cidr
        if time.monotonic() - self._started >= self.config.pod_cidr_wait:
            return self.config.pod_cidr or _FALLBACK
        return ""

    async def pod_ip_for(self, pod: core_pb2.Pod, recovered_ip: str) -> str:
        if pod.spec.host_network:
            return self.node_ip
        while True:
            cidr = self._cidr()
            if cidr:
                break
            self._cidr_changed.clear()
            left = self.config.pod_cidr_wait - (time.monotonic() - self._started)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(left, 0.01)):
                    await self._cidr_changed.wait()
        if cidr == _FALLBACK:
            return FALLBACK_POD_IP
        allocator = self._allocators.get(cidr)
        if allocator is None:
            allocator = self._allocators[cidr] = PodIPAllocator(cidr)
            for held_uid, ip in self._held_ips.items():
                allocator.reserve(held_uid, ip)
        uid = pod.metadata.uid
        for ip in (recovered_ip, pod.status.pod_ip):
            if ip and allocator.reserve(uid, ip):
                return ip
        return allocator.allocate(uid)

    def release_ip(self, uid: str) -> None:
        self._held_ips.pop(uid, None)
        for allocator in self._allocators.values():
            allocator.release(uid)

    async def lookup_refs(
        self, pod: core_pb2.Pod, names: tuple[set[str], set[str]] | None = None
    ) -> tuple[dict[str, core_pb2.ConfigMap], dict[str, core_pb2.Secret]]:
        """The ConfigMaps and Secrets `pod` refers to (or those `names`), as they are now;
        a missing one is left out."""
        cm_names, secret_names = referenced_names(pod) if names is None else names
        ns = pod.metadata.namespace
        config_maps: dict[str, core_pb2.ConfigMap] = {}
        secrets: dict[str, core_pb2.Secret] = {}
        for name in cm_names:
            with contextlib.suppress(NotFound):
                config_maps[name] = await self.client.get(core_pb2.ConfigMap, name, namespace=ns)
        for name in secret_names:
            with contextlib.suppress(NotFound):
                secrets[name] = await self.client.get(core_pb2.Secret, name, namespace=ns)
        return config_maps, secrets

    async def claim_dirs(self, pod: core_pb2.Pod) -> dict[str, str]:
        """Each bound persistentVolumeClaim of `pod` -> its volume's directory. A claim not
        bound yet is waited for a little (CLAIM_WAIT: a WaitForFirstConsumer volume is made
        just after the pod is bound here), then left out: the container waits in its
        back-off, the reason on its status."""
        out: dict[str, str] = {}
        ns = pod.metadata.namespace
        deadline = time.monotonic() + CLAIM_WAIT
        for name in claim_names(pod):
            while True:
                try:
                    claim = await self.client.get(
                        core_pb2.PersistentVolumeClaim, name, namespace=ns
                    )
                except NotFound:
                    raise EnvError(f'persistentvolumeclaim "{name}" not found') from None
                bound = claim.status.phase == "Bound" and claim.spec.volume_name
                if bound or time.monotonic() >= deadline:
                    break
                await asyncio.sleep(CLAIM_POLL)
            if not bound:
                continue
            with contextlib.suppress(NotFound):
                pv = await self.client.get(core_pb2.PersistentVolume, claim.spec.volume_name)
                out[name] = pv.spec.local.path or pv.spec.host_path.path
        return out

    def services(self) -> list[core_pb2.Service]:
        return self._services()

    async def token_projections(self, pod: core_pb2.Pod) -> list[Projection]:
        """The ServiceAccount token mount (kubelet/satoken.py)."""
        return await self.tokens.projections(pod)

    def base_env(self) -> dict[str, str]:
        return dict(self._base_env)

    def resolve_image(
        self, image: str, command: Sequence[str], args: Sequence[str]
    ) -> list[str] | None:
        if self._resolve_image is None:
            return None
        return self._resolve_image(image, command, args)

    async def write_status(self, pod: core_pb2.Pod, status: core_pb2.PodStatus) -> int | None:
        """Write `status` (re-reading the pod once after a Conflict). Returns the written
        resourceVersion (0 when the pod is gone), or None when the write failed."""
        new = core_pb2.Pod()
        new.CopyFrom(pod)
        new.status.CopyFrom(status)
        for _ in range(2):
            try:
                written = await self.client.update_status(new)
                return int(written.metadata.resource_version or 0)
            except NotFound:
                return 0  # gone: the worker sees it next
            except Conflict:
                try:
                    fresh = await self.client.get(
                        core_pb2.Pod, pod.metadata.name, namespace=pod.metadata.namespace
                    )
                except NotFound:
                    return 0
                except ClientError:
                    return None
                if fresh.metadata.uid != pod.metadata.uid:
                    return 0
                fresh.status.CopyFrom(status)
                new = fresh
            except ClientError as exc:
                log.info("pod status not written", pod=pod.metadata.name, error=str(exc))
                return None
        return None

    async def finish_delete(self, pod: core_pb2.Pod) -> None:
        with contextlib.suppress(NotFound, Conflict):
            await self.client.delete(
                core_pb2.Pod,
                pod.metadata.name,
                namespace=pod.metadata.namespace,
                grace_period_seconds=0,
                preconditions=Preconditions(uid=pod.metadata.uid),
            )

    def worker_done(self, uid: str) -> None:
        self.workers.pop(uid, None)


class Heartbeats:
    """Lease renewals and node status beats of `agents`, each agent once per interval."""

    def __init__(
        self,
        agents: Sequence[NodeAgent],
        *,
        lease_interval: float,
        status_interval: float,
        concurrency: int = 32,
    ) -> None:
        self.agents = list(agents)
        self.lease_interval = lease_interval
        self.status_interval = status_interval
        self._sem = asyncio.Semaphore(concurrency)
        self._failing: set[tuple[str, str]] = set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._cycle("status", self.status_interval, NodeAgent.sync_node))
            tg.create_task(self._cycle("lease", self.lease_interval, NodeAgent.renew_lease))

    async def _cycle(
        self, what: str, interval: float, action: Callable[[NodeAgent], Awaitable[None]]
    ) -> None:
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[None]] = set()
        try:
            while True:
                start = loop.time()
                n = max(len(self.agents), 1)
                for i, agent in enumerate(self.agents):
                    delay = start + i * interval / n - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    await self._sem.acquire()
                    task = loop.create_task(self._one(what, agent, action))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                delay = start + interval - loop.time()
                await asyncio.sleep(max(delay, 0))
        finally:
            for task in list(pending):
                task.cancel()

    async def _one(
        self, what: str, agent: NodeAgent, action: Callable[[NodeAgent], Awaitable[None]]
    ) -> None:
        key = (what, agent.node_name)
        try:
            await action(agent)
        except ClientError as exc:
            if key not in self._failing:
                log.warning(f"{what} update failed", node=agent.node_name, error=str(exc))
            self._failing.add(key)
        except Exception:
            log.exception(f"{what} update failed", node=agent.node_name)
        else:
            if key in self._failing:
                self._failing.discard(key)
                log.info(f"{what} update works again", node=agent.node_name)
        finally:
            self._sem.release()

    async def beat_all(self, action: Callable[[NodeAgent], Awaitable[Any]]) -> None:
        """Run `action` for every agent now (bounded concurrency), e.g. the first registration."""

        async def one(agent: NodeAgent) -> None:
            async with self._sem:
                with contextlib.suppress(ClientError):
                    await action(agent)

        await asyncio.gather(*(one(a) for a in self.agents))

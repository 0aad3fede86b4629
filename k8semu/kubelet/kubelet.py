"""The kubelet component: one or many node agents sharing one client, one pod informer, one
node informer, one runtime and one heartbeat loop.

One node (`k8semu kubelet`): the pod informer selects `spec.nodeName=<node>` on the API
server, the node informer `metadata.name=<node>`, and a gRPC server serves logs and exec.
Hollow nodes (`--count N`, simulated runtime): the informers watch all pods and nodes and
events are routed to the agent named by `spec.nodeName`; no gRPC server, no events.

Start-up order: the gRPC server (its address goes into the Node's annotation), the runtime's
recovery of pods from an earlier run, the informers (the first pod events create the pod
workers, which adopt recovered containers), then, once synced, pods found on disk but no
longer bound here are killed and removed. Stopping leaves containers running: the next
kubelet adopts them, as a real kubelet restart leaves the containers to the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Sequence
from typing import Any

from k8semu import aio, transport
from k8semu.client import Client, Informer, InformerConfig
from k8semu.client.events import EventRecorder
from k8semu.kubelet import cgroups, podusers
from k8semu.kubelet.config import KubeletConfig
from k8semu.kubelet.containerlog import LogLimits
from k8semu.kubelet.localvolumes import LocalVolumeCleaner
from k8semu.kubelet.node import Heartbeats, NodeAgent
from k8semu.kubelet.podworker import PodWorker
from k8semu.kubelet.process import ProcessRuntime
from k8semu.kubelet.runtime import PodRuns, Runtime
from k8semu.kubelet.server import (
    SERVICE_NAME,
    KubeletServicer,
    add_to_server,
    authorized_callers,
)
from k8semu.kubelet.simulated import SimulatedRuntime
from k8semu.kubelet.stats import Stats, pod_runs
from k8semu.kubelet.volumes import local_storage_dir
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2

log = get_logger(__name__)

SYNC_TIMEOUT = None  # informers retry forever; a kubelet waits for its API server
# How often the runtime's housekeeping runs (Kubernetes' kubelet: a fixed 2 s as well).
HOUSEKEEPING_PERIOD = 2.0


def _pod_runs_of(agent: NodeAgent) -> list[PodRuns]:
    return pod_runs(agent.workers.values())


def _resolver() -> Any:
    try:
        from k8semu.images import resolve
    except ImportError:  # the built-in images are optional for the kubelet
        return None
    return resolve


def _share_applets() -> None:
    """Make the shell images' applet directory as root, so that every pod user shares it
    rather than leaving one directory per pod uid in /tmp (k8semu.images.busybox)."""
    try:
        from k8semu.images.busybox import applet_dir
    except ImportError:
        return
    try:
        applet_dir()
    except OSError as exc:
        log.warning("pods make applet directories of their own", reason=str(exc))


def _process_watchers(
    first: KubeletConfig, client: Client, kw: dict[str, Any]
) -> tuple[Informer[core_pb2.Service] | None, LocalVolumeCleaner | None]:
    """What only a real node watches: Services (for the containers' environment) and its
    deleted local volumes (to remove their directories)."""
    if first.runtime != "process":
        return None, None
    cleaner = LocalVolumeCleaner(client, first.node_name, local_storage_dir(first), **kw)
    return Informer(client, core_pb2.Service, **kw), cleaner


class Kubelet:
    """`configs`: one per node (all with the same runtime, root dir parent and timings)."""

    def __init__(
        self,
        configs: Sequence[KubeletConfig],
        client: Client,
        *,
        serve: bool = True,
        informer_config: InformerConfig | None = None,
        tls: transport.ServerTLS | None = None,  # with a client CA: `authorized_callers`
    ) -> None:
        if not configs:
            raise ValueError("a kubelet needs at least one node")
        self.configs = list(configs)
        self.client = client
        first = self.configs[0]
        self.hollow = len(self.configs) > 1
        # A hollow pool serves too (one server, all its nodes): the resource metrics scrape it.
        self.serve = serve and first.listen_address != "none"
        self.runtime: Runtime
        if first.runtime == "simulated":
            self.runtime = SimulatedRuntime(start_delay=first.simulated_start_delay)
        else:
            if self.hollow:
                raise ValueError("--count > 1 needs --runtime simulated")
            self.runtime = _process_runtime(first)
        self.recorder: EventRecorder | None = None
        if not self.hollow and first.runtime == "process":
            self.recorder = EventRecorder(client, "kubelet", host=first.node_name)
        kw: dict[str, Any] = {"config": informer_config} if informer_config else {}
        self.pods: Informer[core_pb2.Pod] = Informer(
            client,
            core_pb2.Pod,
            field_selector="" if self.hollow else f"spec.nodeName={first.node_name}",
            **kw,
        )
        self.nodes: Informer[core_pb2.Node] = Informer(
            client,
            core_pb2.Node,
            field_selector="" if self.hollow else f"metadata.name={first.node_name}",
            **kw,
        )
        self.services, self.volume_cleaner = _process_watchers(first, client, kw)
        resolve = _resolver()
        self.agents: dict[str, NodeAgent] = {}
        for cfg in self.configs:
            self.agents[cfg.node_name] = NodeAgent(
                cfg,
                client,
                self.runtime,
                recorder=self.recorder,
                services=self._service_list,
                resolve_image=resolve,
            )
        self.stats = {
            name: Stats(
                self.runtime,
                name,
                functools.partial(_pod_runs_of, agent),
                own_process=not self.hollow,
            )
            for name, agent in self.agents.items()
        }
        self.heartbeats = Heartbeats(
            list(self.agents.values()),
            lease_interval=first.lease_renew_interval,
            status_interval=first.status_update_frequency,
        )
        self._server: Any = None
        self.tls = tls
        self.port = 0
        self._tasks: list[asyncio.Task[Any]] = []

    def _service_list(self) -> list[core_pb2.Service]:
        return self.services.cache.list() if self.services is not None else []

    def stats_of(self, node: str) -> Stats | None:
        """The usage summary of `node` ("" = the only node of a kubelet of one)."""
        if not node and len(self.stats) == 1:
            return next(iter(self.stats.values()))
        return self.stats.get(node)

    def find_worker(self, namespace: str, name: str) -> PodWorker | None:
        for agent in self.agents.values():
            worker = agent.find_worker(namespace, name)
            if worker is not None:
                return worker
        return None

    # ---- event routing ----

    def _agent_for(self, pod: core_pb2.Pod) -> NodeAgent | None:
        return self.agents.get(pod.spec.node_name)

    def _on_pod(self, pod: core_pb2.Pod) -> None:
        agent = self._agent_for(pod)
        if agent is not None:
            agent.on_pod(pod)

    def _on_pod_update(self, old: core_pb2.Pod, new: core_pb2.Pod) -> None:
        self._on_pod(new)

    def _on_pod_delete(self, pod: core_pb2.Pod) -> None:
        agent = self._agent_for(pod)
        if agent is not None:
            agent.on_pod_deleted(pod)

    def _on_node(self, node: core_pb2.Node) -> None:
        agent = self.agents.get(node.metadata.name)
        if agent is not None:
            agent.set_node(node)

    def _on_node_update(self, old: core_pb2.Node, new: core_pb2.Node) -> None:
        self._on_node(new)

    def _on_node_delete(self, node: core_pb2.Node) -> None:
        agent = self.agents.get(node.metadata.name)
        if agent is not None and agent.registered:
            log.warning("node deleted; registering again", node=node.metadata.name)
            agent.node_deleted()
            self._spawn(self._register(agent))

    async def _register(self, agent: NodeAgent) -> None:
        with contextlib.suppress(Exception):
            await agent.sync_node()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    # ---- life cycle ----

    async def start(self) -> None:
        first = self.configs[0]
        if self.serve:
            checked = self.tls is not None and self.tls.client_ca_file is not None
            server, _ = transport.server(
                [SERVICE_NAME], interceptors=[authorized_callers()] if checked else ()
            )
            add_to_server(
                server,
                KubeletServicer(
                    self.find_worker, exec_timeout=first.exec_timeout, stats=self.stats_of
                ),
            )
            address = first.effective_listen_address
            self.port = transport.bind(server, address, flag="--listen-address", tls=self.tls)
            await server.start()
            self._server = server
            host = address.rpartition(":")[0]
            if host in ("", "0.0.0.0", "[::]"):
                host = first.node_ip
            endpoint = f"{host}:{self.port}"
            for agent in self.agents.values():
                agent.endpoint = endpoint
            log.info("kubelet API serving", address=endpoint)
        recovered = self.runtime.recover()
        if recovered:
            log.info("pods found from an earlier run", count=len(recovered))
        for agent in self.agents.values():
            agent.adopt(recovered)
        if self.recorder is not None:
            self.recorder.start()
        self.nodes.add_event_handler(
            on_add=self._on_node, on_update=self._on_node_update, on_delete=self._on_node_delete
        )
        self.pods.add_event_handler(
            on_add=self._on_pod, on_update=self._on_pod_update, on_delete=self._on_pod_delete
        )
        # Register every node before the heartbeat loops take over (spread, bounded).
        self._spawn(self._first_registration())
        self.nodes.start()
        if self.services is not None:
            self.services.start()
        self.pods.start()
        if self.volume_cleaner is not None:
            self.volume_cleaner.start()
        self._spawn(self._cleanup_when_synced(set(recovered)))
        self._spawn(self._housekeeping())

    async def _housekeeping(self) -> None:
        """The runtime's upkeep, every HOUSEKEEPING_PERIOD, off the event loop."""
        while True:
            await asyncio.sleep(HOUSEKEEPING_PERIOD)
            try:
                await asyncio.to_thread(self.runtime.housekeeping)
            except Exception as exc:  # never the end of the loop: the next period tries again
                log.warning("housekeeping failed", error=repr(exc))

    async def _first_registration(self) -> None:
        await self.heartbeats.beat_all(NodeAgent.sync_node)
        self._spawn(self.heartbeats.run())

    async def _cleanup_when_synced(self, uids: set[str]) -> None:
        await self.pods.wait_synced()
        if self.services is not None:
            await self.services.wait_synced()
        for uid in uids:
            if any(uid in agent.workers for agent in self.agents.values()):
                continue
            log.info("removing a pod no longer bound here", uid=uid)
            for agent in self.agents.values():
                agent.recovered.pop(uid, None)
                agent.release_ip(uid)
            await self.runtime.remove_pod(uid)

    async def stop(self, grace: float) -> None:
        """Stop the workers and informers, leaving containers running (a kubelet restart
        adopts them); the logs/exec server's calls in flight get `grace` seconds."""
        await aio.cancel_and_wait(list(self._tasks), ignore_errors=True)
        for agent in self.agents.values():
            await agent.stop_workers()
        await self.pods.stop()
        await self.nodes.stop()
        if self.services is not None:
            await self.services.stop()
        if self.volume_cleaner is not None:
            await self.volume_cleaner.stop()
        if self.recorder is not None:
            await self.recorder.stop()
        close = getattr(self.runtime, "close", None)
        if close is not None:
            await close()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None


def _process_runtime(config: KubeletConfig) -> ProcessRuntime:
    """The process runtime with the node's cgroups and its pods' own users where possible
    (each fallback logged with its reason)."""
    node_cgroups, why = cgroups.for_node(
        config.node_name,
        config.effective_root_dir,
        mode=config.cgroups,
        pod_pids_limit=config.pod_pids_limit,
    )
    if node_cgroups is None:
        log.warning("containers run without cgroups (rlimits only)", reason=why)
    users, no_users = podusers.for_kubelet(config.pod_user_range)
    if users is None:
        log.warning("pods run as the kubelet's user", reason=no_users)
    else:
        _share_applets()
    limits = LogLimits(config.container_log_max_bytes, config.container_log_max_files)
    return ProcessRuntime(
        config.effective_root_dir,
        cgroups=node_cgroups,
        no_cgroups=why,
        users=users,
        log_limits=limits,
    )

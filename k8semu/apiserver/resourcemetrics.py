"""metrics.k8s.io/v1beta1 NodeMetrics and PodMetrics, served by the API server itself.

Kubernetes serves them from metrics-server, aggregated behind kube-apiserver; k8semu folds
that component into the API server (docs/apiserver.md "Resource metrics"): one more process
per cluster and one more hop per request would buy nothing here, since the API server already
lists the Nodes and Pods the scrape needs. Each API server scrapes on its own, as each
metrics-server replica does.

`ResourceMetrics.run` scrapes every `resolution` seconds: it lists the Nodes and Pods (from
the store), asks every Ready node's kubelet for its usage Summary (k8semu/kubelet/scrape.py),
all at once, each within `timeout`, and swaps in the new snapshot whole. Requests only ever
read the last snapshot, so a slow or dead kubelet never blocks one; a node that did not answer,
or whose figures are incomplete (no CPU rate yet), is absent until a scrape has it, as in
metrics-server. Usage: CPU as the kubelet's rate in nanocores (`250000000n`, printed `250m`),
memory as the working set in bytes (binary suffixes when whole: `64Mi`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction

from google.protobuf.message import Message

from k8semu import transport
from k8semu.api import kinds
from k8semu.api.kinds import Kind
from k8semu.api.quantity import Quantity, format_quantity
from k8semu.apiserver.errors import NotFound, StatusError
from k8semu.durations import format_ms
from k8semu.kubelet import scrape
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2, metrics_pb2
from k8semu.pb.kubelet.v1 import kubelet_pb2

log = get_logger(__name__)

DEFAULT_RESOLUTION = 15.0  # seconds: metrics-server's --metric-resolution
NODE_METRICS = kinds.for_message(metrics_pb2.NodeMetrics)
POD_METRICS = kinds.for_message(metrics_pb2.PodMetrics)

Key = tuple[str, str]  # (namespace, name); "" namespace for nodes


def scrape_timeout(resolution: float) -> float:
    """Each kubelet's deadline: within the resolution, so scrapes never pile up, but at least
    2 s (a kubelet's first summary samples twice, 1 s apart) and at most the 5 s default."""
    return min(scrape.DEFAULT_TIMEOUT, max(2.0, 0.9 * resolution))


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    resolution: float = DEFAULT_RESOLUTION  # seconds between scrapes; 0: not served
    tls: transport.ClientTLS | None = None  # the API server's kubelet-client credentials

    @property
    def timeout(self) -> float:
        return scrape_timeout(self.resolution)


def cpu_quantity(nano_cores: int) -> str:
    return format_quantity(Quantity(Fraction(nano_cores, 10**9), "DecimalSI"))


def memory_quantity(size: int) -> str:
    return format_quantity(Quantity(Fraction(size), "BinarySI"))


def _ready(node: core_pb2.Node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)


def _usage(cpu: kubelet_pb2.CPUStats, memory: kubelet_pb2.MemoryStats) -> dict[str, str] | None:
    nano, used = scrape.cpu_nano_cores(cpu), scrape.working_set(memory)
    if nano is None or used is None:
        return None
    return {"cpu": cpu_quantity(nano), "memory": memory_quantity(used)}


def _stamp(obj: metrics_pb2.NodeMetrics | metrics_pb2.PodMetrics, at: float, window: str) -> None:
    kinds.stamp(obj)
    obj.timestamp.FromNanoseconds(int(at * 1e9))
    obj.metadata.creation_timestamp.FromSeconds(int(time.time()))
    obj.window = window


def node_metrics(
    node: core_pb2.Node, summary: kubelet_pb2.Summary, window: str
) -> metrics_pb2.NodeMetrics | None:
    """The node's figures, None when incomplete."""
    usage = _usage(summary.node.cpu, summary.node.memory)
    if usage is None:
        return None
    out = metrics_pb2.NodeMetrics(usage=usage)
    out.metadata.name = node.metadata.name
    out.metadata.labels.update(node.metadata.labels)
    _stamp(out, scrape.measured_at(summary.node.cpu), window)
    return out


def pod_metrics(
    pod: core_pb2.Pod, stats: kubelet_pb2.PodStats, window: str
) -> metrics_pb2.PodMetrics | None:
    """The pod's figures per container, None when any container's are incomplete (as
    metrics-server, which drops such a pod rather than under-report it)."""
    if not stats.containers:
        return None
    out = metrics_pb2.PodMetrics()
    at = 0.0
    for c in stats.containers:
        usage = _usage(c.cpu, c.memory)
        if usage is None:
            return None
        out.containers.add(name=c.name, usage=usage)
        at = max(at, scrape.measured_at(c.cpu))
    out.metadata.name, out.metadata.namespace = pod.metadata.name, pod.metadata.namespace
    out.metadata.labels.update(pod.metadata.labels)
    _stamp(out, at, window)
    return out


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One scrape's objects by (namespace, name)."""

    nodes: dict[Key, Message]
    pods: dict[Key, Message]


def build_snapshot(
    answers: Iterable[tuple[core_pb2.Node, kubelet_pb2.Summary]],
    pods: Iterable[core_pb2.Pod],
    window: str,
) -> Snapshot:
    """The objects of the nodes that answered and of their pods the API knows (a pod the
    kubelet still runs after its deletion is not shown)."""
    by_uid = {p.metadata.uid: p for p in pods}
    out = Snapshot({}, {})
    for node, summary in answers:
        if (n := node_metrics(node, summary, window)) is not None:
            out.nodes[("", node.metadata.name)] = n
        for stats in summary.pods:
            pod = by_uid.get(stats.pod_ref.uid)
            if pod is None or pod.spec.node_name != node.metadata.name:
                continue
            if (p := pod_metrics(pod, stats, window)) is not None:
                out.pods[(pod.metadata.namespace, pod.metadata.name)] = p
    return out


class Reader:
    """A metrics kind's face for the verbs (a registry row's `reader`): the last snapshot."""

    def __init__(self, metrics: ResourceMetrics, kind: Kind) -> None:
        self.metrics = metrics
        self.kind = kind

    def _objects(self) -> dict[Key, Message]:
        snap = self.metrics.snapshot
        return snap.nodes if self.kind is NODE_METRICS else snap.pods

    async def get(self, namespace: str, name: str) -> Message:
        found = self._objects().get((namespace, name))
        if found is None:
            raise NotFound(f'{self.kind.singular}.{self.kind.group} "{name}" not found')
        return found

    async def list(self, namespace: str) -> list[Message]:
        objects = self._objects()
        return [obj for (ns, _), obj in sorted(objects.items()) if not namespace or ns == namespace]


ListNodes = Callable[[], Awaitable[list[core_pb2.Node]]]
ListPods = Callable[[], Awaitable[list[core_pb2.Pod]]]


class ResourceMetrics:
    """The scrape loop and its last snapshot; see the module doc."""

    def __init__(self, config: MetricsConfig, nodes: ListNodes, pods: ListPods) -> None:
        self.config = config
        self._list_nodes = nodes
        self._list_pods = pods
        self.snapshot = Snapshot({}, {})
        self.scrapes = 0  # completed scrapes (tests wait on it)

    def readers(self) -> dict[str, Reader]:
        """The readers by resource name, for `registry.build(..., served=...)`."""
        return {k.resource: Reader(self, k) for k in (NODE_METRICS, POD_METRICS)}

    async def run(self) -> None:
        """Scrape every resolution until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.scrape_once()
            except Exception:  # a bug must not end the metrics for the server's lifetime
                log.exception("metrics scrape failed")
            await asyncio.sleep(max(0.0, self.config.resolution - (loop.time() - started)))

    async def scrape_once(self) -> None:
        try:
            nodes, pods = await self._list_nodes(), await self._list_pods()
        except StatusError as exc:
            log.info("metrics scrape skipped: cannot list nodes and pods", error=exc.message)
            return
        ready = [n for n in nodes if _ready(n)]
        answers = await asyncio.gather(*(self._ask(n) for n in ready))
        window = format_ms(round(self.config.resolution * 1000))
        self.snapshot = build_snapshot(
            ((n, s) for n, s in zip(ready, answers, strict=True) if s is not None), pods, window
        )
        self.scrapes += 1

    async def _ask(self, node: core_pb2.Node) -> kubelet_pb2.Summary | None:
        try:
            return await scrape.summary(node, timeout=self.config.timeout, tls=self.config.tls)
        except scrape.ScrapeError as exc:
            log.info("metrics scrape: node absent", error=str(exc))
            return None

"""`ResourceMetrics` (pod resources) read straight from the kubelets' Summary RPC (the
fields metrics-server reads from /stats/summary): CPU as the rate over the kubelet's last
window (`usageNanoCores`, in millicores here), memory as the working set (thousandths of a
byte, as every value here is milli).

Per query: the selected pods of the namespace (through the API), grouped by node; each node's
kubelet is found through its Node's `k8semu.io/kubelet-endpoint` annotation and asked once. A
pod whose node does not answer, or that has no rate yet (fewer than two samples), has no
sample: the calculator's missing-metric rules apply. Nothing answering at all is
`MetricsUnavailable`.
"""

from __future__ import annotations

from k8semu.api.selectors import LabelSelector
from k8semu.client import Client, ClientError
from k8semu.controllers.podautoscaler.metrics import MetricsUnavailable
from k8semu.controllers.podautoscaler.replicas import PodMetric
from k8semu.kubelet import scrape
from k8semu.pb.api.v1 import core_pb2
from k8semu.pb.kubelet.v1 import kubelet_pb2

SUMMARY_TIMEOUT = scrape.DEFAULT_TIMEOUT  # seconds per kubelet
SAMPLE_WINDOW = 15.0  # seconds: the resolution the CPU rate is taken over (metrics-server's)
RESOURCES = ("cpu", "memory")


class KubeletSummaries:
    """Pod CPU and memory from the kubelets; see the module doc."""

    def __init__(self, client: Client, *, timeout: float = SUMMARY_TIMEOUT) -> None:
        self.client = client
        self.timeout = timeout

    async def pod_resources(
        self, namespace: str, selector: LabelSelector, resource: str, container: str = ""
    ) -> dict[str, PodMetric]:
        if resource not in RESOURCES:
            raise MetricsUnavailable(f"unable to get metrics for resource {resource}: not served")
        try:
            pods = (await self.client.list_all(core_pb2.Pod, namespace=namespace)).items
        except ClientError as exc:
            raise MetricsUnavailable(f"unable to list pods: {exc}") from exc
        wanted = {
            p.metadata.name
            for p in pods
            if p.spec.node_name and selector.matches(p.metadata.labels)
        }
        nodes = sorted({p.spec.node_name for p in pods if p.metadata.name in wanted})
        out: dict[str, PodMetric] = {}
        failures: list[str] = []
        for node in nodes:
            try:
                summary = await self._summary(node)
            except MetricsUnavailable as exc:
                failures.append(str(exc))
                continue
            for stats in summary.pods:
                ref = stats.pod_ref
                if ref.namespace != namespace or ref.name not in wanted:
                    continue
                sample = _usage(stats, resource, container)
                if sample is not None:
                    out[ref.name] = sample
        if not out and failures:
            raise MetricsUnavailable(
                f"unable to get metrics for resource {resource}: " + "; ".join(failures)
            )
        return out

    async def _summary(self, node: str) -> kubelet_pb2.Summary:
        try:
            obj = await self.client.get(core_pb2.Node, node)
        except ClientError as exc:
            raise MetricsUnavailable(f"node {node}: {exc}") from exc
        try:
            return await scrape.summary(obj, timeout=self.timeout, tls=self.client.tls)
        except scrape.ScrapeError as exc:
            raise MetricsUnavailable(str(exc)) from exc


def _usage(stats: kubelet_pb2.PodStats, resource: str, container: str) -> PodMetric | None:
    """One pod's (or one of its containers') usage in milli-units; None without a value."""
    cpu, memory = stats.cpu, stats.memory
    if container:
        named = [c for c in stats.containers if c.name == container]
        if not named:
            return None
        cpu, memory = named[0].cpu, named[0].memory
    if resource == "cpu":
        nano = scrape.cpu_nano_cores(cpu)
        if nano is None:
            return None
        return PodMetric(nano // 1_000_000, scrape.measured_at(cpu), SAMPLE_WINDOW)
    used = scrape.working_set(memory)
    if used is None:
        return None
    return PodMetric(used * 1000, scrape.measured_at(memory), SAMPLE_WINDOW)

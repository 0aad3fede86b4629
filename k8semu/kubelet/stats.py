"""The kubelet's usage summary (Kubernetes' /stats/summary, served by `Kubelet.Summary`):
what the node, its pods and their running containers use, for a metrics pipeline and `top`.

The runtime gives cumulative figures (`Runtime.usage`: cgroup counters, /proc, or the
simulated model); this module keeps a short history of them and turns CPU time into a rate
(usageNanoCores) over about `window` seconds: against the earlier sample nearest to `window`
ago that is at least `min_window` old. The first summary (no history yet) samples twice,
`min_window` apart, so every figure has a rate. A counter that went backwards (a container
run replaced, a process tree that lost a member) restarts its history.

Node figures: the runtime's for the node as a whole (the kubelet's cgroup hierarchy), else the
sum of its pods, plus the kubelet's own process (not for hollow nodes, which share one). Not
/proc/stat and /proc/meminfo: several nodes share one host, and each must show its own.
Reads only; changes nothing.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

from k8semu.kubelet import procfs
from k8semu.kubelet.podworker import PodWorker
from k8semu.kubelet.runtime import PodRuns, Runtime, Usage, UsageSnapshot
from k8semu.pb.kubelet.v1 import kubelet_pb2

DEFAULT_WINDOW = 10.0  # seconds a rate is taken over (cadvisor samples every 10 s)
MIN_WINDOW = 1.0  # two samples closer than this give no rate (too noisy)
MAX_AGE = 120.0  # samples older than this are forgotten

Key = tuple[Hashable, ...]


class Rates:
    """Cumulative CPU samples per key and the rates between them. Time is given (monotonic
    seconds), so tests drive it; nothing here sleeps."""

    def __init__(self, *, window: float = DEFAULT_WINDOW, min_window: float = MIN_WINDOW) -> None:
        self.window = window
        self.min_window = min_window
        self._samples: dict[Key, deque[tuple[float, int]]] = {}

    def _earlier(self, key: Key, now: float) -> tuple[float, int] | None:
        usable = [s for s in self._samples.get(key, ()) if now - s[0] >= self.min_window]
        if not usable:
            return None
        return min(usable, key=lambda s: abs(now - s[0] - self.window))

    def needs_wait(self, keys: Iterable[Key], now: float) -> float:
        """Seconds until every key can have a rate (0: all can now)."""
        wait = 0.0
        for key in keys:
            if self._earlier(key, now) is None:
                newest = self._samples[key][-1][0] if self._samples.get(key) else now
                wait = max(wait, self.min_window - (now - newest))
        return wait

    def record(self, key: Key, now: float, cpu_ns: int) -> int | None:
        """Add a sample; the rate in nanocores since an earlier one (None: none usable)."""
        samples = self._samples.setdefault(key, deque())
        if samples and cpu_ns < samples[-1][1]:
            samples.clear()  # the counter restarted
        earlier = self._earlier(key, now)
        samples.append((now, cpu_ns))
        while samples and now - samples[0][0] > MAX_AGE:
            samples.popleft()
        if earlier is None:
            return None
        return round((cpu_ns - earlier[1]) / (now - earlier[0]))

    def keep_only(self, keys: Iterable[Key]) -> None:
        live = set(keys)
        for key in [k for k in self._samples if k not in live]:
            del self._samples[key]


@dataclass(frozen=True, slots=True)
class _Sample:
    at: float  # monotonic
    wall: float
    snap: UsageSnapshot
    kubelet: Usage | None
    pods: Sequence[PodRuns]


def _cpu(wall: float, used: Usage, rate: int | None) -> kubelet_pb2.CPUStats:
    out = kubelet_pb2.CPUStats(usage_core_nano_seconds=used.cpu_ns)
    out.time.FromNanoseconds(int(wall * 1e9))
    if rate is not None:
        out.usage_nano_cores = max(rate, 0)
    return out


def _memory(wall: float, used: Usage) -> kubelet_pb2.MemoryStats:
    out = kubelet_pb2.MemoryStats(usage_bytes=used.memory_usage, working_set_bytes=used.working_set)
    out.time.FromNanoseconds(int(wall * 1e9))
    return out


def _sum(usages: Iterable[Usage]) -> Usage:
    total = Usage(0, 0, 0)
    for u in usages:
        total = total + u
    return total


class Stats:
    """One node's summary. `pods()` lists its pods and their running containers; `own_process`:
    the kubelet's process counts toward the node (a kubelet of one node, not hollow ones)."""

    def __init__(
        self,
        runtime: Runtime,
        node_name: str,
        pods: Callable[[], Sequence[PodRuns]],
        *,
        own_process: bool,
        rates: Rates | None = None,
    ) -> None:
        self.runtime = runtime
        self.node_name = node_name
        self._pods = pods
        self.own_process = own_process
        self.rates = rates or Rates()
        self.started = time.time()
        self._lock = asyncio.Lock()

    def _take(self, pods: Sequence[PodRuns]) -> _Sample:
        # Stamped before reading: the counters are read right after, while what follows the
        # reads (a busy host may preempt this thread) would skew short rate windows.
        at, wall = time.monotonic(), time.time()
        snap = self.runtime.usage(self.node_name, pods)
        kubelet = procfs.process_usage(os.getpid()) if self.own_process else None
        return _Sample(at, wall, snap, kubelet, pods)

    async def summary(self) -> kubelet_pb2.Summary:
        async with self._lock:
            # The pod list is read here, on the event loop that changes it; the files and
            # /proc in a thread.
            sample = await asyncio.to_thread(self._take, self._pods())
            wait = self.rates.needs_wait(self._keys(sample), sample.at)
            if wait > 0:
                self._build(sample)  # records the first samples
                await asyncio.sleep(wait)
                sample = await asyncio.to_thread(self._take, self._pods())
            return self._build(sample)

    def _keys(self, sample: _Sample) -> list[Key]:
        return [key for key, _ in self._figures(sample)]

    def _figures(self, sample: _Sample) -> list[tuple[Key, Usage]]:
        """Every figure of the sample and its history key, node first."""
        snap = sample.snap
        out: list[tuple[Key, Usage]] = []
        pod_total: list[Usage] = []
        for run in sample.pods:
            uid = run.pod.metadata.uid
            mine = [
                (("c", uid, name, h.container_id), snap.containers[(uid, name)])
                for name, h in run.handles.items()
                if (uid, name) in snap.containers
            ]
            pod = snap.pods.get(uid) or _sum(u for _, u in mine)
            pod_total.append(pod)
            out.append((("pod", uid), pod))
            out.extend(mine)
        pods = snap.node if snap.node is not None else _sum(pod_total)
        node = pods + sample.kubelet if sample.kubelet is not None else pods
        head: list[tuple[Key, Usage]] = [(("node",), node), (("pods",), pods)]
        if sample.kubelet is not None:
            head.append((("kubelet",), sample.kubelet))
        return head + out

    def _build(self, sample: _Sample) -> kubelet_pb2.Summary:
        figures = self._figures(sample)
        self.rates.keep_only(key for key, _ in figures)
        wall = sample.wall
        stats: dict[Key, tuple[kubelet_pb2.CPUStats, kubelet_pb2.MemoryStats]] = {}
        for key, used in figures:
            rate = self.rates.record(key, sample.at, used.cpu_ns)
            stats[key] = (_cpu(wall, used, rate), _memory(wall, used))
        out = kubelet_pb2.Summary()
        node = out.node
        node.node_name = self.node_name
        node.start_time.FromNanoseconds(int(self.started * 1e9))
        node.cpu.CopyFrom(stats[("node",)][0])
        node.memory.CopyFrom(stats[("node",)][1])
        for name in ("kubelet", "pods"):
            if (name,) in stats:
                c = node.system_containers.add(name=name)
                c.start_time.CopyFrom(node.start_time)
                c.cpu.CopyFrom(stats[(name,)][0])
                c.memory.CopyFrom(stats[(name,)][1])
        for run in sample.pods:
            out.pods.append(self._pod_stats(run, stats))
        return out

    @staticmethod
    def _pod_stats(
        run: PodRuns, stats: dict[Key, tuple[kubelet_pb2.CPUStats, kubelet_pb2.MemoryStats]]
    ) -> kubelet_pb2.PodStats:
        meta = run.pod.metadata
        pod = kubelet_pb2.PodStats()
        pod.pod_ref.name, pod.pod_ref.namespace, pod.pod_ref.uid = (
            meta.name,
            meta.namespace,
            meta.uid,
        )
        if run.pod.status.HasField("start_time"):
            pod.start_time.CopyFrom(run.pod.status.start_time)
        pod.cpu.CopyFrom(stats[("pod", meta.uid)][0])
        pod.memory.CopyFrom(stats[("pod", meta.uid)][1])
        for name, handle in run.handles.items():
            key = ("c", meta.uid, name, handle.container_id)
            if key not in stats:
                continue
            c = pod.containers.add(name=name)
            c.start_time.FromNanoseconds(int(handle.started_at * 1e9))
            c.cpu.CopyFrom(stats[key][0])
            c.memory.CopyFrom(stats[key][1])
        return pod


def pod_runs(workers: Iterable[PodWorker]) -> list[PodRuns]:
    """The pods of these pod workers and their running containers."""
    out = []
    for w in workers:
        handles = {}
        for name in w.container_names():
            rec = w.container(name)
            if rec is not None and rec.handle is not None:
                handles[name] = rec.handle
        out.append(PodRuns(pod=w.pod, handles=handles))
    return out

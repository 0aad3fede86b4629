"""The soak's workload: its options (and the limits its verdict holds the cluster to) and the
churn of API writes it keeps going.

``Churn.step()`` makes one API write of ``MIX`` (ConfigMaps created, patched and deleted; bare
pods created and deleted; Deployments scaled and rolled), every object in one namespace and
every pool bounded, so a cluster that cleans up after itself holds a steady number of objects.
It owns what is written, not the schedule: ``soak`` paces the writes.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from k8semu.bench._clusterrun import TimedClient
from k8semu.durations import format_ms
from k8semu.pb.api.v1 import apps_pb2, core_pb2

__all__ = ["MIX", "Churn", "Limits", "SoakOptions"]

# The churn, per 100 API writes: (operation, weight). ConfigMap creates and deletes balance
# (each falls back to the other when its pool is full or empty), so objects stay bounded.
MIX: tuple[tuple[str, int], ...] = (
    ("configmap-create", 38),
    ("configmap-patch", 16),
    ("configmap-delete", 38),
    ("pod-create", 2),
    ("pod-delete", 2),
    ("deployment-scale", 3),
    ("deployment-roll", 1),
)
CONFIGMAP_VALUE_BYTES = 512


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What ``verdict`` calls unbounded growth (see docs/benchmarks.md)."""

    db_ratio: float = 2.0  # database file at the end / at the end of warm-up
    log_ratio: float = 2.0  # Raft log files (raft.db, WAL) at the end / at the end of warm-up
    rss_ratio: float = 1.2  # a component's RSS at the end / at the end of warm-up
    fd_slack: int = 5  # fds "grew": by more than max(fd_slack, fd_ratio x baseline) ...
    fd_ratio: float = 0.1  # ... without ever going down after warm-up
    min_rate_ratio: float = 0.9  # writes done / asked (informational)


@dataclass(frozen=True, kw_only=True)
class SoakOptions:
    duration: float = 1800.0  # seconds of churn
    write_rate: float = 50.0  # API writes/s asked
    interval: float = 60.0  # seconds per sample ("minute")
    warmup: float = 300.0  # samples before this are not judged; the one at it is the baseline
    writers: int = 8  # concurrent writes at most
    read_every: float = 1.0  # one get or list (alternately) every this many seconds
    deployments: int = 3
    max_replicas: int = 3
    configmaps: int = 200  # ConfigMaps at most at any time
    pods: int = 10  # bare pods at most at any time
    seed: int = 0  # 0: random
    ready_timeout: float = 300.0
    limits: Limits = Limits()
    progress: bool = True

    def check(self) -> None:
        """ValueError naming the option that cannot work."""
        if self.interval <= 0 or self.duration <= 0 or self.write_rate <= 0:
            raise ValueError("--duration, --interval and --write-rate must be > 0")
        if self.warmup + self.interval > self.duration:
            raise ValueError(
                f"--duration ({format_ms(int(self.duration * 1000))}) must be at least"
                f" --warmup + --interval ({format_ms(int((self.warmup + self.interval) * 1000))}):"
                " the verdict compares a sample at the end of warm-up with a later one"
            )


def _op_sequence(rng: random.Random) -> Callable[[], str]:
    """Operations in MIX's proportions, shuffled per block of 100 (so any 100 writes in a
    row hold about the mix, and a rare operation is never starved)."""
    block: list[str] = []

    def nxt() -> str:
        if not block:
            block.extend(op for op, w in MIX for _ in range(w))
            rng.shuffle(block)
        return block.pop()

    return nxt


class Churn:
    """The workload: ``step()`` makes one API write of the mix. Pools are bounded; an object
    is in its pool only once its create was answered, and leaves it before its delete is
    sent, so no two writes race on one object."""

    def __init__(
        self, client: TimedClient, namespace: str, opts: SoakOptions, rng: random.Random
    ) -> None:
        self.client = client
        self.ns = namespace
        self.opts = opts
        self.rng = rng
        self.configmaps: deque[str] = deque()
        self.pods: deque[str] = deque()
        self.deployments = [f"web-{i}" for i in range(opts.deployments)]
        self.replicas = dict.fromkeys(self.deployments, 1)
        self._seq = 0
        self._rolls = 0
        self.next_op = _op_sequence(rng)
        self.ops: dict[str, int] = {}

    def _name(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}-{self._seq}"

    async def setup(self) -> None:
        ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
        ns.metadata.name = self.ns
        await self.client.create(ns)
        for name in self.deployments:
            await self.client.create(_deployment(name, self.ns))

    async def step(self) -> None:
        op = self.next_op()
        if op == "configmap-create" and len(self.configmaps) >= self.opts.configmaps:
            op = "configmap-delete"
        elif op in ("configmap-delete", "configmap-patch") and not self.configmaps:
            op = "configmap-create"
        elif op == "pod-create" and len(self.pods) >= self.opts.pods:
            op = "pod-delete"
        elif op == "pod-delete" and not self.pods:
            op = "pod-create"
        self.ops[op] = self.ops.get(op, 0) + 1
        c, ns = self.client, self.ns
        match op:
            case "configmap-create":
                name = self._name("cm")
                await c.create(_configmap(name, ns, self.rng))
                self.configmaps.append(name)
            case "configmap-patch":
                # Out of the pool while patched, so no delete races with the patch.
                i = self.rng.randrange(len(self.configmaps))
                name = self.configmaps[i]
                del self.configmaps[i]
                try:
                    await c.patch(
                        core_pb2.ConfigMap, name, {"data": {"v": _value(self.rng)}}, namespace=ns
                    )
                finally:
                    self.configmaps.append(name)
            case "configmap-delete":
                name = self.configmaps.popleft()
                await c.delete(core_pb2.ConfigMap, name, namespace=ns)
            case "pod-create":
                name = self._name("pod")
                await c.create(_pod(name, ns))
                self.pods.append(name)
            case "pod-delete":
                name = self.pods.popleft()
                await c.delete(core_pb2.Pod, name, namespace=ns)
            case "deployment-scale":
                name = self.rng.choice(self.deployments)
                choices = list(range(1, self.opts.max_replicas + 1))
                if len(choices) > 1:
                    choices.remove(self.replicas[name])
                n = self.rng.choice(choices)
                await c.patch(apps_pb2.Deployment, name, {"spec": {"replicas": n}}, namespace=ns)
                self.replicas[name] = n
            case "deployment-roll":
                name = self.rng.choice(self.deployments)
                self._rolls += 1
                patch = {
                    "spec": {
                        "template": {"metadata": {"annotations": {"soak/roll": str(self._rolls)}}}
                    }
                }
                await c.patch(apps_pb2.Deployment, name, patch, namespace=ns)

    async def read(self, k: int) -> None:
        """One read, a get or a list by turns (of objects that are never deleted)."""
        if k % 2:
            name = self.deployments[k // 2 % len(self.deployments)]
            await self.client.get(apps_pb2.Deployment, name, namespace=self.ns)
        else:
            await self.client.list(apps_pb2.Deployment, namespace=self.ns)

    def pools(self) -> dict[str, int]:
        return {
            "configmaps": len(self.configmaps),
            "pods": len(self.pods),
            "replicas": sum(self.replicas.values()),
        }


def _value(rng: random.Random) -> str:
    return rng.randbytes(CONFIGMAP_VALUE_BYTES // 2).hex()


def _configmap(name: str, ns: str, rng: random.Random) -> core_pb2.ConfigMap:
    cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
    cm.metadata.name, cm.metadata.namespace = name, ns
    cm.metadata.labels["bench"] = "soak"
    cm.data["v"] = _value(rng)
    return cm


def _pod_spec(spec: core_pb2.PodSpec) -> None:
    c = spec.containers.add(name="main", image="busybox")
    c.command.extend(["sleep", "3600"])
    c.resources.requests.update({"cpu": "10m", "memory": "16Mi"})
    spec.termination_grace_period_seconds = 0


def _pod(name: str, ns: str) -> core_pb2.Pod:
    p = core_pb2.Pod(api_version="v1", kind="Pod")
    p.metadata.name, p.metadata.namespace = name, ns
    p.metadata.labels["bench"] = "soak"
    _pod_spec(p.spec)
    return p


def _deployment(name: str, ns: str) -> apps_pb2.Deployment:
    d = apps_pb2.Deployment(api_version="apps/v1", kind="Deployment")
    d.metadata.name, d.metadata.namespace = name, ns
    d.spec.replicas = 1
    d.spec.selector.match_labels["app"] = name
    d.spec.template.metadata.labels.update({"app": name, "bench": "soak"})
    _pod_spec(d.spec.template.spec)
    return d

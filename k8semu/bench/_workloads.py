"""``k8semu bench pods``' controller scenarios: pods made by a controller rather than by the
client, each on a cluster of its own (``k8semu.bench._clusterrun``):

sts
    a StatefulSet of ``--sts-replicas`` (100) OrderedReady pods on ``--sts-nodes`` (20) hollow
    nodes: the time from its create to status.readyReplicas == replicas, and that time per
    pod (OrderedReady's step: create -> bind -> run -> Ready seen -> next create). The
    workload is ``k8semu.bench.statefulset``'s, which also runs alone.
job
    a Job of ``--job-completions`` (1,000) pods at parallelism ``--job-parallelism`` (50),
    each running ``/bin/true`` as a real process on ``--job-nodes`` (3) process-runtime
    nodes (hollow pods never finish): completions per second, from the Job's create to
    status.succeeded == completions (polled every 100 ms). Five nodes, because the kubelet
    keeps a finished pod's IP until the pod is deleted and a node's /24 has 253: on three
    nodes a Job of 1,000 stops at 759 (Kubernetes frees a finished pod's IP with its sandbox).

Bounded by ``--timeout``; all traffic on 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from k8semu.bench import statefulset
from k8semu.bench._clusterrun import BenchCluster, ClusterLayout
from k8semu.bench._common import BenchError, say
from k8semu.client import Client, ClientError
from k8semu.cluster.errors import ClusterError
from k8semu.pb.api.v1 import batch_pb2

WORKLOADS = ("sts", "job")


@dataclass(frozen=True)
class Run:
    """What every controller scenario's cluster and wait need."""

    store_replicas: int
    timeout: float
    ready_timeout: float
    workdir: Path | None = None


@dataclass
class WorkloadResult:
    """One controller scenario: `done` of `wanted` pods ready (sts) or succeeded (job) after
    `seconds`; `per_s` = done / seconds."""

    scenario: str
    title: str
    wanted: int
    done: int = 0
    seconds: float = 0.0
    timed_out: bool = False
    error: str = ""
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def ms_per_pod(self) -> float:
        return self.seconds * 1e3 / self.done if self.done else 0.0


def _job(namespace: str, completions: int, parallelism: int) -> batch_pb2.Job:
    job = batch_pb2.Job(api_version="batch/v1", kind="Job")
    job.metadata.name, job.metadata.namespace = "batch", namespace
    job.spec.completions = completions
    job.spec.parallelism = parallelism
    job.spec.backoff_limit = completions  # a failure is measured, not fatal
    pod = job.spec.template.spec
    pod.restart_policy = "Never"
    pod.termination_grace_period_seconds = 0
    # An image the emulator does not know, with a command: the kubelet execs /bin/true itself
    # (busybox would wrap it in a Python shell, a process start costing ~100 ms of CPU).
    c = pod.containers.add(name="work", image="k8semu-bench/true", command=["true"])
    c.resources.requests.update({"cpu": "10m", "memory": "16Mi"})
    return job


async def _run_job(
    api_servers: Sequence[str], r: WorkloadResult, parallelism: int, timeout: float
) -> None:
    async with Client(list(api_servers)) as client:
        namespace = await statefulset.new_namespace(client, "bench-job")
        t0 = time.monotonic()
        await client.create(_job(namespace, r.wanted, parallelism))

        async def succeeded() -> int:
            job = await client.get(batch_pb2.Job, "batch", namespace=namespace)
            return job.status.succeeded

        r.done, r.timed_out = await statefulset.wait_for(succeeded, r.wanted, t0 + timeout)
        r.seconds = time.monotonic() - t0
        r.load_after = os.getloadavg()


def run_sts(replicas: int, nodes: int, run: Run) -> WorkloadResult:
    """The sts scenario on a cluster of its own."""
    r = WorkloadResult("sts", f"StatefulSet of {replicas:,} (OrderedReady) on {nodes:,} hollow"
                       " nodes", replicas)  # fmt: skip
    layout = ClusterLayout(
        name="bench-sts",
        store_replicas=run.store_replicas,
        hollow_nodes=nodes,
        proxies=False,
        ready_timeout_s=run.ready_timeout,
    )

    def workload(api_servers: Sequence[str]) -> None:
        sts = statefulset.StatefulSetBenchResult(replicas, nodes, "OrderedReady", claims=False)
        asyncio.run(statefulset.run_workload(api_servers, sts, run.timeout))
        r.done, r.seconds, r.timed_out = sts.ready, sts.ready_seconds, sts.timed_out
        r.load_after = sts.load_after

    return _on_cluster(r, layout, run, workload)


def run_job(completions: int, parallelism: int, nodes: int, run: Run) -> WorkloadResult:
    """The job scenario on a cluster of its own."""
    r = WorkloadResult(
        "job",
        f"Job of {completions:,} completions at parallelism"
        f" {parallelism} on {nodes} process-runtime nodes",
        completions,
    )
    layout = ClusterLayout(
        name="bench-job",
        store_replicas=run.store_replicas,
        real_nodes=nodes,
        runtime="process",
        proxies=False,
        ready_timeout_s=run.ready_timeout,
    )

    def workload(api_servers: Sequence[str]) -> None:
        asyncio.run(_run_job(api_servers, r, parallelism, run.timeout))

    return _on_cluster(r, layout, run, workload)


def _on_cluster(
    r: WorkloadResult,
    layout: ClusterLayout,
    run: Run,
    workload: Callable[[Sequence[str]], None],
) -> WorkloadResult:
    """Start the cluster, run `workload` on its API servers, stop the cluster."""
    say(f"scenario {r.scenario}: {r.title}")
    try:
        with BenchCluster(layout, workdir=run.workdir, say=say) as cluster:
            cluster.start()
            workload(cluster.api_servers)
            if r.timed_out:
                cluster.failed = True  # keep the logs
    except (BenchError, ClusterError, ClientError, OSError) as exc:
        r.error = str(exc)
    say(describe(r))
    return r


def describe(r: WorkloadResult) -> str:
    if r.error:
        return f"scenario {r.scenario}: failed: {r.error}"
    what = "ready" if r.scenario == "sts" else "succeeded"
    late = " (timed out)" if r.timed_out else ""
    return (f"scenario {r.scenario}: {r.done:,}/{r.wanted:,} {what} in {r.seconds:.1f} s{late},"
            f" {r.per_s:.1f} pods/s, {r.ms_per_pod:.0f} ms per pod")  # fmt: skip


def table(rows: Sequence[WorkloadResult]) -> list[str]:
    """The markdown table of the controller scenarios."""
    if not rows:
        return []
    lines = ["", "| scenario | done | seconds | pods/s | ms per pod | load average after |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    for r in rows:
        load = " ".join(f"{x:.1f}" for x in r.load_after)
        lines.append(f"| ({r.scenario}) {r.title} | {r.done:,}/{r.wanted:,} | {r.seconds:.1f} |"
                     f" {r.per_s:.1f} | {r.ms_per_pod:.0f} | {load} |")  # fmt: skip
        if r.error or r.timed_out:
            lines.append(f"| ({r.scenario}) {r.error or 'timed out'} | | | | | |")
    return lines

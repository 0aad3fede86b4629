"""``k8semu bench pods``' controller scenarios: pods made by a controller rather than by the
client, each on a cluster of its own (``k8semu.bench._clusterrun``):

sts
    a StatefulSet of ``sts_replicas`` (100) OrderedReady pods on ``sts_nodes`` (20) hollow
    nodes: the time from its create to status.readyReplicas == replicas, and that time per
    pod (OrderedReady's step: create -> bind -> run -> Ready seen -> next create). The
    workload is ``k8semu.bench.statefulset``'s, which also runs alone.
job
    a Job of ``job_completions`` (1,000) pods at parallelism ``job_parallelism`` (50), each
    running ``true`` as a real process on ``job_nodes`` (3) process-runtime nodes (hollow
    pods never finish): completions per second, from the Job's create to
    status.succeeded == completions (polled every 100 ms).

Bounded by the options' ``timeout``; all traffic on 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from k8semu.bench import statefulset
from k8semu.bench._clusterrun import BenchCluster, ClusterLayout
from k8semu.bench._common import BenchError, say
from k8semu.client import Client, ClientError
from k8semu.cluster.errors import ClusterError
from k8semu.pb.api.v1 import batch_pb2, core_pb2

WORKLOADS = ("sts", "job")


@dataclass(frozen=True, kw_only=True)
class WorkloadOptions:
    sts_replicas: int = 100
    sts_nodes: int = 20
    job_completions: int = 1000
    job_parallelism: int = 50
    job_nodes: int = 3
    store_replicas: int = 3
    timeout: float = 300.0
    ready_timeout: float = 600.0


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
    c = pod.containers.add(name="work", image="busybox", command=["true"])
    c.resources.requests.update({"cpu": "10m", "memory": "16Mi"})
    return job


async def _run_job(api_servers: Sequence[str], r: WorkloadResult, opts: WorkloadOptions) -> None:
    namespace = f"bench-job-{secrets.token_hex(3)}"
    async with Client(list(api_servers)) as client:
        ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
        ns.metadata.name = namespace
        await client.create(ns)
        t0 = time.monotonic()
        await client.create(_job(namespace, opts.job_completions, opts.job_parallelism))
        deadline = t0 + opts.timeout
        while time.monotonic() < deadline:
            job = await client.get(batch_pb2.Job, "batch", namespace=namespace)
            r.done = job.status.succeeded
            if r.done >= r.wanted:
                break
            await asyncio.sleep(0.1)
        else:
            r.timed_out = True
        r.seconds = time.monotonic() - t0
        r.load_after = os.getloadavg()


def _plan(name: str, opts: WorkloadOptions) -> tuple[WorkloadResult, ClusterLayout]:
    if name == "sts":
        title = (f"StatefulSet of {opts.sts_replicas:,} (OrderedReady) on {opts.sts_nodes:,}"
                 " hollow nodes")  # fmt: skip
        layout = ClusterLayout(name="bench-sts", store_replicas=opts.store_replicas,
                               hollow_nodes=opts.sts_nodes, proxies=False,
                               ready_timeout_s=opts.ready_timeout)  # fmt: skip
        return WorkloadResult("sts", title, opts.sts_replicas), layout
    title = (f"Job of {opts.job_completions:,} completions at parallelism"
             f" {opts.job_parallelism} on {opts.job_nodes} process-runtime nodes")  # fmt: skip
    layout = ClusterLayout(name="bench-job", store_replicas=opts.store_replicas,
                           real_nodes=opts.job_nodes, runtime="process", proxies=False,
                           ready_timeout_s=opts.ready_timeout)  # fmt: skip
    return WorkloadResult("job", title, opts.job_completions), layout


def run_controller_scenario(
    name: str, opts: WorkloadOptions, *, workdir: Path | None = None
) -> WorkloadResult:
    """Start the scenario's cluster, run it, stop the cluster."""
    r, layout = _plan(name, opts)
    say(f"scenario {name}: {r.title}")
    try:
        with BenchCluster(layout, workdir=workdir, say=say) as cluster:
            cluster.start()
            if name == "sts":
                sts = statefulset.StatefulSetBenchResult(
                    replicas=opts.sts_replicas, nodes=opts.sts_nodes, policy="OrderedReady",
                    claims=False,
                )  # fmt: skip
                asyncio.run(statefulset.run_workload(cluster.api_servers, sts, opts.timeout))
                r.done, r.seconds, r.timed_out = sts.ready, sts.ready_seconds, sts.timed_out
                r.load_after = sts.load_after
            else:
                asyncio.run(_run_job(cluster.api_servers, r, opts))
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

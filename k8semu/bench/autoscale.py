"""A web Deployment under a changing load, scaled by a HorizontalPodAutoscaler:
``k8semu bench autoscale`` (issue 12's benchmark).

This module owns ``k8semu bench autoscale``: it sets the run up and drives it. It starts a
cluster with ``k8semu up`` on free ports (``k8semu.bench._clusterrun``: 1 store replica, the
control plane, ``--nodes`` process-runtime workers with proxies, and, for the metrics-overhead
sub-run, a pool of hollow nodes), or the ``--config`` given, then from one client process:

1. deploys the HPA walkthrough's web app (``registry.k8s.io/hpa-example``, ``--iterations``
   of CPU per request, ``--cpu-request``/``--cpu-limit``, a readiness probe on /healthz and a
   preStop sleep so a pod leaves the Service's endpoints before it stops), its Service, and an
   ``autoscaling/v2`` HPA on CPU utilization (``--cpu-percent``) with a scale-down
   stabilization window of ``--window`` in its ``behavior`` (``--metric
   requests_per_second`` asks for the per-pod request rate instead, once the HPA serves it);
2. drives HTTP load through the Service's ClusterIP (``_autoscaleload``: new connection per
   request and keep-alive, one retry per failed request) following a profile: ``--rate``
   steady for ``--warmup``, doubled for ``--step``, ``--spike-factor`` times for ``--spike``,
   then ``--drop-factor`` times until ``--duration`` is over;
3. samples every ``--sample-interval`` the Deployment (spec and ready replicas), the
   Endpoints (ready addresses), the HPA (desired replicas, current metric), and the load;
4. with ``--overhead-pods`` > 0, measures what resource metrics cost: the hollow pool's
   kubelet and the API server's CPU (/proc/PID/stat) over ``--overhead-window`` with no pods
   on the hollow nodes, then with that many pods whose usage is modelled, per 100 pods;
5. reports (``_autoscalereport``): the time from the step to the HPA computing new replicas
   and to the new pods serving, latency and errors (first try, after one retry) per phase and
   while scaling, when scale-down came against the window, the overhead; PASS/MISS against
   the issue's targets. ``--json``, ``--plot PNG``.

Bounded by ``--duration`` and timeouts; traffic stays on 127/8; it signals nothing itself
(``k8semu down`` stops the cluster).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from google.protobuf.message import Message

from k8semu import durations
from k8semu import log as logging_setup
from k8semu.api import manifest
from k8semu.api.quantity import milli_value
from k8semu.bench import _common
from k8semu.bench._autoscaleload import SHAPES, LoadDriver
from k8semu.bench._autoscalereport import (
    AutoscaleOptions,
    AutoscaleResult,
    Overhead,
    Sample,
    analyse,
    report,
)
from k8semu.bench._clusterrun import BenchCluster, ClusterLayout, ResourceSampler, merge_config
from k8semu.bench._common import BenchError, CpuMeter, Progress, cancel, environment, say
from k8semu.client import Client, ClientError
from k8semu.cluster.config import format_duration
from k8semu.cluster.errors import ClusterError
from k8semu.cluster.state import ComponentRecord
from k8semu.controllers.context import ControllerManagerConfig
from k8semu.images._loadprofile import Profile, Segment
from k8semu.pb.api.v1 import apps_pb2, autoscaling_pb2, core_pb2, metrics_pb2

__all__ = [
    "AutoscaleOptions",
    "AutoscaleResult",
    "build_parser",
    "cluster_overrides",
    "main",
    "objects",
    "profile_of",
    "run",
    "sync_period_of",
]

APP = "hpa-example"
NAMESPACE = "autoscale"
OVERHEAD_NAMESPACE = "autoscale-overhead"
IMAGE = "registry.k8s.io/hpa-example"
SYNC_PERIOD_FLAG = "--horizontal-pod-autoscaler-sync-period"
HPA_SECTION = "horizontalPodAutoscaler"  # the cluster config's HPA timings
HOLLOW_LABEL = ("type", "hollow")  # what bench_config labels the hollow pool's nodes with
PRESTOP_SLEEP_S = 2
PROBE_TIMEOUT_S = 3
GRACE_S = 10
READY_TIMEOUT_S = 120.0


# -- the objects -------------------------------------------------------------------------------


def _metric_spec(opts: AutoscaleOptions) -> dict[str, Any]:
    if opts.metric == "cpu":
        target = {"type": "Utilization", "averageUtilization": opts.cpu_percent}
        return {"type": "Resource", "resource": {"name": "cpu", "target": target}}
    # The per-pod request rate from the proxies' counters (issue 12 item 4): an HPA that
    # does not serve it yet says so in its ScalingActive condition, which the report shows.
    target = {"type": "AverageValue", "averageValue": f"{opts.rps_target:g}"}
    return {"type": "Pods", "pods": {"metric": {"name": opts.metric}, "target": target}}


def objects(opts: AutoscaleOptions) -> list[Message]:
    """The Deployment, its Service and the HPA, in that order."""
    not_hollow = {"key": HOLLOW_LABEL[0], "operator": "NotIn", "values": [HOLLOW_LABEL[1]]}
    container = {
        "name": APP,
        "image": IMAGE,
        "args": ["--iterations", str(opts.iterations), "--quiet"],
        "ports": [{"containerPort": 80}],
        "resources": {"requests": {"cpu": opts.cpu_request}, "limits": {"cpu": opts.cpu_limit}},
        # hpa-example answers one request at a time, so /healthz waits behind the queue: a
        # probe of 1 s took every pod out of the endpoints in a spike at load average 10.
        "readinessProbe": {
            "httpGet": {"path": "/healthz", "port": 80},
            "periodSeconds": 1,
            "timeoutSeconds": PROBE_TIMEOUT_S,
            "failureThreshold": 3,
        },
        # Leave the endpoints (and every proxy's table) before the server stops (item 7).
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_S}}},
    }
    meta = {"name": APP, "namespace": NAMESPACE}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": opts.min_replicas,
            "selector": {"matchLabels": {"app": APP}},
            "template": {
                "metadata": {"labels": {"app": APP}},
                "spec": {
                    "terminationGracePeriodSeconds": GRACE_S,
                    "containers": [container],
                    # Never on the overhead sub-run's hollow nodes: they serve no traffic.
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [{"matchExpressions": [not_hollow]}]
                            }
                        }
                    },
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {"selector": {"app": APP}, "ports": [{"port": 80, "targetPort": 80}]},
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP},
            "minReplicas": opts.min_replicas,
            "maxReplicas": opts.max_replicas,
            "metrics": [_metric_spec(opts)],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": round(opts.window)}},
        },
    }
    return [manifest.from_dict(d, source="bench autoscale") for d in (deployment, service, hpa)]


def _overhead_deployment(pods: int) -> Message:
    """``pods`` pods on the hollow nodes, each using 50m and 32Mi by the simulated model."""
    return manifest.from_dict(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "idle", "namespace": OVERHEAD_NAMESPACE},
            "spec": {
                "replicas": pods,
                "selector": {"matchLabels": {"app": "idle"}},
                "template": {
                    "metadata": {
                        "labels": {"app": "idle"},
                        "annotations": {
                            "k8semu.io/usage-cpu": "50m",
                            "k8semu.io/usage-memory": "32Mi",
                        },
                    },
                    "spec": {
                        "nodeSelector": dict([HOLLOW_LABEL]),
                        "containers": [
                            {"name": "main", "image": "busybox", "command": ["sleep", "3600"]}
                        ],
                    },
                },
            },
        },
        source="bench autoscale",
    )


def profile_of(opts: AutoscaleOptions) -> Profile:
    """steady ``rate`` for ``warmup``, 2x for ``step``, ``spike_factor``x for ``spike``,
    ``drop_factor``x for the rest of ``duration``."""
    r = opts.rate
    return Profile(
        (
            Segment(r, r, opts.warmup),
            Segment(2 * r, 2 * r, opts.step),
            Segment(opts.spike_factor * r, opts.spike_factor * r, opts.spike),
            Segment(opts.drop_factor * r, opts.drop_factor * r, opts.drop),
        )
    )


# -- measuring -----------------------------------------------------------------------------------


def sync_period_of(components: Sequence[ComponentRecord]) -> float:
    """The HPA sync period the controller manager runs with: its flag when the launcher gave
    one (the cluster config's), else the controller manager's default."""
    for c in components:
        if c.kind != "controller-manager" or SYNC_PERIOD_FLAG not in c.command:
            continue
        i = c.command.index(SYNC_PERIOD_FLAG)
        if i + 1 < len(c.command):
            with contextlib.suppress(ValueError):
                return durations.parse_ms(c.command[i + 1]) / 1000
    return ControllerManagerConfig().hpa_sync_period


def _metric_value(hpa: autoscaling_pb2.HorizontalPodAutoscaler) -> float | None:
    """The HPA's current value of its first metric: % of request, or the per-pod average."""
    for m in hpa.status.current_metrics:
        if m.type == "Resource" and m.resource.current.HasField("average_utilization"):
            return float(m.resource.current.average_utilization)
        if m.type == "Pods" and m.pods.current.average_value:
            with contextlib.suppress(ValueError):
                return milli_value(m.pods.current.average_value) / 1000
    return None


def _ready_addresses(ep: core_pb2.Endpoints) -> int:
    return sum(len(s.addresses) for s in ep.subsets)


def _condition(hpa: autoscaling_pb2.HorizontalPodAutoscaler) -> str:
    """A ScalingActive=False condition, as reason: message (else empty)."""
    for c in hpa.status.conditions:
        if c.type == "ScalingActive" and c.status == "False":
            return f"{c.reason}: {c.message}"
    return ""


@dataclass
class _Sampler:
    client: Client
    load: LoadDriver
    profile: Profile
    interval: float
    samples: list[Sample] = field(default_factory=list)
    inactive: list[tuple[float, str]] = field(default_factory=list)  # (t, ScalingActive=False)

    async def sample(self) -> None:
        t = self.load.elapsed()
        try:
            d = await self.client.get(apps_pb2.Deployment, APP, namespace=NAMESPACE)
            ep = await self.client.get(core_pb2.Endpoints, APP, namespace=NAMESPACE)
            hpa = await self.client.get(
                autoscaling_pb2.HorizontalPodAutoscaler, APP, namespace=NAMESPACE
            )
        except ClientError:
            return  # the next round
        why = _condition(hpa)
        if why:
            self.inactive.append((round(t, 2), why))
        self.samples.append(
            Sample(
                t=round(t, 2),
                target_rps=self.profile.rate_at(t),
                spec=d.spec.replicas,
                ready=d.status.ready_replicas,
                endpoints=_ready_addresses(ep),
                desired=hpa.status.desired_replicas if hpa.status.HasField("desired_replicas")
                else None,
                metric=_metric_value(hpa),
                active=not why,
            )
        )  # fmt: skip

    async def loop(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self.interval)


async def _wait(
    what: str, check: Callable[[], Awaitable[bool]], timeout: float = READY_TIMEOUT_S
) -> None:
    """Poll ``await check()`` every 0.5 s until true; BenchError naming ``what`` at timeout."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ClientError, OSError):
            if await check():
                return
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.5)


async def _deploy(client: Client, opts: AutoscaleOptions) -> str:
    """Create the namespace and the objects; wait for ``min_replicas`` pods in the Service's
    endpoints and an answer through its ClusterIP, which is returned."""
    ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
    ns.metadata.name = NAMESPACE
    await client.create(ns)
    for obj in objects(opts):
        await client.create(obj)

    async def serving() -> bool:
        ep = await client.get(core_pb2.Endpoints, APP, namespace=NAMESPACE)
        return _ready_addresses(ep) >= opts.min_replicas

    await _wait(f"{opts.min_replicas} {APP} pod(s) in the Service's endpoints", serving)
    svc = await client.get(core_pb2.Service, APP, namespace=NAMESPACE)
    ip = svc.spec.cluster_ip

    async def answers() -> bool:
        probe = LoadDriver(ip, 80, Profile((Segment(1.0, 1.0, 1.0),)), timeout=5.0)
        await probe.run()
        return any(o.ok for o in probe.outcomes)

    await _wait(f"an answer through the ClusterIP {ip}:80", answers, timeout=60.0)
    return ip


async def _load_phase(
    client: Client, cluster: BenchCluster, ip: str, opts: AutoscaleOptions, r: AutoscaleResult
) -> None:
    profile = profile_of(opts)
    load = LoadDriver(
        ip,
        80,
        profile,
        shapes=opts.shapes,
        timeout=opts.request_timeout,
        max_in_flight=opts.max_in_flight,
        keepalive_requests=opts.keepalive_requests,
    )
    sampler = _Sampler(client, load, profile, opts.sample_interval)
    progress = Progress(enabled=opts.progress)

    def status() -> str:
        last = sampler.samples[-1] if sampler.samples else None
        shown = f"replicas {last.spec}/{last.endpoints} serving" if last else ""
        return f"load {len(load.outcomes)} requests, {profile.rate_at(load.elapsed()):g}/s {shown}"

    r.load_before = os.getloadavg()
    async with ResourceSampler(cluster.components) as usage:
        task = asyncio.get_running_loop().create_task(sampler.loop())
        try:
            async with progress.every_half_second(status):
                await load.run()
        finally:
            await cancel(task)
    r.load_after = os.getloadavg()
    r.samples = sampler.samples
    r.outcomes = load.outcomes
    r.skipped = load.skipped
    r.error_kinds = dict(load.error_kinds)
    r.inactive_samples = len(sampler.inactive)
    r.inactive_last = sampler.inactive[-1] if sampler.inactive else None
    r.components = [u.to_json() for u in usage.usage]
    r.sampled_seconds = usage.seconds


async def _overhead(
    client: Client, cluster: BenchCluster, opts: AutoscaleOptions
) -> Overhead | None:
    """The hollow kubelet's and the API server's CPU over ``overhead_window`` without and
    then with ``overhead_pods`` pods on the hollow nodes."""
    hollow = [c.pid for c in cluster.components if c.kind == "kubelet" and len(c.nodes) > 1]
    apis = [c.pid for c in cluster.components if c.kind == "apiserver" and c.pid > 0]
    if not hollow or not apis:
        return None
    meters = {"kubelet": CpuMeter(hollow), "apiserver": CpuMeter(apis)}

    async def window() -> dict[str, float | None]:
        for m in meters.values():
            m.start()
        await asyncio.sleep(opts.overhead_window)
        return {k: m.stop() for k, m in meters.items()}

    say(f"overhead: {opts.overhead_window:g} s without pods on the hollow nodes")
    before = await window()
    ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
    ns.metadata.name = OVERHEAD_NAMESPACE
    await client.create(ns)
    await client.create(_overhead_deployment(opts.overhead_pods))

    async def all_measured() -> bool:
        got = await client.list(metrics_pb2.PodMetrics, namespace=OVERHEAD_NAMESPACE)
        return len(got.items) >= opts.overhead_pods

    await _wait(f"PodMetrics of {opts.overhead_pods} hollow pods", all_measured, timeout=180.0)
    say(f"overhead: {opts.overhead_window:g} s with {opts.overhead_pods} pods")
    after = await window()
    return Overhead(
        pods=opts.overhead_pods,
        nodes=opts.overhead_nodes,
        window_s=opts.overhead_window,
        without=before,
        with_pods=after,
    )


async def _measured(cluster: BenchCluster, opts: AutoscaleOptions, r: AutoscaleResult) -> None:
    r.sync_period_s = sync_period_of(cluster.components)
    async with Client(cluster.api_servers) as client:
        ip = await _deploy(client, opts)
        say(f"{APP} serving on {ip}:80; load for {opts.duration:g} s")
        await _load_phase(client, cluster, ip, opts, r)
        if opts.overhead_pods:
            r.overhead = await _overhead(client, cluster, opts)


def cluster_overrides(opts: AutoscaleOptions) -> dict[str, Any]:
    """What the generated cluster config gets on top: ``--config-set`` keys, and the HPA's
    sync period in its section when ``--sync-period`` is given."""
    overrides = dict(opts.overrides)
    if opts.sync_period is not None:
        period = {HPA_SECTION: {"syncPeriod": format_duration(round(opts.sync_period * 1000))}}
        overrides = merge_config(overrides, period)
    return overrides


def run(opts: AutoscaleOptions) -> AutoscaleResult:
    """Start the cluster (``opts.config``, else a generated one), run, stop it; the analysed
    result (``error`` set on a failure)."""
    result = AutoscaleResult(options=opts)
    layout = None
    if opts.config is None:
        layout = ClusterLayout(
            name="bench-autoscale",
            store_replicas=1,
            real_nodes=opts.nodes,
            hollow_nodes=opts.overhead_nodes if opts.overhead_pods else 0,
            timings={},
            ready_timeout_s=opts.ready_timeout,
            overrides=cluster_overrides(opts),
        )
        result.config = (
            f"generated: 1 store replica, 1 API server, 1 scheduler, 1 controller manager,"
            f" {opts.nodes} process-runtime node(s) with proxies"
            + (f", {opts.overhead_nodes} hollow nodes" if opts.overhead_pods else "")
        )
    else:
        result.config = str(opts.config)
    cluster = BenchCluster(
        layout, config=opts.config, workdir=opts.workdir, keep=opts.keep, say=say
    )
    try:
        with cluster as c:
            c.start()
            result.cluster_up_s = c.up_seconds
            asyncio.run(_measured(c, opts, result))
    except (BenchError, ClusterError, ClientError, OSError) as exc:
        result.error = str(exc)
        say(f"failed: {exc}")
    analyse(result)
    return result


# -- command line --------------------------------------------------------------------------------


def _duration(text: str) -> float:
    value = durations.seconds_flag(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _percent(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"must be 1..1000, got {text}")
    return value


def _config_set(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
        raise argparse.ArgumentTypeError(f"want KEY.PATH=VALUE, got {text!r}")
    return key.strip(), yaml.safe_load(value)


def build_parser() -> argparse.ArgumentParser:
    d = AutoscaleOptions()
    p = _common.argument_parser(
        "k8semu bench autoscale",
        (
            "The HPA walkthrough's web app under a load profile (steady, a step doubling it, a"
            " spike, a drop) through its Service: time to new replicas and to new pods"
            " serving, latency and errors while scaling, scale-down against the stabilization"
            " window, and the CPU the resource metrics cost per 100 pods."
        ),
    )
    a = p.add_argument
    count, amount = _common.positive_int, _common.positive_float
    a("--config", type=Path, help="cluster config to start (default: generated, free ports)")
    a("--nodes", type=count, default=d.nodes, help="process-runtime worker nodes")
    a("--config-set", type=_config_set, action="append", default=[], metavar="KEY=VALUE",
      help="a key of the generated cluster config, e.g. timings.metricResolution=5s")  # fmt: skip
    a("--duration", type=_duration, default=d.duration, help="the whole load profile")
    a("--rate", type=amount, default=d.rate, help="steady requests/s")
    a("--warmup", type=_duration, default=d.warmup, help="steady phase")
    a("--step", type=_duration, default=d.step, help="phase at 2x the rate")
    a("--spike", type=_duration, default=d.spike, help="phase at --spike-factor x the rate")
    a("--spike-factor", type=amount, default=d.spike_factor)
    a("--drop-factor", type=_fraction, default=d.drop_factor, help="x the rate after the spike")
    a("--window", type=_duration, default=d.window, help="HPA scale-down stabilization window")
    a("--sync-period", type=_duration, default=None,
      help=f"the HPA's sync period: the cluster config's {HPA_SECTION}.syncPeriod"
      " (default: the config's, 15 s as Kubernetes)")  # fmt: skip
    a("--metric", choices=("cpu", "requests_per_second"), default=d.metric,
      help="what the HPA scales on (requests_per_second: a Pods metric, once served)")  # fmt: skip
    a("--cpu-percent", type=_percent, default=d.cpu_percent, help="target CPU utilization")
    a("--rps-target", type=amount, default=d.rps_target, help="per pod, with rps")
    a("--min-replicas", type=count, default=d.min_replicas)
    a("--max-replicas", type=count, default=d.max_replicas)
    a("--cpu-request", default=d.cpu_request)
    a("--cpu-limit", default=d.cpu_limit)
    a("--iterations", type=count, default=d.iterations, help="sqrt steps per request")
    a("--shapes", default=",".join(d.shapes), help=f"client shapes: {','.join(SHAPES)}")
    a("--max-in-flight", type=count, default=d.max_in_flight)
    a("--keepalive-requests", type=count, default=d.keepalive_requests,
      help="requests per keep-alive connection before it is closed")  # fmt: skip
    a("--request-timeout", type=_duration, default=d.request_timeout, help="per attempt")
    a("--sample-interval", type=_duration, default=d.sample_interval)
    a("--overhead-pods", type=int, default=d.overhead_pods, help="0: no overhead sub-run")
    a("--overhead-nodes", type=count, default=d.overhead_nodes, help="hollow nodes")
    a("--overhead-window", type=_duration, default=d.overhead_window)
    a("--ready-timeout", type=_duration, default=d.ready_timeout)
    a("--workdir", type=Path, help="put the cluster dir under this dir")
    a("--keep", action="store_true", help="keep the cluster's logs and data")
    a("--no-progress", action="store_true", help="no progress line")
    a("--json", type=Path, help="also write the figures to this file")
    a("--plot", type=Path, help="also draw replicas, load, metric and latency to this PNG")
    return p


def options_from(args: argparse.Namespace) -> AutoscaleOptions:
    """The options; ValueError naming the flag when they do not fit together."""
    overrides: dict[str, Any] = {}
    for key, value in args.config_set:
        *parents, leaf = key.split(".")
        node = overrides
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"--config-set {key}: {part} is set to a value already")
        node[leaf] = value
    shapes = tuple(s.strip() for s in args.shapes.split(",") if s.strip())
    opts = _common.options_from_args(
        AutoscaleOptions,
        args,
        shapes=shapes,
        overrides=overrides,
        progress=not args.no_progress,
    )
    opts.check()
    return opts


def main(argv: Sequence[str] | None = None) -> int:
    """``k8semu bench autoscale``: exit status 1 when the run failed or missed a target."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        opts = options_from(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.plot is not None and not _common.require_matplotlib():
        return 2
    # Only warnings, on stderr: the client's retries are not the report.
    logging_setup.configure("bench", level="warning")
    env = environment(opts.workdir, False)
    result = run(opts)
    report(result, env, args.json, args.plot)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())

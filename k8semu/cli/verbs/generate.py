"""The verbs that build one object from flags, as kubectl's generators do: `run` (a bare Pod)
and `autoscale` (an autoscaling/v2 HorizontalPodAutoscaler for a Deployment or ReplicaSet).

Flags are checked before anything is sent; the object is then created in one request.
`run -i`/`-t` then shows the container's output until it ends or the user interrupts (there
is no attach to a process's stdin here: the output is followed through the kubelet's log
stream), and `--rm` deletes the pod afterwards, as the walkthrough's load generator expects.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import cast

from k8semu.api import manifest, names
from k8semu.api.errors import ManifestError
from k8semu.cli import logs
from k8semu.cli._kubeconfig import Target
from k8semu.cli._resources import UsageError
from k8semu.cli.verbs._shared import client_for, merge_patch, named_objects, namespace_for, out
from k8semu.client import Client, NotFound
from k8semu.pb.api.v1 import autoscaling_pb2, core_pb2, meta_pb2
from k8semu.pb.kubelet.v1 import kubelet_pb2

STARTED_PHASES = ("Running", "Succeeded", "Failed")

RESTART_POLICIES = ("Always", "OnFailure", "Never")
SCALABLE = {"Deployment": "apps/v1", "ReplicaSet": "apps/v1"}


# ---- run --------------------------------------------------------------------------------------


def _env(pairs: list[str]) -> list[core_pb2.EnvVar]:
    env = []
    for text in pairs:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise UsageError(f"--env: expected KEY=VALUE, got {text!r}")
        env.append(core_pb2.EnvVar(name=key, value=value))
    return env


def _labels(text: str, name: str) -> dict[str, str]:
    if not text:
        return {"run": name}
    labels = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--labels: expected KEY=VALUE[,KEY=VALUE...], got {text!r}")
        labels[key.strip()] = value.strip()
    return labels


def run_pod(ns: argparse.Namespace, namespace: str) -> core_pb2.Pod:
    """The Pod `k8semu run` creates (pure; UsageError naming the flag)."""
    problems = names.dns1123_subdomain_errors(ns.name)
    if problems:
        raise UsageError(f"invalid pod name {ns.name!r}: {'; '.join(problems)}")
    if not ns.image:
        raise UsageError("--image: required")
    if ns.restart not in RESTART_POLICIES:
        raise UsageError(f"--restart: must be one of Always, OnFailure, Never, got {ns.restart!r}")
    container = core_pb2.Container(name=ns.name, image=ns.image, env=_env(ns.env))
    if ns.port:
        if not 0 < ns.port < 65536:
            raise UsageError(f"--port: must be 1..65535, got {ns.port}")
        container.ports.append(core_pb2.ContainerPort(container_port=ns.port))
    if ns.command:
        if not ns.args:
            raise UsageError("--command: give the command after --")
        container.command.extend(ns.args)
    else:
        container.args.extend(ns.args)
    pod = core_pb2.Pod(
        api_version="v1",
        kind="Pod",
        metadata=meta_pb2.ObjectMeta(
            name=ns.name, namespace=namespace, labels=_labels(ns.labels, ns.name)
        ),
        spec=core_pb2.PodSpec(containers=[container], restart_policy=ns.restart),
    )
    return _overridden(pod, ns.overrides) if ns.overrides else pod


def _overridden(pod: core_pb2.Pod, text: str) -> core_pb2.Pod:
    """`--overrides`: a JSON merge patch over the generated Pod (kubectl merges strategically;
    for the fields people override, nodeName, labels, resources, the result is the same)."""
    try:
        patch = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--overrides: not JSON: {exc}") from None
    if not isinstance(patch, dict):
        raise UsageError("--overrides: want a JSON object")
    try:
        merged = manifest.from_dict(merge_patch(manifest.to_dict(pod), patch), source="--overrides")
    except ManifestError as exc:
        raise UsageError(f"--overrides: {exc}") from None
    if not isinstance(merged, core_pb2.Pod):
        raise UsageError("--overrides: must keep kind Pod")
    return merged


async def cmd_run(ns: argparse.Namespace, target: Target) -> None:
    attach = ns.stdin or ns.tty or ns.attach
    if ns.rm and not attach:
        raise UsageError("--rm should only be used for attached containers")
    pod = run_pod(ns, target.namespace)
    name, namespace = pod.metadata.name, pod.metadata.namespace
    async with client_for(target, ns) as client:
        await client.create(pod)
        if not attach:
            out(f"pod/{name} created\n")
            return
        try:
            await _wait_started(client, name, namespace, ns.pod_running_timeout)
            if ns.tty:
                out("If you don't see a command prompt, try pressing enter.\n", flush=True)
            await _follow(target, name, namespace)
        finally:
            if ns.rm:
                with contextlib.suppress(NotFound):
                    await client.delete(core_pb2.Pod, name, namespace=namespace)
                out(f'pod "{name}" deleted\n', flush=True)


async def _wait_started(client: Client, name: str, namespace: str, timeout: float) -> None:
    """Until the pod's containers started (or already ended): its log exists from then."""
    deadline = time.monotonic() + timeout
    while True:
        pod = cast(core_pb2.Pod, await client.get(core_pb2.Pod, name, namespace=namespace))
        if pod.status.phase in STARTED_PHASES and pod.status.container_statuses:
            state = pod.status.container_statuses[0].state
            if state.HasField("running") or state.HasField("terminated"):
                return
        if time.monotonic() > deadline:
            raise UsageError(f"timed out waiting for pod {name} to start ({timeout:g}s)")
        await asyncio.sleep(0.25)


async def _follow(target: Target, name: str, namespace: str) -> None:
    """The container's output until its run ends (the kubelet's log stream, followed)."""
    request = kubelet_pb2.LogsRequest(namespace=namespace, pod=name, follow=True)
    try:
        await logs.stream_log(target, request)
    except logs.CommandError as exc:
        raise UsageError(str(exc)) from None


# ---- autoscale ----------------------------------------------------------------------------------


def autoscaler(
    kind: str, name: str, namespace: str, ns: argparse.Namespace
) -> autoscaling_pb2.HorizontalPodAutoscaler:
    """The HPA `k8semu autoscale` creates (pure; UsageError naming the flag)."""
    if ns.max < 1:
        raise UsageError(f"--max=MAXPODS is required and must be at least 1, max: {ns.max}")
    if ns.min >= 0 and ns.max < ns.min:
        raise UsageError(
            f"--max=MAXPODS must be larger or equal to --min=MINPODS, max: {ns.max}, min: {ns.min}"
        )
    if ns.min == 0:
        raise UsageError("--min: must be at least 1 (or left out)")
    hpa = autoscaling_pb2.HorizontalPodAutoscaler(
        api_version="autoscaling/v2",
        kind="HorizontalPodAutoscaler",
        metadata=meta_pb2.ObjectMeta(name=ns.hpa_name or name, namespace=namespace),
        spec=autoscaling_pb2.HorizontalPodAutoscalerSpec(
            scale_target_ref=autoscaling_pb2.CrossVersionObjectReference(
                api_version=SCALABLE[kind], kind=kind, name=name
            ),
            max_replicas=ns.max,
        ),
    )
    if ns.min > 0:
        hpa.spec.min_replicas = ns.min
    if ns.cpu_percent >= 0:
        if ns.cpu_percent == 0:
            raise UsageError("--cpu-percent: must be greater than 0")
        hpa.spec.metrics.append(
            autoscaling_pb2.MetricSpec(
                type="Resource",
                resource=autoscaling_pb2.ResourceMetricSource(
                    name="cpu",
                    target=autoscaling_pb2.MetricTarget(
                        type="Utilization", average_utilization=ns.cpu_percent
                    ),
                ),
            )
        )
    return hpa


async def cmd_autoscale(ns: argparse.Namespace, target: Target) -> None:
    pairs = named_objects(ns.resources, "autoscale")
    for kind, _ in pairs:
        if kind.kind not in SCALABLE:
            raise UsageError(
                f"cannot autoscale a {kind.kind}: only deployments and replicasets are scalable"
            )
    if ns.hpa_name and len(pairs) > 1:
        raise UsageError("--name: only with one object")
    async with client_for(target, ns) as client:
        for kind, name in pairs:
            space = namespace_for(kind, target) or ""
            hpa = autoscaler(kind.kind, name, space, ns)
            # As kubectl: the target must exist (a typo is an error now, not a condition later).
            await client.get(kind.resource, name, namespace=space)
            await client.create(hpa)
            out(f"horizontalpodautoscaler.autoscaling/{hpa.metadata.name} autoscaled\n")


__all__ = ["autoscaler", "cmd_autoscale", "cmd_run", "run_pod"]

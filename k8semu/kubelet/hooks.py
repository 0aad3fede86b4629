"""Container lifecycle hooks: postStart, run right after a container starts, and preStop,
run before the kubelet sends SIGTERM.

postStart (kuberuntime's startContainer): the handler runs once the process is started, while
the container's entrypoint runs beside it; the pod's other containers wait for it, as the
kubelet's start loop does. A failed postStart kills the container (`FailedPostStartHook`),
which then restarts per the pod's restart policy. Kubernetes puts no bound on an exec hook;
here a hook is cut after the pod's termination grace period (at least 30 s), so a hung one
cannot hold the pod worker (and the pod's deletion) forever.

Kubernetes' semantics (kuberuntime's killContainer): when a container with a
`lifecycle.preStop` handler is stopped with a grace period above zero, the handler runs
first - an exec in the container, an HTTP GET to the pod, or (1.30+) a `sleep` of `seconds` -
and the whole hook is cut when the grace period runs out. Its time counts against the grace:
the container then gets SIGTERM with what is left, but never less than
`MIN_GRACE_AFTER_HOOK` seconds (Kubernetes' minimumGracePeriodInSeconds), so a hook that used
up the grace does not turn into a SIGKILL on the spot. A failed hook does not stop the
termination; the caller records a `FailedPreStopHook` event.

The typical use is the one issue 12 asks for: a `sleep` of a few seconds, so that the pod has
left its Services' endpoints (the endpoints controller drops a pod as soon as it has a
deletionTimestamp) and every proxy has stopped sending it new connections before the
process is told to stop.
"""

from __future__ import annotations

import asyncio

from k8semu.kubelet.probes import ExecFunc, run_probe
from k8semu.pb.api.v1 import core_pb2

MIN_GRACE_AFTER_HOOK = 2.0


def has_pre_stop(container: core_pb2.Container) -> bool:
    return container.HasField("lifecycle") and container.lifecycle.HasField("pre_stop")


def has_post_start(container: core_pb2.Container) -> bool:
    return container.HasField("lifecycle") and container.lifecycle.HasField("post_start")


async def run_hook(
    handler: core_pb2.LifecycleHandler,
    container: core_pb2.Container,
    pod_ip: str,
    grace: float,
    exec_func: ExecFunc,
) -> str:
    """Run `handler` once within `grace` seconds: '' on success, else why it failed."""
    which = [f for f in ("exec", "http_get", "tcp_socket", "sleep") if handler.HasField(f)]
    if len(which) != 1:
        return "lifecycle handler: exactly one of exec, httpGet, tcpSocket, sleep is required"
    try:
        async with asyncio.timeout(grace):
            if which[0] == "sleep":
                if handler.sleep.seconds < 0:
                    return f"sleep.seconds: {handler.sleep.seconds} must be non-negative"
                await asyncio.sleep(handler.sleep.seconds)
                return ""
            # run_probe's own timeout is the same bound; the outer one cuts a slow exec_func.
            return await run_probe(handler, container, pod_ip, grace, exec_func)
    except TimeoutError:
        return f"hook did not finish within the grace period ({grace:g}s); cut"


def grace_after_hook(grace: float, spent: float) -> float:
    """The grace left for SIGTERM after a preStop hook that took `spent` seconds."""
    return max(grace - spent, MIN_GRACE_AFTER_HOOK)

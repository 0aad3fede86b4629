"""The `simulated` runtime (KWOK-style): no process, no files.

A container "runs" `start_delay` seconds after it is started and until it is stopped; it
never fails, has no logs, and its probes are treated as passing. Nothing survives a kubelet
restart (the next kubelet starts the pods' containers again). Hundreds of hollow nodes share
one instance.

Usage is a model, set per pod by annotations (as KWOK's metrics usage does), read whenever
usage is asked for, so annotating a running pod changes what it "uses" from then on:

    k8semu.io/usage-cpu: "250m"      each container uses 250 millicores ("1.5", "50%" too:
                                     a percentage is of the container's CPU request)
    k8semu.io/usage-memory: "64Mi"   each container's working set ("50%": of its memory
                                     request, else its limit)

No annotation (or a value that does not parse) is 0; at most 10,000 cores and 1 PiB. The CPU
time a container has used is the rate integrated over time, so a change of rate shows up as it
would on a real node.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from k8semu.api.quantity import parse_quantity
from k8semu.kubelet.runtime import (
    ContainerHandle,
    ExitInfo,
    Launch,
    PodRuns,
    PodSetup,
    RecoveredPod,
    Spawned,
    Usage,
    UsageSnapshot,
)
from k8semu.pb.api.v1 import core_pb2

CPU_ANNOTATION = "k8semu.io/usage-cpu"
MEMORY_ANNOTATION = "k8semu.io/usage-memory"
# Bounds on what an annotation can claim, so that no figure overflows the summary's uint64s.
MAX_CORES = Fraction(10**4)
MAX_MEMORY = Fraction(2**50)  # 1 PiB

_ids = itertools.count(1)


class SimulatedRuntime:
    name = "simulated"
    runs_probes = False

    def __init__(self, *, start_delay: float = 0.0) -> None:
        self.start_delay = start_delay
        # (pod uid, container) -> (wall clock of the last sample, CPU ns used until then)
        self._cpu: dict[tuple[str, str], tuple[float, float]] = {}
        self._lock = threading.Lock()  # usage() runs in threads; start/stop on the loop

    def isolation(self) -> tuple[str, str]:
        return "simulated", ""

    def housekeeping(self) -> None:
        return None

    def usage(self, node: str, pods: Sequence[PodRuns]) -> UsageSnapshot:
        snap = UsageSnapshot()
        now = time.time()
        with self._lock:
            for run in pods:
                uid = run.pod.metadata.uid
                specs = {c.name: c for c in run.pod.spec.containers}
                for name, handle in run.handles.items():
                    spec = specs.get(name, core_pb2.Container())
                    cores = min(modelled(run.pod, spec, CPU_ANNOTATION, "cpu"), MAX_CORES)
                    since, used = self._cpu.get((uid, name), (handle.started_at, 0.0))
                    used += float(cores) * max(now - since, 0.0) * 1e9
                    self._cpu[(uid, name)] = (now, used)
                    memory = int(
                        min(modelled(run.pod, spec, MEMORY_ANNOTATION, "memory"), MAX_MEMORY)
                    )
                    snap.containers[(uid, name)] = Usage(int(used), memory, memory)
        return snap

    async def prepare_pod(self, pod: PodSetup) -> None:
        return None  # no directory, no files: nothing runs

    async def project(self, uid: str, projections: Sequence[object], run_as: object) -> None:
        return None  # no files

    async def start(self, launch: Launch) -> ContainerHandle:
        if self.start_delay > 0:
            await asyncio.sleep(self.start_delay)
        return ContainerHandle(
            pod_uid=launch.pod_uid,
            name=launch.container,
            restart=launch.restart,
            container_id=f"simulated://{next(_ids)}",
            started_at=time.time(),
            exited=asyncio.get_running_loop().create_future(),
        )

    async def stop(self, handle: ContainerHandle, grace: float) -> ExitInfo:
        with self._lock:
            self._cpu.pop((handle.pod_uid, handle.name), None)
        if not handle.exited.done():
            handle.exited.set_result(
                ExitInfo(exit_code=0, reason="Completed", finished_at=time.time())
            )
        return handle.exited.result()

    async def exec(self, launch: Launch, stdin: bytes, timeout: float) -> tuple[int, bytes, bytes]:
        return 126, b"", b"exec: the simulated runtime runs no processes\n"

    async def spawn(self, launch: Launch, *, stdin: bool, tty: bool) -> Spawned:
        return Spawned(None, None, 126, b"exec: the simulated runtime runs no processes\n")

    def log_path(self, uid: str, container: str, restart: int) -> Path | None:
        return None

    def termination_file(self, uid: str, path: str) -> Path | None:
        return None

    def recover(self) -> dict[str, RecoveredPod]:
        return {}

    async def end_pod(self, uid: str) -> None:
        await self.remove_pod(uid)  # nothing on disk: only the modelled usage goes

    async def remove_pod(self, uid: str) -> None:
        with self._lock:
            for key in [k for k in self._cpu if k[0] == uid]:
                del self._cpu[key]


def modelled(
    pod: core_pb2.Pod, container: core_pb2.Container, annotation: str, res: str
) -> Fraction:
    """The usage the pod's `annotation` sets for one container: cores for cpu, bytes for
    memory; a percentage is of the container's request (else limit) of `res`; else 0."""
    text = pod.metadata.annotations.get(annotation, "").strip()
    try:
        if text.endswith("%"):
            base = container.resources.requests.get(res) or container.resources.limits.get(res)
            if not base:
                return Fraction(0)
            share = parse_quantity(text[:-1]).amount / 100
            return max(share * parse_quantity(base).amount, Fraction(0))
        return max(parse_quantity(text).amount, Fraction(0)) if text else Fraction(0)
    except ValueError:
        return Fraction(0)

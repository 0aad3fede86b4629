"""The container runtime interface the pod workers use, and the values crossing it.

A runtime starts a container run (`start`), reports its end (`ContainerHandle.exited`, a
future), stops it gracefully (`stop`), runs a command in a container's environment (`exec`),
and knows what survived a kubelet restart (`recover`). It owns the per-pod directory and
the logs; it does not decide restarts, probes or status: that is the pod worker's job.

Two runtimes implement it: `k8semu.kubelet.process` (real OS processes, design decision 8)
and `k8semu.kubelet.simulated` (no process, KWOK-style, for hollow nodes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True, kw_only=True)
class ExitInfo:
    """How a container run ended (Kubernetes' ContainerStateTerminated)."""

    exit_code: int
    finished_at: float  # wall clock
    signal: int = 0
    reason: str = ""  # Completed, Error, OOMKilled, StartError, ContainerStatusUnknown
    message: str = ""


@dataclass(slots=True, kw_only=True)
class ContainerHandle:
    """One run of one container. `exited` resolves once, when the run has ended."""

    pod_uid: str
    name: str
    restart: int  # this run's restart count (its log file number)
    container_id: str  # process://<pid> or simulated://...
    started_at: float  # wall clock
    exited: asyncio.Future[ExitInfo]
    pid: int = 0
    adopted: bool = False  # found running after a kubelet restart


@dataclass(frozen=True, slots=True, kw_only=True)
class Launch:
    """What `start` needs for one run of one container."""

    pod_uid: str
    pod_namespace: str
    pod_name: str
    container: str
    restart: int
    argv: Sequence[str]
    env: Mapping[str, str]
    working_dir: str = ""  # relative to the pod directory; "" = the pod directory
    memory_limit: int | None = None  # bytes


@dataclass(frozen=True, slots=True)
class VolumeFile:
    """A file of a configMap/secret volume, relative to the pod directory."""

    path: str
    data: bytes
    mode: int = 0o644


@dataclass(slots=True, kw_only=True)
class RecoveredContainer:
    name: str
    restart_count: int
    handle: ContainerHandle | None  # None: it is not running any more


@dataclass(slots=True, kw_only=True)
class RecoveredPod:
    """What a runtime found of a pod after a kubelet restart."""

    uid: str
    namespace: str = ""
    name: str = ""
    pod_ip: str = ""
    containers: dict[str, RecoveredContainer] = field(default_factory=dict)


class StartError(Exception):
    """A container could not be started: `reason` is Kubernetes' (StartError,
    RunContainerError, CreateContainerConfigError, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class Runtime(Protocol):
    """See the module docstring. Every method may be called concurrently for different pods."""

    name: str
    runs_probes: bool  # False: probes are treated as passing (simulated)

    async def prepare_pod(
        self, uid: str, *, namespace: str, name: str, pod_ip: str, files: Sequence[VolumeFile]
    ) -> None:
        """Create the pod's directory (idempotent), remember its identity and IP, write its
        volume files and directories (a VolumeFile whose path ends in "/" is a directory)."""
        ...

    async def start(self, launch: Launch) -> ContainerHandle: ...

    async def stop(self, handle: ContainerHandle, grace: float) -> ExitInfo:
        """SIGTERM, SIGKILL after `grace` seconds; returns how the run ended."""
        ...

    async def exec(self, launch: Launch, stdin: bytes, timeout: float) -> tuple[int, bytes, bytes]:
        """Run `launch.argv` in the container's environment: (exit code, stdout, stderr)."""
        ...

    def log_path(self, uid: str, container: str, restart: int) -> Path | None: ...

    def recover(self) -> dict[str, RecoveredPod]:
        """Pods found from an earlier kubelet run, by uid (live containers as handles)."""
        ...

    async def remove_pod(self, uid: str) -> None:
        """Kill whatever is left of the pod and delete its directory."""
        ...

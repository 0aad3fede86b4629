"""The container runtime interface the pod workers use, and the values crossing it.

A runtime starts a container run (`start`), reports its end (`ContainerHandle.exited`, a
future), stops it gracefully (`stop`), runs a command in a container's environment (`exec`),
knows what survived a kubelet restart (`recover`) and measures what containers use
(`usage`). It owns the per-pod directory, the logs and the resource limits (cgroups or
rlimits); it does not decide restarts, probes or status: that is the pod worker's job.

Two runtimes implement it: `k8semu.kubelet.process` (real OS processes, design decision 8)
and `k8semu.kubelet.simulated` (no process, KWOK-style, for hollow nodes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from k8semu.api.quantity import parse_quantity
from k8semu.kubelet.stdinpipe import StdinPipe
from k8semu.pb.api.v1 import core_pb2


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
    stdin: StdinPipe | None = None  # spec.stdin: this run's stdin, closed when the run ends


@dataclass(frozen=True, slots=True, kw_only=True)
class Resources:
    """A container's CPU and memory requests and limits, as numbers; None: not set."""

    cpu_request_milli: int | None = None
    cpu_limit_milli: int | None = None
    memory_limit: int | None = None  # bytes

    @classmethod
    def of(cls, container: core_pb2.Container) -> Resources:
        """From the container's spec. A limit without a request is the request too (as the
        API server defaults it); an unreadable quantity counts as not set."""
        res = container.resources
        cpu_limit = _quantity(res.limits.get("cpu"), milli=True)
        cpu_request = _quantity(res.requests.get("cpu"), milli=True)
        return cls(
            cpu_request_milli=cpu_request if cpu_request is not None else cpu_limit,
            cpu_limit_milli=cpu_limit,
            memory_limit=_quantity(res.limits.get("memory"), milli=False),
        )


def _quantity(text: str | None, *, milli: bool) -> int | None:
    if not text:
        return None
    try:
        q = parse_quantity(text)
    except ValueError:
        return None
    return q.milli() if milli else q.value()


@dataclass(frozen=True, slots=True)
class Spawned:
    """An interactive exec: the process (stdout and stderr pipes, stdin a pipe when asked),
    or with a terminal its master end (`tty`, every stream through it); `proc` None when the
    command could not start (`exit_code`, `error` say why)."""

    proc: asyncio.subprocess.Process | None
    tty: int | None
    exit_code: int
    error: bytes


@dataclass(frozen=True, slots=True)
class RunAs:
    """Who a container's processes run as, from its pod's securityContext and its own (which
    wins for user, group and runAsNonRoot); None: the runtime's choice (docs/kubelet.md,
    "Pod users")."""

    user: int | None = None
    group: int | None = None
    non_root: bool = False
    fs_group: int | None = None
    supplemental_groups: tuple[int, ...] = ()

    @classmethod
    def of(cls, pod: core_pb2.Pod, container: core_pb2.Container) -> RunAs:
        psc, csc = pod.spec.security_context, container.security_context

        def pick(name: str) -> int | None:
            for sc in (csc, psc):
                if sc.HasField(name):  # type: ignore[arg-type]
                    return int(getattr(sc, name))
            return None

        non_root = csc.run_as_non_root if csc.HasField("run_as_non_root") else psc.run_as_non_root
        return cls(
            user=pick("run_as_user"),
            group=pick("run_as_group"),
            non_root=non_root,
            fs_group=psc.fs_group if psc.HasField("fs_group") else None,
            supplemental_groups=tuple(psc.supplemental_groups),
        )


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
    termination_message_path: str = ""  # emptied at the start (relative to the pod directory)
    resources: Resources = field(default_factory=Resources)
    run_as: RunAs = field(default_factory=RunAs)
    stdin: bool = False  # spec.stdin: a pipe the kubelet holds (pods/attach -i writes to it)
    stdin_once: bool = False  # spec.stdinOnce: closed when the first attach session ends
    tty: bool = False  # spec.tty: the run is on a pseudo-terminal (its output is the log)


@dataclass(frozen=True, slots=True)
class Usage:
    """What a container, pod or node used, at one moment: cumulative CPU time, and memory."""

    cpu_ns: int
    memory_usage: int  # bytes charged, page cache included
    working_set: int  # usage minus inactive file pages (Kubernetes' working set)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.cpu_ns + other.cpu_ns,
            self.memory_usage + other.memory_usage,
            self.working_set + other.working_set,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PodRuns:
    """A pod and its running containers (by name): what `Runtime.usage` is asked about."""

    pod: core_pb2.Pod
    handles: Mapping[str, ContainerHandle]


@dataclass(slots=True, kw_only=True)
class UsageSnapshot:
    """`Runtime.usage`'s answer. A pod or node left out has no figure of its own (the caller
    sums its containers or pods); a container left out is not measurable."""

    node: Usage | None = None
    pods: dict[str, Usage] = field(default_factory=dict)  # by uid
    containers: dict[tuple[str, str], Usage] = field(default_factory=dict)  # (uid, name)


@dataclass(frozen=True, slots=True)
class VolumeFile:
    """A file of a configMap/secret volume, relative to the pod directory; with `link`, a
    symbolic link at `path` to that host directory (a persistentVolumeClaim, hostPath or
    memory emptyDir volume: a process runtime has no mount namespace, so a mount is a link)."""

    path: str
    data: bytes
    mode: int = 0o644
    link: str = ""


@dataclass(frozen=True, slots=True)
class Projection:
    """A volume written from API objects (configMap, secret, downwardAPI, projected; the
    ServiceAccount token mount) at `path`, its mount path relative to the pod directory:
    `files` are relative to it. Written with Kubernetes' atomic `..data` layout
    (kubelet/projection.py) at a container's start and again when its objects change."""

    path: str
    files: tuple[VolumeFile, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class PodSetup:
    """What a runtime prepares a pod's directory from before a container starts: the pod's
    identity and IP, its volume files and directories (a VolumeFile whose path ends in "/" is
    a directory), owned by whom `run_as` (the container about to start) runs as."""

    uid: str
    namespace: str
    name: str
    pod_ip: str
    files: Sequence[VolumeFile] = ()
    projections: Sequence[Projection] = ()
    run_as: RunAs | None = None


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

    def isolation(self) -> tuple[str, str]:
        """How containers are held to their limits (cgroup-v1, cgroup-v2, rlimits,
        simulated) and, for rlimits, why cgroups are not used."""
        ...

    def usage(self, node: str, pods: Sequence[PodRuns]) -> UsageSnapshot:
        """What the node `node` and these pods and containers use now. May block (it reads
        /proc and cgroup files): call it from a thread."""
        ...

    def housekeeping(self) -> None:
        """Periodic upkeep of what others may have changed under running pods (the process
        runtime renews its pod users' traverse grants). May block: call it from a thread."""
        ...

    async def prepare_pod(self, pod: PodSetup) -> None:
        """Create the pod's directory (idempotent), remember its identity and IP, write its
        volume files and directories."""
        ...

    async def project(self, uid: str, projections: Sequence[Projection], run_as: RunAs) -> None:
        """Write `projections` of the running pod `uid` again where their files changed (an
        atomic swap each; owned as for a container running as `run_as`). Raises StartError
        naming the first volume that could not be written, after writing the others."""
        ...

    async def start(self, launch: Launch) -> ContainerHandle: ...

    async def stop(self, handle: ContainerHandle, grace: float) -> ExitInfo:
        """SIGTERM, SIGKILL after `grace` seconds; returns how the run ended."""
        ...

    async def exec(self, launch: Launch, stdin: bytes, timeout: float) -> tuple[int, bytes, bytes]:
        """Run `launch.argv` in the container's environment: (exit code, stdout, stderr)."""
        ...

    async def spawn(self, launch: Launch, *, stdin: bool, tty: bool) -> Spawned:
        """Start `launch.argv` in the container's environment for an interactive exec, in
        its own process group (the caller kills it)."""
        ...

    def log_path(self, uid: str, container: str, restart: int) -> Path | None: ...

    def termination_file(self, uid: str, path: str) -> Path | None:
        """Where a container's terminationMessagePath is on this node (None: nowhere)."""
        ...

    def recover(self) -> dict[str, RecoveredPod]:
        """Pods found from an earlier kubelet run, by uid (live containers as handles)."""
        ...

    async def end_pod(self, uid: str) -> None:
        """The pod's containers ended for good (its sandbox goes): kill whatever they left
        and forget its IP, so that a restarted kubelet does not take it again; its logs and
        directory stay until `remove_pod`. Idempotent."""
        ...

    async def remove_pod(self, uid: str) -> None:
        """Kill whatever is left of the pod and delete its directory."""
        ...

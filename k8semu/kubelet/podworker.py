"""One pod worker per pod: a task that converges the pod's containers on its spec and reports
their state in the pod's status (Kubernetes' podWorkers + syncPod, level-triggered).

Every wake-up (a pod update, a container exit, a probe result, a back-off expiry) runs one
`sync`: start what should run (init containers in order, then the containers, honouring the
restart policy and the back-off), then write the status if it differs from the stored one.
A pod with a deletionTimestamp (or gone from the API) has its containers stopped with the
pod's grace period, then the worker finishes the graceful delete (grace 0, uid precondition),
frees the pod IP and removes the pod directory.

The worker owns its containers' records; it reaches the API, the pod IPs and the runtime
only through its `PodHost` (the node agent).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from google.protobuf import timestamp_pb2

from k8semu.api import timestamps
from k8semu.api.quantity import parse_quantity
from k8semu.client import ClientError
from k8semu.client.events import NORMAL, WARNING, EventRecorder
from k8semu.kubelet.backoff import Backoff
from k8semu.kubelet.config import KubeletConfig
from k8semu.kubelet.env import EnvError, NoCommand, PodFacts, command_line, container_env
from k8semu.kubelet.probes import ProbeKind, ProbeTiming, ProbeTracker, run_probe
from k8semu.kubelet.runtime import (
    ContainerHandle,
    ExitInfo,
    Launch,
    RecoveredPod,
    Runtime,
    StartError,
)
from k8semu.kubelet.volumes import volume_files
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2

log = get_logger(__name__)

DEFAULT_GRACE = 30
STATUS_RETRY = 0.5  # seconds before retrying a failed status write


class PodHost(Protocol):
    """What a pod worker needs from its node agent."""

    config: KubeletConfig
    runtime: Runtime
    recorder: EventRecorder | None

    @property
    def node_name(self) -> str: ...
    @property
    def node_ip(self) -> str: ...
    def current_pod(self, uid: str) -> core_pb2.Pod | None: ...
    async def pod_ip_for(self, pod: core_pb2.Pod, recovered_ip: str) -> str: ...
    def release_ip(self, uid: str) -> None: ...
    async def lookup_refs(
        self, pod: core_pb2.Pod
    ) -> tuple[dict[str, core_pb2.ConfigMap], dict[str, core_pb2.Secret]]: ...
    def services(self) -> list[core_pb2.Service]: ...
    def base_env(self) -> dict[str, str]: ...
    def resolve_image(
        self, image: str, command: Sequence[str], args: Sequence[str]
    ) -> list[str] | None: ...
    async def write_status(self, pod: core_pb2.Pod, status: core_pb2.PodStatus) -> int | None: ...
    async def finish_delete(self, pod: core_pb2.Pod) -> None: ...
    def worker_done(self, uid: str) -> None: ...


def should_restart(policy: str, exit_code: int, *, init: bool) -> bool:
    """Whether a container that ended with `exit_code` runs again under `policy`."""
    if init:
        return exit_code != 0 and policy != "Never"
    if policy == "Always":
        return True
    if policy == "OnFailure":
        return exit_code != 0
    return False


def _terminated(info: ExitInfo, started_at: float, container_id: str) -> Any:
    t = core_pb2.ContainerStateTerminated(
        exit_code=info.exit_code,
        signal=info.signal,
        reason=info.reason,
        message=info.message,
        container_id=container_id,
    )
    t.finished_at.CopyFrom(timestamps.time_at(info.finished_at))
    if started_at:
        t.started_at.CopyFrom(timestamps.time_at(started_at))
    return t


def memory_limit(container: core_pb2.Container) -> int | None:
    value = container.resources.limits.get("memory")
    if not value:
        return None
    try:
        return parse_quantity(value).value()
    except ValueError:
        return None


def qos_class(pod: core_pb2.Pod) -> str:
    """Kubernetes' QoS class from the containers' requests and limits (cpu, memory)."""
    containers = [*pod.spec.init_containers, *pod.spec.containers]
    if not any(c.resources.requests or c.resources.limits for c in containers):
        return "BestEffort"
    for c in containers:
        for res in ("cpu", "memory"):
            limit = c.resources.limits.get(res)
            request = c.resources.requests.get(res, limit)
            if not limit or request != limit:
                return "Burstable"
    return "Guaranteed"


@dataclass(eq=False)
class ContainerRecord:
    spec: core_pb2.Container
    init: bool
    backoff: Backoff
    where: str  # field path, for messages
    restart_count: int = 0
    handle: ContainerHandle | None = None
    last: Any = None  # ContainerStateTerminated of the most recent run that ended
    before_last: Any = None  # ... and of the one before it
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    next_start: float = 0.0  # loop time before which it must not start
    start_failures: int = 0  # config/image errors in a row (their own back-off)
    ready: bool = False
    started: bool = False
    started_event: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # of the current or last run, for exec

    @property
    def name(self) -> str:
        return self.spec.name

    def cancel_tasks(self) -> None:
        current = asyncio.current_task()
        for task in self.tasks:
            if task is not current:
                task.cancel()
        self.tasks = []


class PodWorker:
    """See the module docstring. `notify()` asks for a sync; `task` runs until the pod is gone."""

    def __init__(
        self, host: PodHost, pod: core_pb2.Pod, *, recovered: RecoveredPod | None = None
    ) -> None:
        self.host = host
        self.uid = pod.metadata.uid
        self.namespace = pod.metadata.namespace
        self.name = pod.metadata.name
        self.pod = pod
        self.pod_ip = ""
        self._recovered = recovered
        self._wake = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._next_wake = math.inf
        self._terminating = False
        self._failed_init = False
        self._written: tuple[core_pb2.PodStatus, int] | None = None  # last status we wrote
        self._start_time = pod.status.start_time if pod.status.HasField("start_time") else None
        self._conditions: dict[str, tuple[str, str, str, timestamp_pb2.Timestamp]] = {
            c.type: (c.status, c.reason, c.message, c.last_transition_time)
            for c in pod.status.conditions
        }
        cfg = host.config
        self.records: dict[str, ContainerRecord] = {}
        self.inits: list[ContainerRecord] = []
        self.containers: list[ContainerRecord] = []
        for init, specs, group in (
            (True, pod.spec.init_containers, "initContainers"),
            (False, pod.spec.containers, "containers"),
        ):
            for i, spec in enumerate(specs):
                rec = ContainerRecord(
                    spec=spec,
                    init=init,
                    backoff=Backoff(
                        initial=min(cfg.initial_container_backoff, cfg.max_container_backoff),
                        maximum=cfg.max_container_backoff,
                    ),
                    where=f"spec.{group}[{i}]",
                )
                (self.inits if init else self.containers).append(rec)
                self.records[spec.name] = rec
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = self._loop.create_task(self.run(), name=f"pod {self.namespace}/{self.name}")

    def notify(self) -> None:
        self._wake.set()

    def _event(self, type_: str, reason: str, message: str) -> None:
        if self.host.recorder is not None:
            self.host.recorder.event(self.pod, type_, reason, message)

    # ---- the loop ----

    async def run(self) -> None:
        try:
            self._seed()
            while True:
                self._wake.clear()
                self._next_wake = math.inf
                try:
                    if await self._sync():
                        return
                    delay = self._next_wake - self._loop.time()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("pod sync failed", pod=f"{self.namespace}/{self.name}")
                    delay = 1.0
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(None if math.isinf(delay) else delay):
                            await self._wake.wait()
        finally:
            for rec in self.records.values():
                rec.cancel_tasks()
            self.host.worker_done(self.uid)

    def _wake_at(self, when: float) -> None:
        self._next_wake = min(self._next_wake, when)

    def _seed(self) -> None:
        """Continue where an earlier kubelet left off: restart counts and terminations from
        the stored status, live containers from the runtime (process runtime only)."""
        recovered = self._recovered
        if self.host.runtime.name != "process":
            return
        statuses = {
            s.name: s
            for s in [*self.pod.status.init_container_statuses, *self.pod.status.container_statuses]
        }
        for name, rec in self.records.items():
            status = statuses.get(name)
            found = recovered.containers.get(name) if recovered else None
            if status is not None:
                rec.restart_count = status.restart_count
                if status.last_state.HasField("terminated"):
                    rec.last = status.last_state.terminated
                if status.state.HasField("terminated"):
                    rec.before_last, rec.last = rec.last, status.state.terminated
            if found is not None:
                rec.restart_count = max(rec.restart_count, found.restart_count)
                if found.handle is not None:
                    self._adopt(rec, found.handle)
                    continue
            if status is not None and status.state.HasField("running"):
                # It ran when the last kubelet went away and is gone now.
                info = ExitInfo(
                    exit_code=137,
                    reason="ContainerStatusUnknown",
                    message="the container could not be located after a kubelet restart",
                    finished_at=time.time(),
                )
                started = status.state.running.started_at.ToSeconds()
                rec.before_last = rec.last
                rec.last = _terminated(info, started, status.container_id)

    def _facts(self) -> PodFacts:
        host = self.host
        return PodFacts(
            pod_ip=self.pod_ip,
            host_ip=host.node_ip,
            node_name=host.node_name,
            dns_server=host.config.cluster_dns,
            cluster_domain=host.config.cluster_domain,
        )

    def _adopt(self, rec: ContainerRecord, handle: ContainerHandle) -> None:
        rec.handle = handle
        rec.restart_count = handle.restart
        rec.started = not (self.host.runtime.runs_probes and rec.spec.HasField("startup_probe"))
        rec.started_event = asyncio.Event()
        if rec.started:
            rec.started_event.set()  # else the readiness and liveness probes never start
        rec.ready = False
        rec.env = {}  # rebuilt on the first exec (it needs API reads)
        self._watch(rec, handle)
        log.info("container adopted", pod=f"{self.namespace}/{self.name}", container=rec.name)

    async def _sync(self) -> bool:
        pod = self.host.current_pod(self.uid)
        if pod is None or pod.metadata.HasField("deletion_timestamp"):
            await self._terminate(pod)
            return True
        self.pod = pod
        if not self.pod_ip:
            recovered_ip = self._recovered.pod_ip if self._recovered else ""
            self.pod_ip = await self.host.pod_ip_for(pod, recovered_ip)
            if self.host.current_pod(self.uid) is None:
                return False  # deleted while waiting for an IP: the next sync terminates
        if self._start_time is None:
            self._start_time = timestamps.time_at(time.time())
        now = self._loop.time()
        policy = pod.spec.restart_policy or "Always"
        inits_done = True
        for rec in self.inits:
            if rec.last is not None and rec.last.exit_code == 0 and rec.handle is None:
                continue
            inits_done = False
            if rec.handle is not None or self._failed_init:
                break
            if rec.last is not None and not should_restart(policy, rec.last.exit_code, init=True):
                self._failed_init = True
                break
            await self._maybe_start(rec, now)
            break
        if inits_done:
            for rec in self.containers:
                if rec.handle is not None:
                    continue
                if rec.last is not None and not should_restart(
                    policy, rec.last.exit_code, init=False
                ):
                    continue
                await self._maybe_start(rec, now)
        await self._report()
        return False

    async def _maybe_start(self, rec: ContainerRecord, now: float) -> None:
        if now < rec.next_start:
            self._wake_at(rec.next_start)
            if rec.last is not None and rec.start_failures == 0:
                rec.waiting_reason = "CrashLoopBackOff"
                rec.waiting_message = (
                    f"back-off {rec.backoff.current:g}s restarting failed container={rec.name}"
                    f" pod={self.name}_{self.namespace}({self.uid})"
                )
            return
        await self._start(rec)

    def _start_failed(self, rec: ContainerRecord, reason: str, message: str) -> None:
        rec.start_failures += 1
        delay = rec.backoff.next_delay(0.0)
        rec.next_start = self._loop.time() + delay
        self._wake_at(rec.next_start)
        rec.waiting_reason = reason
        rec.waiting_message = message
        log.info(
            "container not started",
            pod=f"{self.namespace}/{self.name}",
            container=rec.name,
            reason=reason,
            message=message,
        )
        self._event(WARNING, "Failed", f"Error: {reason}: {message}")

    async def _start(self, rec: ContainerRecord) -> None:
        pod = self.pod
        host = self.host
        try:
            config_maps, secrets = await host.lookup_refs(pod)
            facts = self._facts()
            env = container_env(
                pod,
                rec.spec,
                facts,
                config_maps=config_maps,
                secrets=secrets,
                services=host.services(),
                where=rec.where,
            )
            argv = command_line(rec.spec, env, host.resolve_image)
            files = volume_files(
                pod, rec.spec, config_maps=config_maps, secrets=secrets, where=rec.where
            )
        except EnvError as exc:
            self._start_failed(rec, "CreateContainerConfigError", str(exc))
            return
        except NoCommand as exc:
            reason = "ErrImagePull" if rec.start_failures == 0 else "ImagePullBackOff"
            self._start_failed(rec, reason, str(exc))
            return
        full_env = {**host.base_env(), **env}
        restart = rec.restart_count + (1 if rec.last is not None else 0)
        launch = Launch(
            pod_uid=self.uid,
            pod_namespace=self.namespace,
            pod_name=self.name,
            container=rec.name,
            restart=restart,
            argv=argv,
            env=full_env,
            working_dir=rec.spec.working_dir,
            memory_limit=memory_limit(rec.spec),
        )
        rec.env = full_env
        try:
            await host.runtime.prepare_pod(
                self.uid,
                namespace=self.namespace,
                name=self.name,
                pod_ip=self.pod_ip,
                files=files,
            )
            handle = await host.runtime.start(launch)
        except StartError as exc:
            if exc.reason == "CreateContainerConfigError":
                self._start_failed(rec, exc.reason, exc.message)
                return
            # Kubernetes counts a run that could not even start (exit 128, StartError).
            rec.restart_count = restart
            rec.start_failures = 0
            info = ExitInfo(
                exit_code=128, reason="StartError", message=exc.message, finished_at=time.time()
            )
            log.warning(
                "container failed to start",
                pod=f"{self.namespace}/{self.name}",
                container=rec.name,
                reason=exc.reason,
                message=exc.message,
            )
            self._event(WARNING, "Failed", f"Error: {exc.message}")
            self._ended(rec, info, time.time(), "")
            return
        if self._terminating or self.host.current_pod(self.uid) is None:
            await host.runtime.stop(handle, 0)
            return
        rec.restart_count = restart
        rec.start_failures = 0
        rec.handle = handle
        rec.ready = False
        rec.started = not (host.runtime.runs_probes and rec.spec.HasField("startup_probe"))
        rec.started_event = asyncio.Event()
        if rec.started:
            rec.started_event.set()
        self._watch(rec, handle)
        self._event(NORMAL, "Started", f"Started container {rec.name}")

    def _watch(self, rec: ContainerRecord, handle: ContainerHandle) -> None:
        rec.tasks.append(self._loop.create_task(self._wait_exit(rec, handle)))
        if not self.host.runtime.runs_probes:
            rec.ready = True
            return
        if not rec.spec.HasField("readiness_probe"):
            rec.ready = rec.started
        spec = rec.spec
        for kind, present, probe in (
            (ProbeKind.STARTUP, spec.HasField("startup_probe"), spec.startup_probe),
            (ProbeKind.LIVENESS, spec.HasField("liveness_probe"), spec.liveness_probe),
            (ProbeKind.READINESS, spec.HasField("readiness_probe"), spec.readiness_probe),
        ):
            if present:
                rec.tasks.append(self._loop.create_task(self._probe(rec, handle, kind, probe)))

    async def _wait_exit(self, rec: ContainerRecord, handle: ContainerHandle) -> None:
        info = await asyncio.shield(handle.exited)
        if rec.handle is handle:
            self._ended(rec, info, handle.started_at, handle.container_id)

    def _ended(self, rec: ContainerRecord, info: ExitInfo, started_at: float, cid: str) -> None:
        rec.cancel_tasks()
        rec.handle = None
        rec.ready = False
        rec.started = False
        rec.before_last = rec.last
        rec.last = _terminated(info, started_at, cid)
        if not self._terminating:
            policy = self.pod.spec.restart_policy or "Always"
            if should_restart(policy, info.exit_code, init=rec.init):
                delay = rec.backoff.next_delay(max(info.finished_at - started_at, 0.0))
                rec.next_start = self._loop.time() + delay
                if rec.start_failures == 0 and info.exit_code != 0:
                    self._event(
                        WARNING, "BackOff", f"Back-off restarting failed container {rec.name}"
                    )
        self.notify()

    # ---- probes ----

    async def _probe(
        self, rec: ContainerRecord, handle: ContainerHandle, kind: ProbeKind, probe: Any
    ) -> None:
        try:
            await self._probe_loop(rec, handle, kind, probe)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: log it; the container keeps its last probe result
            log.exception(
                "probe loop failed",
                pod=f"{self.namespace}/{self.name}",
                container=rec.name,
                probe=kind.value,
            )

    async def _probe_loop(
        self, rec: ContainerRecord, handle: ContainerHandle, kind: ProbeKind, probe: Any
    ) -> None:
        timing = ProbeTiming.of(probe, kind)
        tracker = ProbeTracker(kind, timing)
        if kind is not ProbeKind.STARTUP:
            await rec.started_event.wait()
        # Probe times count from the container's start (wall clock -> loop clock).
        started = self._loop.time() - max(time.time() - handle.started_at, 0.0)
        due = timing.probe_times(started)
        n = 0
        while due(n) < self._loop.time() - timing.period:
            n += 1  # an adopted container: skip the probes of the past
        while rec.handle is handle:
            delay = due(n) - self._loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            n += 1
            message = await run_probe(
                probe, rec.spec, self.pod_ip, timing.timeout, self._exec_for(rec)
            )
            if rec.handle is not handle:
                return
            result = tracker.observe(not message)
            if message:
                self._event(WARNING, "Unhealthy", f"{kind.value} probe failed: {message}")
            if kind is ProbeKind.READINESS:
                if result != rec.ready:
                    rec.ready = result
                    self.notify()
            elif kind is ProbeKind.STARTUP:
                if result:
                    rec.started = True
                    if not rec.spec.HasField("readiness_probe"):
                        rec.ready = True
                    rec.started_event.set()
                    self.notify()
                    return
                if tracker.failing:
                    await self._kill(rec, handle, probe, "failed startup probe")
                    return
            elif not result:
                await self._kill(rec, handle, probe, "failed liveness probe")
                return

    def _exec_for(self, rec: ContainerRecord) -> Any:
        async def run(argv: Sequence[str], timeout: float) -> tuple[int, bytes]:
            try:
                code, out, err = await self.exec(rec, argv, b"", timeout)
            except (OSError, ValueError, StartError) as exc:
                return 126, str(exc).encode()
            return code, out + err

        return run

    async def _kill(
        self, rec: ContainerRecord, handle: ContainerHandle, probe: Any, why: str
    ) -> None:
        grace = self._grace()
        if probe.HasField("termination_grace_period_seconds"):
            grace = probe.termination_grace_period_seconds
        self._event(NORMAL, "Killing", f"Container {rec.name} {why}, will be restarted")
        await self.host.runtime.stop(handle, grace)

    async def _rebuild_env(self, rec: ContainerRecord) -> dict[str, str]:
        """The environment of an adopted container, built again as at its start (best
        effort: the ConfigMaps, Secrets and Services of now)."""
        host = self.host
        try:
            config_maps, secrets = await host.lookup_refs(self.pod)
            facts = self._facts()
            env = container_env(
                self.pod, rec.spec, facts, config_maps=config_maps, secrets=secrets,
                services=host.services(), where=rec.where,
            )  # fmt: skip
        except (EnvError, ClientError) as exc:
            log.info("exec environment incomplete", pod=self.name, container=rec.name,
                     error=str(exc))  # fmt: skip
            env = {}
        return {**host.base_env(), **env}

    async def exec(
        self, rec: ContainerRecord, argv: Sequence[str], stdin: bytes, timeout: float
    ) -> tuple[int, bytes, bytes]:
        """Run `argv` in `rec`'s environment (the env of its current or last run)."""
        if not rec.env:
            rec.env = await self._rebuild_env(rec)
        # As in the container: a built-in image runs the command its own way (busybox puts
        # its applets - wget, nslookup, nc - on PATH); others run it as it is.
        resolved = self.host.resolve_image(rec.spec.image, argv, ()) if argv else None
        launch = Launch(
            pod_uid=self.uid,
            pod_namespace=self.namespace,
            pod_name=self.name,
            container=rec.name,
            restart=rec.restart_count,
            argv=list(resolved or argv),
            env=rec.env or self.host.base_env(),
            working_dir=rec.spec.working_dir,
        )
        return await self.host.runtime.exec(launch, stdin, timeout)

    # ---- termination ----

    def _grace(self, pod: core_pb2.Pod | None = None) -> float:
        if pod is not None and pod.metadata.HasField("deletion_grace_period_seconds"):
            return float(pod.metadata.deletion_grace_period_seconds)
        spec = self.pod.spec
        if spec.HasField("termination_grace_period_seconds"):
            return float(spec.termination_grace_period_seconds)
        return float(DEFAULT_GRACE)

    async def _terminate(self, pod: core_pb2.Pod | None) -> None:
        self._terminating = True
        grace = self._grace(pod)
        running = [rec for rec in self.records.values() if rec.handle is not None]
        if running:
            self._event(
                NORMAL, "Killing", f"Stopping {len(running)} container(s), grace {grace:g}s"
            )

        async def stop(rec: ContainerRecord) -> None:
            handle = rec.handle
            if handle is not None:
                info = await self.host.runtime.stop(handle, grace)
                if rec.handle is handle:
                    self._ended(rec, info, handle.started_at, handle.container_id)

        await asyncio.gather(*(stop(rec) for rec in running))
        # Reclaim everything first; the pod object goes last (a failed delete is retried).
        self.host.release_ip(self.uid)
        await self.host.runtime.remove_pod(self.uid)
        if pod is not None:
            await self.host.finish_delete(pod)

    # ---- status ----

    def _phase(self) -> str:
        policy = self.pod.spec.restart_policy or "Always"
        if self._failed_init:
            return "Failed"
        if any(
            rec.handle is not None or rec.last is None or rec.last.exit_code != 0
            for rec in self.inits
        ):
            return "Pending"
        waiting = running = succeeded = failed = 0
        for rec in self.containers:
            if rec.handle is not None:
                running += 1
            elif rec.last is None:
                waiting += 1
            elif should_restart(policy, rec.last.exit_code, init=False):
                running += 1  # restarting (CrashLoopBackOff): still a running pod
            elif rec.last.exit_code == 0:
                succeeded += 1
            else:
                failed += 1
        if waiting:
            return "Pending"
        if running:
            return "Running"
        return "Failed" if failed else "Succeeded"

    def _container_status(self, rec: ContainerRecord) -> core_pb2.ContainerStatus:
        st = core_pb2.ContainerStatus(
            name=rec.name,
            image=rec.spec.image,
            image_id=rec.spec.image,
            restart_count=rec.restart_count,
            ready=rec.ready and rec.handle is not None,
            started=rec.started and rec.handle is not None,
        )
        policy = self.pod.spec.restart_policy or "Always"
        if rec.handle is not None:
            st.state.running.started_at.CopyFrom(timestamps.time_at(rec.handle.started_at))
            st.container_id = rec.handle.container_id
            if rec.last is not None:
                st.last_state.terminated.CopyFrom(rec.last)
        elif rec.last is not None and (
            (rec.init and rec.last.exit_code == 0)
            or not should_restart(policy, rec.last.exit_code, init=rec.init)
            or self._terminating
        ):
            st.state.terminated.CopyFrom(rec.last)
            st.container_id = rec.last.container_id
            if rec.before_last is not None:
                st.last_state.terminated.CopyFrom(rec.before_last)
        else:
            reason, message = rec.waiting_reason, rec.waiting_message
            if not rec.init and any(r.handle is not None or r.last is None for r in self.inits):
                reason, message = "PodInitializing", ""
            st.state.waiting.reason = reason
            if message:
                st.state.waiting.message = message
            if rec.last is not None:
                st.last_state.terminated.CopyFrom(rec.last)
        return st

    def _condition(self, type_: str, ok: bool, reason: str = "", message: str = "") -> Any:
        status = "True" if ok else "False"
        if ok:
            reason = message = ""
        old = self._conditions.get(type_)
        if old is None or old[0] != status or old[1] != reason or old[2] != message:
            ts = old[3] if old is not None and old[0] == status else timestamps.time_at(time.time())
            self._conditions[type_] = (status, reason, message, ts)
        _, _, _, ts = self._conditions[type_]
        cond = core_pb2.PodCondition(type=type_, status=status, reason=reason, message=message)
        cond.last_transition_time.CopyFrom(ts)
        return cond

    def status(self) -> core_pb2.PodStatus:
        st = core_pb2.PodStatus(phase=self._phase(), host_ip=self.host.node_ip)
        if self.pod_ip:
            st.pod_ip = self.pod_ip
            st.pod_ips.add(ip=self.pod_ip)
        if self._start_time is not None:
            st.start_time.CopyFrom(self._start_time)
        st.qos_class = qos_class(self.pod)
        st.init_container_statuses.extend(self._container_status(r) for r in self.inits)
        st.container_statuses.extend(self._container_status(r) for r in self.containers)
        pending_inits = [
            r.name
            for r in self.inits
            if r.handle is not None or r.last is None or r.last.exit_code != 0
        ]
        unready = [r.name for r in self.containers if not (r.ready and r.handle is not None)]
        done = st.phase in ("Succeeded", "Failed")
        st.conditions.append(
            self._condition(
                "Initialized",
                not pending_inits,
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(pending_inits)}]",
            )
        )
        ready_reason = "PodCompleted" if done else "ContainersNotReady"
        ready_message = "" if done else f"containers with unready status: [{' '.join(unready)}]"
        st.conditions.append(
            self._condition("Ready", not unready and not done, ready_reason, ready_message)
        )
        st.conditions.append(
            self._condition(
                "ContainersReady", not unready and not done, ready_reason, ready_message
            )
        )
        st.conditions.append(self._condition("PodScheduled", True))
        return st

    async def _report(self) -> None:
        status = self.status()
        if status == self.pod.status:
            return
        if self._written is not None and status == self._written[0]:
            try:
                seen = int(self.pod.metadata.resource_version or 0)
            except ValueError:
                seen = 0
            if seen < self._written[1]:
                return  # the informer has not caught up with our own write yet
        written = await self.host.write_status(self.pod, status)
        if written is None:
            self._wake_at(self._loop.time() + STATUS_RETRY)
        else:
            self._written = (status, written)

    # ---- for the logs/exec service ----

    def container(self, name: str) -> ContainerRecord | None:
        return self.records.get(name)

    def container_names(self) -> list[str]:
        return [rec.name for rec in self.containers]

    @property
    def terminating(self) -> bool:
        return self._terminating

"""One pod worker per pod: a task that converges the pod's containers on its spec and reports
their state in the pod's status (Kubernetes' podWorkers + syncPod, level-triggered).

Every wake-up (a pod update, a container exit, a probe result, a back-off expiry) runs one
`sync`: start what should run (init containers in order, then the containers, honouring the
restart policy and the back-off), then write the status if it differs from the stored one.
A pod with a deletionTimestamp (or gone from the API) has its containers stopped with the
pod's grace period, then the worker finishes the graceful delete (grace 0, uid precondition),
frees the pod IP and removes the pod directory.

The worker owns its containers' records (podstatus.py turns them into the pod's status); it
reaches the API, the pod IPs and the runtime only through its `PodHost` (the node agent).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from typing import Any, Protocol

from k8semu.api import timestamps
from k8semu.client import ClientError
from k8semu.client.events import NORMAL, WARNING, EventRecorder
from k8semu.kubelet import metrics as kubelet_metrics
from k8semu.kubelet import termination
from k8semu.kubelet.backoff import Backoff
from k8semu.kubelet.config import KubeletConfig
from k8semu.kubelet.env import EnvError, NoCommand, PodFacts, command_line, container_env
from k8semu.kubelet.eviction import SIZE_CHECK_INTERVAL, exceeded_size_limit
from k8semu.kubelet.hooks import grace_after_hook, has_post_start, has_pre_stop, run_hook
from k8semu.kubelet.ipam import PodCIDRExhausted
from k8semu.kubelet.podstatus import (
    ContainerRecord,
    PodConditions,
    container_status,
    pod_phase,
    qos_class,
    should_restart,
    terminated,
)
from k8semu.kubelet.probes import ProbeKind, ProbeTiming, ProbeTracker, run_probe
from k8semu.kubelet.refresh import VolumeRefresh
from k8semu.kubelet.runtime import (
    ContainerHandle,
    ExitInfo,
    Launch,
    PodSetup,
    Projection,
    RecoveredPod,
    Resources,
    RunAs,
    Runtime,
    StartError,
)
from k8semu.kubelet.volumes import refreshed_mounts, volume_files
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2

log = get_logger(__name__)

DEFAULT_GRACE = 30
STATUS_RETRY = 0.5  # seconds before retrying a failed status write
IP_RETRY = 1.0  # seconds before asking again for a pod IP when the node's range is full


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
        self, pod: core_pb2.Pod, names: tuple[set[str], set[str]] | None = None
    ) -> tuple[dict[str, core_pb2.ConfigMap], dict[str, core_pb2.Secret]]: ...
    async def claim_dirs(self, pod: core_pb2.Pod) -> dict[str, str]: ...
    async def token_projections(self, pod: core_pb2.Pod) -> list[Projection]: ...
    def services(self) -> list[core_pb2.Service]: ...
    def base_env(self) -> dict[str, str]: ...
    def resolve_image(
        self, image: str, command: Sequence[str], args: Sequence[str]
    ) -> list[str] | None: ...
    async def write_status(self, pod: core_pb2.Pod, status: core_pb2.PodStatus) -> int | None: ...
    async def finish_delete(self, pod: core_pb2.Pod) -> None: ...
    def worker_done(self, uid: str) -> None: ...


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
        # When this kubelet first saw the pod, until its first Running status is written
        # (kubelet_pod_start_duration_seconds); a pod adopted after a restart is not timed.
        self._seen: float | None = self._loop.time() if recovered is None else None
        self._next_wake = math.inf
        self._terminating = False
        self._failed_init = False
        self._evicted = ""  # the eviction message: containers stopped, the pod Failed
        self._no_ip = False  # waiting for a pod IP (the event said so once)
        self._sandbox_gone = False  # the pod finished: leftovers killed, its IP released
        self._written: tuple[core_pb2.PodStatus, int] | None = None  # last status we wrote
        self._start_time = pod.status.start_time if pod.status.HasField("start_time") else None
        self._conditions = PodConditions(pod.status.conditions)
        cfg = host.config
        self._volumes = VolumeRefresh(cfg.sync_frequency, self.uid, self._loop.time())
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
                rec.last = terminated(info, started, status.container_id)

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
        rec.restart_count = handle.restart
        rec.env = {}  # rebuilt on the first exec (it needs API reads)
        self._running(rec, handle)
        log.info("container adopted", pod=f"{self.namespace}/{self.name}", container=rec.name)

    async def _sync(self) -> bool:
        pod = self.host.current_pod(self.uid)
        if pod is None or pod.metadata.HasField("deletion_timestamp"):
            await self._terminate(pod)
            return True
        self.pod = pod
        if self._evicted:
            await self._report()
            await _end_sandbox(self)
            return False
        if not self.pod_ip and not await _take_ip(self, pod):
            return False
        if self._start_time is None:
            self._start_time = timestamps.time_at(time.time())
        now = self._loop.time()
        policy = pod.spec.restart_policy or "Always"
        inits_done = True
        for rec in self.inits:
            if rec.succeeded:
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
        await _check_size_limits(self)
        await _refresh_volumes(self, now)
        await self._report()
        if _finished(self):
            await _end_sandbox(self)
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
        prepared = await self._prepare(rec)
        if prepared is None:
            return
        launch, setup = prepared
        rec.env = dict(launch.env)
        runtime = self.host.runtime
        try:
            await runtime.prepare_pod(setup)
            handle = await runtime.start(launch)
        except StartError as exc:
            self._start_error(rec, exc, launch.restart)
            return
        if self._terminating or self.host.current_pod(self.uid) is None:
            await runtime.stop(handle, 0)
            return
        rec.restart_count = launch.restart
        rec.start_failures = 0
        self._running(rec, handle)
        self._event(NORMAL, "Started", f"Started container {rec.name}")
        if has_post_start(rec.spec):
            await self._post_start(rec, handle)

    async def _post_start(self, rec: ContainerRecord, handle: ContainerHandle) -> None:
        """The postStart hook; when it fails the container is killed and restarts per the
        pod's policy (kuberuntime: `FailedPostStartHook`)."""
        grace = self._grace()
        message = await run_hook(
            rec.spec.lifecycle.post_start,
            rec.spec,
            self.pod_ip,
            max(grace, float(DEFAULT_GRACE)),
            self._exec_for(rec),
        )
        if not message or rec.handle is not handle:
            return
        log.info("postStart hook failed", pod=f"{self.namespace}/{self.name}",
                 container=rec.name, error=message)  # fmt: skip
        self._event(
            WARNING,
            "FailedPostStartHook",
            f"PostStartHook failed for container {rec.name}: {message}",
        )
        await self._stop_container(rec, handle, grace)

    async def _prepare(self, rec: ContainerRecord) -> tuple[Launch, PodSetup] | None:
        """What `rec`'s next run needs (argv, environment, the pod's setup with its volumes);
        None when its config or image is wrong (it waits in its back-off, reason in status)."""
        try:
            env, config_maps, secrets = await self._container_env(rec)
            argv = command_line(rec.spec, env, self.host.resolve_image)
            mounts = volume_files(
                self.pod, rec.spec, config_maps=config_maps, secrets=secrets,
                facts=self._facts(), claims=await self.host.claim_dirs(self.pod), where=rec.where,
            )  # fmt: skip
            mounts.projections += await self.host.token_projections(self.pod)
        except EnvError as exc:
            self._start_failed(rec, "CreateContainerConfigError", str(exc))
            return None
        except NoCommand as exc:
            # Kubernetes' wording: the pull's failure, then the back-off naming the image.
            image = rec.spec.image
            if rec.start_failures == 0:
                self._start_failed(rec, "ErrImagePull", f'Failed to pull image "{image}": {exc}')
            else:
                message = f'Back-off pulling image "{image}": ErrImagePull: {exc}'
                self._start_failed(rec, "ImagePullBackOff", message)
            return None
        launch = Launch(
            pod_uid=self.uid,
            pod_namespace=self.namespace,
            pod_name=self.name,
            container=rec.name,
            restart=rec.restart_count + (1 if rec.last is not None else 0),
            argv=argv,
            env={**self.host.base_env(), **env},
            working_dir=rec.spec.working_dir,
            resources=Resources.of(rec.spec),
            termination_message_path=rec.spec.termination_message_path,
            run_as=RunAs.of(self.pod, rec.spec),
            stdin=rec.spec.stdin,
            stdin_once=rec.spec.stdin_once,
            tty=rec.spec.tty,
        )
        return launch, PodSetup(
            uid=self.uid, namespace=self.namespace, name=self.name, pod_ip=self.pod_ip,
            files=mounts.files, projections=mounts.projections, run_as=launch.run_as,
        )  # fmt: skip

    async def _container_env(
        self, rec: ContainerRecord
    ) -> tuple[dict[str, str], dict[str, core_pb2.ConfigMap], dict[str, core_pb2.Secret]]:
        """`rec`'s environment from the spec, the ConfigMaps, Secrets and Services of now
        (and those ConfigMaps and Secrets, for its volumes)."""
        host = self.host
        config_maps, secrets = await host.lookup_refs(self.pod)
        env = container_env(
            self.pod, rec.spec, self._facts(), config_maps=config_maps, secrets=secrets,
            services=host.services(), where=rec.where,
        )  # fmt: skip
        return env, config_maps, secrets

    def _start_error(self, rec: ContainerRecord, exc: StartError, restart: int) -> None:
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

    def _running(self, rec: ContainerRecord, handle: ContainerHandle) -> None:
        """`handle` is `rec`'s run now (started or adopted): not ready until its probes say
        so, not started while a startup probe has to pass; watch its exit and probes."""
        rec.handle = handle
        rec.ready = False
        rec.started = not (self.host.runtime.runs_probes and rec.spec.HasField("startup_probe"))
        rec.started_event = asyncio.Event()
        if rec.started:
            rec.started_event.set()  # else the readiness and liveness probes never start
        self._watch(rec, handle)

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
            info = termination.of_run(self.host.runtime, self.uid, rec.spec, handle.restart, info)
            self._ended(rec, info, handle.started_at, handle.container_id)

    def _ended(self, rec: ContainerRecord, info: ExitInfo, started_at: float, cid: str) -> None:
        rec.cancel_tasks()
        rec.handle = None
        rec.ready = False
        rec.started = False
        rec.before_last = rec.last
        rec.last = terminated(info, started_at, cid)
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
        await self._stop_container(rec, handle, grace)

    async def _stop_container(
        self, rec: ContainerRecord, handle: ContainerHandle, grace: float
    ) -> ExitInfo:
        """Kubernetes' killContainer: the preStop hook (if any, and only with a grace above
        zero) within the grace, then SIGTERM with the grace left, SIGKILL after it."""
        if grace > 0 and has_pre_stop(rec.spec):
            started = self._loop.time()
            message = await run_hook(
                rec.spec.lifecycle.pre_stop, rec.spec, self.pod_ip, grace, self._exec_for(rec)
            )
            if message:
                log.info("preStop hook failed", pod=f"{self.namespace}/{self.name}",
                         container=rec.name, error=message)  # fmt: skip
                self._event(
                    WARNING,
                    "FailedPreStopHook",
                    f"PreStopHook failed for container {rec.name}: {message}",
                )
            grace = grace_after_hook(grace, self._loop.time() - started)
        return await self.host.runtime.stop(handle, grace)

    async def _rebuild_env(self, rec: ContainerRecord) -> dict[str, str]:
        """The environment of an adopted container, built again as at its start (best
        effort: the ConfigMaps, Secrets and Services of now)."""
        try:
            env, _, _ = await self._container_env(rec)
        except (EnvError, ClientError) as exc:
            log.info("exec environment incomplete", pod=self.name, container=rec.name,
                     error=str(exc))  # fmt: skip
            env = {}
        return {**self.host.base_env(), **env}

    async def exec(
        self, rec: ContainerRecord, argv: Sequence[str], stdin: bytes, timeout: float
    ) -> tuple[int, bytes, bytes]:
        """Run `argv` in `rec`'s environment (the env of its current or last run)."""
        return await self.host.runtime.exec(await exec_launch(self, rec, argv), stdin, timeout)

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

        await self._stop_running(grace)
        # Reclaim everything first; the pod object goes last (a failed delete is retried).
        self.host.release_ip(self.uid)
        await self.host.runtime.remove_pod(self.uid)
        if pod is not None:
            await self.host.finish_delete(pod)

    async def _stop_running(self, grace: float) -> None:
        async def stop(rec: ContainerRecord) -> None:
            handle = rec.handle
            if handle is not None:
                info = await self._stop_container(rec, handle, grace)
                if rec.handle is handle:
                    self._ended(rec, info, handle.started_at, handle.container_id)

        await asyncio.gather(*(stop(rec) for rec in self.records.values()))

    # ---- status ----

    def status(self) -> core_pb2.PodStatus:
        policy = self.pod.spec.restart_policy or "Always"
        phase = pod_phase(policy, self.inits, self.containers, failed_init=self._failed_init)
        phase = "Failed" if self._evicted else phase
        st = core_pb2.PodStatus(phase=phase, host_ip=self.host.node_ip)
        st.reason, st.message = ("Evicted", self._evicted) if self._evicted else ("", "")
        if self.pod_ip:
            st.pod_ip = self.pod_ip
            st.pod_ips.add(ip=self.pod_ip)
        if self._start_time is not None:
            st.start_time.CopyFrom(self._start_time)
        st.qos_class = qos_class(self.pod)
        initializing = any(r.handle is not None or r.last is None for r in self.inits)
        ending = self._terminating or bool(self._evicted)  # containers stopped for good
        for records, statuses in (
            (self.inits, st.init_container_statuses),
            (self.containers, st.container_statuses),
        ):
            statuses.extend(
                container_status(rec, policy, initializing=initializing, terminating=ending)
                for rec in records
            )
        done = phase in ("Succeeded", "Failed")
        st.conditions.extend(self._conditions.of_pod(self.inits, self.containers, done=done))
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
        if written is not None and self._seen is not None and status.phase == "Running":
            kubelet_metrics.POD_START.observe(self._loop.time() - self._seen)
            self._seen = None
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


async def _take_ip(worker: PodWorker, pod: core_pb2.Pod) -> bool:
    """Give the pod its IP; False when it has none yet (the range is full: a retry is due;
    or it was deleted meanwhile: the next sync terminates it)."""
    if _finished(worker):
        # It finished under an earlier kubelet: its IP (maybe another pod's now) stays in
        # the status as history and is not taken again.
        worker.pod_ip = pod.status.pod_ip
        return True
    recovered_ip = worker._recovered.pod_ip if worker._recovered else ""
    try:
        worker.pod_ip = await worker.host.pod_ip_for(pod, recovered_ip)
    except PodCIDRExhausted as exc:  # until a finished or deleted pod frees one
        worker._wake_at(worker._loop.time() + IP_RETRY)
        if not worker._no_ip:
            worker._event(WARNING, "FailedCreatePodSandBox", f"no pod IP: {exc}")
        worker._no_ip = True
        return False
    return worker.host.current_pod(worker.uid) is not None


def _finished(worker: PodWorker) -> bool:
    """Every container ended for good: the pod is (or is about to be) Succeeded or
    Failed, and nothing of it runs any more."""
    if any(rec.handle is not None for rec in worker.records.values()):
        return False
    if worker._evicted:
        return True
    policy = worker.pod.spec.restart_policy or "Always"
    phase = pod_phase(policy, worker.inits, worker.containers, failed_init=worker._failed_init)
    return phase in ("Succeeded", "Failed")


async def _end_sandbox(worker: PodWorker) -> None:
    """Kubernetes' sandbox teardown of a finished pod: kill what its containers left,
    then free its IP for new pods (`status.podIP` keeps it as history). The pod's
    directory (its logs) and user stay until the pod is deleted."""
    if worker._sandbox_gone:
        return
    await worker.host.runtime.end_pod(worker.uid)
    worker.host.release_ip(worker.uid)
    worker._sandbox_gone = True
    log.info("pod finished: sandbox removed, IP released",
             pod=f"{worker.namespace}/{worker.name}", ip=worker.pod_ip)  # fmt: skip


async def _check_size_limits(worker: PodWorker) -> None:
    """Evict the pod when an emptyDir outgrew its sizeLimit (kubelet/eviction.py)."""
    message, again = await exceeded_size_limit(worker.pod, worker.uid, worker.host.runtime)
    if message:
        worker._evicted = message
        worker._event(WARNING, "Evicted", message)
        await worker._stop_running(worker._grace())
    elif again:
        worker._wake_at(worker._loop.time() + SIZE_CHECK_INTERVAL)


async def _refresh_volumes(worker: PodWorker, now: float) -> None:
    """Write again the running containers' volumes whose objects changed (kubelet/
    refresh.py), when due; then wake up for the next time."""
    running = [(rec.spec, rec.where) for rec in worker.records.values() if rec.handle is not None]
    if not any(refreshed_mounts(worker.pod, spec) for spec, _ in running):
        return  # nothing of the kind, or nothing running: no wake-ups for it
    if worker._terminating or worker._evicted:
        return
    if worker.host.runtime.name != "process":
        return  # hollow nodes write no files: nothing to read the objects for
    refresh = worker._volumes
    if refresh.due(worker.pod, now):

        def warn(reason: str, message: str) -> None:
            worker._event(WARNING, reason, message)

        await refresh.run(worker.host, worker.pod, running, worker._facts(), warn, now)
    worker._wake_at(refresh.next_due)


async def exec_launch(worker: PodWorker, rec: ContainerRecord, argv: Sequence[str]) -> Launch:
    """How `argv` runs in `rec`'s environment (the env of its current or last run)."""
    if not rec.env:
        rec.env = await worker._rebuild_env(rec)
    # As in the container: a built-in image runs the command its own way (busybox puts
    # its applets - wget, nslookup, nc - on PATH); others run it as it is.
    resolved = worker.host.resolve_image(rec.spec.image, argv, ()) if argv else None
    return Launch(
        pod_uid=worker.uid,
        pod_namespace=worker.namespace,
        pod_name=worker.name,
        container=rec.name,
        restart=rec.restart_count,
        argv=list(resolved or argv),
        env=rec.env or worker.host.base_env(),
        working_dir=rec.spec.working_dir,
        run_as=RunAs.of(worker.pod, rec.spec),
    )

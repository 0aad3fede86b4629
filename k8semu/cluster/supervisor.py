"""Supervision of a cluster's processes: start what crashed again with back-off, give up on
what keeps crashing (and say so loudly), carry out ``k8semu restart`` requests.

One loop (``Supervisor.run``) serves both modes: the foreground ``k8semu up`` runs it in its
own process, and a detached cluster runs it in ``k8semu supervise`` (started by
``up --detach``). The only difference is who started the processes: a foreground launcher's
components are its children (their exit codes are known); a detached supervisor *adopts* the
components ``up`` started (it sees them exit by pid and start time, exit code unknown) and
every process it starts again is its own child.

Back-off is ``RestartTracker``'s, like Kubernetes' CrashLoopBackOff: a process that exits is
started again after a delay that doubles with each crash in a row, up to a cap; a process that
ran long enough without exiting starts from the first delay again; after too many crashes in
a row the component is marked ``failed`` and left down, while everything else keeps running.
A failure is reported in ``state.json`` (state, last exit code, when), in the supervisor's
output (the launcher's terminal, or ``logs/supervisor.log``) and as a Warning Event in
kube-system through the API (best effort, from a background thread).

Requests: ``k8semu restart`` drops a file ``control/restart-<component>`` (content: a request
id) into the state dir. The supervisor sends the component SIGTERM, SIGKILL after the stop
grace period, starts it again at once (not counted as a crash; a failed component gets a fresh
budget), and records the request id in the component's record when the new process runs.

Membership: ``k8semu store scale``/``remove`` drop ``control/add-<component>`` (the new
store replica's record as JSON: it is started at once and supervised from then on) and
``control/retire-<component>`` (stopped for good, like a pool slot, then forgotten: it leaves
``state.json``).

Node pools: the slots of an autoscaled pool (``record.pool``) are started and stopped as the
cluster autoscaler asks through the API (``k8semu.cluster.nodepools``); a slot not wanted is
stopped like a restart (SIGTERM, SIGKILL after the grace period) and left ``stopped``.

It must not signal a process whose pid and start time it has not recorded itself.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from k8semu.backup.schedule import BackupSchedule
from k8semu.cluster import certs
from k8semu.cluster.config import LauncherSpec, format_duration
from k8semu.cluster.errors import ClusterError
from k8semu.cluster.logrotate import LogRotator
from k8semu.cluster.nodepools import PoolTargets
from k8semu.cluster.probes import Probes, agreed_leader
from k8semu.cluster.publish import ComponentPublisher
from k8semu.cluster.spawn import spawn
from k8semu.cluster.state import ComponentRecord, is_same_process, process_start_time

__all__ = [
    "CONTROL_DIR",
    "SUPERVISOR_LOG",
    "LeaderWatch",
    "RestartTracker",
    "Supervised",
    "Supervisor",
    "add_request_path",
    "how_exited",
    "log_tail",
    "restart_request_path",
    "retire_request_path",
]

CONTROL_DIR = "control"
# A detached supervisor's own output, in <state-dir>/logs (rotated with the components').
SUPERVISOR_LOG = "supervisor.log"
SUPERVISE_POLL_S = 0.1
LEADER_CHECK_INTERVAL_S = 1.0
CRASH_LOG_LINES = 5
FAILED_LOG_LINES = 20
EVENT_RPC_TIMEOUT_S = 2.0
EVENT_BACKLOG = 100
LEADER_RPC_TIMEOUT_S = 0.5


@dataclass(slots=True)
class _History:
    started_at: float
    crashes: int = 0


class RestartTracker:
    """Back-off state per process name, under one ``LauncherSpec``'s limits.

    Invariant: a name's crash count is the number of exits in a row that each came less than
    ``backoff_reset_after`` after that run's start; it never exceeds ``max_restarts`` + 1.
    Pure bookkeeping: the caller passes the (monotonic) time in, so tests drive it with numbers.
    """

    def __init__(self, spec: LauncherSpec) -> None:
        self._first_s = spec.restart_backoff_ms / 1000
        self._max_s = spec.max_restart_backoff_ms / 1000
        self._reset_after_s = spec.backoff_reset_after_ms / 1000
        self._max_restarts = spec.max_restarts
        self._history: dict[str, _History] = {}

    def started(self, name: str, now: float) -> None:
        """``name`` (re)started at ``now``."""
        history = self._history.get(name)
        if history is None:
            self._history[name] = _History(started_at=now)
        else:
            history.started_at = now

    def exited(self, name: str, now: float) -> float | None:
        """``name`` exited at ``now``: seconds to wait before starting it again, or None to give
        up (it crashed more than ``max_restarts`` times in a row)."""
        history = self._history.setdefault(name, _History(started_at=now))
        if now - history.started_at >= self._reset_after_s:
            history.crashes = 0
        history.crashes += 1
        if history.crashes > self._max_restarts:
            return None
        doublings = min(history.crashes - 1, 32)  # the cap is reached long before; no overflow
        return float(min(self._first_s * 2**doublings, self._max_s))

    def reset(self, name: str) -> None:
        """Forget ``name``'s crashes (a restart asked for by a user gets a fresh budget)."""
        self._history.pop(name, None)

    def crashes(self, name: str) -> int:
        """Crashes of ``name`` in a row, as counted by the last ``exited()``."""
        history = self._history.get(name)
        return 0 if history is None else history.crashes

    @property
    def max_restarts(self) -> int:
        return self._max_restarts


@dataclass(eq=False)
class Supervised:
    """A component and its current process: ``proc`` when it is this process's child, else
    only ``record.pid``/``record.start_time`` (an adopted process). ``wanted`` is True between
    a start and a deliberate stop: an exit while wanted is a crash."""

    record: ComponentRecord
    proc: subprocess.Popen[bytes] | None = None
    wanted: bool = False
    started_at: float = 0.0
    #: When to start it again (monotonic), None when not due.
    due: float | None = None
    #: While a requested restart stops it: when to SIGKILL it (monotonic).
    kill_at: float | None = None
    #: The id of the restart request being carried out.
    request: str = ""
    #: Being stopped for good (a pool slot no longer wanted): once it exits, ``stopped``.
    retire: bool = False
    #: Once stopped for good, dropped from the supervised set (a store member removed).
    forget: bool = False
    log_path: Path = field(default=Path())

    @property
    def name(self) -> str:
        return self.record.name

    def exit_status(self) -> tuple[bool, int | None]:
        """(whether the current process has exited, its exit code when known)."""
        if self.proc is not None:
            rc = self.proc.poll()
            return rc is not None, rc
        if self.record.pid <= 0:
            return False, None
        return not is_same_process(self.record.pid, self.record.start_time), None


def restart_request_path(state_dir: Path, component: str) -> Path:
    return state_dir / CONTROL_DIR / f"restart-{component}"


def add_request_path(state_dir: Path, component: str) -> Path:
    """Where ``k8semu store scale`` asks for a new component (its record, JSON)."""
    return state_dir / CONTROL_DIR / f"add-{component}"


def retire_request_path(state_dir: Path, component: str) -> Path:
    """Where ``k8semu store scale|remove`` asks to stop a component for good and forget it."""
    return state_dir / CONTROL_DIR / f"retire-{component}"


class _EventPoster:
    """Posts Warning Events through the API from one background thread, best effort: the
    supervision loop never waits for an API server that may be the very thing that failed."""

    def __init__(
        self,
        api_servers: Sequence[str],
        say: Callable[[str], None],
        make_probes: Callable[[], Probes] = Probes,
    ) -> None:
        self._servers = list(api_servers)
        self._say = say
        self._make_probes = make_probes
        self._queue: queue.Queue[tuple[ComponentRecord, str, str] | None] = queue.Queue(
            EVENT_BACKLOG
        )
        self._thread: threading.Thread | None = None

    def post(self, record: ComponentRecord, reason: str, message: str) -> None:
        if not self._servers:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="events", daemon=True)
            self._thread.start()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait((record, reason, message))

    def close(self) -> None:
        if self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(None)
            self._thread.join(timeout=EVENT_RPC_TIMEOUT_S * 2)

    def _run(self) -> None:
        probes = self._make_probes()
        try:
            while (item := self._queue.get()) is not None:
                record, reason, message = item
                try:
                    probes.create_event(
                        self._servers,
                        component_event(record, reason, message),
                        EVENT_RPC_TIMEOUT_S,
                    )
                except Exception as exc:  # grpc.RpcError: no API server answers
                    self._say(f"  (event {reason} about {record.name} not posted: {exc!s:.200})")
        finally:
            probes.close()


def component_event(record: ComponentRecord, reason: str, message: str) -> object:
    """A Warning Event in kube-system about ``record``: about its Node for a kubelet or proxy
    of one node, else about a Pod named like the component (kubeadm runs the control plane as
    static pods in kube-system; the emulator's components have no object of their own)."""
    from google.protobuf import timestamp_pb2

    from k8semu.pb.api.v1 import core_pb2, meta_pb2

    now = timestamp_pb2.Timestamp()
    now.FromNanoseconds(time.time_ns() // 1000 * 1000)
    if record.kind in ("kubelet", "proxy") and len(record.nodes) == 1:
        ref = meta_pb2.ObjectReference(kind="Node", api_version="v1", name=record.nodes[0])
    else:
        ref = meta_pb2.ObjectReference(
            kind="Pod", api_version="v1", namespace="kube-system", name=record.name
        )
    stamp = f"{time.time_ns():x}"
    return core_pb2.Event(
        api_version="v1",
        kind="Event",
        metadata=meta_pb2.ObjectMeta(namespace="kube-system", name=f"{record.name}.{stamp}"),
        involved_object=ref,
        reason=reason,
        message=message[:1024],
        source=core_pb2.EventSource(component="k8semu-supervisor", host=record.host),
        first_timestamp=now,
        last_timestamp=now,
        count=1,
        type="Warning",
        reporting_component="k8semu-supervisor",
        reporting_instance=record.host or os.uname().nodename,
    )


class Supervisor:
    """Keeps ``units`` running until ``stop`` is set (see the module docstring).

    ``write_state`` is called whenever a record changed (pid, state, restarts). With
    ``store_members`` (name, client address), ``leader_watch`` reports store leader changes,
    asked about once a second. ``probes`` (the caller's, who closes them) forgets a restarted
    component's channel, so the next question reaches the new process at once. ``pdeathsig``
    makes started processes die with this one (the foreground launcher).
    """

    def __init__(
        self,
        units: Sequence[Supervised],
        *,
        spec: LauncherSpec,
        state_dir: Path,
        env: dict[str, str],
        say: Callable[[str], None],
        stop: StopWaiter,
        write_state: Callable[[], None],
        api_servers: Sequence[str] = (),
        store_members: Sequence[tuple[str, str]] = (),
        probes: Probes | None = None,
        pdeathsig: bool = False,
        backups: BackupSchedule | None = None,
    ) -> None:
        self.units = list(units)
        self.spec = spec
        self.state_dir = state_dir
        self.tracker = RestartTracker(spec)
        self._env = env
        self._say = say
        self._stop = stop
        self._write_state = write_state
        self._pdeathsig = pdeathsig
        # With TLS (pki/ in the state dir), the API servers and store replicas are asked with
        # the cluster's credentials.
        known = [
            *(("apiserver", a) for a in api_servers),
            *(("store", a) for _, a in store_members),
        ]
        make_probes = functools.partial(certs.probes, state_dir, known)
        self._probes = make_probes() if probes is None else probes
        self.leader_watch = LeaderWatch(self._probes, store_members, say)
        self._events = _EventPoster(api_servers, say, make_probes)
        # This host's component table as a ConfigMap (the dashboard shows it); one host's
        # supervisor supervises only that host's components.
        host = self.units[0].record.host if self.units else ""
        self._published = ComponentPublisher(api_servers, host, make_probes, say)
        self._backups = backups
        self.pool_targets: PoolTargets | None = None
        if any(u.record.pool for u in self.units):
            self.pool_targets = PoolTargets(api_servers, make_probes)

    # -- starting -----------------------------------------------------------------------------

    def spawn(self, u: Supervised) -> None:
        """Start ``u``'s command, its output appended to its log; ClusterError when it cannot."""
        log_path = Path(u.record.log_path)
        # In a cgroup of its own when chaos asks for one (its firewall tells components apart);
        # with pdeathsig, the components die with the launcher even if it is SIGKILLed.
        u.proc = spawn(
            u.record.command,
            name=u.name,
            log_path=log_path,
            env=self._env,
            cwd=self.state_dir,
            die_with_parent=self._pdeathsig,
        )
        u.log_path = log_path
        u.wanted = True
        u.due = None
        u.started_at = time.monotonic()
        u.record.pid = u.proc.pid
        u.record.start_time = process_start_time(u.proc.pid) or 0
        u.record.state = "running"
        self.tracker.started(u.name, u.started_at)
        self._probes.forget(u.record.address)

    def adopt(self) -> None:
        """Take over the recorded processes (a detached supervisor): those alive are watched by
        pid; those gone that should run (not failed) are due to start at once."""
        now = time.monotonic()
        for u in self.units:
            u.log_path = Path(u.record.log_path)
            if u.record.state in ("failed", "stopped"):
                continue
            if u.record.pid > 0 and is_same_process(u.record.pid, u.record.start_time):
                u.wanted = True
                u.started_at = now
                self.tracker.started(u.name, now)
            else:
                self._say(f"{_clock()} {u.name} is not running; starting it")
                u.record.pid = 0
                u.record.start_time = 0
                u.record.state = "backoff"
                u.due = now

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        """Supervise until ``stop`` is set; the processes are left running (the caller stops
        them, or not)."""
        next_leader_check = time.monotonic() + LEADER_CHECK_INTERVAL_S
        if self._backups is not None:
            self._backups.start()  # a thread of its own: a slow backup never delays this loop
        # Also a thread of its own: logs/<component>.log (and the detached supervisor's own)
        # stay bounded on a cluster that runs for days.
        logs = LogRotator(
            self._log_paths, max_mb=self.spec.log_max_size_mb, backups=self.spec.log_max_backups
        )
        self._published.publish(u.record for u in self.units)
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                changed = self.step(now)
                if self.pool_targets is not None:
                    wanted = self.pool_targets.poll()
                    if wanted is not None:
                        changed |= self.scale_pools(wanted, now)
                if changed:
                    self._write_state()
                    self._published.publish(u.record for u in self.units)
                if self.leader_watch.members and now >= next_leader_check:
                    self.leader_watch.check()
                    next_leader_check = time.monotonic() + LEADER_CHECK_INTERVAL_S
                self._stop.wait(SUPERVISE_POLL_S)
        finally:
            logs.close()
            self._events.close()
            self._published.close()
            if self._backups is not None:
                self._backups.close()
            if self.pool_targets is not None:
                self.pool_targets.close()

    def _log_paths(self) -> list[Path]:
        own = self.state_dir / "logs" / SUPERVISOR_LOG
        return [Path(u.record.log_path) for u in list(self.units) if u.record.log_path] + [own]

    def step(self, now: float) -> bool:
        """One round: exits, requests, due starts. Whether any record changed."""
        changed = self._take_requests(now)
        for u in self.units:
            if u.kill_at is not None:
                changed |= self._step_restart(u, now)
                continue
            if not u.wanted:
                continue
            exited, rc = u.exit_status()
            if exited:
                self._on_exit(u, rc, now)
                changed = True
        for u in sorted(self.units, key=lambda u: u.due or 0.0):
            if u.due is not None and u.due <= now and not self._stop.is_set():
                self._start_again(u)
                changed = True
        gone = [u for u in self.units if u.forget and u.record.state == "stopped"]
        for u in gone:
            self.units.remove(u)
            self._event(f"{u.name} stopped for good and no longer supervised")
        return changed or bool(gone)

    def _spawn_or_report(self, u: Supervised) -> bool:
        """Start ``u``; when it cannot be, report it as an exit (back-off) and say False."""
        try:
            self.spawn(u)
        except ClusterError as exc:
            self._event(f"{u.name}: {exc}")
            self._on_exit(u, None, time.monotonic(), how="could not be started")
            return False
        return True

    def _start_again(self, u: Supervised) -> None:
        u.due = None
        if not self._spawn_or_report(u):
            return
        u.record.restarts += 1
        if u.request:
            u.record.restart_request = u.request
            u.request = ""
        self._event(f"{u.name} started again: pid {u.record.pid} (restart {u.record.restarts})")

    def _on_exit(self, u: Supervised, rc: int | None, now: float, how: str = "") -> None:
        """Report an exited component; set when to start it again, or mark it failed."""
        pid = u.record.pid
        u.proc = None
        u.wanted = False
        u.record.pid = 0
        u.record.start_time = 0
        u.record.last_exit_code = rc
        u.record.last_exit_at = _utc_now()
        delay = self.tracker.exited(u.name, now)
        crashes = self.tracker.crashes(u.name)
        how = how or how_exited(rc)
        if delay is None:
            u.record.state = "failed"
            reset_after = format_duration(self.spec.backoff_reset_after_ms)
            message = (
                f"{u.name} (pid {pid}) {how}, its crash number {crashes} in a row, each within"
                f" {reset_after} of its start; launcher.maxRestarts is"
                f" {self.tracker.max_restarts}, so it is left down (FAILED). The rest of the"
                f" cluster keeps running; `k8semu restart {u.name}` starts it again"
            )
            self._event(f"FAILED: {message}. Last lines of {u.log_path}:")
            self._say(_indent(log_tail(u.log_path, FAILED_LOG_LINES)))
            self._events.post(u.record, "ComponentFailed", message)
            return
        u.record.state = "backoff"
        u.due = now + delay
        self._event(
            f"{u.name} (pid {pid}) {how}; starting it again in {delay:g}s (restart"
            f" {crashes} in a row of at most {self.tracker.max_restarts})"
        )
        if rc is not None and rc > 0:
            self._say(_indent(log_tail(u.log_path, CRASH_LOG_LINES)))

    # -- node pools ---------------------------------------------------------------------------

    def scale_pools(self, wanted: Mapping[str, frozenset[str]], now: float) -> bool:
        """Start the pool slots ``wanted`` names and stop those of its pools it no longer
        names; pools it does not name are left as they are. Whether any record changed."""
        changed = False
        for u in self.units:
            pool = u.record.pool
            if not pool or pool not in wanted or u.kill_at is not None:
                continue
            if u.record.pool_node in wanted[pool]:
                if u.record.state == "stopped":
                    self._scale_up(u, pool)
                    changed = True
            elif u.record.state != "stopped":
                self._event(f"{u.name}: node pool {pool} scaled down; stopping it")
                self._stop_for_good(u, now)
                changed = True
        return changed

    def _scale_up(self, u: Supervised, pool: str) -> None:
        if self._spawn_or_report(u):
            self._event(f"{u.name} started: node pool {pool} scaled up (pid {u.record.pid})")

    def _stop_for_good(self, u: Supervised, now: float) -> None:
        u.wanted = False
        u.due = None
        exited, _ = u.exit_status()
        if u.record.pid > 0 and not exited:
            u.retire = True
            u.kill_at = now + self.spec.stop_grace_ms / 1000
            self._signal(u, signal.SIGTERM)
            self._signal(u, signal.SIGCONT)
        else:
            u.proc = None
            u.record.pid = 0
            u.record.start_time = 0
            u.record.state = "stopped"

    # -- requested restarts -------------------------------------------------------------------

    def _take_requests(self, now: float) -> bool:
        control = self.state_dir / CONTROL_DIR
        try:
            entries = list(control.iterdir())
        except OSError:
            return False
        changed = False
        by_name = {u.name: u for u in self.units}
        for path in entries:
            if path.name.startswith(("add-", "retire-")):
                changed |= self._take_membership(path, now)
                continue
            if not path.name.startswith("restart-"):
                continue
            name = path.name.removeprefix("restart-")
            try:
                request = path.read_text(encoding="utf-8").strip() or "?"
                path.unlink()
            except OSError:
                continue
            u = by_name.get(name)
            if u is None:
                self._event(f"restart request for unknown component {name!r} ignored")
                continue
            self._event(f"{u.name}: restart requested ({request})")
            u.request = request
            self.tracker.reset(u.name)
            exited, _ = u.exit_status()
            if u.record.pid > 0 and not exited:
                u.wanted = False
                u.due = None
                u.kill_at = now + self.spec.stop_grace_ms / 1000
                self._signal(u, signal.SIGTERM)
                self._signal(u, signal.SIGCONT)  # a paused process acts on SIGTERM only now
            else:
                u.wanted = False
                u.proc = None
                u.due = now
            changed = True
        return changed

    def _take_membership(self, path: Path, now: float) -> bool:
        """An ``add-`` request: supervise and start the record it holds; a ``retire-`` one:
        stop that component for good and forget it. Whether anything changed."""
        kind, _, name = path.name.partition("-")
        try:
            text = path.read_text(encoding="utf-8")
            path.unlink()
        except OSError:
            return False
        have = {u.name: u for u in self.units}
        if kind == "retire":
            if name not in have:
                self._event(f"retire request for unknown component {name!r} ignored")
                return False
            self._event(f"{name}: retired (stopping it for good)")
            have[name].forget = True
            self._stop_for_good(have[name], now)
            return True
        try:
            record = ComponentRecord(**json.loads(text))
        except (TypeError, ValueError) as exc:
            self._event(f"add request {path.name} ignored: not a component record: {exc}")
            return False
        if record.name != name or name in have:
            self._event(f"add request for {name!r} ignored: already supervised or misnamed")
            return False
        u = Supervised(record=record)
        self.units.append(u)
        if self._spawn_or_report(u):
            self._event(f"{name} added: started, pid {record.pid}")
        return True

    def _step_restart(self, u: Supervised, now: float) -> bool:
        assert u.kill_at is not None
        exited, rc = u.exit_status()
        if not exited:
            if now >= u.kill_at:
                self._event(f"{u.name} (pid {u.record.pid}) still runs after SIGTERM: SIGKILL")
                self._signal(u, signal.SIGKILL)
                u.kill_at = now + 5.0  # SIGKILL is not refused; just wait for the kernel
            return False
        u.kill_at = None
        u.proc = None
        u.record.last_exit_code = rc
        u.record.last_exit_at = _utc_now()
        if u.retire:
            u.retire = False
            u.record.pid = 0
            u.record.start_time = 0
            u.record.state = "stopped"
            self._event(f"{u.name} stopped")
            return True
        self._start_again(u)
        return True

    def _signal(self, u: Supervised, sig: signal.Signals) -> None:
        if u.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                u.proc.send_signal(sig)
        elif is_same_process(u.record.pid, u.record.start_time):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(u.record.pid, sig)

    def _event(self, message: str) -> None:
        self._say(f"{_clock()} {message}")


class LeaderWatch:
    """Reports store leader changes (asked about once a second by the supervision loop);
    ``leader`` is the last agreed leader's member name."""

    def __init__(
        self,
        probes: Probes,
        members: Sequence[tuple[str, str]],
        say: Callable[[str], None],
        leader: str | None = None,
    ) -> None:
        self._probes = probes
        self.members = list(members)
        self._say = say
        self.leader = leader

    def check(self) -> None:
        statuses = self._probes.store_statuses(self.members, LEADER_RPC_TIMEOUT_S)
        leader = agreed_leader(statuses, len(self.members))
        if leader == self.leader:
            return
        if leader is None:
            message = f"store has no agreed leader (was {self.leader}); an election is on"
        elif self.leader is None:
            message = f"store leader is now {leader}"
        else:
            message = f"store leader is now {leader} (was {self.leader})"
        self._say(f"{_clock()} {message}")
        self.leader = leader


class StopWaiter(Protocol):
    """What the loop waits on: ``launcher.StopFlag``."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


def how_exited(returncode: int | None) -> str:
    if returncode is None:
        return "exited (exit code unknown: an earlier process started it)"
    if returncode < 0:
        try:
            return f"was killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def log_tail(path: Path, lines: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read()
    except FileNotFoundError:
        return f"(no log file {path})"
    except OSError as exc:
        return f"(log {path} unreadable: {exc.strerror})"
    tail = data.decode("utf-8", "replace").splitlines()[-lines:]
    return "\n".join(tail) if tail else "(log is empty)"


def _indent(text: str) -> str:
    return "\n".join(f"    | {line}" for line in text.splitlines())


def _clock() -> str:
    return time.strftime("%H:%M:%S")


def _utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

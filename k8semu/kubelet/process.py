"""The `process` runtime: every container run is a real OS process in its own session.

Layout under the root directory::

    pods/<uid>/pod.json                     the pod's namespace, name and IP
    pods/<uid>/<container>/state.json       pid, process group, start time, restart count
    pods/<uid>/<container>/<restart>.log    stdout and stderr of that run (CRI records)
    pods/<uid>/<container>/<restart>.stdout the run's output FIFOs while it runs
    pods/<uid>/<container>/<restart>.stderr
    pods/<uid>/<mountPath>/...              emptyDir directories, subPath copies, links
    pods/<uid>/<mountPath>/..data -> ..<ts>  configMap/secret/downwardAPI/projected volumes
                                            and the token (kubelet/projection.py)

A container survives a kubelet crash (own session, own process group) and is adopted by the
next kubelet: its state file names the pid and the process's start time from
/proc/<pid>/stat, so a reused pid is never mistaken for it. The exit status of an adopted
run cannot be read (it is no longer our child): it ends as ContainerStatusUnknown, exit
code 137, as Kubernetes reports a container it lost track of.

Resources (design decision 13): where the kubelet can use cgroups (`k8semu.kubelet.cgroups`),
each container run gets a fresh cgroup with its CPU quota and shares and its memory limit,
inside its pod's cgroup with the pod's pids limit; the process joins it before it execs. A run
whose cgroup had an OOM kill ends as OOMKilled (exit 137 when the kernel killed the main
process), and whatever a run leaves behind in its cgroup is killed when its main process ends.
Without cgroups the memory limit is RLIMIT_AS (address space, `sh -c 'ulimit -v'` execing the
command in place): an over-limit allocation then fails inside the program, no OOM kill is seen,
CPU is not limited and a pod's processes are not counted.

Usage (`usage`): from the cgroups, else from /proc (`k8semu.kubelet.procfs`: the container's
session).

Users (`k8semu.kubelet.podusers`): with `users`, each pod's processes (containers, execs,
probes, hooks) run as the pod's own uid. Its directory is then root's with the pod's group,
mode 1770 (sticky: the pod makes files there but cannot move the kubelet's), the container
directories (state, logs) root's 0700, and what the kubelet makes for the pod (volume files
and directories, the working directory, the termination message file) the pod user's; other
pods (other uids and groups) reach none of it, and `pods/` itself is 0711 (not listable).

Logs (`k8semu.kubelet.containerlog`): a run writes to two FIFOs the kubelet's `Pump` reads and
stamps; the run also holds unread read ends of them, so while no kubelet reads (a restart) its
output waits in the pipes (1 MiB each where the kernel allows) and the next kubelet's pump,
reopening the FIFOs by name, stamps it with the time it reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from k8semu.kubelet import podusers, procfs, projection
from k8semu.kubelet.cgroups import CgroupError, NodeCgroups, join_argv
from k8semu.kubelet.containerlog import (
    NO_ROTATION,
    LogLimits,
    Pump,
    RunPipes,
    remove_fifos,
    reopen,
)
from k8semu.kubelet.podusers import PodUser, PodUsers
from k8semu.kubelet.runtime import (
    ContainerHandle,
    ExitInfo,
    Launch,
    PodRuns,
    PodSetup,
    Projection,
    RecoveredContainer,
    RecoveredPod,
    RunAs,
    Spawned,
    StartError,
    UsageSnapshot,
    VolumeFile,
)
from k8semu.kubelet.stdinpipe import StdinPipe
from k8semu.kubelet.volumes import memory_dir_of
from k8semu.log import get_logger

log = get_logger(__name__)

ADOPTED_POLL = 0.2  # seconds between liveness checks of an adopted process
# After a run ends, its output still in the pipes is read for at most this long before its
# end is reported (a child it left holding them does not hold the report).
LOG_DRAIN = 2.0
_POD_FILE = "pod.json"
_STATE_FILE = "state.json"


def proc_start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks since boot); None if gone."""
    fields = procfs.stat_fields(pid)
    try:
        return int(fields[procfs.START_TIME]) if fields is not None else None
    except ValueError:
        return None


def alive(pid: int, start_ticks: int) -> bool:
    return pid > 0 and proc_start_ticks(pid) == start_ticks


def _killpg(pgid: int, sig: int) -> None:
    if pgid <= 1:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _exit_info(returncode: int) -> ExitInfo:
    now = time.time()
    if returncode < 0:
        sig = -returncode
        return ExitInfo(exit_code=128 + sig, signal=sig, reason="Error", finished_at=now)
    reason = "Completed" if returncode == 0 else "Error"
    return ExitInfo(exit_code=returncode, reason=reason, finished_at=now)


_LIMIT_SCRIPT = 'ulimit -v "$1" || exit 125; shift; exec "$@"'


def with_memory_limit(argv: Sequence[str], limit: int | None) -> list[str]:
    """`argv` run under RLIMIT_AS = `limit` bytes: through `sh -c 'ulimit -v ...; exec'`,
    which execs in place (same pid, one process). Not a preexec_fn: running Python between
    fork and exec in a process with gRPC threads can hang the child, and without one
    subprocess can use vfork."""
    if limit is None:
        return list(argv)
    kib = max(limit // 1024, 1)
    return ["/bin/sh", "-c", _LIMIT_SCRIPT, "k8semu-memory-limit", str(kib), *argv]


class ProcessRuntime:
    name = "process"
    runs_probes = True

    def __init__(
        self,
        root_dir: str | Path,
        *,
        cgroups: NodeCgroups | None = None,
        no_cgroups: str = "",
        users: PodUsers | None = None,
        log_limits: LogLimits = NO_ROTATION,
    ) -> None:
        """`cgroups`: the kubelet's, or None (rlimits; `no_cgroups` says why); `users`: the
        pods' own users, or None (pods run as the kubelet's user); `log_limits`: when the
        containers' logs rotate."""
        self.log_limits = log_limits
        self.root = Path(root_dir).resolve()
        self.pods_dir = self.root / "pods"
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.cgroups = cgroups
        self.no_cgroups = no_cgroups
        self.users = users
        self._pod_users: dict[str, PodUser] = {}  # by pod uid
        self._reach: list[Path] = []  # what pod users must traverse to
        if users is not None:
            try:
                self.pods_dir.chmod(0o711)
                self._reach = [self.pods_dir, *podusers.runtime_paths()]
                users.grant_traverse(self._reach)
            except OSError as exc:
                log.warning("pods run as the kubelet's user", reason=f"cannot grant: {exc}")
                self.users = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pumps: set[Pump] = set()

    def isolation(self) -> tuple[str, str]:
        if self.cgroups is not None:
            return self.cgroups.isolation, ""
        return "rlimits", self.no_cgroups

    def housekeeping(self) -> None:
        """Renew the pod users' traverse grants. A chmod of a directory above the pods (pytest
        makes /tmp/pytest-of-root 0700 at every session start) rewrites its ACL mask, which
        masks the grant out: running pods lose their own directories (an http.server pod
        answers 404) until this renews it, within one housekeeping period."""
        if self.users is None:
            return
        try:
            self.users.grant_traverse(self._reach)
        except OSError as exc:
            log.warning("cannot grant pod users traverse", error=str(exc))

    async def _argv(self, launch: Launch) -> list[str]:
        """The run's command, behind what puts it in its cgroup (or under its rlimit)."""
        argv = self._as_user(launch, _on_a_terminal(launch.argv) if launch.tty else launch.argv)
        if self.cgroups is None:
            return with_memory_limit(argv, launch.resources.memory_limit)
        try:
            procs = await asyncio.to_thread(
                self.cgroups.prepare, launch.pod_uid, launch.container, launch.resources
            )
        except CgroupError as exc:
            raise StartError("RunContainerError", f"cgroup: {exc}") from None
        return join_argv(procs, argv)

    def _run_user(self, uid: str, run_as: RunAs) -> PodUser | None:
        """Who the container runs as (None: as the kubelet; pod users are off)."""
        pod = self._pod_users.get(uid)
        if self.users is None or pod is None:
            return None
        return podusers.effective(pod, run_as)

    def _as_user(self, launch: Launch, argv: Sequence[str]) -> list[str]:
        """`argv` run as the container's user; runAsUser 0 (asked for) runs as root."""
        user = self._run_user(launch.pod_uid, launch.run_as)
        uid = os.geteuid() if user is None else user.uid
        if launch.run_as.non_root and uid == 0:
            raise StartError(
                "CreateContainerConfigError",
                "container has runAsNonRoot and image will run as root",
            )
        if self.users is None or user is None or user.uid == 0:
            return list(argv)
        return user.wrap(argv, self.users.setpriv)

    def _claim_user(self, uid: str, base: Path) -> PodUser | None:
        """The pod's user (claimed on first use, the one in pod.json after a restart); its
        directory root's with the pod's group, 1770."""
        if self.users is None:
            return None
        user = self._pod_users.get(uid)
        if user is None:
            recorded = PodUser.from_json(_read_json(base / _POD_FILE).get("user"))
            prefer = recorded.uid if recorded is not None else None
            try:
                user = self.users.claim(base, uid, prefer)
            except OSError as exc:
                raise StartError("CreateContainerConfigError", f"pod user: {exc}") from None
            self._pod_users[uid] = user
        os.chown(base, 0, user.gid)
        base.chmod(0o1770)
        return user

    def pod_dir(self, uid: str) -> Path:
        if not uid or "/" in uid or uid in (".", ".."):
            raise ValueError(f"pod uid {uid!r}: not usable as a directory name")
        return self.pods_dir / uid

    def _inside(self, uid: str, rel: str, *, what: str) -> Path:
        base = self.pod_dir(uid)
        target = (base / rel.lstrip("/")).resolve()
        if target != base and base not in target.parents:
            raise StartError("CreateContainerConfigError", f"{what} {rel!r}: leaves the pod dir")
        return target

    async def prepare_pod(self, pod: PodSetup) -> None:
        uid = pod.uid
        base = self.pod_dir(uid)
        base.mkdir(parents=True, exist_ok=True)
        pod_user = self._claim_user(uid, base)
        self.housekeeping()  # the grant now, not at the next period: the pod starts now
        info: dict[str, Any] = {
            "uid": uid, "namespace": pod.namespace, "name": pod.name, "podIP": pod.pod_ip
        }  # fmt: skip
        if pod_user is not None:
            info["user"] = pod_user.to_json()
        podusers.write_file(base / _POD_FILE, json.dumps(info).encode(), 0o644, None)
        run_as = pod.run_as or RunAs()
        user = self._run_user(uid, run_as)
        for item in pod.files:
            if item.link:
                self._link(uid, item, user)
                continue
            target = self._inside(uid, item.path, what="volume path")
            if item.path.endswith("/"):
                podusers.make_dirs(target, user)
                continue
            podusers.make_dirs(target.parent, user)
            owner, mode = (
                (user, item.mode) if user is None else podusers.file_owner(user, run_as, item.mode)
            )
            podusers.write_file(target, item.data, mode & 0o777, owner)
        self._project(uid, pod.projections, run_as)

    async def project(self, uid: str, projections: Sequence[Projection], run_as: RunAs) -> None:
        base = self.pod_dir(uid)
        if not projections or not base.is_dir():
            return  # gone (deleted meanwhile): nothing to refresh
        self._claim_user(uid, base)  # after a kubelet restart, the pod's recorded user
        await asyncio.to_thread(self._project, uid, projections, run_as)

    def _project(self, uid: str, projections: Sequence[Projection], run_as: RunAs) -> None:
        """Each projection written atomically (kubelet/projection.py) where it changed; the
        first failure is raised once the others are written."""
        user = self._run_user(uid, run_as)
        dir_owner = None if user is None else (user.uid, user.gid)
        failed: StartError | None = None
        for proj in projections:
            files: dict[str, projection.Entry] = {}
            try:
                for item in proj.files:
                    owner, mode = None, item.mode
                    if user is not None:
                        who, mode = podusers.file_owner(user, run_as, item.mode)
                        owner = (who.uid, who.gid)
                    files[projection.clean_path(item.path)] = projection.Entry(
                        item.data, mode & 0o777, owner
                    )
                with projection.open_dir(str(self.pod_dir(uid)), proj.path, dir_owner) as fd:
                    if projection.write(fd, files):
                        log.info("volume written", pod=uid, path=proj.path, files=len(files))
            except (projection.ProjectionError, OSError) as exc:
                why = f"volume path {proj.path!r}: {exc}"
                log.warning("volume not written", pod=uid, error=why)
                failed = failed or StartError("CreateContainerConfigError", why)
        if failed is not None:
            raise failed

    def _link(self, uid: str, item: VolumeFile, user: PodUser | None) -> None:
        """`item.path` (inside the pod dir) becomes a link to the directory `item.link`
        (made if missing, then the pod user's); an empty directory there (an earlier run's)
        is replaced."""
        rel = item.path.rstrip("/")
        parent = self._inside(uid, os.path.dirname(rel) or ".", what="volume path")
        where = parent / os.path.basename(rel)
        podusers.make_dirs(Path(item.link), user)
        if user is not None and self.users is not None:
            podusers.hand_over(Path(item.link), user, (self.users.first, self.users.last))
        if where.is_symlink():
            if os.readlink(where) == item.link:
                return
            where.unlink()
        elif where.is_dir():
            try:
                where.rmdir()
            except OSError:
                raise StartError(
                    "CreateContainerConfigError", f"volume path {rel!r}: not an empty directory"
                ) from None
        podusers.make_dirs(parent, user)
        where.symlink_to(item.link, target_is_directory=True)

    def log_path(self, uid: str, container: str, restart: int) -> Path | None:
        return self.pod_dir(uid) / container / f"{restart}.log"

    def termination_file(self, uid: str, path: str) -> Path | None:
        try:
            return self._inside(uid, path, what="terminationMessagePath")
        except StartError:
            return None

    async def start(self, launch: Launch) -> ContainerHandle:
        cdir = self._container_dir(launch.pod_uid, launch.container)
        user = self._run_user(launch.pod_uid, launch.run_as)
        cwd = self._inside(launch.pod_uid, launch.working_dir, what="workingDir")
        podusers.make_dirs(cwd, user)
        if launch.termination_message_path:  # each run's message is its own
            where = self._inside(launch.pod_uid, launch.termination_message_path,
                                 what="terminationMessagePath")  # fmt: skip
            podusers.make_dirs(where.parent, user)
            podusers.write_file(where, b"", 0o644, user)
        # Images find their absolute paths (/usr/share/nginx/html, ...) under K8SEMU_ROOT.
        env = {"K8SEMU_ROOT": str(self.pod_dir(launch.pod_uid)), **launch.env}
        # Checked here because the shell in front (cgroup, rlimit) would turn a missing
        # command into the run's exit code 127 rather than Kubernetes' StartError.
        why = _unrunnable(launch.argv, cwd, env)
        if why:
            what = repr(launch.argv[0]) if launch.argv else "the container"
            raise StartError("StartError", f"failed to start {what}: {why}")
        argv = await self._argv(launch)
        try:
            pipes = RunPipes.make(cdir, launch.restart)
        except OSError as exc:
            raise StartError("RunContainerError", f"log pipes: {exc.strerror or exc}") from None
        # A terminal's input is open even without spec.stdin (nobody writes): no early EOF.
        stdin, child_stdin = (
            StdinPipe.make(once=launch.stdin_once) if launch.stdin or launch.tty else (None, None)
        )
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL if child_stdin is None else child_stdin,
                stdout=pipes.writers[b"stdout"],
                stderr=pipes.writers[b"stderr"],
                pass_fds=pipes.holds,
                cwd=str(cwd),
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            if stdin is not None:
                stdin.close()
            pipes.spawned()
            pipes.close_readers()
            remove_fifos(cdir, launch.restart)
            if self.cgroups is not None:
                await asyncio.to_thread(self.cgroups.ended, launch.pod_uid, launch.container)
            raise StartError(
                "StartError", f"failed to start {launch.argv[0]!r}: {exc.strerror or exc}"
            ) from None
        finally:
            if child_stdin is not None:
                os.close(child_stdin)
        pipes.spawned()
        pump = self._pump(cdir / f"{launch.restart}.log", pipes.readers)
        started = time.time()
        ticks = proc_start_ticks(proc.pid) or 0
        _write_json(
            cdir / _STATE_FILE,
            {
                "pid": proc.pid,
                "pgid": proc.pid,
                "startTicks": ticks,
                "startedAt": started,
                "restartCount": launch.restart,
            },
        )
        loop = asyncio.get_running_loop()
        handle = ContainerHandle(
            pod_uid=launch.pod_uid,
            name=launch.container,
            restart=launch.restart,
            container_id=f"process://{proc.pid}",
            started_at=started,
            exited=loop.create_future(),
            pid=proc.pid,
            stdin=stdin,
        )
        self._spawn(self._wait_child(proc, handle, pump))
        return handle

    def _container_dir(self, uid: str, container: str) -> Path:
        """The kubelet's own directory of a container (state, logs): root's, 0700, and never
        a link (a pod may make entries in its directory before the kubelet makes this one)."""
        cdir = self.pod_dir(uid) / container
        if cdir.is_symlink() or (cdir.exists() and not cdir.is_dir()):
            cdir.unlink()
        cdir.mkdir(parents=True, exist_ok=True)
        if self.users is not None:
            if cdir.stat().st_uid != os.geteuid():
                why = f"container {container!r}: its directory is not the kubelet's"
                raise StartError("CreateContainerConfigError", why)
            cdir.chmod(0o700)
        return cdir

    def _pump(self, path: Path, readers: dict[bytes, int]) -> Pump:
        pump = Pump(path, readers, self.log_limits)
        self._pumps.add(pump)
        pump.on_done(self._pumps.discard)
        return pump

    async def _drain(self, handle: ContainerHandle, pump: Pump) -> None:
        """The run's last output is in its log (or LOG_DRAIN passed); its FIFOs go."""
        await pump.drained(LOG_DRAIN)
        with contextlib.suppress(ValueError):
            remove_fifos(self.pod_dir(handle.pod_uid) / handle.name, handle.restart)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _wait_child(
        self, proc: asyncio.subprocess.Process, handle: ContainerHandle, pump: Pump
    ) -> None:
        code = await proc.wait()
        if handle.stdin is not None:  # the next run gets its own
            handle.stdin.close()
        info = await self._run_ended(handle, _exit_info(code))
        await self._drain(handle, pump)
        if not handle.exited.done():
            handle.exited.set_result(info)

    async def _run_ended(self, handle: ContainerHandle, info: ExitInfo) -> ExitInfo:
        """The run's cgroup goes (with whatever it left running); an OOM kill in it makes the
        run OOMKilled, as the kubelet reports it (the exit code stays the one seen)."""
        if self.cgroups is None:
            return info
        try:
            ooms = await asyncio.to_thread(self.cgroups.ended, handle.pod_uid, handle.name)
        except OSError as exc:
            log.warning("cannot remove a container's cgroup", error=str(exc))
            return info
        if ooms and info.exit_code != 0:
            return replace(info, reason="OOMKilled", message="")
        return info

    async def _watch_adopted(self, handle: ContainerHandle, ticks: int, pump: Pump) -> None:
        # Not our child: no wait() and no SIGCHLD, so poll /proc.
        while True:
            if not alive(handle.pid, ticks):
                break
            await asyncio.sleep(ADOPTED_POLL)
        await self._drain(handle, pump)
        info = ExitInfo(
            exit_code=137,
            reason="ContainerStatusUnknown",
            message="the container ended while the kubelet was restarting or after;"
            " its exit status is unknown",
            finished_at=time.time(),
        )
        info = await self._run_ended(handle, info)
        if not handle.exited.done():
            handle.exited.set_result(info)

    async def stop(self, handle: ContainerHandle, grace: float) -> ExitInfo:
        if not handle.exited.done():
            _killpg(handle.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(max(grace, 0)):
                    await asyncio.shield(handle.exited)
            except TimeoutError:
                _killpg(handle.pid, signal.SIGKILL)
                await asyncio.shield(handle.exited)
        _killpg(handle.pid, signal.SIGKILL)  # whatever else the run left in its group
        return handle.exited.result()

    def _exec_plan(self, launch: Launch) -> tuple[list[str], str] | tuple[int, bytes]:
        """(argv, cwd) of an exec in the container, or (exit code, stderr) when it cannot run."""
        cwd = self._inside(launch.pod_uid, launch.working_dir, what="workingDir")
        where = cwd if cwd.is_dir() else self.pod_dir(launch.pod_uid)
        argv = self._as_user(launch, launch.argv)
        if self.cgroups is not None:  # as in Kubernetes, an exec runs in the container's cgroup
            argv = join_argv(self.cgroups.procs_files(launch.pod_uid, launch.container), argv)
            # The shell in front would answer a missing command its own way.
            why = _unrunnable(launch.argv, where, launch.env)
            if why:
                code = 126 if why == "Permission denied" else 127
                return code, f"exec {launch.argv[0]!r}: {why}\n".encode()
        return argv, str(where)

    async def exec(self, launch: Launch, stdin: bytes, timeout: float) -> tuple[int, bytes, bytes]:
        plan = self._exec_plan(launch)
        if isinstance(plan[0], int):
            return plan[0], b"", bytes(plan[1])
        argv, cwd = plan
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=cwd,
                env=dict(launch.env),
                start_new_session=True,
            )
        except OSError as exc:
            return _exec_failed(launch, exc)
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate(stdin or None)
        except TimeoutError:
            _killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            return 124, b"", f"exec: timed out after {timeout:g}s\n".encode()
        except asyncio.CancelledError:
            _killpg(proc.pid, signal.SIGKILL)
            raise
        _killpg(proc.pid, signal.SIGKILL)
        code = proc.returncode if proc.returncode is not None else 0
        return (128 - code if code < 0 else code), out, err

    async def spawn(self, launch: Launch, *, stdin: bool, tty: bool) -> Spawned:
        plan = self._exec_plan(launch)
        if isinstance(plan[0], int):
            return Spawned(None, None, plan[0], bytes(plan[1]))
        argv, cwd = plan
        master = slave = -1
        setsid = shutil.which("setsid") if tty else None
        if tty:
            master, slave = os.openpty()
            if setsid is not None:
                # The terminal becomes the new session's controlling one (job control, ^C):
                # util-linux's `setsid --ctty` does it and execs in place (same pid). Not a
                # preexec_fn: Python between fork and exec in a process with gRPC threads runs
                # gRPC's fork handlers, which aborted the child (exit 134).
                argv = [setsid, "--ctty", *argv]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=slave if tty else (asyncio.subprocess.PIPE if stdin else subprocess.DEVNULL),
                stdout=slave if tty else asyncio.subprocess.PIPE,
                stderr=slave if tty else asyncio.subprocess.PIPE,
                cwd=cwd,
                env=dict(launch.env),
                # setsid makes the session itself (it must not already lead a process group).
                start_new_session=setsid is None,
            )
        except OSError as exc:
            if tty:
                os.close(master)
            code, _, err = _exec_failed(launch, exc)
            return Spawned(None, None, code, err)
        finally:
            if tty:
                os.close(slave)
        return Spawned(proc, master if tty else None, 0, b"")

    def recover(self) -> dict[str, RecoveredPod]:
        """Pods on disk, their live containers adopted; the cgroups of pods no longer on disk
        (and empty ones) are swept."""
        found: dict[str, RecoveredPod] = {}
        for pod_dir in sorted(self.pods_dir.iterdir()):
            if not pod_dir.is_dir():
                continue
            info = _read_json(pod_dir / _POD_FILE)
            user = PodUser.from_json(info.get("user"))
            if user is not None and self.users is not None:
                self._pod_users[pod_dir.name] = user
            pod = RecoveredPod(
                uid=pod_dir.name,
                namespace=str(info.get("namespace", "")),
                name=str(info.get("name", "")),
                pod_ip=str(info.get("podIP", "")),
            )
            for state_file in sorted(pod_dir.glob(f"*/{_STATE_FILE}")):
                rec = self._recover_container(pod.uid, state_file)
                if rec is not None:
                    pod.containers[rec.name] = rec
            found[pod.uid] = pod
        if self.cgroups is not None:
            stale = self.cgroups.sweep(found)
            if stale:
                log.info("stale pod cgroups removed", cgroups=stale)
        return found

    def _recover_container(self, uid: str, state_file: Path) -> RecoveredContainer | None:
        state = _read_json(state_file)
        name = state_file.parent.name
        try:
            pid, ticks = int(state["pid"]), int(state["startTicks"])
            restart = int(state["restartCount"])
            started = float(state["startedAt"])
        except (KeyError, TypeError, ValueError):
            log.warning("unreadable container state; ignored", path=str(state_file))
            return None
        handle = None
        if alive(pid, ticks):
            handle = ContainerHandle(
                pod_uid=uid,
                name=name,
                restart=restart,
                container_id=f"process://{pid}",
                started_at=started,
                exited=asyncio.get_running_loop().create_future(),
                pid=pid,
                adopted=True,
            )
            cdir = state_file.parent
            pump = self._pump(cdir / f"{restart}.log", reopen(cdir, restart))
            self._spawn(self._watch_adopted(handle, ticks, pump))
        return RecoveredContainer(name=name, restart_count=restart, handle=handle)

    async def end_pod(self, uid: str) -> None:
        """Kill what the pod's runs left (its cgroup; without cgroups, their sessions and
        whatever runs as the pod's own user), then clear the IP in pod.json. The directory
        (logs for `kubectl logs`) and the pod's user stay until `remove_pod`: files there
        are that user's, so a new pod must not get the uid while they exist."""
        base = self.pod_dir(uid)
        await asyncio.to_thread(self._kill_leftovers, uid, base)
        info = _read_json(base / _POD_FILE)
        if info.get("podIP"):
            info["podIP"] = ""
            podusers.write_file(base / _POD_FILE, json.dumps(info).encode(), 0o644, None)

    def _kill_leftovers(self, uid: str, base: Path) -> None:
        if self.cgroups is not None:
            self.cgroups.remove_pod(uid)
        sids: set[int] = set()
        for state_file in base.glob(f"*/{_STATE_FILE}"):
            with contextlib.suppress(KeyError, TypeError, ValueError):
                sids.add(int(_read_json(state_file)["pid"]))
        # A session's id is its leader's pid, never reused while the session has members;
        # a live process with that pid is another one's (the leader ended): not this pod's.
        sids = {sid for sid in sids if not (procfs.PROC / str(sid)).exists()}
        user = self._pod_users.get(uid) if self.users is not None else None
        owner = user.uid if user is not None and user.uid != 0 else None
        for pid in procfs.members(sids, owner):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    async def remove_pod(self, uid: str) -> None:
        base = self.pod_dir(uid)
        for state_file in base.glob(f"*/{_STATE_FILE}"):
            state = _read_json(state_file)
            with contextlib.suppress(KeyError, TypeError, ValueError):
                if alive(int(state["pid"]), int(state["startTicks"])):
                    _killpg(int(state["pgid"]), signal.SIGKILL)
        if self.cgroups is not None:
            await asyncio.to_thread(self.cgroups.remove_pod, uid)
        # rmtree unlinks the volume links without following them: the volumes' data stays.
        await asyncio.to_thread(shutil.rmtree, base, True)
        await asyncio.to_thread(shutil.rmtree, memory_dir_of(uid), True)
        user = self._pod_users.pop(uid, None)
        if user is not None and self.users is not None:
            await asyncio.to_thread(self.users.release, user.uid, base)

    async def close(self) -> None:
        """Stop watching (containers keep running: the next kubelet adopts them); empty
        cgroups go."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for pump in list(self._pumps):
            pump.close()
        if self.cgroups is not None:
            await asyncio.to_thread(self.cgroups.close)

    def usage(self, node: str, pods: Sequence[PodRuns]) -> UsageSnapshot:
        snap = UsageSnapshot()
        if self.cgroups is not None:
            for run in pods:
                uid = run.pod.metadata.uid
                for name in run.handles:
                    used = self.cgroups.container_usage(uid, name)
                    if used is not None:
                        snap.containers[(uid, name)] = used
                pod_used = self.cgroups.pod_usage(uid)
                if pod_used is not None:
                    snap.pods[uid] = pod_used
            snap.node = self.cgroups.node_usage()
            return snap
        # No cgroups: each container's session from one scan of /proc; pods and the node
        # are their sums (the caller adds them up).
        trees = procfs.sessions(h.pid for run in pods for h in run.handles.values())
        for run in pods:
            for name, handle in run.handles.items():
                used = procfs.tree_usage(trees.get(handle.pid, []))
                if used is not None:
                    snap.containers[(run.pod.metadata.uid, name)] = used
        return snap


def _on_a_terminal(argv: Sequence[str]) -> list[str]:
    """`argv` on a new pseudo-terminal (spec.tty): util-linux script(1) makes it the
    command's controlling terminal, copies its stdin (the run's pipe) into it and what the
    terminal shows (echo included, as a tty container's log has) to its stdout, the run's
    log; on stdin's end it sends the terminal's EOF, and it exits with the command's code.
    Resizes are not passed on (script has no way in for them)."""
    script = shutil.which("script")
    if script is None:
        raise StartError("RunContainerError", "tty: the node has no script(1) (util-linux)")
    command = "exec " + shlex.join(argv)  # run by $SHELL -c, /bin/sh when unset
    return [script, "--quiet", "--flush", "--return", "--command", command, "/dev/null"]


def _exec_failed(launch: Launch, exc: OSError) -> tuple[int, bytes, bytes]:
    msg = f"exec {launch.argv[0]!r}: {exc.strerror or exc}\n"
    return 126 if not isinstance(exc, FileNotFoundError) else 127, b"", msg.encode()


def _unrunnable(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> str:
    """Why exec could not run argv[0] (looked up as exec looks it up), or ""."""
    if not argv:
        return "no command"
    cmd = argv[0]
    if "/" in cmd:
        candidates = [cwd / cmd]
    else:
        candidates = [cwd / (d or ".") / cmd for d in os.get_exec_path(dict(env))]
    if any(p.is_file() and os.access(p, os.X_OK) for p in candidates):
        return ""
    return (
        "Permission denied" if any(p.is_file() for p in candidates) else "No such file or directory"
    )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}

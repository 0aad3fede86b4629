"""The engine of ``k8semu up`` and ``k8semu join``: start a plan's components, wait until they
are healthy, then supervise them in the foreground or leave them running (``--detach``).

Start-up: lock the state dir -> refuse a cluster that already runs from it, a state dir made
for another cluster, or a listen address in use -> write the CLI config -> start the stages in
order (store, API servers, schedulers and controller managers, kubelets and proxies), each
only once the one before is healthy (``k8semu.cluster.startup``: a store replica when it
answers ``Maintenance.Status`` and the store when a quorum agrees on a leader; every other
component when its gRPC health service says SERVING; the nodes when the API lists them Ready).
A line is printed as each turns healthy. Any failure stops everything started so far
(nothing half-started) and raises a LaunchError with the tail of the guilty component's log.

Supervision (``k8semu.cluster.supervisor``, one loop for both modes): a component that exits
is reported and started again with back-off; one that keeps crashing is marked failed and left
down while the rest runs; store leader changes are reported. Foreground, this process runs the
loop until ``stop`` is set (SIGINT, SIGTERM, SIGHUP, or ``k8semu down``), then stops everything
by pid in reverse stage order (the store leader last), including the pod processes of this
host's kubelets. Detached, it starts ``k8semu supervise`` in a session of its own, which adopts
the components and runs the same loop, and returns. ``up --detach`` on a detached cluster that
runs but whose supervisor does not starts only the supervisor.

``state.json`` (``k8semu.cluster.state``) is rewritten whenever a pid changes. This module must
not signal a process it did not start, and prints only through ``say``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from k8semu.cluster import certs, clientconfig
from k8semu.cluster.backups import backup_schedule
from k8semu.cluster.config import format_duration
from k8semu.cluster.errors import ClusterError, LaunchError, WaitCancelledError
from k8semu.cluster.plan import (
    API,
    CONTROL,
    NODES,
    NODES_DIR,
    RETRIED_PORTS,
    STAGES,
    STORE,
    Plan,
)
from k8semu.cluster.spawn import component_env, spawn
from k8semu.cluster.startup import Planned, Readiness, wait_or_cancel
from k8semu.cluster.state import (
    KUBECONFIG_FILE,
    ClusterState,
    ComponentRecord,
    process_start_time,
    read_state,
    write_state,
)
from k8semu.cluster.status import dashboard_url
from k8semu.cluster.stopping import kubelet_pods, stop_order, terminate
from k8semu.cluster.supervisor import SUPERVISOR_LOG, Supervisor, how_exited, log_tail
from k8semu.kubelet.cgroups import sweep_nodes

__all__ = ["Launcher", "StopFlag"]

LOCK_FILE = "launcher.lock"
IDENTITY_FILE = "cluster.json"
POLL_S = 0.05
LOG_TAIL_LINES = 20
SUPERVISOR_START_TIMEOUT_S = 30.0


class StopFlag:
    """A stop request that a signal handler may set.

    A handler runs on the main thread between two bytecodes, possibly while that thread is
    inside ``wait()``; a ``threading.Event`` would take a lock the interrupted code may hold.
    This flag takes none: ``set()`` assigns an attribute and writes a byte to a pipe that
    ``wait()`` selects on.
    """

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        #: Why the stop was asked for (``SIGINT``), or None while it was not.
        self.reason: str | None = None

    def set(self, reason: str = "stop requested") -> None:
        if self.reason is None:
            self.reason = reason
        with contextlib.suppress(OSError):
            os.write(self._write_fd, b"x")

    def is_set(self) -> bool:
        return self.reason is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until set or ``timeout`` seconds pass; whether it is set."""
        if not self.is_set():
            with contextlib.suppress(InterruptedError):
                select.select([self._read_fd], [], [], timeout)
        return self.is_set()

    def close(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


class Launcher:
    """Runs one plan with its state in ``state_dir``.

    ``run()`` returns after start-up when ``detach`` is set (the components keep running),
    else once ``stop`` is set and everything is stopped. ``after_start`` (the demo) runs once
    the cluster is up, before supervision; it may raise a LaunchError. ``user_config`` is the
    CLI config that gets this cluster's context (None: only ``<state-dir>/kubeconfig``).
    It raises a LaunchError naming the cause - after stopping everything it started - when
    the cluster cannot start or a component keeps crashing.
    """

    def __init__(
        self,
        plan: Plan,
        state_dir: Path,
        *,
        say: Callable[[str], None],
        stop: StopFlag,
        detach: bool = False,
        user_config: Path | None = None,
        config_source: str = "",
        environ: dict[str, str] | None = None,
        after_start: Callable[[], None] | None = None,
    ) -> None:
        self.plan = plan
        self.state_dir = Path(state_dir).resolve()
        self.detach = detach
        self.user_config = user_config
        self.config_source = config_source
        self._after_start = after_start
        self._say = say
        self._stop = stop
        self._probes = certs.probes(self.state_dir, _probe_targets(plan))
        self._env = component_env(os.environ if environ is None else environ)
        self._running = [
            Planned(
                plan=c,
                record=ComponentRecord(
                    name=c.name,
                    kind=c.kind,
                    host=c.host,
                    stage=c.stage,
                    command=list(c.argv),
                    address=c.address,
                    ports=dict(c.ports),
                    log_path=str(c.log_path),
                    data_dir=str(c.data_dir),
                    nodes=list(c.node_names),
                    health_check=c.health_check,
                    pool=c.pool,
                    pool_node=c.pool_node,
                    state="running" if c.autostart else "stopped",
                ),
            )
            for c in plan.components
        ]
        self._supervisor = Supervisor(
            self._running,
            spec=plan.launcher,
            state_dir=self.state_dir,
            env=self._env,
            say=say,
            stop=stop,
            write_state=self._write_state,
            api_servers=plan.api_servers,
            pdeathsig=not detach,
            store_members=plan.store_members,
            probes=self._probes,
            backups=backup_schedule(
                plan.cluster,
                self.state_dir,
                plan.backups,
                [a for _, a in plan.store_members],
                say,
            ),
        )
        self._supervisor_pid = (0, 0)
        self._ready = Readiness(
            plan=plan,
            probes=self._probes,
            say=say,
            stop=stop,
            leader_watch=self._supervisor.leader_watch,
            logs_dir=self.state_dir / "logs",
        )
        self._mode = "detached" if detach else "foreground"

    @property
    def _leader(self) -> str | None:
        return self._supervisor.leader_watch.leader

    # -- the whole run ----------------------------------------------------------------------

    def run(self) -> None:
        """Start, then supervise until stopped and stop (or, detached, return)."""
        try:
            (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LaunchError(f"cannot create state dir {self.state_dir}: {exc.strerror}") from exc
        detached = False
        with _locked(self.state_dir / LOCK_FILE):
            if self.detach and self._revive_supervisor():
                return
            self._check_not_running()
            self._check_identity()
            self._check_addresses()
            self._write_identity()
            try:
                with contextlib.suppress(WaitCancelledError):
                    self._start_all()
                    if self.detach:
                        self._write_state(launcher=False)
                        self._start_supervisor()
                        detached = True
                        return
                    if self._after_start is not None:
                        self._after_start()
                    self._supervise()
            finally:
                if not detached:
                    self._stop_all()
                self._probes.close()

    # -- pre-flight ---------------------------------------------------------------------------

    def _check_not_running(self) -> None:
        try:
            old = read_state(self.state_dir)
        except ClusterError:
            return
        alive = [c.name for c in old.components if c.alive()]
        if alive or old.launcher_alive() or old.supervisor_alive():
            raise LaunchError(
                f"cluster {old.cluster!r} already runs from {self.state_dir} ({old.mode};"
                f" {len(alive)} components alive: {', '.join(alive[:6])}"
                f"{', ...' if len(alive) > 6 else ''}). `k8semu status --state-dir"
                f" {self.state_dir}` shows it; `k8semu down --state-dir {self.state_dir}` stops it"
            )

    def _identity(self) -> dict[str, object]:
        return {
            "name": self.plan.cluster,
            "storeToken": self.plan.store_token,
            # Sorted: the store's identity depends on the member names, not their order.
            "storeMembers": sorted(name for name, _ in self.plan.store_members),
        }

    def _check_identity(self) -> None:
        """Refuse a state dir made for another cluster: its replicas would refuse to start (other
        token) or wait for members that this config does not start."""
        path = self.state_dir / IDENTITY_FILE
        try:
            have = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise LaunchError(
                f"{path} is unreadable ({exc}); it records which cluster {self.state_dir} holds."
                f" Delete {self.state_dir} to start afresh, or use another --state-dir"
            ) from exc
        want = self._identity()
        if not isinstance(have, dict) or any(have.get(k) != want[k] for k in want):
            have = have if isinstance(have, dict) else {}
            raise LaunchError(
                f"state dir {self.state_dir} holds cluster {have.get('name')!r} with store members"
                f" {_names(have.get('storeMembers'))}, but the config"
                f" ({self.config_source or 'given'}) describes cluster {self.plan.cluster!r} with"
                f" store members {_names(want['storeMembers'])}. Start it with the config it was"
                f" made with, use another --state-dir, or delete {self.state_dir} to start afresh"
            )

    def _write_identity(self) -> None:
        path = self.state_dir / IDENTITY_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._identity(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)

    def _check_addresses(self) -> None:
        """Every listen address must be free, so a taken port is reported as the config field
        it came from rather than as a component that died at start. The ingress ports are
        not checked: the proxy serves without them and binds them once free (another cluster
        on this machine may hold 127.0.1.1:80)."""
        for r in self._running:
            for key, address in r.plan.ports.items():
                if key in RETRIED_PORTS:
                    continue
                problem = _listen_problem(address)
                if problem is not None:
                    where = r.plan.origins.get(key, f"{r.name} ({key})")
                    raise LaunchError(f"{where}: {problem}")

    # -- start-up -----------------------------------------------------------------------------

    def _start_all(self) -> None:
        plan = self.plan
        deadline = self._ready.t0 + plan.launcher.ready_timeout_ms / 1000
        where = f" (host {plan.host})" if plan.host else ""
        self._say(
            f"k8semu up: cluster {plan.cluster!r}{where}: {len(plan.components)} processes,"
            f" state in {self.state_dir}"
        )
        for name, reason in plan.skipped:
            self._say(f"  skipped {name}: {reason}")
        self._write_clientconfig()
        remote_api_seen = False
        for stage, title in enumerate(STAGES):
            # A node pool's slots past its initial size wait for the cluster autoscaler.
            members = [r for r in self._running if r.plan.stage == stage and r.plan.autostart]
            if stage == API and plan.store_external:
                self._ready.external_store(deadline)
            if stage in (CONTROL, NODES) and members and not remote_api_seen:
                remote_api_seen = self._local_api() or self._ready.remote_api(deadline)
            if not members:
                if stage == STORE and plan.store_members and not plan.store_external:
                    self._ready.store_leader(deadline)
                continue
            self._say(f"starting {title}: {', '.join(r.name for r in members)}")
            for r in members:
                self._spawn(r)
            self._write_state()
            if stage == STORE:
                self._ready.store(members, deadline)
            else:
                self._ready.components(members, deadline)
            if stage == NODES:
                self._ready.nodes_ready(members, deadline)
        self._write_state()
        self._apply_addons()
        self._print_summary()

    def _apply_addons(self) -> None:
        """Create the config's add-ons (the cluster DNS) as a user would, with `k8semu apply`.
        Best effort: the cluster is up without them, so a failure is a warning."""
        for name, manifest in self.plan.addons:
            argv = [
                sys.executable, "-m", "k8semu", "apply", "-f", "-",
                "--kubeconfig", str(self.state_dir / KUBECONFIG_FILE),
            ]  # fmt: skip
            try:
                done = subprocess.run(
                    argv, input=manifest, capture_output=True, text=True, timeout=60,
                    env=self._env,
                )  # fmt: skip
            except (OSError, subprocess.TimeoutExpired) as exc:
                self._say(f"  add-on {name}: not applied: {exc}")
                continue
            if done.returncode != 0:
                self._say(f"  add-on {name}: not applied: {done.stderr.strip()[-500:]}")
            else:
                self._say(f"  add-on {name}: applied ({len(done.stdout.splitlines())} objects)")

    def _spawn(self, r: Planned) -> None:
        try:
            self._supervisor.spawn(r)
        except ClusterError as exc:
            raise LaunchError(str(exc)) from exc

    def _local_api(self) -> bool:
        return any(r.plan.stage == API for r in self._running)

    def _print_summary(self) -> None:
        plan = self.plan
        lines = [
            "",
            f"cluster {plan.cluster!r} is up after {self._ready.elapsed()}"
            f"{f' (host {plan.host})' if plan.host else ''}",
        ]
        if plan.api_servers:
            lines.append(f"  API servers  {', '.join(plan.api_servers)}")
        if plan.rest_servers:
            kubeconfig = self.state_dir / KUBECONFIG_FILE
            lines.append(f"  REST API     {', '.join(plan.rest_servers)}")
            lines.append(f"  dashboard    {dashboard_url(plan.rest_servers[0])}  (a browser)")
            lines.append(f"  kubectl      KUBECONFIG={kubeconfig} kubectl get pods")
        ingresses = [
            f"{scheme}://{c.ports[port]}/"
            for c in plan.components
            for port, scheme in (("ingress", "http"), ("ingress-tls", "https"))
            if port in c.ports
        ]
        if ingresses:
            lines.append(f"  ingress      {', '.join(ingresses)}")
        if plan.store_members or plan.store_external:
            stores = plan.store_external or tuple(a for _, a in plan.store_members)
            leader = f" (leader {self._leader})" if self._leader else ""
            lines.append(f"  store        {','.join(stores)}{leader}")
        lines += [
            f"  state dir    {self.state_dir}  (state.json, logs/, data)",
            f"  CLI config   {self._clientconfig_note()}",
            "",
            "Try:",
            "  k8semu get nodes -o wide",
            f"  k8semu status --state-dir {self.state_dir}",
            f"  k8semu down --state-dir {self.state_dir}",
        ]
        if self.detach:
            lines += [
                "",
                "Detached: a `k8semu supervise` process restarts what crashes (its log:"
                f" {self.state_dir / 'logs' / SUPERVISOR_LOG}).",
            ]
        for line in lines:
            self._say(line.rstrip())

    # -- client config and state ---------------------------------------------------------------

    def _write_clientconfig(self) -> None:
        if not self.plan.api_servers:
            return
        rest = self.plan.rest_servers[0] if self.plan.rest_servers else ""
        # A joined host has no admin certificate: its kubeconfig names the servers only.
        paths = certs.PKIPaths(self.state_dir)
        admin = self.plan.tls and paths.cert("admin").cert.exists()
        creds = paths.credentials("admin") if admin else None
        clientconfig.write_kubeconfig(
            self.state_dir / KUBECONFIG_FILE, self.plan.cluster, self.plan.api_servers, rest, creds
        )
        if self.user_config is not None:
            clientconfig.set_context(
                self.user_config, self.plan.cluster, self.plan.api_servers, rest, creds
            )

    def _clientconfig_note(self) -> str:
        if self.user_config is not None:
            return (
                f"context {self.plan.cluster!r} in {self.user_config} is now current"
                " (k8semu get/apply/... go to this cluster)"
            )
        return f"K8SEMU_CONFIG={self.state_dir / KUBECONFIG_FILE}"

    def _write_state(self, *, launcher: bool = True, mode: str | None = None) -> None:
        me = os.getpid()
        state = ClusterState(
            cluster=self.plan.cluster,
            host=self.plan.host,
            mode=mode or self._mode,
            state_dir=str(self.state_dir),
            config_source=self.config_source,
            launcher_pid=me if launcher else 0,
            launcher_start_time=(process_start_time(me) or 0) if launcher else 0,
            api_servers=list(self.plan.api_servers),
            store_endpoints=list(
                self.plan.store_external or (a for _, a in self.plan.store_members)
            ),
            kubeconfig=str(self.state_dir / KUBECONFIG_FILE) if self.plan.api_servers else "",
            store_members=[[n, a] for n, a in self.plan.store_members],
            components=[r.record for r in self._running],
            supervisor_pid=self._supervisor_pid[0],
            supervisor_start_time=self._supervisor_pid[1],
            launcher=dataclasses.asdict(self.plan.launcher),
            backups=dataclasses.asdict(self.plan.backups),
            tls=self.plan.tls,
        )
        write_state(self.state_dir, state)

    # -- supervision --------------------------------------------------------------------------

    def _supervise(self) -> None:
        self._say(
            f"Supervising (a component that exits is started again). Ctrl-C (or kill -TERM"
            f" {os.getpid()}, or `k8semu down`) stops every process it started."
        )
        self._supervisor.run()

    def _start_supervisor(self) -> None:
        """Start ``k8semu supervise`` for this detached cluster and wait until it has adopted
        the components (it records itself in state.json); LaunchError when it does not."""
        log_path = self.state_dir / "logs" / SUPERVISOR_LOG
        argv = [sys.executable, "-m", "k8semu", "supervise", "--state-dir", str(self.state_dir)]
        try:
            # Not in a cgroup of the chaos run's, nor dying with this process: it is the one
            # that outlives it.
            proc = spawn(
                argv,
                name="supervisor",
                log_path=log_path,
                env=self._env,
                cwd=self.state_dir,
                cgroup=False,
            )
        except ClusterError as exc:
            raise LaunchError(f"cannot start the supervisor ({' '.join(argv)}): {exc}") from exc
        try:
            self._supervisor_pid = self._await_supervisor(proc, log_path)
        except ClusterError:
            _end(proc)
            raise
        self._say(f"  supervisor: k8semu supervise pid {proc.pid} (log {log_path})")

    def _await_supervisor(self, proc: subprocess.Popen[bytes], log_path: Path) -> tuple[int, int]:
        """Wait until ``proc`` has recorded itself as the supervisor in state.json: its pid and
        start time."""
        deadline = time.monotonic() + SUPERVISOR_START_TIMEOUT_S
        while True:
            rc = proc.poll()
            if rc is not None:
                raise LaunchError(
                    f"the supervisor (pid {proc.pid}) {how_exited(rc)} at start; last lines of"
                    f" {log_path}:\n{log_tail(log_path, LOG_TAIL_LINES)}"
                )
            with contextlib.suppress(ClusterError):
                state = read_state(self.state_dir)
                if state.supervisor_pid == proc.pid and state.supervisor_alive():
                    return proc.pid, state.supervisor_start_time
            if time.monotonic() >= deadline:
                raise LaunchError(
                    f"the supervisor (pid {proc.pid}) did not take over within"
                    f" {SUPERVISOR_START_TIMEOUT_S:g}s; last lines of {log_path}:\n"
                    f"{log_tail(log_path, LOG_TAIL_LINES)}"
                )
            wait_or_cancel(self._stop, POLL_S)

    def _revive_supervisor(self) -> bool:
        """``up --detach`` on a detached cluster that runs without its supervisor: start only
        the supervisor (it restarts whatever is down). Whether it did."""
        try:
            old = read_state(self.state_dir)
        except ClusterError:
            return False
        if old.mode != "detached" or old.launcher_alive() or old.supervisor_alive():
            return False
        if not any(c.alive() for c in old.components):
            return False
        self._check_identity()
        self._say(
            f"cluster {old.cluster!r} already runs from {self.state_dir} but its supervisor does"
            f" not (pid {old.supervisor_pid or '-'} is gone): starting only the supervisor"
        )
        self._start_supervisor()
        return True

    # -- stop ---------------------------------------------------------------------------------

    def _stop_all(self) -> None:
        live = [r for r in self._running if r.proc is not None]
        if not live:
            return
        grace = self.plan.launcher.stop_grace_ms / 1000
        why = self._stop.reason or "stopping after the error below"
        self._say(
            f"{why}: stopping {len(live)} processes (SIGTERM, SIGKILL after"
            f" {format_duration(self.plan.launcher.stop_grace_ms)})"
        )
        for r in live:
            r.wanted = False
        # Pods of this host's kubelets run in their own sessions: find them before their
        # kubelets go (after that they are no longer anybody's children).
        pods = kubelet_pods([r.record for r in live], self.state_dir)
        killed: list[str] = []
        by_name = {r.name: r for r in live}
        for stage, group in stop_order([r.record for r in live], lambda: self._leader):
            killed += self._terminate([by_name[c.name] for c in group], grace)
            if stage == NODES and pods:
                _, still = terminate(pods, grace)
                if still:
                    raise LaunchError(f"pod processes {still} survived SIGKILL")
        sweep_nodes(self.state_dir / NODES_DIR)  # the pods' cgroups, now empty
        for r in live:
            r.record.pid = 0
            r.record.start_time = 0
        with contextlib.suppress(OSError):
            self._write_state(launcher=False, mode="stopped")
        note = f" ({', '.join(killed)} needed SIGKILL)" if killed else ""
        extra = f" and {len(pods)} pod processes" if pods else ""
        self._say(f"stopped: {len(live)} processes{extra} have exited{note}; data kept in"
                  f" {self.state_dir}")  # fmt: skip

    def _terminate(self, members: list[Planned], grace: float) -> list[str]:
        if not members:
            return []
        pids = {r.record.pid: r.record.start_time for r in members if r.proc is not None}

        def reap() -> None:
            for r in members:
                if r.proc is not None:
                    r.proc.poll()

        killed, still = terminate(pids, grace, reap=reap)
        for r in members:
            if r.proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    r.proc.wait(timeout=1)
                r.proc = None
        if still:
            raise LaunchError(f"processes {still} survived SIGKILL")
        return [r.name for r in members if r.record.pid in killed]


def _probe_targets(plan: Plan) -> list[tuple[str, str]]:
    """(kind, address) of every component the launcher asks, those of other hosts too."""
    return [
        *((c.kind, c.address) for c in plan.components),
        *(("store", a) for _, a in plan.store_members),
        *(("apiserver", a) for a in plan.api_servers),
    ]


def _end(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process this launcher has just started (and reap it)."""
    proc.terminate()
    try:
        proc.wait(timeout=2.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5.0)


def _names(value: object) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else repr(value)


def _listen_problem(address: str) -> str | None:
    """Why this host cannot listen on ``HOST:PORT`` right now, or None when it can.

    Binds with SO_REUSEADDR like gRPC does, so only a listener (not a connection lingering in
    TIME_WAIT) counts as taking the port.
    """
    host, _, port_text = address.rpartition(":")
    host = host.strip("[]")
    port = int(port_text)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"cannot resolve {host!r}: {exc.strerror}"
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"{address} is already in use (another cluster, an etcd, or something"
                    f" else listens there; `ss -ltnp 'sport = :{port}'` shows what)"
                )
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"cannot listen on {address}: {host} is not an address of this host"
            return f"cannot listen on {address}: {exc.strerror}"
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (one launcher per state dir); the kernel drops it when
    this process exits, however it exits."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise LaunchError(
                f"another `k8semu up` (pid {holder}) is running this cluster from state dir"
                f" {path.parent}; stop it first (Ctrl-C in its terminal, or `k8semu down`)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)

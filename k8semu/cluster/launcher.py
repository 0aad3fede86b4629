"""The engine of ``k8semu up``: start a local cluster from a config, supervise it, stop it.

Owns one local cluster's data directory and the processes started for it::

    <data-dir>/launcher.lock     held (flock) while a launcher runs; holds its pid
    <data-dir>/cluster.json      the cluster's identity: name, store token, member names
    <data-dir>/store/<name>/     a store replica's data (raft.db, kv.db, snap/)
    <data-dir>/store/<name>.log  its stdout and stderr, appended across runs

Start-up is: pre-flight checks (lock, identity, every address free) -> start every store replica
-> wait for an agreed leader -> write and read back the demo key through the etcd v3 API -> print
a summary. Supervision then reports every replica that exits unexpectedly and starts it again
with back-off (``RestartTracker``), and reports leader changes. When ``stop`` is set (the CLI
sets it from SIGINT/SIGTERM), every process it started is stopped by pid: SIGTERM, then SIGKILL
after the grace period. Data is kept, so the next run restarts the same cluster.

It must not signal a process it did not start, listen on or send to anything but the configured
addresses, or print other than through the ``say`` callback it is given.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import select
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc  # type: ignore[import-untyped, unused-ignore]

from k8semu.cluster.config import ClusterConfig, format_duration
from k8semu.cluster.errors import (
    ClusterError,
    ClusterNotReadyError,
    LaunchError,
    MemberExitedError,
    WaitCancelledError,
)
from k8semu.cluster.processes import K8semuStoreCluster, MemberSpec
from k8semu.cluster.supervisor import RestartTracker
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc

__all__ = ["DEMO_KEY", "Launcher", "StopFlag"]

DEMO_KEY = "/k8semu/hello"
LOCK_FILE = "launcher.lock"
IDENTITY_FILE = "cluster.json"
STORE_DIR = "store"
# How often the supervision loop looks for exited processes, and how often it asks who leads.
SUPERVISE_POLL_S = 0.1
LEADER_CHECK_INTERVAL_S = 1.0
LEADER_CHECK_RPC_S = 0.3
# One demo-key RPC may take this long; the whole start-up has launcher.readyTimeout.
DEMO_RPC_TIMEOUT_S = 2.0
DEMO_RETRY_PAUSE_S = 0.1
# Lines of a crashed replica's log shown with the restart notice.
CRASH_LOG_LINES = 5


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


@dataclass(frozen=True, slots=True)
class DemoWrite:
    """The demo key as written: its value and revision, and the value it had before (kept
    from an earlier run), if any."""

    value: str
    revision: int
    previous: str | None


class Launcher:
    """Runs one local cluster from ``config`` with its data in ``data_dir`` until stopped.

    ``run()`` returns once every process it started has been stopped after ``stop`` was set,
    and raises a ClusterError naming the cause (after stopping everything) when the cluster
    cannot start or a replica keeps crashing.
    """

    def __init__(
        self,
        config: ClusterConfig,
        data_dir: Path,
        *,
        say: Callable[[str], None],
        stop: StopFlag,
        python: str = sys.executable,
    ) -> None:
        self.config = config
        self.data_dir = Path(data_dir).resolve()
        self.store_dir = self.data_dir / STORE_DIR
        self.python = python
        self._say = say
        self._stop = stop
        self._tracker = RestartTracker(config.launcher)
        self._leader: str | None = None

    # -- the whole run ----------------------------------------------------------------------

    def run(self) -> None:
        """Start, supervise until stopped, stop. See the class docstring."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LaunchError(f"cannot create data dir {self.data_dir}: {exc.strerror}") from exc
        with _locked(self.data_dir / LOCK_FILE):
            self._check_identity()
            self._check_addresses()
            self._write_identity()
            cluster = self._make_cluster()
            try:
                with contextlib.suppress(WaitCancelledError):
                    self._start(cluster)
                    self._supervise(cluster)
            finally:
                self._stop_all(cluster)

    def _make_cluster(self) -> K8semuStoreCluster:
        store = self.config.store
        return K8semuStoreCluster(
            self.store_dir,
            members=[MemberSpec(m.name, m.client_url, m.peer_url) for m in store.members],
            heartbeat_ms=store.heartbeat_ms,
            election_ms=store.election_ms,
            extra_args=["--snapshot-count", str(store.snapshot_count)],
            token=self.config.store_token,
            reuse_data=True,
            python=self.python,
        )

    # -- pre-flight ---------------------------------------------------------------------------

    def _identity(self) -> dict[str, object]:
        return {
            "name": self.config.name,
            "storeToken": self.config.store_token,
            # Sorted: the store's identity depends on the member names, not their order.
            "storeMembers": sorted(m.name for m in self.config.store.members),
        }

    def _check_identity(self) -> None:
        """Refuse a data dir made for another cluster: its replicas would refuse to start (other
        token) or wait for members that this config does not start."""
        path = self.data_dir / IDENTITY_FILE
        try:
            have = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise LaunchError(
                f"{path} is unreadable ({exc}); it records which cluster {self.data_dir} holds."
                f" Delete {self.data_dir} to start afresh, or use another --data-dir"
            ) from exc
        want = self._identity()
        if not isinstance(have, dict) or any(have.get(k) != want[k] for k in want):
            have = have if isinstance(have, dict) else {}
            raise LaunchError(
                f"data dir {self.data_dir} holds cluster {have.get('name')!r} with store members"
                f" {_names(have.get('storeMembers'))}, but the config"
                f" ({self.config.source or 'given'}) describes cluster {self.config.name!r} with"
                f" store members {_names(want['storeMembers'])}. Start it with the config it was"
                f" made with, use another --data-dir, or delete {self.data_dir} to start afresh"
            )

    def _write_identity(self) -> None:
        path = self.data_dir / IDENTITY_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._identity(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)

    def _check_addresses(self) -> None:
        """Every client and peer address must be free to listen on, so a taken port is reported
        as the config field it came from rather than as a replica that died at start."""
        for i, m in enumerate(self.config.store.members):
            for key, address in (("clientURL", m.client_address), ("peerURL", m.peer_address)):
                problem = _listen_problem(address)
                if problem is not None:
                    raise LaunchError(f"store.members[{i}].{key}: {problem}")

    # -- start-up -----------------------------------------------------------------------------

    def _start(self, cluster: K8semuStoreCluster) -> None:
        ready_ms = self.config.launcher.ready_timeout_ms
        deadline = time.monotonic() + ready_ms / 1000
        self._say(
            f"k8semu up: starting cluster {self.config.name!r}: {cluster.size} store replicas,"
            f" data in {self.data_dir}"
        )
        cluster.start()
        now = time.monotonic()
        for name in cluster.members:
            self._tracker.started(name, now)
        try:
            leader = cluster.wait_ready(timeout=ready_ms / 1000, cancel=self._stop)
        except MemberExitedError as exc:
            raise LaunchError(f"the store did not start: {exc}") from exc
        except ClusterNotReadyError as exc:
            raise LaunchError(
                f"the store did not elect a leader within {format_duration(ready_ms)}"
                f" (launcher.readyTimeout): {exc}"
            ) from exc
        self._leader = leader
        demo = self._write_demo_key(cluster, leader, deadline)
        self._print_summary(cluster, leader, demo)

    def _write_demo_key(
        self, cluster: K8semuStoreCluster, leader: str, deadline: float
    ) -> DemoWrite:
        """Put the demo key and read it back (linearizably) through the etcd v3 API, trying the
        leader first and the others after it until the deadline (a new election may be on)."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        value = f"hello from k8semu (cluster {self.config.name}, written {stamp})"
        order = [leader, *(n for n in cluster.members if n != leader)]
        key = DEMO_KEY.encode()
        attempt = 0
        while True:
            if self._stop.is_set():
                raise WaitCancelledError("demo key write cancelled")
            name = order[attempt % len(order)]
            kv = rpc_pb2_grpc.KVStub(cluster.channel(name))
            timeout = max(0.1, min(DEMO_RPC_TIMEOUT_S, deadline - time.monotonic()))
            try:
                put = kv.Put(
                    rpc_pb2.PutRequest(key=key, value=value.encode(), prev_kv=True),
                    timeout=timeout,
                )
                got = kv.Range(rpc_pb2.RangeRequest(key=key), timeout=timeout)
            except grpc.RpcError as exc:
                if time.monotonic() >= deadline:
                    raise LaunchError(
                        f"cannot write the demo key {DEMO_KEY} through the etcd v3 API: last"
                        f" attempt, on {name}: {exc.code().name} {exc.details()}"
                    ) from exc
                attempt += 1
                self._stop.wait(DEMO_RETRY_PAUSE_S)
                continue
            read = got.kvs[0].value.decode("utf-8", "replace") if got.kvs else None
            if read != value:
                raise LaunchError(
                    f"the demo key {DEMO_KEY} read back from {name} is {read!r}, not the"
                    f" {value!r} just written to it"
                )
            previous = (
                put.prev_kv.value.decode("utf-8", "replace") if put.HasField("prev_kv") else None
            )
            return DemoWrite(value=value, revision=got.kvs[0].mod_revision, previous=previous)

    def _print_summary(self, cluster: K8semuStoreCluster, leader: str, demo: DemoWrite) -> None:
        members = list(cluster.members.values())
        endpoints = ",".join(m.endpoint for m in members)
        client_w = max(len("client (etcd v3)"), *(len(m.endpoint) for m in members))
        peer_w = max(
            len("peer (Raft)"), *(len(m.peer_url.removeprefix("http://")) for m in members)
        )
        name_w = max(len("replica"), *(len(m.name) for m in members))
        lines = [
            "",
            f"cluster {self.config.name!r} is up: {len(members)} store replicas, leader {leader}",
            "",
            f"  {'replica':<{name_w}}  {'pid':>7}  {'client (etcd v3)':<{client_w}}"
            f"  {'peer (Raft)':<{peer_w}}",
        ]
        for m in members:
            mark = "  leader" if m.name == leader else ""
            lines.append(
                f"  {m.name:<{name_w}}  {m.pid or 0:>7}  {m.endpoint:<{client_w}}"
                f"  {m.peer_url.removeprefix('http://'):<{peer_w}}{mark}"
            )
        previous = (
            "the key is new"
            if demo.previous is None
            else f"it held {demo.previous!r} from an earlier run"
        )
        logs = ", ".join(m.log_path.name for m in members)
        lines += [
            "",
            f"  data dir  {self.data_dir}  (kept: the next `k8semu up` restarts this cluster)",
            f"  logs      {self.store_dir}/  {logs}",
            f"  demo key  {DEMO_KEY} = {demo.value!r} (revision {demo.revision}; {previous})",
            "",
            "Try:",
            f"  ETCDCTL_API=3 etcdctl --endpoints {endpoints} get {DEMO_KEY}",
            f"  ETCDCTL_API=3 etcdctl --endpoints {endpoints} endpoint status -w table",
            "  kill -9 <a replica's pid>    # the launcher reports it and starts it again",
            "",
            f"Supervising. Ctrl-C (or kill -TERM {os.getpid()}) stops every process it started.",
        ]
        for line in lines:
            self._say(line.rstrip())

    # -- supervision --------------------------------------------------------------------------

    def _supervise(self, cluster: K8semuStoreCluster) -> None:
        due: dict[str, float] = {}  # replica -> when to start it again
        next_leader_check = time.monotonic() + LEADER_CHECK_INTERVAL_S
        while not self._stop.is_set():
            now = time.monotonic()
            for exited in cluster.exited_members():
                due[exited.name] = now + self._on_exit(exited, now)
            for name, when in sorted(due.items(), key=lambda item: item[1]):
                if when <= now and not self._stop.is_set():
                    del due[name]
                    cluster.start_member(name)
                    self._tracker.started(name, time.monotonic())
                    self._event(f"store replica {name} started again: pid {cluster.pids[name]}")
            if now >= next_leader_check:
                self._check_leader(cluster)
                next_leader_check = time.monotonic() + LEADER_CHECK_INTERVAL_S
            self._stop.wait(SUPERVISE_POLL_S)

    def _on_exit(self, exited: MemberExitedError, now: float) -> float:
        """Report an exited replica; the delay before starting it again. LaunchError when it
        has crashed too often in a row."""
        delay = self._tracker.exited(exited.name, now)
        crashes = self._tracker.crashes(exited.name)
        reset_after = format_duration(self.config.launcher.backoff_reset_after_ms)
        if delay is None:
            raise LaunchError(
                f"store replica {exited.name} (pid {exited.pid}) {exited.how}, its crash number"
                f" {crashes} in a row, each within {reset_after} of its start; launcher.maxRestarts"
                f" is {self._tracker.max_restarts}, so the launcher gives up. Last lines of"
                f" {exited.log_path}:\n{exited.log_tail}"
            )
        self._event(
            f"store replica {exited.name} (pid {exited.pid}) {exited.how}; starting it again in"
            f" {delay:g}s (restart {crashes} in a row of at most {self._tracker.max_restarts})"
        )
        if exited.returncode > 0:
            tail = exited.log_tail.splitlines()[-CRASH_LOG_LINES:]
            self._say("\n".join(f"    | {line}" for line in tail))
        return delay

    def _check_leader(self, cluster: K8semuStoreCluster) -> None:
        leader = cluster.current_leader(timeout=LEADER_CHECK_RPC_S)
        if leader == self._leader:
            return
        if leader is None:
            self._event(
                f"store has no agreed leader (was {self._leader}); an election is under way"
            )
        elif self._leader is None:
            self._event(f"store leader is now {leader}")
        else:
            self._event(f"store leader is now {leader} (was {self._leader})")
        self._leader = leader

    def _event(self, message: str) -> None:
        self._say(f"{time.strftime('%H:%M:%S')} {message}")

    # -- stop ---------------------------------------------------------------------------------

    def _stop_all(self, cluster: K8semuStoreCluster) -> None:
        running = sorted(cluster.pids.items())
        grace_ms = self.config.launcher.stop_grace_ms
        why = self._stop.reason or "stopping after the error below"
        if running:
            pids = ", ".join(f"{name} pid {pid}" for name, pid in running)
            self._say(
                f"{why}: stopping {len(running)} store replicas ({pids}): SIGTERM, SIGKILL after"
                f" {format_duration(grace_ms)}"
            )
        try:
            cluster.close(grace=grace_ms / 1000)
        except ClusterError as exc:
            raise LaunchError(f"could not stop every process: {exc}") from exc
        if running:
            self._say(
                f"stopped: every process this launcher started has exited; data kept in"
                f" {self.data_dir}"
            )


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
                    f"{address} is already in use (another `k8semu up`, an etcd, or something"
                    f" else listens there; `ss -ltnp 'sport = :{port}'` shows what)"
                )
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"cannot listen on {address}: {host} is not an address of this host"
            return f"cannot listen on {address}: {exc.strerror}"
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (one launcher per data dir); the kernel drops it when
    this process exits, however it exits."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise LaunchError(
                f"another `k8semu up` (pid {holder}) is running this cluster from data dir"
                f" {path.parent}; stop it first (Ctrl-C in its terminal, or kill -TERM {holder})"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)

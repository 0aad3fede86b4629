"""Start, watch and stop the member processes of one store cluster on this host.

This module owns the member processes of one store cluster: their addresses (given, or free
loopback ports picked here), a data directory and a log file per member under one base
directory, starting them, the signals a launcher and chaos tests need (kill, pause, resume,
stop, restart) and the answer to "is there a leader, and who is it" through the etcd v3
``Maintenance.Status`` RPC. Because a real etcd and ``k8semu store`` take the same flags and
speak the same API, one class family drives both. ``k8semu up`` uses it to run a local cluster;
tests and benchmarks use it to break one.

It must not signal any process it did not start (every signal goes to a pid it holds a
``Popen`` for), or wait a fixed time where it can poll against a deadline. Every process it
starts is stopped by ``close()``, by an ``atexit`` hook if the owner forgot, and - when started
from the main thread and ``setpriv`` exists - by the kernel if this process dies without running
either (``PR_SET_PDEATHSIG``).

Readiness, in both ``wait_ready()`` and ``leader()``, means: some member answers ``Status`` with
``header.member_id == leader`` (it says it is the leader), and at least a quorum of members name
that same leader. ``wait_ready()`` additionally wants every member that should be up to answer
and agree, so a client can spread over all endpoints right away.

Errors are those of ``k8semu.cluster.errors``: ClusterError, MemberExitedError (with the log
tail), ClusterNotReadyError, WaitCancelledError.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self

import grpc  # type: ignore[import-untyped, unused-ignore]

from k8semu import transport
from k8semu.cluster.errors import (
    ClusterError,
    ClusterNotReadyError,
    MemberExitedError,
    WaitCancelledError,
)
from k8semu.cluster.probes import Probes
from k8semu.cluster.spawn import (
    CGROUP_PARENT_ENV,
    SCRUBBED_ENV,
    component_env,
    in_own_cgroup,
    spawn,
)
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc

__all__ = [
    "CGROUP_PARENT_ENV",
    "Cancel",
    "ClusterError",
    "ClusterNotReadyError",
    "EtcdCluster",
    "K8semuStoreCluster",
    "Member",
    "MemberExitedError",
    "MemberSpec",
    "ProcessCluster",
    "WaitCancelledError",
    "free_loopback_ports",
    "in_own_cgroup",
]

HOST = "127.0.0.1"
DEFAULT_SIZE = 3
DEFAULT_ETCD_BINARY = "/usr/bin/etcd"
LOG_TAIL_LINES = 30
NOT_READY_LOG_LINES = 12
STOP_GRACE_S = 5.0
# How often the readiness loops ask again. Polling, not waiting: the loop returns as soon as the
# members agree.
POLL_INTERVAL_S = 0.05
# One Status call may take this long before that member counts as not answering (a paused member
# never answers).
STATUS_RPC_TIMEOUT_S = 0.5

# free_loopback_ports() picks from [_PICK_PORTS_FROM, start of the ephemeral range), never the
# default local cluster's ports (k8semu.cluster.config's layout).
_EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"
_PICK_PORTS_FROM = 10_000
_NEVER_PICK = frozenset({12379, 12380, 22379, 22380, 32379, 32380})

_TERMINATING = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})


class Cancel(Protocol):
    """What a wait can be cancelled with: a ``threading.Event``, or anything that waits alike."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


@dataclass(frozen=True, slots=True)
class MemberSpec:
    """Where one member listens: its name and its client and peer URLs (``http://HOST:PORT``)."""

    name: str
    client_url: str
    peer_url: str


@dataclass(eq=False)
class Member:
    """One member of a cluster: where it listens, where it keeps data, and its process.

    ``proc`` is the live process, or None while the member is down; a process the cluster has
    seen exit is reaped and dropped, so a pid it holds is never a recycled one. ``member_id`` is
    the Raft member id the member reported in a ``Status`` header (0 until it has answered).
    """

    name: str
    client_url: str
    peer_url: str
    data_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    member_id: int = 0
    paused: bool = False
    # How it starts: "new" with its cluster, or "existing" to join a running one (after it
    # was added); and the --initial-cluster it starts with, fixed when it first starts.
    state: str = "new"
    initial_cluster: str = ""
    # True between start and a deliberate kill/stop: an exit while wanted is a failure.
    wanted: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int | None:
        """The pid of the member's process, or None when it has none."""
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        """Whether the member has a process that has not exited (a paused one is running)."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def endpoint(self) -> str:
        """The client address as gRPC wants it: ``127.0.0.1:port``."""
        return self.client_url.removeprefix("http://").removeprefix("https://")

    @property
    def log_path(self) -> Path:
        """The member's log file (stdout and stderr of every run, appended)."""
        return self.data_dir.parent / f"{self.name}.log"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the member's log, or a note that there is none."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                data = f.read()
        except FileNotFoundError:
            return f"(no log file {self.log_path})"
        tail = collections.deque(data.decode("utf-8", "replace").splitlines(), maxlen=lines)
        return "\n".join(tail) if tail else "(log is empty)"


def free_loopback_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that were free a moment ago.

    Ports come from below the kernel's ephemeral range (``ip_local_port_range``) when it is
    known: a port there is never handed out as the source port of an outgoing connection, which
    on a busy host otherwise takes a just-picked port before the member binds it. The ports of
    the default local cluster (2379, 12379, ...) are never picked. All sockets stay bound until
    every port is chosen, so the ports differ from one another. Another process may still take
    one before the member binds it; start() then fails with a clear error rather than a hang.
    """
    sockets: list[socket.socket] = []
    try:
        low = _ephemeral_port_low()
        rng = random.Random()
        attempts = 0
        while low is not None and len(sockets) < count and attempts < 50 * count:
            attempts += 1
            port = rng.randrange(_PICK_PORTS_FROM, low)
            if port in _NEVER_PICK:
                continue
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                # No SO_REUSEADDR: a port with connections lingering in TIME_WAIT is skipped.
                s.bind((HOST, port))
            except OSError:
                s.close()
                continue
            sockets.append(s)
        while len(sockets) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind((HOST, 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _ephemeral_port_low() -> int | None:
    """The first port of the kernel's ephemeral range, if it leaves room below for picking."""
    try:
        low = int(Path(_EPHEMERAL_RANGE_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return low if low - _PICK_PORTS_FROM >= 1000 else None


@dataclass(frozen=True, slots=True)
class MemberTLS:
    """TLS for every member of a harness cluster (etcd's flags): one certificate valid for
    127.0.0.1 serves the client and peer ports and dials the peers, and client and peer
    certificates signed by ``ca`` are required. ``client`` is what the harness's own probes
    present (a client certificate of the same CA)."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path

    def flags(self) -> list[str]:
        ca, cert, key = str(self.ca), str(self.cert), str(self.key)
        return [
            "--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca,
            "--client-cert-auth",
            "--peer-cert-file", cert, "--peer-key-file", key, "--peer-trusted-ca-file", ca,
            "--peer-client-cert-auth",
        ]  # fmt: skip

    def client(self) -> transport.ClientTLS:
        return transport.ClientTLS(
            ca_file=self.ca, cert_file=self.client_cert, key_file=self.client_key
        )


def _free_port_specs(size: int, scheme: str = "http") -> list[MemberSpec]:
    ports = free_loopback_ports(2 * size)
    return [
        MemberSpec(
            name=f"s{i + 1}",
            client_url=f"{scheme}://{HOST}:{ports[2 * i]}",
            peer_url=f"{scheme}://{HOST}:{ports[2 * i + 1]}",
        )
        for i in range(size)
    ]


class ProcessCluster:
    """Store members on this host, each an OS process that this object starts and ends.

    Subclasses say how to start one member (``command()``, ``environment()``); everything else -
    data directories, logs, signals, readiness - is common. Members are either ``size`` members
    ``s1``..``sN`` on free loopback ports, or exactly the ``members`` given. Addresses are fixed
    at construction, so a restarted member comes back at the same addresses. Data of member
    ``sN`` lives in ``base_dir/sN``, its log in ``base_dir/sN.log``.

    A new cluster refuses existing data directories (they hold another cluster's membership and
    a member started on one waits for peers that are gone); ``reuse_data=True`` accepts them, to
    restart a cluster that ran before with the same ``token`` and member names. Use it as a
    context manager, or call ``close()``.

    Not thread-safe: drive one cluster from one thread.
    """

    #: Shown in error messages.
    kind = "store"

    def __init__(
        self,
        base_dir: Path,
        size: int | None = None,
        *,
        members: Sequence[MemberSpec] | None = None,
        heartbeat_ms: int = 50,
        election_ms: int = 500,
        extra_args: Sequence[str] = (),
        token: str | None = None,
        die_with_parent: bool = True,
        reuse_data: bool = False,
        tls: MemberTLS | None = None,
    ) -> None:
        if members is None:
            size = DEFAULT_SIZE if size is None else size
            if size < 1:
                raise ValueError(f"size: must be >= 1, got {size}")
        else:
            if not members:
                raise ValueError("members: must not be empty")
            if size is not None and size != len(members):
                raise ValueError(f"size ({size}) disagrees with {len(members)} members given")
            size = len(members)
            names = [m.name for m in members]
            if len(set(names)) != len(names):
                raise ValueError(f"members: names must be unique, got {names}")
        if heartbeat_ms <= 0 or election_ms <= heartbeat_ms:
            raise ValueError(
                f"election_ms ({election_ms}) must be greater than heartbeat_ms ({heartbeat_ms})"
                " and both positive"
            )
        self.base_dir = Path(base_dir).resolve()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.size = size
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.extra_args = tuple(extra_args)
        # A fresh token per cluster unless one is given: a stray member of some earlier run on a
        # recycled port can never join this cluster.
        self.token = token or f"k8semu-harness-{uuid.uuid4().hex[:12]}"
        self.die_with_parent = die_with_parent
        self.tls = tls
        scheme = "http" if tls is None else "https"
        specs = _free_port_specs(size, scheme) if members is None else list(members)
        self.members: dict[str, Member] = {
            s.name: Member(
                name=s.name,
                client_url=s.client_url,
                peer_url=s.peer_url,
                data_dir=self.base_dir / s.name,
            )
            for s in specs
        }
        if not reuse_data:
            stale = [str(m.data_dir) for m in self.members.values() if m.data_dir.exists()]
            if stale:
                raise ClusterError(
                    f"data dirs from an earlier cluster exist: {', '.join(stale)}; give each new"
                    " cluster a fresh base_dir"
                )
        self._probes = Probes(None if tls is None else tls.client())
        self._closed = False

    # -- what a subclass provides -----------------------------------------------------------

    def command(self, member: Member) -> list[str]:
        """The argv that starts ``member``."""
        raise NotImplementedError

    def environment(self, member: Member) -> dict[str, str]:
        """The environment of ``member``'s process: ours, less proxy settings."""
        return {k: v for k, v in os.environ.items() if k.lower() not in SCRUBBED_ENV}

    def member_flags(self, member: Member) -> list[str]:
        """The etcd-style flags every implementation takes, with the timings and extra args."""
        return [
            "--name", member.name,
            "--data-dir", str(member.data_dir),
            "--listen-client-urls", member.client_url,
            "--advertise-client-urls", member.client_url,
            "--listen-peer-urls", member.peer_url,
            "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", member.initial_cluster or self.initial_cluster,
            "--initial-cluster-state", member.state,
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", str(self.heartbeat_ms),
            "--election-timeout", str(self.election_ms),
            *([] if self.tls is None else self.tls.flags()),
        ]  # fmt: skip

    # -- addresses ----------------------------------------------------------------------------

    @property
    def initial_cluster(self) -> str:
        """``s1=http://127.0.0.1:P1,s2=...``, the value of ``--initial-cluster``."""
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members.values())

    @property
    def endpoints(self) -> list[str]:
        """Client addresses of all members, ``127.0.0.1:port``, in member order."""
        return [m.endpoint for m in self.members.values()]

    @property
    def pids(self) -> dict[str, int]:
        """Pids of the members that currently have a process."""
        return {m.name: m.proc.pid for m in self.members.values() if m.proc is not None}

    def member(self, name: str) -> Member:
        """The member called ``name``; ClusterError for an unknown name."""
        try:
            return self.members[name]
        except KeyError:
            known = ", ".join(self.members)
            raise ClusterError(f"no member {name!r} in this cluster (members: {known})") from None

    def _live_member(self, name: str) -> tuple[Member, subprocess.Popen[bytes]]:
        """The member called ``name`` and its process; ClusterError when it has none running."""
        m = self.member(name)
        if m.proc is None or m.proc.poll() is not None:
            raise ClusterError(f"member {name} is not running")
        return m, m.proc

    # -- process control ----------------------------------------------------------------------

    def start(self) -> None:
        """Start every member that has no process."""
        for m in self.members.values():
            if not m.running:
                self.start_member(m.name)

    def start_member(self, name: str) -> None:
        """Start ``name``'s process; its output is appended to ``base_dir/<name>.log``."""
        if self._closed:
            raise ClusterError("cluster is closed")
        m = self.member(name)
        if m.running:
            raise ClusterError(f"member {name} is already running (pid {m.pid})")
        self._reap(m)
        m.initial_cluster = m.initial_cluster or self.initial_cluster
        m.data_dir.parent.mkdir(parents=True, exist_ok=True)
        proc = spawn(
            self.command(m),
            name=name,
            log_path=m.log_path,
            env=self.environment(m),
            cwd=self.base_dir,
            die_with_parent=self.die_with_parent,
        )
        m.proc = proc
        m.wanted = True
        m.paused = False
        _LIVE_CLUSTERS.add(self)

    def add_member(self, name: str) -> Member:
        """A new member ``name`` on free ports, not started: add it to the membership
        (``etcdctl member add``), then ``start_member`` it. It starts with
        ``--initial-cluster-state existing`` and the members listed now, itself included."""
        if name in self.members:
            raise ClusterError(f"member {name!r} exists already")
        client, peer = free_loopback_ports(2)
        m = self.members[name] = Member(
            name=name,
            client_url=f"http://{HOST}:{client}",
            peer_url=f"http://{HOST}:{peer}",
            data_dir=self.base_dir / name,
            state="existing",
        )
        m.initial_cluster = self.initial_cluster
        return m

    def rejoin_member(self, name: str) -> Member:
        """``name`` lost its data and was added again under a new id (same URLs): its next
        start joins the running cluster with an empty data dir."""
        m = self.member(name)
        m.state = "existing"
        m.member_id = 0
        m.initial_cluster = self.initial_cluster
        return m

    def forget_member(self, name: str) -> None:
        """Stop ``name`` and drop it from this object (once removed from the membership);
        its data dir stays."""
        self.stop(name)
        del self.members[name]

    def kill(self, name: str, sig: int = signal.SIGKILL, *, wait: bool = True) -> None:
        """Send ``sig`` to ``name``'s process (by pid).

        A terminating signal marks the member as deliberately down. With ``wait`` and SIGKILL,
        return only once the process is gone and reaped; without ``wait``, return right after
        the signal (for timing a failover) - the process is reaped by a later call.
        """
        m, proc = self._live_member(name)
        sig = signal.Signals(sig)
        if sig in _TERMINATING:
            m.wanted = False
        proc.send_signal(sig)
        self._drop_channel(name)
        if sig in _TERMINATING and m.paused:
            # A stopped process only acts on SIGKILL; let it see the others.
            proc.send_signal(signal.SIGCONT)
            m.paused = False
        if wait and sig == signal.SIGKILL:
            self._wait_exit(m, STOP_GRACE_S)

    def pause(self, name: str) -> None:
        """Freeze ``name`` with SIGSTOP: it keeps its sockets but answers nothing."""
        m, proc = self._live_member(name)
        proc.send_signal(signal.SIGSTOP)
        m.paused = True

    def resume(self, name: str) -> None:
        """Let a paused member run again (SIGCONT)."""
        m, proc = self._live_member(name)
        proc.send_signal(signal.SIGCONT)
        m.paused = False

    def stop(self, name: str, grace: float = STOP_GRACE_S) -> None:
        """Stop ``name``: SIGTERM, wait up to ``grace`` seconds, then SIGKILL. No-op if down."""
        self._stop_many([self.member(name)], grace)

    def restart(self, name: str, grace: float = STOP_GRACE_S) -> None:
        """Stop ``name`` if it runs, then start it again with the same data and addresses."""
        self.stop(name, grace)
        self.start_member(name)

    def close(self, grace: float = STOP_GRACE_S) -> None:
        """Stop every member: SIGTERM, then SIGKILL to any still there after ``grace`` seconds.

        Followers go first, the leader last. A leader told to stop hands its leadership to a
        follower first (etcd does); if the followers are stopping at the same time it waits for
        that handover until its timeout, which would make every close() take seconds.
        """
        try:
            leader = None
            if sum(m.running for m in self.members.values()) > 1:
                with contextlib.suppress(Exception):
                    answers = self.statuses(timeout=0.2).values()
                    leader = next(
                        (
                            s.leader
                            for s in answers
                            if isinstance(s, rpc_pb2.StatusResponse)
                            and s.leader
                            and s.leader == s.header.member_id
                        ),
                        None,
                    )
            first = [m for m in self.members.values() if not leader or m.member_id != leader]
            self._stop_many(first, grace)
            self._stop_many(list(self.members.values()), grace)
        finally:
            self._probes.close()
            self._closed = True
            _LIVE_CLUSTERS.discard(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _stop_many(self, members: list[Member], grace: float) -> None:
        live = []
        for m in members:
            m.wanted = False
            self._drop_channel(m.name)
            if m.proc is None:
                continue
            if m.proc.poll() is not None:
                self._reap(m)
                continue
            m.proc.send_signal(signal.SIGTERM)
            if m.paused:
                m.proc.send_signal(signal.SIGCONT)
                m.paused = False
            live.append(m)
        deadline = time.monotonic() + grace
        for m in live:
            self._wait_exit(m, max(0.0, deadline - time.monotonic()))

    def _wait_exit(self, m: Member, timeout: float) -> None:
        """Wait for ``m`` to exit, SIGKILL it after ``timeout``, and reap it."""
        assert m.proc is not None
        try:
            m.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            m.proc.kill()
            try:
                m.proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired as exc:
                raise ClusterError(
                    f"member {m.name} (pid {m.proc.pid}) survived SIGKILL for {STOP_GRACE_S} s"
                ) from exc
        m.proc = None
        m.paused = False

    def _reap(self, m: Member) -> None:
        if m.proc is not None and m.proc.poll() is not None:
            m.proc = None
            m.paused = False

    def exited_members(self) -> list[MemberExitedError]:
        """Members that should be running but whose process has exited, reaped, in order.

        Each is described by the error that ``check_processes()`` would raise (name, pid,
        returncode, log tail); it is returned, not raised. The member is then down and no
        longer wanted: a supervisor decides whether to start it again.
        """
        out = []
        for m in self.members.values():
            if m.wanted and m.proc is not None:
                rc = m.proc.poll()
                if rc is not None:
                    pid = m.proc.pid
                    m.proc = None
                    m.wanted = False
                    m.paused = False
                    self._drop_channel(m.name)
                    out.append(MemberExitedError(m.name, pid, rc, m.log_path, m.log_tail()))
        return out

    def check_processes(self) -> None:
        """Raise MemberExitedError if a member that should be running has exited."""
        exited = self.exited_members()
        if exited:
            raise exited[0]

    # -- asking the members -------------------------------------------------------------------

    def channel(self, name: str) -> grpc.Channel:
        """A (cached, synchronous) gRPC channel to ``name``'s client address."""
        return self._channel(self.member(name))

    def statuses(self, timeout: float = STATUS_RPC_TIMEOUT_S) -> dict[str, object]:
        """Ask every running, unpaused member for ``Maintenance.Status`` at once.

        Returns name -> StatusResponse, or name -> the exception the call ended with. Members
        with no process or paused are left out. Learns each answering member's ``member_id``.
        """
        futures = {}
        for m in self.members.values():
            if m.running and not m.paused:
                stub = rpc_pb2_grpc.MaintenanceStub(self._channel(m))
                futures[m.name] = stub.Status.future(rpc_pb2.StatusRequest(), timeout=timeout)
        out: dict[str, object] = {}
        for name, fut in futures.items():
            try:
                resp = fut.result()
            except grpc.RpcError as exc:
                out[name] = exc
                continue
            assert isinstance(resp, rpc_pb2.StatusResponse)
            if resp.header.member_id:
                self.members[name].member_id = resp.header.member_id
            out[name] = resp
        return out

    def current_leader(self, timeout: float = STATUS_RPC_TIMEOUT_S) -> str | None:
        """One round of ``leader()``: the agreed leader's name now, or None when there is none."""
        return self._agreed_leader(self.statuses(timeout=timeout), all_members=False)

    def leader(self, timeout: float = 10.0, *, cancel: Cancel | None = None) -> str:
        """The name of the member that is leader with a quorum's agreement.

        Polls until some member says it leads and a quorum of members name it, or raises
        ClusterNotReadyError after ``timeout`` seconds. Right after a leader is killed the
        survivors still name it for up to an election timeout; it cannot answer, so this keeps
        polling until the new leader is agreed. Setting ``cancel`` ends the wait with
        WaitCancelledError.
        """
        return self._poll_leader(timeout, all_members=False, cancel=cancel)

    def wait_ready(self, timeout: float = 30.0, *, cancel: Cancel | None = None) -> str:
        """Wait until the cluster has an agreed leader and every member that should run agrees.

        Returns the leader's name. Raises MemberExitedError at once when a member's process
        exits (with its log tail), ClusterNotReadyError after ``timeout`` seconds, and
        WaitCancelledError as soon as ``cancel`` is set.
        """
        return self._poll_leader(timeout, all_members=True, cancel=cancel)

    def _poll_leader(self, timeout: float, *, all_members: bool, cancel: Cancel | None) -> str:
        deadline = time.monotonic() + timeout
        last: dict[str, object] = {}
        while True:
            if cancel is not None and cancel.is_set():
                raise WaitCancelledError(f"wait for the {self.kind} cluster's leader cancelled")
            if all_members:
                self.check_processes()
            remaining = deadline - time.monotonic()
            last = self.statuses(timeout=max(0.05, min(STATUS_RPC_TIMEOUT_S, remaining)))
            found = self._agreed_leader(last, all_members=all_members)
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                raise ClusterNotReadyError(self._not_ready_report(timeout, last))
            if cancel is not None:
                cancel.wait(POLL_INTERVAL_S)
            else:
                time.sleep(POLL_INTERVAL_S)

    def _agreed_leader(self, statuses: dict[str, object], *, all_members: bool) -> str | None:
        answers = {n: s for n, s in statuses.items() if isinstance(s, rpc_pb2.StatusResponse)}
        votes = collections.Counter(s.leader for s in answers.values() if s.leader)
        quorum = self.size // 2 + 1
        for leader_id, count in votes.most_common():
            if count < quorum:
                break
            # The leader must say so itself: followers keep naming a dead leader until their
            # election timer fires.
            name = next((n for n, s in answers.items() if s.header.member_id == leader_id), None)
            if name is None:
                continue
            if all_members:
                expected = [m.name for m in self.members.values() if m.wanted and not m.paused]
                if any(n not in answers or answers[n].leader != leader_id for n in expected):
                    continue
            return name
        return None

    def _not_ready_report(self, timeout: float, last: dict[str, object]) -> str:
        lines = [f"{self.kind} cluster in {self.base_dir} has no agreed leader after {timeout} s"]
        for m in self.members.values():
            st = last.get(m.name)
            if isinstance(st, rpc_pb2.StatusResponse):
                what = f"member_id={st.header.member_id:x} leader={st.leader:x} term={st.raftTerm}"
            elif isinstance(st, grpc.RpcError):
                what = f"Status failed: {st.code().name} {st.details()}"
            elif m.paused:
                what = "paused"
            elif not m.running:
                what = "not running"
            else:
                what = "not asked"
            lines.append(f"  {m.name} pid={m.pid} {m.endpoint}: {what}")
        for m in self.members.values():
            if m.wanted and not isinstance(last.get(m.name), rpc_pb2.StatusResponse):
                lines.append(f"--- last lines of {m.log_path}:\n{m.log_tail(NOT_READY_LOG_LINES)}")
        return "\n".join(lines)

    def _channel(self, m: Member) -> grpc.Channel:
        return self._probes.channel(m.endpoint)

    def _drop_channel(self, name: str) -> None:
        self._probes.forget(self.members[name].endpoint)


class K8semuStoreCluster(ProcessCluster):
    """A cluster of ``k8semu store`` replicas, each ``python -m k8semu store`` with etcd's flags."""

    kind = "k8semu store"

    def __init__(self, *args: Any, python: str = sys.executable, **kwargs: Any) -> None:
        """ProcessCluster's arguments, plus the interpreter that runs `python -m k8semu`."""
        super().__init__(*args, **kwargs)
        self.python = python

    def command(self, member: Member) -> list[str]:
        return [self.python, "-m", "k8semu", "store", *self.member_flags(member), *self.extra_args]

    def environment(self, member: Member) -> dict[str, str]:
        return component_env(os.environ)


# Go's names for the architectures etcd 3.4 builds for but refuses to run on unless told to.
_GOARCH = {"aarch64": "arm64", "arm64": "arm64", "armv7l": "arm", "i686": "386", "i386": "386"}


class EtcdCluster(ProcessCluster):
    """A cluster of real etcd (3.4) members, for reference runs and for testing this module."""

    kind = "etcd"

    def __init__(
        self,
        *args: Any,
        binary: str = DEFAULT_ETCD_BINARY,
        log_level: str = "warn",
        **kwargs: Any,
    ) -> None:
        """ProcessCluster's arguments, plus the etcd binary and its log level."""
        super().__init__(*args, **kwargs)
        self.binary = binary
        self.log_level = log_level

    @staticmethod
    def available(binary: str = DEFAULT_ETCD_BINARY) -> bool:
        """Whether an etcd binary is installed at ``binary``."""
        return os.access(binary, os.X_OK)

    def command(self, member: Member) -> list[str]:
        return [
            self.binary,
            # A restarted member with data rejoins as a member; etcd ignores the state then.
            *self.member_flags(member),
            "--logger", "zap",
            "--log-outputs", "stderr",
            "--log-level", self.log_level,
            *self.extra_args,
        ]  # fmt: skip

    def environment(self, member: Member) -> dict[str, str]:
        # ETCD_* variables would override or conflict with the flags we pass.
        env = {k: v for k, v in super().environment(member).items() if not k.startswith("ETCD")}
        goarch = _GOARCH.get(platform.machine().lower())
        if goarch is not None:
            env["ETCD_UNSUPPORTED_ARCH"] = goarch
        return env


# Clusters with processes that close() has not stopped yet. Strong references on purpose: a
# cluster object dropped without close() must still have its processes stopped at exit.
_LIVE_CLUSTERS: set[ProcessCluster] = set()


@atexit.register
def _close_live_clusters() -> None:
    for cluster in list(_LIVE_CLUSTERS):
        with contextlib.suppress(Exception):
            cluster.close(grace=2.0)

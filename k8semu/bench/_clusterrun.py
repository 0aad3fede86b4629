"""A whole cluster for one benchmark run: started with ``k8semu up --detach``, stopped with
``k8semu down``, measured from ``/proc`` in between.

``bench_config()`` writes a cluster config whose every listener is on a free loopback port and
whose nodes sit on node IPs of their own (``127.0.<octet>.N``, the octet picked at random in
``NODE_IP_OCTETS``), with address ranges (pod, service, load-balancer) apart from the
defaults, so a benchmark never collides with a cluster someone else runs on this machine with
the default ports. ``BenchCluster`` starts it in its own state dir, with its own CLI config
(``K8SEMU_CONFIG``), so the user's ``~/.k8semu/config`` is never touched, reads ``state.json``
and stops everything with ``k8semu down``. ``ResourceSampler`` samples CPU seconds and RSS of
the component processes; ``LeaderWatch`` counts the store's and the control plane's leader
changes meanwhile; ``TimedClient`` times the calls a workload makes.

This module signals nothing itself: ``k8semu down`` stops the processes ``k8semu up`` recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]
import yaml
from google.protobuf.message import Message

from k8semu import transport
from k8semu.api import kinds
from k8semu.bench._common import BenchError, cancel, cpu_seconds, file_size, rss_bytes
from k8semu.bench._common import say as common_say
from k8semu.bench.podstartup import PodTimes
from k8semu.client import Client, ClientError
from k8semu.cluster.clientconfig import ENV_VAR as CLI_CONFIG_ENV
from k8semu.cluster.config import format_duration
from k8semu.cluster.processes import free_loopback_ports
from k8semu.cluster.state import ClusterState, ComponentRecord, read_state
from k8semu.pb.api.v1 import coordination_pb2
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc

__all__ = [
    "BenchCluster",
    "ClusterLayout",
    "ComponentUsage",
    "LeaderWatch",
    "ResourceSampler",
    "TimedClient",
    "bench_config",
    "control_plane_steady",
    "leader_logs",
    "merge_config",
    "most_within",
    "own_network",
    "own_octet",
    "refine_stamps",
]

# Third octet of the node IPs (127.0.<octet>.N): away from the defaults (127.0.1.x workers,
# 127.0.2.x hollow pools), different per run so two runs at once do not share node IPs.
NODE_IP_OCTETS = (16, 250)
# Address ranges apart from the default cluster's (127.244/16, 127.96/16, 127.100.0/24): a
# /14 holds 1,024 /24 pod subnets, one per node, enough for the 1,000-hollow-node run.
CLUSTER_CIDR = "127.248.0.0/14"
SERVICE_CIDR = "127.97.0.0/16"
LOAD_BALANCER_POOL = "127.101.0.0/24"
# Clusters of up to this many nodes get ranges of their own, derived from their node-IP octet
# (127.<octet>.0.0/17 for pods, 127.<octet>.128.0/17 for Services, 127.101.<octet>.0/24 for
# LoadBalancers), so two benchmark or test clusters at once never hand out the same pod IP
# or ClusterIP; bigger ones share the /14 above (one at a time).
OWN_RANGES_MAX_NODES = 128
# Taken: the defaults, the shared ranges above, and bench ha's private ones (127.160-239).
_RESERVED_SECOND_OCTETS = frozenset({96, 97, 100, 101, 244, 248, 249, 250, 251, *range(160, 240)})
HOLLOW_POOL = "hollow"
M = TypeVar("M", bound=Message)
T = TypeVar("T")
UP_TIMEOUT_MARGIN_S = 60.0
DOWN_TIMEOUT_S = 120.0


@dataclass(frozen=True, kw_only=True)
class ClusterLayout:
    """What to start. ``hollow_nodes`` > 0 adds one simulated pool of that many nodes
    (one kubelet process); ``real_nodes`` workers each get a kubelet with ``runtime``."""

    name: str = "bench"
    store_replicas: int = 3
    hollow_nodes: int = 0
    real_nodes: int = 0
    runtime: str = "process"
    proxies: bool = True
    #: TLS off by default: the benchmarks and chaos runs measure the emulator, and talk to
    #: the store and API servers directly; `k8semu bench tls` measures what TLS costs.
    tls: bool = False
    hollow_capacity: tuple[tuple[str, str], ...] = (
        ("cpu", "32"),
        ("memory", "128Gi"),
        ("pods", "110"),
    )
    ready_timeout_s: float = 300.0
    #: Add-ons the launcher applies (none by default: a benchmark measures only its workload).
    addons: tuple[str, ...] = ()
    #: The config's ``timings``; None: node lease timings scaled to the node count
    #: (``_lease_timings``); ``{}``: the emulator's defaults, as in the default cluster.
    timings: Mapping[str, str] | None = None
    #: Merged into the generated config last, key by key (mappings merge, anything else
    #: replaces): e.g. ``{"store": {"snapshotCount": 1000}}``.
    overrides: Mapping[str, Any] = field(default_factory=dict)


def _lease_timings(nodes: int) -> dict[str, str]:
    """Node lease and status timings that keep renewals near 25 writes/s however many nodes
    there are (the emulator defaults renew every second: 1,000 writes/s at 1,000 nodes)."""
    renew_ms = max(2_000, nodes * 40)
    return {
        "nodeLeaseRenewInterval": format_duration(renew_ms),
        "nodeLeaseDuration": format_duration(4 * renew_ms),
        "nodeStatusUpdateFrequency": format_duration(2 * renew_ms),
        "nodeMonitorGracePeriod": format_duration(5 * renew_ms),
    }


# Kubernetes' own leader-election timings, for clusters with hollow nodes (scale runs): with
# the emulator's 4 s / 3 s / 0.5 s, the controller manager of a 1,000-hollow-node run at load
# average 20 missed its renew deadline every 6-10 s, and each time stopped and restarted every
# controller. Clusters of real nodes (chaos, e2e) keep the fast ones, so failover stays quick.
SCALE_LEADER_ELECTION = {
    "leaderElectLeaseDuration": "15s",
    "leaderElectRenewDeadline": "10s",
    "leaderElectRetryPeriod": "2s",
}


def own_octet() -> int:
    """A node-IP octet (127.0.<octet>.N) picked at random away from the defaults and the
    reserved ranges."""
    rng = random.Random()
    while (third := rng.randrange(*NODE_IP_OCTETS)) in _RESERVED_SECOND_OCTETS:
        pass
    return third


def own_network(octet: int) -> dict[str, str]:
    """The pod, Service and LoadBalancer ranges of a small cluster on node IPs
    127.0.<octet>.N, apart from every other cluster's (see OWN_RANGES_MAX_NODES)."""
    return {
        "clusterCIDR": f"127.{octet}.0.0/17",
        "serviceCIDR": f"127.{octet}.128.0/17",
        "loadBalancerPool": f"127.101.{octet}.0/24",
    }


def bench_config(layout: ClusterLayout, *, octet: int | None = None) -> dict[str, Any]:
    """A cluster config (as a YAML-ready dict) on free ports and node IPs of its own."""
    if layout.hollow_nodes < 0 or layout.real_nodes < 0:
        raise ValueError("hollow_nodes and real_nodes must be >= 0")
    if layout.hollow_nodes == 0 and layout.real_nodes == 0:
        raise ValueError("a benchmark cluster needs nodes")
    n_ports = 2 * layout.store_replicas + 4 + 2 * layout.real_nodes
    ports = iter(free_loopback_ports(n_ports))
    third = own_octet() if octet is None else octet
    if layout.hollow_nodes + layout.real_nodes <= OWN_RANGES_MAX_NODES:
        network = own_network(third)
    else:
        network = {
            "clusterCIDR": CLUSTER_CIDR,
            "serviceCIDR": SERVICE_CIDR,
            "loadBalancerPool": LOAD_BALANCER_POOL,
        }
    members = [
        {
            "name": f"s{i + 1}",
            "clientURL": f"http://127.0.0.1:{next(ports)}",
            "peerURL": f"http://127.0.0.1:{next(ports)}",
        }
        for i in range(layout.store_replicas)
    ]
    doc: dict[str, Any] = {
        "kind": "ClusterConfig",
        "version": "v1alpha1",
        "name": layout.name,
        "store": {"replicas": layout.store_replicas, "members": members},
        "apiServer": {
            "instances": [{"name": "apiserver-1", "port": next(ports), "restPort": next(ports)}]
        },
        "scheduler": {"instances": [{"name": "scheduler-1", "port": next(ports)}]},
        "controllerManager": {"instances": [{"name": "controller-manager-1", "port": next(ports)}]},
        "network": network | {"nodeCIDRMaskSize": 24},
        "timings": (
            _lease_timings(layout.hollow_nodes + layout.real_nodes)
            | (SCALE_LEADER_ELECTION if layout.hollow_nodes else {})
            if layout.timings is None
            else dict(layout.timings)
        ),
        "launcher": {"readyTimeout": format_duration(int(layout.ready_timeout_s * 1000))},
        "security": {"tls": layout.tls},
        "addons": list(layout.addons),
    }
    nodes = [
        {
            "name": f"node-{i + 1}",
            "nodeIP": f"127.0.{third}.{i + 1}",
            "runtime": layout.runtime,
            "kubeletPort": next(ports),
            "proxyPort": next(ports),
            "proxy": layout.proxies,
        }
        for i in range(layout.real_nodes)
    ]
    doc["nodes"] = nodes
    if layout.hollow_nodes:
        doc["hollowNodes"] = [
            {
                "name": HOLLOW_POOL,
                "count": layout.hollow_nodes,
                "nodeIP": f"127.0.{third}.250",
                "capacity": dict(layout.hollow_capacity),
                "labels": {"type": "hollow"},
            }
        ]
    return merge_config(doc, layout.overrides)


def merge_config(doc: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` with ``overrides`` merged in: mappings key by key, any other value replaced."""
    out = dict(doc)
    for key, value in overrides.items():
        old = out.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = merge_config(old, value)
        else:
            out[key] = value
    return out


class BenchCluster:
    """One cluster started for a benchmark; ``with BenchCluster(...) as c:`` starts and stops it.

    The state dir (config, state.json, logs, data) is a new temp dir under ``workdir`` and is
    removed after a clean run unless ``keep``; after a failure it stays for the logs.
    """

    def __init__(
        self,
        layout: ClusterLayout | None = None,
        *,
        config: Path | None = None,
        workdir: Path | None = None,
        keep: bool = False,
        say: Any = None,
    ) -> None:
        if (layout is None) == (config is None):
            raise ValueError("give a layout or a config file, not both")
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="k8semu-bench-cluster-", dir=workdir))
        self.state_dir = self.dir / "state"
        self.keep = keep
        self.failed = False
        self._say = say or common_say
        if config is None:
            assert layout is not None
            doc = bench_config(layout)
            self.config_path = self.dir / "cluster.yaml"
            self.config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
            self.ready_timeout = layout.ready_timeout_s
        else:
            self.config_path = config
            self.ready_timeout = 600.0
        self.state: ClusterState | None = None
        self.up_seconds = 0.0

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env[CLI_CONFIG_ENV] = str(self.dir / "cli-config")
        return env

    def start(self) -> ClusterState:
        """``k8semu up -f CONFIG --state-dir DIR --detach``: returns once every component is
        healthy and every node Ready (BenchError with the output's tail otherwise)."""
        argv = [
            sys.executable, "-m", "k8semu", "up",
            "-f", str(self.config_path),
            "--state-dir", str(self.state_dir),
            "--detach",
        ]  # fmt: skip
        log = self.dir / "up.log"
        self._say(f"starting the cluster ({self.config_path}) in {self.state_dir}")
        t0 = time.monotonic()
        with log.open("wb") as out:
            try:
                rc = subprocess.run(
                    argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    timeout=self.ready_timeout + UP_TIMEOUT_MARGIN_S,
                    check=False,
                ).returncode
            except subprocess.TimeoutExpired:
                rc = -1
        self.up_seconds = time.monotonic() - t0
        if rc != 0:
            self.failed = True
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise BenchError(f"`k8semu up` failed (exit {rc}); its output ends:\n{tail}")
        self.state = read_state(self.state_dir)
        self._say(f"cluster up in {self.up_seconds:.1f} s: API {','.join(self.api_servers)}")
        return self.state

    @property
    def api_servers(self) -> list[str]:
        assert self.state is not None, "start() first"
        return list(self.state.api_servers)

    @property
    def components(self) -> list[ComponentRecord]:
        """Every component process, as state.json lists it."""
        assert self.state is not None, "start() first"
        return list(self.state.components)

    def stop(self) -> None:
        """``k8semu down --state-dir DIR`` (a no-op when nothing was started)."""
        if not (self.state_dir / "state.json").exists():
            return
        argv = [sys.executable, "-m", "k8semu", "down", "--state-dir", str(self.state_dir)]
        with (self.dir / "down.log").open("wb") as out:
            rc = subprocess.run(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                timeout=DOWN_TIMEOUT_S,
                check=False,
            ).returncode
        if rc != 0:
            self.failed = True
            self._say(f"`k8semu down` exited {rc}; see {self.dir / 'down.log'}")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            if exc is not None:
                self.failed = True
            if self.keep or self.failed:
                self._say(f"cluster config, logs and data kept in {self.dir}")
            else:
                shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class ComponentUsage:
    """CPU seconds used and peak RSS seen of one component over the sampled interval."""

    name: str
    kind: str
    pid: int
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    samples: int = 0
    nodes: int = 0
    #: (seconds since the sampler started, RSS MB), one point per ``timeline_every`` seconds.
    rss_timeline: list[tuple[float, float]] = field(default_factory=list, repr=False)
    _cpu0: float | None = field(default=None, repr=False)
    _cpu_last: float | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "pid": self.pid,
            "nodes": self.nodes,
            "cpu_s": round(self.cpu_s, 3),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "samples": self.samples,
        }


class ResourceSampler:
    """Samples every component's CPU time and RSS from /proc every ``interval`` seconds
    while running (``async with``); ``usage`` holds the figures afterwards, with an RSS
    timeline per component (a point every ``timeline_every`` seconds)."""

    def __init__(
        self,
        components: Sequence[ComponentRecord],
        interval: float = 0.5,
        *,
        timeline_every: float = 2.0,
    ) -> None:
        self.interval = interval
        self.timeline_every = timeline_every
        self._next_point = 0.0
        self.usage = [
            ComponentUsage(name=c.name, kind=c.kind, pid=c.pid, nodes=len(c.nodes))
            for c in components
            if c.pid > 0
        ]
        self.started = 0.0
        self.seconds = 0.0
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        t = time.monotonic() - self.started
        point = t >= self._next_point
        if point:
            self._next_point = t + self.timeline_every
        for u in self.usage:
            cpu = cpu_seconds(u.pid)
            rss = rss_bytes(u.pid)
            if point and rss is not None:
                u.rss_timeline.append((round(t, 1), round(rss / 2**20, 1)))
            if cpu is not None:
                if u._cpu0 is None:
                    u._cpu0 = cpu
                u._cpu_last = cpu
                u.cpu_s = cpu - u._cpu0
            if rss is not None:
                u.peak_rss_mb = max(u.peak_rss_mb, rss / 2**20)
                u.samples += 1

    async def _loop(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    async def __aenter__(self) -> Self:
        self.started = time.monotonic()
        self.sample()
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        await cancel(task)
        self.sample()
        self.seconds = time.monotonic() - self.started


def refine_stamps(times: Sequence[PodTimes], *, created_exact: bool) -> None:
    """Place the whole-second server stamps of each pod inside what the watch saw.

    creationTimestamp, PodScheduled's lastTransitionTime and status.startTime are truncated to
    the second, so the true moment lies in [stamp, stamp + 1 s); it also lies between the
    phases around it (scheduled: after created, before the bind was seen; started: after the
    bind was seen, before Running was seen). Each stamp becomes the middle of the intersection
    of the two intervals (the nearer bound when they do not meet). ``created_exact``: created
    is the client's own clock, left as it is. Changes ``times`` in place.
    """

    def place(stamp: float, lo: float, hi: float) -> float:
        a, b = max(stamp, lo), min(stamp + 1.0, hi)
        if a <= b:
            return (a + b) / 2
        return min(max(stamp, lo), hi)

    for t in times:
        if not (t.bound and t.running):
            continue
        if not created_exact and t.created:
            t.created = place(t.created, 0.0, t.bound)
        if t.scheduled:
            t.scheduled = place(t.scheduled, t.created, t.bound)
        if t.started:
            t.started = place(t.started, t.bound, t.running)


def most_within(moments: Sequence[float], window: float = 1.0) -> int:
    """The most of ``moments`` (seconds, any order) that fall within one ``window``."""
    ordered = sorted(moments)
    best, lo = 0, 0
    for hi, t in enumerate(ordered):
        while t - ordered[lo] > window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# The control plane's leader-election Leases (namespace, name): scheduler, controller manager.
CONTROL_PLANE_LEASES = (
    ("kube-system", "kube-scheduler"),
    ("kube-system", "kube-controller-manager"),
)


# What k8semu.client's leader elector logs each time it starts leading.
BECAME_LEADER = b"became leader"


def leader_logs(components: Sequence[ComponentRecord]) -> dict[str, str]:
    """The logs of the leader-elected components (schedulers, controller managers)."""
    return {
        c.name: c.log_path
        for c in components
        if c.kind in ("scheduler", "controller-manager") and c.log_path
    }


def control_plane_steady(
    lease_changes: Mapping[str, int | None], became_leader: Mapping[str, int]
) -> tuple[bool, str]:
    """Whether no control-plane Lease changed hands and no leader-elected component started
    leading again (``LeaderWatch.lease_changes`` and ``became_leader``), and the detail line:
    a leader that missed its renew deadline and won its own Lease back restarted its work."""
    leases = {k: v for k, v in lease_changes.items() if v is not None}
    details = [f"{k}: {v}" for k, v in sorted(leases.items())]
    details += [f"{k} led again {v}x" for k, v in sorted(became_leader.items()) if v]
    steady = all(v == 0 for v in leases.values()) and not any(became_leader.values())
    return steady, ", ".join(details) or "no Leases found"


@dataclass
class _LeaseSeen:
    holder: str = ""
    transitions: int = 0
    changes: int = 0
    found: bool = False


class LeaderWatch:
    """Counts leader changes while running (``async with``): the store's, by polling every
    member's ``Maintenance.Status`` (leader, raftTerm) every ``interval`` seconds, and those
    of the control plane's Leases (scheduler, controller manager), by reading them as often.

    ``store_term_bumps`` is how far the highest raftTerm any member reported rose since the
    first poll: every election, even one that re-elects the same leader or that happened
    between two polls, raises it. ``store_leader_changes`` counts the polls whose reported
    leader (by any member that knows one) differs from the one before. A Lease's changes are
    the rise of its ``leaseTransitions`` (or one per holder change seen, if more). Members
    that do not answer are counted in ``store_unanswered`` and otherwise skipped.

    A leader-elected component that misses its renew deadline stops leading and campaigns
    again; when it wins its own Lease back the Lease shows no transition, yet every
    controller restarted. ``log_paths`` (component name -> its log) catch those: each
    "became leader" line written after the watch started counts in ``became_leader``.
    """

    def __init__(
        self,
        store_members: Sequence[tuple[str, str]],
        api_servers: Sequence[str],
        *,
        interval: float = 1.0,
        leases: Sequence[tuple[str, str]] = CONTROL_PLANE_LEASES,
        log_paths: Mapping[str, str | Path] | None = None,
    ) -> None:
        self.interval = interval
        self.log_paths = {name: Path(p) for name, p in (log_paths or {}).items()}
        self._log_offsets = {name: file_size(p) for name, p in self.log_paths.items()}
        self.became_leader = dict.fromkeys(self.log_paths, 0)
        self.members = list(store_members)
        self.api_servers = list(api_servers)
        self.statuses: dict[str, rpc_pb2.StatusResponse] = {}
        self.names_by_id: dict[int, str] = {}
        self.store_term_bumps = 0
        self.store_leader_changes = 0
        self.store_leader = ""
        self.store_unanswered = 0
        self.leases = {f"{ns}/{name}": _LeaseSeen() for ns, name in leases}
        self._lease_keys = list(leases)
        self._first_term: int | None = None
        self._last_leader = 0
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._client: Client | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def lease_changes(self) -> dict[str, int | None]:
        """Lease -> leader changes seen, None for a Lease never found (no leader election)."""
        return {k: (v.changes if v.found else None) for k, v in self.leases.items()}

    @property
    def max_term(self) -> int:
        return max((s.raftTerm for s in self.statuses.values()), default=0)

    async def poll(self) -> None:
        """One round: every member's Status, then every Lease."""
        for name, address in self.members:
            channel = self._channels.get(name)
            if channel is None:
                channel = self._channels[name] = transport.channel(address)
            stub = rpc_pb2_grpc.MaintenanceStub(channel)
            try:
                status = await stub.Status(rpc_pb2.StatusRequest(), timeout=max(1.0, self.interval))
            except grpc.aio.AioRpcError:
                self.store_unanswered += 1
                continue
            self.statuses[name] = status
            self.names_by_id[status.header.member_id] = name
        known = [s for s in self.statuses.values() if s.leader]
        if self.statuses:
            term = self.max_term
            if self._first_term is None:
                self._first_term = term
            self.store_term_bumps = term - self._first_term
        if known:
            # The newest term's view of who leads.
            leader = max(known, key=lambda s: s.raftTerm).leader
            if self._last_leader and leader != self._last_leader:
                self.store_leader_changes += 1
            self._last_leader = leader
            self.store_leader = self.names_by_id.get(leader, f"{leader:x}")
        await self._poll_leases()
        self._poll_logs()

    def _poll_logs(self) -> None:
        for name, path in self.log_paths.items():
            try:
                with path.open("rb") as f:
                    f.seek(self._log_offsets[name])
                    data = f.read()
            except OSError:
                continue
            # Count only whole lines; a partial last line is read again next time.
            end = data.rfind(b"\n") + 1
            self._log_offsets[name] += end
            self.became_leader[name] += data[:end].count(BECAME_LEADER)

    async def _poll_leases(self) -> None:
        if not self._lease_keys or not self.api_servers:
            return
        if self._client is None:
            self._client = Client(self.api_servers)
        for ns, name in self._lease_keys:
            seen = self.leases[f"{ns}/{name}"]
            try:
                lease = await self._client.get(coordination_pb2.Lease, name, namespace=ns)
            except ClientError:  # NotFound: no leader election (yet); others: next round
                continue
            holder, transitions = lease.spec.holder_identity, lease.spec.lease_transitions
            if seen.found:
                rise = max(0, transitions - seen.transitions)
                moved = int(bool(holder) and holder != seen.holder)
                seen.changes += max(rise, moved)
            seen.found = True
            if holder:
                seen.holder = holder
            seen.transitions = transitions

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.poll()

    async def __aenter__(self) -> Self:
        await self.poll()
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        await cancel(task)
        with contextlib.suppress(grpc.aio.AioRpcError, ClientError):
            await self.poll()
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        if self._client is not None:
            await self._client.close()
            self._client = None


class TimedClient:
    """The calls the benchmark makes, each timed from send to reply into ``latencies``
    (key ``"<verb> <resource>"``, plus `` (cluster)`` for lists across namespaces); failed
    calls are counted in ``errors`` under the same key, not timed."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.latencies: dict[str, list[float]] = {}
        self.errors: dict[str, int] = {}
        self.last_error = ""

    def take(self) -> tuple[dict[str, list[float]], dict[str, int]]:
        """The latencies and errors recorded so far, and start afresh (one report interval)."""
        out = (self.latencies, self.errors)
        self.latencies, self.errors = {}, {}
        return out

    async def _timed(self, key: str, call: Awaitable[T]) -> T:
        t0 = time.perf_counter()
        try:
            out = await call
        except ClientError as exc:
            self.errors[key] = self.errors.get(key, 0) + 1
            self.last_error = str(exc)
            raise
        self.latencies.setdefault(key, []).append(time.perf_counter() - t0)
        return out

    async def create(self, obj: M) -> M:
        key = f"create {kinds.for_message(obj).plural}"
        return await self._timed(key, self.client.create(obj))

    async def get(self, kind: type[M], name: str, *, namespace: str = "") -> M:
        key = f"get {kinds.for_message(kind).plural}"
        return await self._timed(key, self.client.get(kind, name, namespace=namespace))

    async def list(self, kind: type[M], *, namespace: str | None = None) -> list[M]:
        key = f"list {kinds.for_message(kind).plural}" + ("" if namespace else " (cluster)")
        out = await self._timed(key, self.client.list(kind, namespace=namespace))
        return list(out.items)

    async def patch(
        self, kind: type[M], name: str, patch: Mapping[str, Any], *, namespace: str = ""
    ) -> M:
        """A JSON merge patch (``Client.patch``)."""
        key = f"patch {kinds.for_message(kind).plural}"
        return await self._timed(key, self.client.patch(kind, name, patch, namespace=namespace))

    async def delete(
        self,
        kind: type[M],
        name: str,
        *,
        namespace: str = "",
        grace_period_seconds: int | None = None,
    ) -> M:
        key = f"delete {kinds.for_message(kind).plural}"
        call = self.client.delete(
            kind, name, namespace=namespace, grace_period_seconds=grace_period_seconds
        )
        return await self._timed(key, call)

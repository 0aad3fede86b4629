"""``k8semu status`` and ``k8semu down`` over a state directory, from any shell.

``status`` reports, per component of ``state.json``: its host, pid, whether that process still
runs (pid *and* start time), its gRPC health, and its role - which store replica leads
(``Maintenance.Status``: every member's ``leader`` field, and the member that says it is that
id), which scheduler / controller manager holds its kube-system Lease (the holder identity
names the holder's pid), whether a kubelet's Nodes are Ready.

``down`` stops what ``state.json`` records: a foreground launcher first (SIGTERM; it then
stops its components itself, in order), then every component still alive in reverse stage
order - nodes (and the pod processes of their kubelets), schedulers and controller managers,
API servers, store - each SIGTERM, ``stopGracePeriod``, SIGKILL. Every pid is checked against
its recorded start time before any signal. It then checks that none is left.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from k8semu.cluster import certs, clientconfig
from k8semu.cluster.errors import ClusterError
from k8semu.cluster.plan import NODES, NODES_DIR, STAGES, STORE
from k8semu.cluster.probes import Probes, agreed_leader
from k8semu.cluster.state import (
    ClusterState,
    is_same_process,
    read_state,
    write_state,
)
from k8semu.cluster.stopping import kubelet_pods, stop_order, terminate
from k8semu.kubelet.cgroups import sweep_nodes
from k8semu.pb.etcd import rpc_pb2

__all__ = ["ComponentStatus", "DownReport", "cluster_status", "down", "format_status"]

RPC_TIMEOUT_S = 1.0
LAUNCHER_EXTRA_WAIT_S = 15.0


@dataclass(slots=True)
class ComponentStatus:
    name: str
    kind: str
    host: str
    pid: int
    alive: bool
    health: str
    address: str
    #: HOST:PORT of its Prometheus /metrics ("" when it serves none).
    metrics: str
    #: HOST:PORT of an API server's REST API (kubectl's; "" for the others).
    rest: str
    role: str
    state: str
    restarts: int
    last_exit_code: int | None
    last_exit_at: str


def dashboard_url(rest: str, tls: bool = False) -> str:
    """The dashboard's URL on the REST API at HOST:PORT (https when `tls`) or at a URL."""
    base = rest if "://" in rest else f"{'https' if tls else 'http'}://{rest}"
    return f"{base.rstrip('/')}/dashboard/"


def cluster_status(state: ClusterState, probes: Probes) -> dict[str, Any]:
    """The status of every component of ``state``, as plain data (what ``-o json`` prints)."""
    alive = {c.name: c.alive() for c in state.components}
    health = probes.health(
        [c.address for c in state.components if alive[c.name] and c.health_check], RPC_TIMEOUT_S
    )
    store = _store_status(state, probes, alive)
    api = _api_status(state, probes)
    roles = store.roles | _api_roles(state, alive, api)
    rows = [
        ComponentStatus(
            name=c.name,
            kind=c.kind,
            host=c.host,
            pid=c.pid,
            alive=alive[c.name],
            health=(health.get(c.address, "-") if c.health_check else "n/a")
            if alive[c.name]
            else "-",
            address=c.address,
            metrics=c.ports.get("metrics", ""),
            rest=c.ports.get("rest", ""),
            role=roles.get(c.name, ""),
            state=_state_of(c.state, alive[c.name], state.mode),
            restarts=c.restarts,
            last_exit_code=c.last_exit_code,
            last_exit_at=c.last_exit_at,
        )
        for c in state.components
    ]
    return {
        "cluster": state.cluster,
        "host": state.host,
        "mode": state.mode,
        "stateDir": state.state_dir,
        "tls": state.tls,
        "launcherPid": state.launcher_pid if state.launcher_alive() else 0,
        "supervisor": _supervisor(state),
        "storeAlarms": store.alarms,
        "storeAlarmError": store.alarm_error,
        "storeDbSize": store.db_sizes,
        "apiServers": state.api_servers,
        "storeLeader": store.leader,
        "leases": api.leases,
        "apiError": api.error,
        # The web dashboard each API server serves on its REST port (docs/dashboard.md).
        "dashboards": [dashboard_url(r.rest, state.tls) for r in rows if r.rest and r.alive],
        # The built-in ingress controller on each node's proxy (docs/proxy.md "Ingress").
        "ingresses": [
            f"{scheme}://{c.ports[port]}/"
            for c in state.components
            if alive[c.name]
            for port, scheme in (("ingress", "http"), ("ingress-tls", "https"))
            if port in c.ports
        ],
        "components": [asdict(r) for r in rows],
    }


@dataclass(slots=True)
class _StoreStatus:
    """What the store's replicas say: the agreed leader, each local replica's role, database
    sizes, and the alarms (None, and why, when no replica told them)."""

    leader: str | None = None
    roles: dict[str, str] = field(default_factory=dict)
    db_sizes: dict[str, dict[str, int]] = field(default_factory=dict)
    alarms: list[dict[str, str]] | None = None
    alarm_error: str = ""


def _store_status(state: ClusterState, probes: Probes, alive: dict[str, bool]) -> _StoreStatus:
    out = _StoreStatus()
    local = {
        c.name.removeprefix("store-")
        for c in state.components
        if c.stage == STORE and alive[c.name]
    }
    # Every member is asked (those of other hosts too): a leader needs a quorum of them all.
    members = [(n, a) for n, a in state.store_members] or [
        (c.name.removeprefix("store-"), c.address) for c in state.components if c.stage == STORE
    ]
    if not members:
        return out
    statuses = probes.store_statuses(members, RPC_TIMEOUT_S)
    out.leader = agreed_leader(statuses, len(members))
    for name, st in statuses.items():
        if not isinstance(st, rpc_pb2.StatusResponse):
            continue
        if name in local:
            out.roles[f"store-{name}"] = "leader" if name == out.leader else "follower"
        out.db_sizes[name] = {"dbSize": st.dbSize, "dbSizeInUse": st.dbSizeInUse}
    out.alarms, out.alarm_error = _alarms(probes, members, statuses, out.leader)
    return out


@dataclass(slots=True)
class _APIStatus:
    """What the API servers say: kube-system Lease holders and Node readiness, or why not."""

    leases: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, bool] = field(default_factory=dict)
    error: str = ""


def _api_status(state: ClusterState, probes: Probes) -> _APIStatus:
    out = _APIStatus()
    if state.api_servers:
        try:
            out.leases = probes.leases(state.api_servers, RPC_TIMEOUT_S)
            out.nodes = probes.nodes_ready(state.api_servers, RPC_TIMEOUT_S)
        except Exception as exc:  # grpc.RpcError: no API server answers
            out.error = f"no API server answers ({_short(exc)})"
    return out


def _api_roles(state: ClusterState, alive: dict[str, bool], api: _APIStatus) -> dict[str, str]:
    """Which scheduler / controller manager holds its Lease (the holder identity names the
    holder's pid), and whether each kubelet's Nodes are Ready."""
    roles = {}
    for c in state.components:
        if c.kind in ("scheduler", "controller-manager") and alive[c.name]:
            held = [name for name, holder in api.leases.items() if f"_{c.pid}_" in f"{holder}_"]
            roles[c.name] = f"leader (lease {held[0]})" if held else "standby"
        elif c.pool and c.state == "stopped" and c.pool_node not in api.nodes:
            roles[c.name] = f"node pool {c.pool}: slot not in use"
        elif c.kind == "kubelet" and c.nodes:
            ready = sum(1 for n in c.nodes if api.nodes.get(n))
            if len(c.nodes) == 1:
                known = c.nodes[0] in api.nodes
                word = "Ready" if ready else ("NotReady" if known else "not registered")
                roles[c.name] = f"node {c.nodes[0]} {word}"
            else:
                roles[c.name] = f"{ready}/{len(c.nodes)} nodes Ready"
    return roles


def _state_of(recorded: str, alive: bool, mode: str) -> str:
    """What to show: a component recorded as running whose process is gone has ``exited``
    (its supervisor has not seen it yet, or there is none)."""
    if mode == "stopped":
        return "stopped"
    if recorded == "running" and not alive:
        return "exited"
    return recorded


def _supervisor(state: ClusterState) -> dict[str, Any]:
    if state.launcher_alive():
        return {"kind": "k8semu up (foreground)", "pid": state.launcher_pid, "alive": True}
    if state.mode == "detached":
        return {
            "kind": "k8semu supervise",
            "pid": state.supervisor_pid,
            "alive": state.supervisor_alive(),
        }
    return {"kind": "", "pid": 0, "alive": False}


def _alarms(
    probes: Probes,
    members: list[tuple[str, str]],
    statuses: dict[str, rpc_pb2.StatusResponse | str],
    leader: str | None,
) -> tuple[list[dict[str, str]] | None, str]:
    """The store's alarms as one replica reports them (the leader first, then any that
    answered Status): [{"member": hex id, "alarm": NOSPACE|CORRUPT}], or None and why not."""
    order = sorted(
        members,
        key=lambda m: (m[0] != leader, not isinstance(statuses.get(m[0]), rpc_pb2.StatusResponse)),
    )
    last = "no store replica answers"
    for name, address in order:
        if not isinstance(statuses.get(name), rpc_pb2.StatusResponse):
            continue
        try:
            found = probes.alarms(address, RPC_TIMEOUT_S)
        except Exception as exc:  # grpc.RpcError
            last = f"Alarm on {name}: {_short(exc)}"
            continue
        return [
            {"member": f"{a.memberID:x}", "alarm": rpc_pb2.AlarmType.Name(a.alarm)} for a in found
        ], ""
    return None, last


def _short(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    return code().name if callable(code) else str(exc).splitlines()[0]


def format_status(status: dict[str, Any]) -> str:
    """The table ``k8semu status`` prints."""
    mode = status["mode"]
    sup = status["supervisor"]
    if status["launcherPid"]:
        mode += f", supervised by k8semu up pid {status['launcherPid']}"
    elif mode == "detached" and sup["alive"]:
        mode += f", supervised by k8semu supervise pid {sup['pid']}"
    elif mode == "detached":
        mode += (
            ", SUPERVISOR NOT RUNNING: a crashed component stays down; `k8semu up --detach` or"
            f" `k8semu supervise --state-dir {status['stateDir']}` brings it back"
        )
    host = f" host {status['host']}" if status["host"] else ""
    lines = [f"cluster {status['cluster']}{host} ({mode}); state dir {status['stateDir']}"]
    if status.get("tls"):
        lines.append("security: mutual TLS (certificates in pki/ of the state dir)")
    else:
        lines.append("security: WARNING: TLS off (security.tls: false): plain text, no credentials")
    lines.append("")
    header = (
        "COMPONENT", "KIND", "HOST", "PID", "ALIVE", "STATE", "RESTARTS", "LAST EXIT", "HEALTH",
        "ADDRESS", "REST", "METRICS", "ROLE",
    )  # fmt: skip
    rows = [
        (
            c["name"],
            c["kind"],
            c["host"],
            str(c["pid"] or "-"),
            "yes" if c["alive"] else "no",
            c["state"].upper() if c["state"] == "failed" else c["state"],
            str(c["restarts"]),
            _last_exit(c),
            c["health"],
            c["address"],
            c.get("rest") or "-",
            c.get("metrics") or "-",
            c["role"],
        )
        for c in status["components"]
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        lines.append("   ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    lines.append("")
    if status["storeLeader"]:
        lines.append(f"store leader: {status['storeLeader']}")
    for name, holder in sorted(status["leases"].items()):
        lines.append(f"lease kube-system/{name}: held by {holder or '(nobody)'}")
    sizes = status["storeDbSize"]
    if sizes:
        lines.append(
            "store db size (in use / file): "
            + ", ".join(
                f"{n} {_mb(v['dbSizeInUse'])}/{_mb(v['dbSize'])}" for n, v in sorted(sizes.items())
            )
        )
    if status["storeAlarms"]:
        shown = ", ".join(f"{a['alarm']} (member {a['member']})" for a in status["storeAlarms"])
        lines.append(f"store alarms: {shown}")
    elif status["storeAlarms"] is not None:
        lines.append("store alarms: none")
    elif status["storeAlarmError"]:
        lines.append(f"store alarms: unknown ({status['storeAlarmError']})")
    failed = [c["name"] for c in status["components"] if c["state"] == "failed"]
    if failed:
        lines.append(
            f"FAILED (crashed too often, left down): {', '.join(failed)};"
            " `k8semu restart NAME` starts one again"
        )
    for url in status.get("dashboards", []):
        lines.append(f"dashboard: {url}")
    if status.get("ingresses"):
        lines.append(f"ingress: {', '.join(status['ingresses'])}")
    if status["apiError"]:
        lines.append(status["apiError"])
    return "\n".join(lines).rstrip()


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}MB"


def _last_exit(c: dict[str, Any]) -> str:
    if not c["last_exit_at"]:
        return "-"
    code = c["last_exit_code"]
    what = "?" if code is None else (f"sig{-code}" if code < 0 else str(code))
    return f"{what} at {c['last_exit_at'][11:19]}"


def _store_leader(state: ClusterState) -> str | None:
    probes = certs.state_probes(state)
    try:
        members = [(n, a) for n, a in state.store_members]
        return agreed_leader(probes.store_statuses(members, RPC_TIMEOUT_S / 2), len(members))
    finally:
        probes.close()


@dataclass(slots=True)
class DownReport:
    stopped: list[str]
    killed: list[int]
    pods: int
    left: list[int]
    launcher: int


def down(
    state_dir: Path,
    *,
    grace: float,
    say: Callable[[str], None],
    user_config: Path | None = None,
    keep_pods: bool = False,
) -> DownReport:
    """Stop every process of the cluster in ``state_dir`` (see the module docstring).
    ``keep_pods`` leaves the kubelets' pod processes running, for the next kubelets to adopt
    (as a kubelet leaves its containers when it stops): what ``k8semu restore`` does."""
    state = read_state(state_dir)
    launcher = 0
    if state.launcher_alive():
        launcher = state.launcher_pid
        say(f"stopping the foreground `k8semu up` (pid {launcher}); it stops its components")
        budget = grace * (len(STAGES) + 1) + LAUNCHER_EXTRA_WAIT_S
        terminate({launcher: state.launcher_start_time}, budget)
        state = read_state(state_dir)  # it rewrote the pids as it stopped them
    if state.supervisor_alive():
        # First, so that it restarts nothing of what is stopped below.
        say(f"stopping the supervisor (k8semu supervise pid {state.supervisor_pid})")
        terminate({state.supervisor_pid: state.supervisor_start_time}, grace)
        state = read_state(state_dir)  # the pids it started are in it
    live = [c for c in state.components if c.alive()]
    pods = {} if keep_pods else kubelet_pods(live, state_dir)
    killed: list[int] = []
    for stage, group in stop_order(live, lambda: _store_leader(state)):
        if group:
            say(f"stopping {STAGES[stage]}: {', '.join(c.name for c in group)}")
            k, _ = terminate({c.pid: c.start_time for c in group}, grace)
            killed += k
        if stage == NODES and pods:
            say(f"stopping {len(pods)} pod processes of the kubelets")
            k, _ = terminate(pods, grace)
            killed += k
    if not keep_pods:
        sweep_nodes(state_dir / NODES_DIR)  # the pods' cgroups, now empty
    everything = {c.pid: c.start_time for c in live} | pods
    left = sorted(pid for pid, st in everything.items() if is_same_process(pid, st))
    for c in state.components:
        c.pid = 0
        c.start_time = 0
    state.mode = "stopped"
    state.launcher_pid = 0
    state.launcher_start_time = 0
    state.supervisor_pid = 0
    state.supervisor_start_time = 0
    write_state(state_dir, state)
    if user_config is not None:
        try:
            clientconfig.remove_context(user_config, state.cluster)
        except ClusterError as exc:
            say(f"warning: {exc}")
    return DownReport(
        stopped=[c.name for c in live], killed=killed, pods=len(pods), left=left, launcher=launcher
    )

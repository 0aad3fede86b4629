"""A cluster's state directory: which processes run it, where their logs are, how to reach it.

::

    <state-dir>/state.json      this file's model: the launcher and every component (below)
    <state-dir>/kubeconfig      a CLI config with one context, the cluster's API servers
    <state-dir>/cluster.json    the cluster's identity (name, store token, member names)
    <state-dir>/launcher.lock   held (flock) while a foreground ``k8semu up`` runs
    <state-dir>/supervisor.lock held (flock) while a detached cluster's ``k8semu supervise`` runs
    <state-dir>/control/        requests to the supervisor (``restart-<component>`` files)
    <state-dir>/logs/<name>.log each component's stdout and stderr, appended across runs
    <state-dir>/store/<member>/ a store replica's data
    <state-dir>/nodes/<node>/   a kubelet's root dir (pod working dirs, pod logs)

``state.json`` records, per component, the pid *and* the process start time (field 22 of
``/proc/<pid>/stat``, in clock ticks since boot): a pid alone may since have been reused by an
unrelated process, and ``down`` must never signal one of those. The start time survives the
``exec`` of ``setpriv`` into the component, where the command line would not.

The default state dir is ``$XDG_STATE_HOME/k8semu/clusters/<name>`` when XDG_STATE_HOME is
set, else ``~/.k8semu/clusters/<name>``; the caller passes the environment in.

This module reads and writes files and looks at ``/proc``; it must not signal anything.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from k8semu.cluster.errors import ClusterError

__all__ = [
    "STATE_FILE",
    "ClusterState",
    "ComponentRecord",
    "component_log_path",
    "default_state_dir",
    "process_start_time",
    "read_state",
    "write_state",
]

STATE_FILE = "state.json"
KUBECONFIG_FILE = "kubeconfig"
STATE_VERSION = 1


@dataclass(slots=True, kw_only=True)
class ComponentRecord:
    """One component as started: ``pid``/``start_time`` identify its current process (0 when
    it has none)."""

    name: str
    kind: str
    host: str
    stage: int
    command: list[str]
    pid: int = 0
    start_time: int = 0
    address: str = ""
    ports: dict[str, str] = field(default_factory=dict)
    log_path: str = ""
    data_dir: str = ""
    nodes: list[str] = field(default_factory=list)
    #: False when the process serves no gRPC health (a hollow-node pool's kubelet).
    health_check: bool = True
    #: ``running``; ``backoff`` (exited, due to start again); ``failed`` (crashed too often in
    #: a row: left down until ``k8semu restart`` or a new ``up``); ``stopped``.
    state: str = "running"
    #: Times the supervisor started it again (after a crash or on request) since ``up``.
    restarts: int = 0
    #: Exit code of its last exit (negative: killed by that signal); None when unknown (the
    #: process was not the supervisor's child) or it never exited.
    last_exit_code: int | None = None
    #: Wall-clock time (RFC 3339, UTC) of that exit, "" when none.
    last_exit_at: str = ""
    #: The last ``k8semu restart`` request the supervisor carried out (its id), "" when none.
    restart_request: str = ""
    #: A slot of an autoscaled node pool: the pool and the slot's Node, whose kubelet (or
    #: proxy) this is; "" for the rest. The supervisor starts and stops it as the cluster
    #: autoscaler asks (state ``stopped`` while not wanted).
    pool: str = ""
    pool_node: str = ""

    def alive(self) -> bool:
        """Whether the recorded process still runs (and is the one recorded, not a reuse of
        its pid)."""
        return is_same_process(self.pid, self.start_time)


@dataclass(slots=True, kw_only=True)
class ClusterState:
    """What ``state.json`` holds. ``mode`` is ``foreground`` (a ``k8semu up`` supervises:
    ``launcher_pid``), ``detached`` (a ``k8semu supervise`` process supervises:
    ``supervisor_pid``) or ``stopped``. ``launcher`` holds the config's ``launcher`` section
    (``LauncherSpec`` fields), which a detached supervisor restarts by."""

    cluster: str
    host: str
    mode: str
    state_dir: str
    config_source: str = ""
    launcher_pid: int = 0
    launcher_start_time: int = 0
    api_servers: list[str] = field(default_factory=list)
    store_endpoints: list[str] = field(default_factory=list)
    #: Every store member as [name, client address], those of other hosts too.
    store_members: list[list[str]] = field(default_factory=list)
    kubeconfig: str = ""
    components: list[ComponentRecord] = field(default_factory=list)
    supervisor_pid: int = 0
    supervisor_start_time: int = 0
    launcher: dict[str, int] = field(default_factory=dict)
    #: The config's ``backups`` section (``BackupsSpec`` fields): the supervisor's schedule.
    backups: dict[str, Any] = field(default_factory=dict)
    #: Whether the store and API servers serve mutual TLS (the config's security.tls).
    tls: bool = False
    version: int = STATE_VERSION

    def component(self, name: str) -> ComponentRecord | None:
        return next((c for c in self.components if c.name == name), None)

    def launcher_alive(self) -> bool:
        return is_same_process(self.launcher_pid, self.launcher_start_time)

    def supervisor_alive(self) -> bool:
        """Whether the detached cluster's ``k8semu supervise`` process runs."""
        return is_same_process(self.supervisor_pid, self.supervisor_start_time)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def default_state_dir(name: str, environ: Mapping[str, str]) -> Path:
    """``$XDG_STATE_HOME/k8semu/clusters/<name>``, else ``~/.k8semu/clusters/<name>``."""
    xdg = environ.get("XDG_STATE_HOME")
    if xdg:
        return Path(xdg) / "k8semu" / "clusters" / name
    home = environ.get("HOME") or str(Path.home())
    return Path(home) / ".k8semu" / "clusters" / name


def write_state(state_dir: Path, state: ClusterState) -> None:
    """Write ``state.json`` atomically (a reader never sees half a file)."""
    path = state_dir / STATE_FILE
    tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_state(state_dir: Path) -> ClusterState:
    """The state in ``state_dir``; ClusterError saying what is missing or wrong."""
    path = state_dir / STATE_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ClusterError(
            f"no cluster in {state_dir} (no {STATE_FILE}); start one with `k8semu up`, or give"
            " --state-dir"
        ) from None
    except (OSError, ValueError) as exc:
        raise ClusterError(f"{path} is unreadable: {exc}") from exc
    try:
        components = [ComponentRecord(**c) for c in raw.pop("components")]
        return ClusterState(**raw, components=components)
    except (TypeError, KeyError, AttributeError) as exc:
        raise ClusterError(f"{path} is not a k8semu state file: {exc}") from exc


def component_log_path(state_dir: Path, name: str) -> Path | None:
    """The log file of component ``name`` (``apiserver-1``, ``kubelet-node-1``, ``store-s1``;
    also the bare store member ``s1`` or node ``node-1`` for its kubelet) of the cluster in
    ``state_dir``, or None when the cluster has no such component (or no state)."""
    try:
        state = read_state(state_dir)
    except ClusterError:
        return None
    for candidate in (name, f"store-{name}", f"kubelet-{name}"):
        record = state.component(candidate)
        if record is not None and record.log_path:
            return Path(record.log_path)
    return None


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None when there is no such live
    process (an exited, unreaped one counts as gone)."""
    if pid <= 0:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces and ')'.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def is_same_process(pid: int, start_time: int) -> bool:
    """Whether ``pid`` runs and is the process that started at ``start_time``."""
    return start_time > 0 and process_start_time(pid) == start_time


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def processes_of(roots: list[int], state_dir: Path) -> dict[int, int]:
    """pid -> start time of every live process that descends from one of ``roots`` or whose
    working directory lies inside ``state_dir``'s node dirs (the pods a kubelet started in
    their own sessions; after a kubelet restart they are no longer its children)."""
    nodes_dir = (state_dir / "nodes").resolve()
    children: dict[int, list[int]] = {}
    in_nodes: list[int] = []
    me = os.getpid()
    mine = set()  # this process and its ancestors: never ours to stop, wherever their cwd
    pid: int | None = me
    while pid and pid not in mine:
        mine.add(pid)
        pid = parent_pid(pid)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid in mine:
            continue
        ppid = parent_pid(pid)
        if ppid is not None:
            children.setdefault(ppid, []).append(pid)
        try:
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            continue
        if cwd == nodes_dir or nodes_dir in cwd.parents:
            in_nodes.append(pid)
    found: dict[int, int] = {}
    todo = [*roots, *in_nodes]
    while todo:
        pid = todo.pop()
        if pid in found or pid in mine:
            continue
        start = process_start_time(pid)
        if start is None:
            continue
        found[pid] = start
        todo.extend(children.get(pid, ()))
    return found


def find_state_dir(given: Path | None, name: str | None, environ: Mapping[str, str]) -> Path:
    """The state dir a ``status``/``down``/``logs`` means: ``--state-dir``; else that of
    cluster ``name``; else that of the CLI config's current context, if such a cluster dir
    exists; else that of the default cluster, ``local``."""
    if given is not None:
        return given
    if name:
        return default_state_dir(name, environ)
    from k8semu.cluster.clientconfig import current_context, user_config_path

    current = current_context(user_config_path(environ))
    if current and (default_state_dir(current, environ) / STATE_FILE).exists():
        return default_state_dir(current, environ)
    return default_state_dir("local", environ)

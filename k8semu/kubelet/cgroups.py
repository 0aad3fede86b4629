"""Container cgroups (design decision 13): CPU, memory and pids limits, OOM kills and usage
counters for the process runtime, on cgroup v1 (one hierarchy per controller) or v2 (unified),
behind one interface (`Cgroups`).

Layout: the same relative path in every hierarchy used (v1: cpu, cpuacct, memory, pids and,
when mounted, freezer; v2: the unified one)::

    k8semu/kubelet_<node>_<tag>/                       one kubelet (node usage)
    k8semu/kubelet_<node>_<tag>/pod<uid>/              one pod: pids.max (podPidsLimit)
    k8semu/kubelet_<node>_<tag>/pod<uid>/<container>/  one run of one container: CPU, memory

`<tag>` is 8 hex digits of the kubelet's root directory, so two clusters on one host that both
have a `node-1` never share a hierarchy (a kubelet restarted on the same root finds its own).
Several kubelets share the host, so nothing is written above `k8semu/` but what v2 needs to
hand the controllers down (`+cpu +memory +pids` in cgroup.subtree_control).

Kubernetes' conversions (pkg/kubelet/cm): a CPU limit is a CFS quota of
milliCPU * 100 ms / 1000 per 100 ms period (at least 1 ms); a CPU request is cpu.shares =
milliCPU * 1024 / 1000 (2 .. 262144; no request: 2), on v2 cpu.weight = 1 + (shares - 2) *
9999 / 262142; a memory limit is memory.limit_in_bytes (v2 memory.max) with swap off where the
kernel has the file (memsw / memory.swap.max), and on v2 memory.oom.group = 1 so an OOM kill
takes the whole container, as Kubernetes does since 1.28.

A process joins its container's cgroup before it execs: `join_argv` puts a `sh -c` in front
that writes its own pid into each cgroup.procs and then execs the command in place (same pid).
Not a preexec_fn: Python between fork and exec in a process with gRPC threads can hang.

This module makes, fills, reads, empties and removes these directories; it decides nothing
about pods (the runtime does) and never touches a cgroup outside `k8semu/kubelet_*`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import signal
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from k8semu.kubelet.runtime import Resources, Usage
from k8semu.log import get_logger

log = get_logger(__name__)

TOP = "k8semu"
CPU_PERIOD_US = 100_000  # Kubernetes' CFS period (100 ms)
MIN_QUOTA_US = 1_000
MIN_SHARES = 2
MAX_SHARES = 262_144
SHARES_PER_CPU = 1024
DEFAULT_POD_PIDS_LIMIT = 1024  # Kubernetes: -1 (unlimited), unsafe with many nodes on one host
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")  # needed; freezer is used when there
V2_CONTROLLERS = ("cpu", "memory", "pids")
MOUNTINFO = Path("/proc/self/mountinfo")
FREEZE_WAIT = 2.0  # seconds a freeze may take before the kill goes ahead unfrozen
KILL_ROUNDS = 20  # a cgroup that keeps forking is killed again, this many times at most
MKDIR_ATTEMPTS = 3


class CgroupError(OSError):
    """A cgroup could not be made or written: the message names the file."""


# ---- Kubernetes' conversions (pure) ----


def cpu_quota_us(milli_cpu: int, period_us: int = CPU_PERIOD_US) -> int:
    """The CFS quota for a CPU limit of `milli_cpu`; 0 (no limit) when it is 0."""
    if milli_cpu <= 0:
        return 0
    return max(milli_cpu * period_us // 1000, MIN_QUOTA_US)


def cpu_shares(milli_cpu: int) -> int:
    """cpu.shares for a CPU request of `milli_cpu` (no request: the minimum, 2)."""
    return min(max(milli_cpu * SHARES_PER_CPU // 1000, MIN_SHARES), MAX_SHARES)


def cpu_weight(shares: int) -> int:
    """cgroup v2 cpu.weight (1..10000) for v1 cpu.shares (2..262144), as runc converts."""
    return 1 + (min(max(shares, MIN_SHARES), MAX_SHARES) - 2) * 9999 // 262142


def hierarchy_name(node: str, root_dir: str | Path) -> str:
    """`k8semu/kubelet_<node>_<tag>` for the kubelet of `node` whose root dir is `root_dir`."""
    tag = hashlib.sha256(str(Path(root_dir).resolve()).encode()).hexdigest()[:8]
    return f"{TOP}/kubelet_{node}_{tag}"


def pod_path(hierarchy: str, uid: str) -> str:
    return f"{hierarchy}/pod{uid}"


def container_path(hierarchy: str, uid: str, container: str) -> str:
    return f"{hierarchy}/pod{uid}/{container}"


_JOIN = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


def join_argv(procs_files: Sequence[Path], argv: Sequence[str]) -> list[str]:
    """`argv`, run by a shell that first moves itself into each cgroup (its cgroup.procs or
    tasks file) and then execs `argv` in place. Exit 125 when it cannot join (the log says
    why): a container never runs outside its cgroup."""
    if not procs_files:
        return list(argv)
    return ["/bin/sh", "-c", _JOIN, "k8semu-cgroup", *map(str, procs_files), "--", *argv]


def _write(path: Path, value: str | int) -> None:
    try:
        path.write_text(str(value))
    except OSError as exc:
        raise CgroupError(f"write {value!r} to {path}: {exc.strerror or exc}") from None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _read_words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


def _read_keyed(path: Path) -> dict[str, int]:
    """A flat keyed file (memory.stat, cpu.stat, memory.events): `key value` per line."""
    out: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


def _pids_in(procs: Path) -> list[int]:
    try:
        return [int(p) for p in procs.read_text().split()]
    except (OSError, ValueError):
        return []


def _rmdir_tree(top: Path) -> bool:
    """rmdir `top` and every cgroup below it, deepest first; True when all are gone. A cgroup
    that still has a process stays (EBUSY) and is reported."""
    if not top.is_dir():
        return True
    ok = True
    for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda d: -len(Path(d[0]).parts)):
        try:
            os.rmdir(dirpath)
        except FileNotFoundError:
            continue
        except OSError as exc:
            ok = False
            if exc.errno != errno.EBUSY:
                log.warning("cannot remove cgroup", cgroup=dirpath, error=exc.strerror)
    return ok


class Cgroups:
    """One host's cgroup hierarchies, v1 or v2. Paths given to methods are relative
    (`k8semu/kubelet_<node>_<tag>/...`); every method is safe on a cgroup that is not there."""

    version: int

    def __init__(self, mounts: Mapping[str, Path], version: int) -> None:
        # v1: controller -> its hierarchy's mount; v2: "" -> the unified mount.
        self.mounts = dict(mounts)
        self.version = version

    # ---- where ----

    def _roots(self) -> list[Path]:
        return sorted(set(self.mounts.values()))

    def dirs(self, rel: str) -> list[Path]:
        """The cgroup `rel` in every hierarchy used (one on v2)."""
        return [root / rel for root in self._roots()]

    def path_of(self, controller: str, rel: str) -> Path:
        """`rel` in the hierarchy of `controller` (v2: the unified one)."""
        return self.mounts.get(controller, self.mounts.get("", Path("/nonexistent"))) / rel

    def procs_files(self, rel: str) -> list[Path]:
        return [d / "cgroup.procs" for d in self.dirs(rel)]

    # ---- make and set ----

    def _delegate(self, rel: str) -> None:
        """v2: hand cpu, memory and pids down to `rel`'s children (every ancestor too)."""
        root = self.mounts[""]
        want = " ".join(f"+{c}" for c in V2_CONTROLLERS)
        parts = Path(rel).parts
        for i in range(len(parts) + 1):
            d = root.joinpath(*parts[:i])
            have = set(_read_words(d / "cgroup.subtree_control"))
            if not set(V2_CONTROLLERS) <= have:
                _write(d / "cgroup.subtree_control", want)

    def make(self, rel: str, *, parent_of_children: bool = False) -> None:
        """Create `rel` (and its parents) in every hierarchy; `parent_of_children`: it will hold
        cgroups rather than processes (v2 then delegates the controllers to them)."""
        for d in self.dirs(rel):
            for attempt in range(MKDIR_ATTEMPTS):
                try:
                    d.mkdir(parents=True, exist_ok=True)
                    break
                except FileNotFoundError:
                    # Another kubelet that stopped removed the shared top between our
                    # mkdir of it and of what is below: make it again.
                    if attempt == MKDIR_ATTEMPTS - 1:
                        raise CgroupError(f"mkdir {d}: a parent keeps vanishing") from None
                except OSError as exc:
                    raise CgroupError(f"mkdir {d}: {exc.strerror or exc}") from None
        if self.version == 2:
            try:
                self._delegate(str(Path(rel).parent))
                if parent_of_children:
                    self._delegate(rel)
            except OSError as exc:
                raise CgroupError(f"delegate controllers to {rel}: {exc}") from None

    def set_pids_limit(self, rel: str, limit: int) -> None:
        """pids.max of `rel`: `limit` processes and threads (<= 0: unlimited)."""
        _write(self.path_of("pids", rel) / "pids.max", limit if limit > 0 else "max")

    def set_limits(self, rel: str, limits: Resources) -> None:
        """CPU shares/weight and quota, memory limit (swap off) of a container's cgroup."""
        shares = cpu_shares(limits.cpu_request_milli or 0)
        quota = cpu_quota_us(limits.cpu_limit_milli or 0)
        mem = limits.memory_limit
        if self.version == 1:
            cpu = self.path_of("cpu", rel)
            _write(cpu / "cpu.shares", shares)
            _write(cpu / "cpu.cfs_period_us", CPU_PERIOD_US)
            _write(cpu / "cpu.cfs_quota_us", quota or -1)
            if mem is not None:
                memory = self.path_of("memory", rel)
                _write(memory / "memory.limit_in_bytes", mem)
                if (memory / "memory.memsw.limit_in_bytes").exists():
                    _write(memory / "memory.memsw.limit_in_bytes", mem)
            return
        d = self.path_of("", rel)
        _write(d / "cpu.weight", cpu_weight(shares))
        _write(d / "cpu.max", f"{quota or 'max'} {CPU_PERIOD_US}")
        if mem is not None:
            _write(d / "memory.max", mem)
            if (d / "memory.swap.max").exists():
                _write(d / "memory.swap.max", 0)
            if (d / "memory.oom.group").exists():
                _write(d / "memory.oom.group", 1)

    # ---- read ----

    def usage(self, rel: str) -> Usage | None:
        """CPU and memory of `rel` now; None when the cgroup is not there."""
        if self.version == 1:
            cpu_ns = _read_int(self.path_of("cpuacct", rel) / "cpuacct.usage")
            memory = self.path_of("memory", rel)
            used = _read_int(memory / "memory.usage_in_bytes")
            inactive = _read_keyed(memory / "memory.stat").get("total_inactive_file", 0)
        else:
            d = self.path_of("", rel)
            usec = _read_keyed(d / "cpu.stat").get("usage_usec")
            cpu_ns = None if usec is None else usec * 1000
            used = _read_int(d / "memory.current")
            inactive = _read_keyed(d / "memory.stat").get("inactive_file", 0)
        if cpu_ns is None or used is None:
            return None
        return Usage(cpu_ns=cpu_ns, memory_usage=used, working_set=max(used - inactive, 0))

    def oom_kills(self, rel: str) -> int:
        """How many processes the kernel's OOM killer ended in `rel` (memory.oom_control's
        oom_kill on v1, memory.events' on v2)."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        return _read_keyed(self.path_of("memory", rel) / name).get("oom_kill", 0)

    def pids(self, rel: str) -> set[int]:
        """Every process in `rel` and below."""
        found: set[int] = set()
        for d in self.dirs(rel):
            for procs in d.rglob("cgroup.procs") if d.is_dir() else ():
                found.update(_pids_in(procs))
        return found

    # ---- empty and remove ----

    def _freeze(self, rel: str, frozen: bool) -> bool:
        if self.version == 1:
            if "freezer" not in self.mounts:
                return False
            state = self.path_of("freezer", rel) / "freezer.state"
            want = "FROZEN" if frozen else "THAWED"
        else:
            state = self.path_of("", rel) / "cgroup.freeze"
            want = "1" if frozen else "0"
        try:
            state.write_text(want)
        except OSError:
            return False
        if not frozen:
            return True
        deadline = time.monotonic() + FREEZE_WAIT
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if self.version == 1 and state.read_text().strip() == "FROZEN":
                    return True
                events = _read_keyed(self.path_of("", rel) / "cgroup.events")
                if self.version == 2 and events.get("frozen") == 1:
                    return True
            time.sleep(0.01)
        return False

    def kill(self, rel: str) -> int:
        """SIGKILL every process in `rel` and below; how many were signalled. Frozen first (so
        a fork bomb cannot outrun it) where a freezer exists; v2's cgroup.kill where it does.
        Blocking (up to a couple of seconds): call it from a thread."""
        if self.version == 2 and (self.path_of("", rel) / "cgroup.kill").exists():
            before = self.pids(rel)
            with contextlib.suppress(OSError):
                (self.path_of("", rel) / "cgroup.kill").write_text("1")
                return len(before)
        frozen = self._freeze(rel, True)
        count = 0
        try:
            for _ in range(KILL_ROUNDS):
                left = self.pids(rel)
                if not left:
                    break
                for pid in left:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                        count += 1
                if frozen:
                    break  # nothing ran in between: every one of them is signalled
        finally:
            self._freeze(rel, False)  # also after a freeze that did not complete in time
        return count

    def remove(self, rel: str, *, kill: bool = False) -> bool:
        """rmdir `rel` and its children in every hierarchy (after a kill when `kill`); True
        when nothing is left. A process that is gone is reaped lazily by the kernel: rmdir is
        retried briefly (a killed process leaves its cgroup when its parent reaps it)."""
        if kill:
            self.kill(rel)
        deadline = time.monotonic() + (FREEZE_WAIT if kill else 0)
        while True:
            ok = all([_rmdir_tree(d) for d in self.dirs(rel)])
            if ok or time.monotonic() >= deadline:
                return ok
            time.sleep(0.02)

    def remove_empty(self, rel: str) -> None:
        """Remove every cgroup at or below `rel` that holds no process (a sweep)."""
        for d in self.dirs(rel):
            _rmdir_tree(d)

    def remove_top_if_empty(self) -> None:
        """The shared `k8semu/` goes with the last kubelet's hierarchy (rmdir fails while
        another kubelet's, or a chaos run's, is still below it)."""
        for root in self._roots():
            with contextlib.suppress(OSError):
                (root / TOP).rmdir()


# ---- discovery ----


def _mounts(mountinfo: str) -> list[tuple[Path, str, set[str]]]:
    """(mount point, fs type, super options) of every cgroup mount in a mountinfo text."""
    out = []
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(rest) < 3 or not rest[0].startswith("cgroup"):
            continue
        point = Path(fields[4].replace("\\040", " "))
        out.append((point, rest[0], set(rest[2].split(","))))
    return out


def discover(mountinfo: str | None = None) -> tuple[Cgroups | None, str]:
    """The host's cgroups if this process can use them, else (None, why not). v2 when the
    unified hierarchy is the only one and has the controllers; else the v1 controllers."""
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text()
        except OSError as exc:
            return None, f"cannot read {MOUNTINFO}: {exc.strerror or exc}"
    mounts = _mounts(mountinfo)
    v1: dict[str, Path] = {}
    for point, fstype, opts in mounts:
        if fstype == "cgroup":
            for c in (*V1_CONTROLLERS, "freezer"):
                if c in opts:
                    v1.setdefault(c, point)
    missing_v1 = [c for c in V1_CONTROLLERS if c not in v1]
    if not missing_v1:
        return Cgroups(v1, 1), ""
    for point, fstype, _ in mounts:
        if fstype != "cgroup2":
            continue
        try:
            have = set((point / "cgroup.controllers").read_text().split())
        except OSError:
            continue
        if set(V2_CONTROLLERS) <= have:
            return Cgroups({"": point}, 2), ""
    if not mounts:
        return None, "no cgroup file system is mounted"
    return None, (
        f"cgroup v1 controllers missing ({', '.join(missing_v1)}) and no cgroup v2 hierarchy"
        f" with {', '.join(V2_CONTROLLERS)}"
    )


def usable(cgroups: Cgroups, hierarchy: str) -> str:
    """ "" when this process can make and remove cgroups under `hierarchy`, else why not."""
    probe = f"{hierarchy}/probe-{os.getpid()}"
    try:
        cgroups.make(probe)
    except CgroupError as exc:
        cgroups.remove_empty(hierarchy)
        return str(exc)
    finally:
        cgroups.remove(probe)
    return ""


def stale_pods(cgroups: Cgroups, hierarchy: str, keep: Iterable[str]) -> list[str]:
    """Pod cgroups of `hierarchy` whose uid is not in `keep` (a sweep removes them)."""
    keep_set = {f"pod{uid}" for uid in keep}
    found: set[str] = set()
    for d in cgroups.dirs(hierarchy):
        if d.is_dir():
            found.update(p.name for p in d.iterdir() if p.is_dir() and p.name.startswith("pod"))
    return sorted(f"{hierarchy}/{name}" for name in found - keep_set)


class NodeCgroups:
    """One kubelet's hierarchy (`hierarchy_name`): a cgroup per pod (its pids limit) and per
    container run (its CPU and memory limits). Blocking file I/O: call from a thread."""

    def __init__(self, cgroups: Cgroups, hierarchy: str, *, pod_pids_limit: int) -> None:
        self.cgroups = cgroups
        self.hierarchy = hierarchy
        self.pod_pids_limit = pod_pids_limit

    @property
    def isolation(self) -> str:
        return f"cgroup-v{self.cgroups.version}"

    def prepare(self, uid: str, container: str, resources: Resources) -> list[Path]:
        """A fresh cgroup for a new run of `container` (what an earlier run left is killed):
        the cgroup.procs files its process joins before it execs."""
        pod = pod_path(self.hierarchy, uid)
        rel = container_path(self.hierarchy, uid, container)
        if any(d.exists() for d in self.cgroups.dirs(rel)):
            self.cgroups.remove(rel, kill=True)
        self.cgroups.make(pod, parent_of_children=True)
        self.cgroups.set_pids_limit(pod, self.pod_pids_limit)
        self.cgroups.make(rel)
        self.cgroups.set_limits(rel, resources)
        return self.cgroups.procs_files(rel)

    def procs_files(self, uid: str, container: str) -> list[Path]:
        """Where a command exec'd in a running container joins it ([] when it has none)."""
        rel = container_path(self.hierarchy, uid, container)
        files = self.cgroups.procs_files(rel)
        return files if all(f.parent.is_dir() for f in files) else []

    def kill(self, uid: str, container: str) -> None:
        self.cgroups.kill(container_path(self.hierarchy, uid, container))

    def ended(self, uid: str, container: str) -> int:
        """A run's main process ended: kill what it left behind, remove its cgroup; how many
        OOM kills the run had."""
        rel = container_path(self.hierarchy, uid, container)
        ooms = self.cgroups.oom_kills(rel)
        self.cgroups.remove(rel, kill=True)
        return ooms

    def remove_pod(self, uid: str) -> None:
        self.cgroups.remove(pod_path(self.hierarchy, uid), kill=True)

    def sweep(self, keep: Iterable[str]) -> list[str]:
        """At start: kill and remove the cgroups of pods not in `keep` (left by an earlier
        kubelet whose pods are gone), and every empty one; the removed pod cgroups."""
        stale = stale_pods(self.cgroups, self.hierarchy, keep)
        for rel in stale:
            self.cgroups.remove(rel, kill=True)
        self.cgroups.remove_empty(self.hierarchy)
        return stale

    def close(self) -> None:
        """At stop: remove every empty cgroup (running containers keep theirs: the next
        kubelet adopts them), the hierarchy and the shared top when nothing is left."""
        self.cgroups.remove_empty(self.hierarchy)
        self.cgroups.remove_top_if_empty()

    def container_usage(self, uid: str, container: str) -> Usage | None:
        return self.cgroups.usage(container_path(self.hierarchy, uid, container))

    def pod_usage(self, uid: str) -> Usage | None:
        return self.cgroups.usage(pod_path(self.hierarchy, uid))

    def node_usage(self) -> Usage | None:
        return self.cgroups.usage(self.hierarchy)


def for_node(
    node: str, root_dir: str | Path, *, mode: str, pod_pids_limit: int
) -> tuple[NodeCgroups | None, str]:
    """The kubelet's cgroups per `mode` (auto: where usable; on: required, CgroupError when
    not; off: never) or (None, why not)."""
    if mode == "off":
        return None, "turned off (--cgroups=off)"
    found, why = discover()
    if found is not None and os.geteuid() != 0:
        found, why = None, "needs root"
    hierarchy = hierarchy_name(node, root_dir)
    if found is not None:
        why = usable(found, hierarchy)
        if why:
            found = None
    if found is None:
        if mode == "on":
            raise CgroupError(f"--cgroups=on: cgroups are not usable here: {why}")
        return None, why
    return NodeCgroups(found, hierarchy, pod_pids_limit=pod_pids_limit), ""


def sweep_nodes(nodes_dir: Path) -> None:
    """Remove the empty cgroups of every kubelet whose root dir is in `nodes_dir` (what
    `k8semu down` calls once it has stopped the kubelets and their pods)."""
    found, _ = discover()
    if found is None or os.geteuid() != 0 or not nodes_dir.is_dir():
        return
    for root in nodes_dir.iterdir():
        if root.is_dir():
            found.remove_empty(hierarchy_name(root.name, root))
    found.remove_top_if_empty()

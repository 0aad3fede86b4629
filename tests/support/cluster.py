"""A cluster as a user runs one: `k8semu up/status/down/...` as subprocesses, in a HOME of the
test's own, on a config whose every port is a free one; and the checks that no process of it
is left.

For the tests of the cluster verbs (tests/cluster, tests/multihost). The processes they start
are found again by pid and start time (state.json), never by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from k8semu import transport
from k8semu.bench._clusterrun import own_network, own_octet
from k8semu.cluster import certs
from k8semu.cluster.processes import free_loopback_ports
from k8semu.cluster.state import (
    ComponentRecord,
    is_same_process,
    process_start_time,
    read_state,
)

START_TIMEOUT_S = 90.0
DEFAULT_LAUNCHER = "restartBackoff: 200ms, stopGracePeriod: 5s"

T = TypeVar("T")


def user_env(tmp_path: Path) -> dict[str, str]:
    """A HOME and a CLI config of the test's own: the user's ~/.k8semu is never touched."""
    env = dict(os.environ)
    env["HOME"] = str(tmp_path / "home")
    env["K8SEMU_CONFIG"] = str(tmp_path / "home" / "k8semu-config")
    env.pop("XDG_STATE_HOME", None)
    return env


def k8semu(
    env: dict[str, str], *args: str | Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``k8semu ARGS...`` to its end, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "k8semu", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def write_config(
    path: Path,
    *,
    name: str,
    stores: int = 1,
    workers: bool = True,
    runtime: str = "process",
    addons: bool = True,
    launcher: str = DEFAULT_LAUNCHER,
    tls: bool = True,
) -> Path:
    """``stores`` store replicas, one API server, scheduler and controller manager, and (with
    ``workers``) one worker w1 (kubelet + proxy, ``runtime``) on 127.0.<octet>.1; every port a
    free one, and pod, Service and LoadBalancer ranges of its own (clusters of tests running at
    once must not hand out the same pod IP or ClusterIP). ``addons`` off: no DNS add-on.
    ``launcher``: the launcher section's fields. ``tls`` off: `security: {tls: false}` (TLS is
    the default)."""
    p = iter(free_loopback_ports(2 * stores + 6))
    octet = own_octet()
    network = ", ".join(f"{k}: '{v}'" for k, v in own_network(octet).items())
    members = "".join(
        f"    - {{name: s{i + 1}, clientURL: 'http://127.0.0.1:{next(p)}',"
        f" peerURL: 'http://127.0.0.1:{next(p)}'}}\n"
        for i in range(stores)
    )
    nodes = (
        f"nodes:\n  - {{name: w1, nodeIP: 127.0.{octet}.1, runtime: {runtime},"
        f" kubeletPort: {next(p)}, proxyPort: {next(p)}}}\n"
        if workers
        else "nodes: []\n"
    )
    addon_list = "" if addons else "addons: []\n"
    path.write_text(
        f"kind: ClusterConfig\nversion: v1alpha1\nname: {name}\n"
        f"store:\n  members:\n{members}"
        f"apiServer: {{instances: [{{port: {next(p)}, restPort: {next(p)}}}]}}\n"
        f"scheduler: {{instances: [{{port: {next(p)}}}]}}\n"
        f"controllerManager: {{instances: [{{port: {next(p)}}}]}}\n"
        f"network: {{{network}}}\n"
        f"{nodes}{addon_list}"
        f"launcher: {{readyTimeout: 60s, {launcher}}}\n"
        + ("" if tls else "security: {tls: false}\n")
    )
    return path


def api_tls(state_dir: Path) -> transport.ClientTLS | None:
    """The credentials a test's client of the cluster in ``state_dir`` uses (TLS is the
    default: its admin certificate; None when the cluster runs plain)."""
    return certs.PKIPaths(state_dir).api_client()


def up_detached(env: dict[str, str], config: Path, state_dir: Path) -> None:
    """``k8semu up --detach``, which must succeed."""
    up = k8semu(
        env, "up", "-f", config, "--state-dir", state_dir, "--detach", timeout=START_TIMEOUT_S
    )
    assert up.returncode == 0, up.stdout + up.stderr


def status(env: dict[str, str], state_dir: Path) -> dict[str, Any]:
    """``k8semu status -o json``."""
    run = k8semu(env, "status", "--state-dir", state_dir, "-o", "json")
    assert run.stdout, run.stderr
    out: dict[str, Any] = json.loads(run.stdout)
    return out


def by_name(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The status's components by name."""
    return {c["name"]: c for c in status["components"]}


def until(what: str, check: Callable[[], T | None], timeout: float = 45.0) -> T:
    """Poll ``check()`` until it returns something true, which it returns; fail naming
    ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.2)


def until_status(
    env: dict[str, str],
    state_dir: Path,
    what: str,
    check: Callable[[dict[str, dict[str, Any]]], bool],
    timeout: float = 45.0,
) -> dict[str, dict[str, Any]]:
    """Poll ``k8semu status`` until ``check`` holds for its components (by name): those."""

    def rows() -> dict[str, dict[str, Any]] | None:
        got = by_name(status(env, state_dir))
        return got if check(got) else None

    return until(what, rows, timeout)


def until_recorded(
    state_dir: Path, name: str, what: str, check: Callable[[ComponentRecord], bool]
) -> ComponentRecord:
    """Poll state.json until ``check`` holds for the component ``name``: its record."""

    def record() -> ComponentRecord | None:
        got = read_state(state_dir).component(name)
        return got if got is not None and check(got) else None

    return until(what, record, timeout=60.0)


def wait_gone(pids: dict[int, int], timeout: float = 15.0) -> list[int]:
    """The processes of ``pids`` (pid -> start time) still there after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        left = sorted(pid for pid, st in pids.items() if is_same_process(pid, st))
        if not left or time.monotonic() >= end:
            return left
        time.sleep(0.05)


def everything(state_dir: Path) -> dict[int, int]:
    """pid -> start time of every process state.json records (supervisor included)."""
    state = read_state(state_dir)
    out = {c.pid: c.start_time for c in state.components if c.pid}
    if state.supervisor_pid:
        out[state.supervisor_pid] = state.supervisor_start_time
    return out


def processes_under(directory: Path) -> dict[int, int]:
    """pid -> start time of every process whose working directory is inside ``directory``."""
    root = directory.resolve()
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        start = process_start_time(int(entry.name))
        if start is not None and (cwd == root or root in cwd.parents):
            out[int(entry.name)] = start
    return out


@contextlib.contextmanager
def port_taken(address: str, timeout: float = 10.0) -> Iterator[None]:
    """Listen on ``HOST:PORT`` (as soon as it is free) for the length of the block: a
    component that binds it exits at start."""
    host, _, port = address.rpartition(":")
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

        def bound() -> bool:
            try:
                squatter.bind((host, int(port)))
            except OSError:
                return False
            return True

        until(f"{address} free to take", bound, timeout=timeout)
        squatter.listen()
        yield


def stop_recorded(state_dirs: list[Path]) -> None:
    """SIGKILL what the state dirs record (the supervisor first: it would start again what
    is killed), whatever state the test left them in."""
    for state_dir in state_dirs:
        try:
            state = read_state(state_dir)
        except Exception:
            continue
        if state.supervisor_alive():
            os.kill(state.supervisor_pid, signal.SIGKILL)
            wait_gone({state.supervisor_pid: state.supervisor_start_time})
            state = read_state(state_dir)
        for c in state.components:
            if is_same_process(c.pid, c.start_time):
                os.kill(c.pid, signal.SIGKILL)

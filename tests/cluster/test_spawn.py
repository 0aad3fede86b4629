"""Starting and stopping a cluster's processes: `spawn` (own session, log with a header, the
chaos cgroup wrapper, death with the starter) on small real processes, and the order a whole
cluster stops in."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from k8semu.cluster.errors import ClusterError
from k8semu.cluster.plan import API, CONTROL, NODES, STORE
from k8semu.cluster.spawn import CGROUP_PARENT_ENV, component_env, spawn
from k8semu.cluster.state import ComponentRecord
from k8semu.cluster.stopping import stop_order


def test_spawn_starts_in_a_session_of_its_own_with_its_output_in_the_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "c1.log"
    proc = spawn(
        [sys.executable, "-c", "import os; print('sid', os.getsid(0))"],
        name="c1",
        log_path=log,
        env=component_env(os.environ),
        cwd=tmp_path,
    )
    assert proc.wait(timeout=30) == 0
    lines = log.read_text().splitlines()
    assert lines[0].startswith("=== ") and ": starting c1: " in lines[0]
    assert lines[1] == f"sid {proc.pid}"  # a session leader: its session id is its pid


def test_spawn_dies_with_its_starter_only_when_asked(tmp_path: Path) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("no setpriv here: nothing asks the kernel for PR_SET_PDEATHSIG")
    argv = [sys.executable, "-c", "pass"]
    for asked in (True, False):
        log = tmp_path / f"{asked}.log"
        proc = spawn(argv, name="c", log_path=log, env={}, cwd=tmp_path, die_with_parent=asked)
        proc.wait(timeout=30)
        assert ("--pdeathsig KILL" in log.read_text()) is asked


def test_spawn_joins_the_chaos_cgroup_only_when_the_environment_names_one(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "pass"]
    env = {CGROUP_PARENT_ENV: str(tmp_path / "cg"), "PATH": os.environ.get("PATH", "/bin")}
    proc = spawn(argv, name="c", log_path=tmp_path / "a.log", env=env, cwd=tmp_path, cgroup=False)
    proc.wait(timeout=30)
    assert "k8semu-cgroup" not in (tmp_path / "a.log").read_text()
    # A plain directory stands in for the cgroup: the wrapper runs, no kernel cgroup is made.
    proc = spawn(["true"], name="c", log_path=tmp_path / "b.log", env=env, cwd=tmp_path)
    proc.wait(timeout=30)
    assert f"k8semu-cgroup {tmp_path / 'cg'}/c true" in (tmp_path / "b.log").read_text()


def test_spawn_names_what_could_not_start(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match=r"^cannot start c1: /no/such/program: "):
        spawn(["/no/such/program"], name="c1", log_path=tmp_path / "c1.log", env={}, cwd=tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ClusterError, match=r"^cannot open the log of c2: "):
        spawn(["true"], name="c2", log_path=tmp_path / "file" / "c2.log", env={}, cwd=tmp_path)


def test_component_env_leaves_proxies_out_and_python_unbuffered() -> None:
    env = component_env({"HTTPS_PROXY": "x", "grpc_proxy": "y", "PATH": "/bin"})
    assert env == {"PATH": "/bin", "PYTHONUNBUFFERED": "1"}


def _c(name: str, stage: int) -> ComponentRecord:
    return ComponentRecord(name=name, kind=name.split("-")[0], host="h", stage=stage, command=[])


CLUSTER = [
    _c("store-s1", STORE), _c("store-s2", STORE), _c("store-s3", STORE),
    _c("apiserver-1", API), _c("scheduler-1", CONTROL), _c("controller-manager-1", CONTROL),
    _c("kubelet-n1", NODES), _c("proxy-n1", NODES),
]  # fmt: skip


def _names(order: list[tuple[int, list[ComponentRecord]]]) -> list[tuple[int, list[str]]]:
    return [(stage, [c.name for c in group]) for stage, group in order]


def test_a_cluster_stops_nodes_first_and_the_store_leader_after_its_followers() -> None:
    assert _names(list(stop_order(CLUSTER, lambda: "s2"))) == [
        (NODES, ["kubelet-n1", "proxy-n1"]),
        (CONTROL, ["scheduler-1", "controller-manager-1"]),
        (API, ["apiserver-1"]),
        (STORE, ["store-s1", "store-s3"]),
        (STORE, ["store-s2"]),
    ]


def test_without_a_known_leader_the_store_stops_at_once_and_empty_stages_still_come() -> None:
    asked: list[int] = []

    def leader() -> str | None:
        asked.append(1)
        return None

    assert _names(list(stop_order(CLUSTER[:3], leader))) == [
        (NODES, []), (CONTROL, []), (API, []), (STORE, ["store-s1", "store-s2", "store-s3"]),
    ]  # fmt: skip
    assert asked == [1]
    # One replica: nobody is asked who leads.
    assert _names(list(stop_order(CLUSTER[:1], leader)))[-1] == (STORE, ["store-s1"])
    assert asked == [1]

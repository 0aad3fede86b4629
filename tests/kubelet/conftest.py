"""Fixtures: `k8semu kubelet` subprocesses, on the `apiserver` of tests.support.fixtures, that
tests start, SIGKILL and restart by pid. Pods that kubelets start are process sessions: tests
that need to end them kill the process group they recorded, and then the kubelet's cgroups
(with whatever is still in them)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from k8semu.cluster.component import ComponentProcess
from k8semu.kubelet import cgroups as cg
from k8semu.kubelet.process import alive
from k8semu.kubelet.runtime import VolumeFile
from k8semu.kubelet.volumes import Mounts
from tests.support.apiserver import APIServerProcess
from tests.support.poll import Eventually


class KubeletProcess(ComponentProcess):
    """One `k8semu kubelet` process; output appended to `log_path` across restarts."""

    component = "kubelet"

    def __init__(
        self, apiserver: APIServerProcess, base: Path, *extra: str, name: str = ""
    ) -> None:
        self.apiserver = apiserver
        self.name = name or f"node-{uuid.uuid4().hex[:6]}"
        self.root = base / self.name
        self.extra = extra
        super().__init__(
            "kubelet",
            [
                "--server", apiserver.address,
                "--node-name", self.name,
                "--root-dir", str(self.root),
                "--pod-cidr", "127.244.77.0/24",
                "--pod-cidr-wait", "0",
                "--max-container-backoff", "4",
                "--log-level", "info",
                *extra,
            ],
            base / f"{self.name}.log",
        )  # fmt: skip


@pytest.fixture
def kubelets(
    apiserver: APIServerProcess, tmp_path: Path
) -> Iterator[Callable[..., KubeletProcess]]:
    """Start kubelets; at the end they stop, and every container process group they
    recorded in their state files is killed."""
    started: list[KubeletProcess] = []

    def start(*extra: str, name: str = "") -> KubeletProcess:
        k = KubeletProcess(apiserver, tmp_path, *extra, name=name).start()
        started.append(k)
        return k

    yield start
    for k in started:
        k.close()
        print(f"---- {k.name} ----\n{k.output()[-6000:]}")  # shown when the test failed
    for k in started:
        end_pods(k.name, k.root)


def end_pods(node: str, root: Path) -> None:
    """After a stopped kubelet of node `node` with root dir `root`: kill every container
    process group its state files name, then remove its cgroups (what is left in them is
    killed) and the shared top when empty; a test that fails still leaves none."""
    for state in root.glob("pods/*/*/state.json"):
        kill_group_from_state(state)
    remove_cgroups(node, root)


def node_cgroups(node: str, root: Path) -> tuple[cg.Cgroups, str] | None:
    """The host's cgroups and the kubelet's hierarchy in them, when this test can use them."""
    found, _ = cg.discover()
    if found is None or os.geteuid() != 0:
        return None
    return found, cg.hierarchy_name(node, root)


def remove_cgroups(node: str, root: Path) -> None:
    """Every cgroup the kubelet of `node` made (what is in them is killed), and the shared
    top when it is empty."""
    found = node_cgroups(node, root)
    if found is not None:
        groups, hierarchy = found
        groups.remove(hierarchy, kill=True)
        groups.remove_top_if_empty()


def kill_group_from_state(state: Path) -> None:
    """SIGKILL the process group a container state file names, if its leader is still the
    process the kubelet started (same start time: not a reused pid)."""
    try:
        data = json.loads(state.read_text())
        pid, pgid, ticks = int(data["pid"]), int(data["pgid"]), int(data["startTicks"])
    except (OSError, ValueError, KeyError):
        return
    if pgid > 1 and alive(pid, ticks):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def flat_mounts(mounts: Mounts) -> list[VolumeFile]:
    """A container's mounts as one list: each projection as its directory ("path/") and its
    files at their paths under it."""
    out = list(mounts.files)
    for proj in mounts.projections:
        out.append(VolumeFile(proj.path + "/", b""))
        out += [VolumeFile(f"{proj.path}/{f.path}", f.data, f.mode) for f in proj.files]
    return out


# A check may raise while what it reads is not there yet (NotFound): that counts as not yet.
eventually = Eventually(retry_on=(Exception,))

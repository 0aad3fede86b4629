"""`etcdctl member add|list|update|remove` against `k8semu store` and against a real etcd 3.4,
side by side: the same session on both, the outputs compared after masking ids and ports.

The session adds a member, starts it with --initial-cluster-state existing as etcdctl's own
output says to, updates and removes it, and asks for the refusals etcd words (a clashing peer
URL, an unknown member id).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from k8semu.cluster.processes import EtcdCluster, K8semuStoreCluster, ProcessCluster
from tests.support.etcdctl import Etcdctl

pytestmark = pytest.mark.slow

READY_S = 60.0
WAIT_S = 30.0

_ID = re.compile(r"\b[0-9a-f]{6,16}\b")
_ADDR = re.compile(r"127\.0\.0\.1:\d+")


def _mask(text: str) -> list[str]:
    """Ids and ports masked, client-library log lines left out; the members in
    ETCD_INITIAL_CLUSTER sorted (etcd lists them in id order, and the ids differ)."""
    out = []
    for line in text.splitlines():
        if line.startswith('{"level":'):
            continue  # clientv3's retry log: timestamps and retry counts vary
        line = _ADDR.sub("ADDR", _ID.sub("ID", line))
        if line.startswith("ETCD_INITIAL_CLUSTER="):
            value = line.split("=", 1)[1].strip('"')
            line = 'ETCD_INITIAL_CLUSTER="' + ",".join(sorted(value.split(","))) + '"'
        out.append(re.sub(r" +", " ", line))
    return out


def _members(ctl: Etcdctl) -> list[dict[str, object]]:
    step = ctl.run("member", "list", "-w", "json")
    assert step.returncode == 0, step.stderr
    members = json.loads(step.stdout)["members"]
    assert isinstance(members, list)
    return members


def _until_started(ctl: Etcdctl, name: str) -> dict[str, object]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for m in _members(ctl):
            if m.get("name") == name and m.get("clientURLs"):
                return m
        time.sleep(0.2)
    raise AssertionError(f"{name} did not start: {_members(ctl)}")


def _until_healthy(ctl: Etcdctl, taken: str) -> None:
    """Until adds are no longer refused as "unhealthy cluster": etcd wants every peer
    connected for 5 s first (so does k8semu). A clashing add never writes anything."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        step = ctl.run("member", "add", "s9", f"--peer-urls={taken}")
        assert step.returncode != 0, step.stdout
        if "unhealthy cluster" not in step.stderr:
            return
        time.sleep(0.2)
    raise AssertionError("the cluster stayed unhealthy")


def _session(cluster: ProcessCluster) -> list[tuple[str, int | None, list[str]]]:
    """The session on one cluster; (what, exit code, masked output) per step."""
    ctl = Etcdctl(cluster.endpoints)
    steps: list[tuple[str, int | None, list[str]]] = []

    def run(what: str, *args: str) -> str:
        step = ctl.run(*args)
        out = _mask(step.stdout + step.stderr)
        # Rows in member id order, and the ids differ between the two clusters.
        steps.append((what, step.returncode, sorted(out) if what == "list" else out))
        return step.stdout

    listed = _members(ctl)
    assert sorted(str(m["name"]) for m in listed) == ["s1", "s2", "s3"]
    taken = cluster.member("s2").peer_url
    _until_healthy(ctl, taken)
    run("add clashing", "member", "add", "s9", f"--peer-urls={taken}")
    run("remove unknown", "member", "remove", "4d2")
    run("update unknown", "member", "update", "4d2", "--peer-urls=http://127.0.0.1:1")
    new = cluster.add_member("s4")
    out = run("add", "member", "add", "s4", f"--peer-urls={new.peer_url}")
    assert 'ETCD_INITIAL_CLUSTER_STATE="existing"' in out, out
    unstarted = [m for m in _members(ctl) if not m.get("name")]
    assert len(unstarted) == 1 and unstarted[0]["peerURLs"] == [new.peer_url]
    cluster.start_member("s4")
    s4 = _until_started(ctl, "s4")
    s4_id = f"{int(str(s4['ID'])):x}"
    run("list", "member", "list", "-w", "simple")
    run("update", "member", "update", s4_id, f"--peer-urls={new.peer_url}")
    run("remove", "member", "remove", s4_id)
    # The removed member stops by itself, as etcd's does.
    proc = cluster.member("s4").proc
    assert proc is not None
    proc.wait(timeout=WAIT_S)
    cluster.forget_member("s4")
    assert sorted(str(m["name"]) for m in _members(ctl)) == ["s1", "s2", "s3"]
    _learner_session(cluster, ctl, run)
    return steps


def _learner_session(cluster: ProcessCluster, ctl: Etcdctl, run: Callable[..., str]) -> None:
    """A learner: added, refused a second one, started, promoted once in sync, removed."""
    learner = cluster.add_member("s5")
    _until_healthy(ctl, cluster.member("s2").peer_url)
    run("add learner", "member", "add", "s5", "--learner", f"--peer-urls={learner.peer_url}")
    run("second learner", "member", "add", "s6", "--learner", "--peer-urls=http://127.0.0.1:9")
    s3_id = next(f"{int(str(m['ID'])):x}" for m in _members(ctl) if m.get("name") == "s3")
    run("promote a voter", "member", "promote", s3_id)
    cluster.start_member("s5")
    s5 = _until_started(ctl, "s5")
    assert s5.get("isLearner") is True, s5
    s5_id = f"{int(str(s5['ID'])):x}"
    deadline = time.monotonic() + WAIT_S
    while "in sync with leader" in ctl.run("member", "promote", s5_id).stderr:
        assert time.monotonic() < deadline, "the learner never got in sync"
        time.sleep(0.2)
    assert not any(m.get("isLearner") for m in _members(ctl))
    run("remove promoted", "member", "remove", s5_id)
    proc = cluster.member("s5").proc
    assert proc is not None
    proc.wait(timeout=WAIT_S)
    cluster.forget_member("s5")


def test_member_commands_match_etcd(tmp_path: Path) -> None:
    if not EtcdCluster.available() or not Etcdctl.available():
        pytest.skip("etcd 3.4 / etcdctl are not installed")
    k8semu = K8semuStoreCluster(tmp_path / "k8semu", 3)
    etcd = EtcdCluster(tmp_path / "etcd", 3)
    with k8semu, etcd:
        k8semu.start()
        etcd.start()
        k8semu.wait_ready(timeout=READY_S)
        etcd.wait_ready(timeout=READY_S)
        with ThreadPoolExecutor(max_workers=2) as pool:
            ours_f = pool.submit(_session, k8semu)
            theirs_f = pool.submit(_session, etcd)
            ours, theirs = ours_f.result(), theirs_f.result()
    for (what, rc, out), (_, want_rc, want_out) in zip(ours, theirs, strict=True):
        assert (rc, out) == (want_rc, want_out), (
            f"{what}: k8semu {rc} {out} / etcd {want_rc} {want_out}"
        )

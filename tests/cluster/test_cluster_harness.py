"""The process harness against a real etcd: leader found, leader killed by pid, nothing left."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from k8semu.cluster.processes import (
    EtcdCluster,
    K8semuStoreCluster,
    MemberExitedError,
)

needs_etcd = pytest.mark.skipif(
    not EtcdCluster.available(),
    reason="real etcd is not installed at /usr/bin/etcd (Debian package etcd-server)",
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
@needs_etcd
def test_kill_leader_elects_new_one_and_close_ends_every_process(tmp_path: Path) -> None:
    seen: set[int] = set()
    with EtcdCluster(tmp_path, 3, heartbeat_ms=50, election_ms=500) as cluster:
        cluster.start()
        seen |= set(cluster.pids.values())
        assert len(seen) == 3
        old = cluster.wait_ready(timeout=60)
        old_pid = cluster.members[old].pid
        assert old_pid is not None

        cluster.kill(old)
        assert not _alive(old_pid)
        assert cluster.members[old].pid is None
        new = cluster.leader(timeout=60)
        assert new != old

        # With the old leader back, pausing the current one (SIGSTOP: sockets open, no answers)
        # moves leadership again; after a resume all three agree on one leader.
        cluster.restart(old)
        seen |= set(cluster.pids.values())
        current = cluster.wait_ready(timeout=60)
        cluster.pause(current)
        assert cluster.leader(timeout=60) != current
        cluster.resume(current)
        assert cluster.wait_ready(timeout=60) in cluster.members
        assert len(cluster.pids) == 3
    assert cluster.pids == {}
    assert [pid for pid in seen if _alive(pid)] == []


@pytest.mark.slow
@needs_etcd
def test_member_that_exits_early_is_reported_with_its_log(tmp_path: Path) -> None:
    with EtcdCluster(tmp_path, 1, extra_args=["--no-such-flag"]) as cluster:
        cluster.start()
        with pytest.raises(MemberExitedError) as info:
            cluster.wait_ready(timeout=60)
    assert info.value.name == "s1"
    assert info.value.returncode != 0
    message = str(info.value)
    assert "s1" in message
    assert "exited with code" in message
    assert "no-such-flag" in message  # etcd's own complaint, from the log tail


def test_k8semu_store_command_uses_etcd_flags(tmp_path: Path) -> None:
    cluster = K8semuStoreCluster(tmp_path, 3, heartbeat_ms=40, election_ms=400)
    s2 = cluster.members["s2"]
    argv = cluster.command(s2)
    assert argv[:4] == [sys.executable, "-m", "k8semu", "store"]
    flags = dict(zip(argv[4::2], argv[5::2], strict=True))
    assert flags["--name"] == "s2"
    assert flags["--data-dir"] == str(tmp_path.resolve() / "s2")
    assert flags["--listen-client-urls"] == flags["--advertise-client-urls"] == s2.client_url
    assert flags["--listen-peer-urls"] == flags["--initial-advertise-peer-urls"] == s2.peer_url
    assert flags["--initial-cluster"] == ",".join(
        f"{m.name}={m.peer_url}" for m in cluster.members.values()
    )
    assert flags["--initial-cluster-token"] == cluster.token
    assert (flags["--heartbeat-interval"], flags["--election-timeout"]) == ("40", "400")
    assert all(url.startswith("http://127.0.0.1:") for url in (s2.client_url, s2.peer_url))
    ports = {m.endpoint for m in cluster.members.values()} | {
        m.peer_url for m in cluster.members.values()
    }
    assert len(ports) == 6
    assert cluster.endpoints == [m.endpoint for m in cluster.members.values()]

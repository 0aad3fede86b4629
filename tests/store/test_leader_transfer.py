"""Leadership transfer on real replicas: etcd's Maintenance.MoveLeader (through etcdctl, next to a
real etcd) and the hand-over a leader does on SIGTERM before it stops."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import subprocess
import time
from pathlib import Path

import grpc
import pytest

from k8semu import transport
from k8semu.cluster.processes import EtcdCluster, K8semuStoreCluster, ProcessCluster
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc

DEADLINE = 60.0  # a wait on real processes beside busy test workers (tests/support/poll.py)


def _ids(cluster: ProcessCluster) -> dict[str, int]:
    cluster.statuses()  # learns member ids
    return {name: m.member_id for name, m in cluster.members.items()}


def _etcdctl(cluster: ProcessCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ETCDCTL_API": "3"}
    endpoints = ",".join(cluster.endpoints)
    return subprocess.run(
        ["etcdctl", f"--endpoints={endpoints}", "--command-timeout=10s", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _move_leader_transcript(cluster: ProcessCluster) -> list[str]:
    """etcdctl move-leader to a follower, then to the same member (now the leader itself),
    then to a non-member; member ids normalized to LEADER (the first) and TARGET."""
    leader = cluster.wait_ready(timeout=60)
    ids = _ids(cluster)
    target = next(n for n in cluster.members if n != leader)
    roles = {f"{ids[leader]:x}": "LEADER", f"{ids[target]:x}": "TARGET"}
    out: list[str] = []
    for arg in (f"{ids[target]:x}", f"{ids[target]:x}", "1234"):
        res = _etcdctl(cluster, "move-leader", arg)
        # etcdctl's own JSON log lines (retry warnings) carry timestamps and ports: dropped.
        lines = (res.stdout + res.stderr).strip().splitlines()
        text = " | ".join(line for line in lines if not line.startswith("{"))
        text = re.sub(r"\b[0-9a-f]{5,16}\b", lambda m: roles.get(m.group(0), "?"), text)
        out.append(f"rc={res.returncode} {text}")
        assert cluster.leader(timeout=DEADLINE) == target
    return out


@pytest.mark.skipif(not os.access("/usr/bin/etcdctl", os.X_OK), reason="etcdctl not installed")
def test_etcdctl_move_leader_same_as_etcd(tmp_path: Path) -> None:
    with K8semuStoreCluster(tmp_path / "k8semu", 3) as ours:
        ours.start()
        got = _move_leader_transcript(ours)
    assert got[0] == "rc=0 Leadership transferred from LEADER to TARGET", got
    assert got[2].startswith("rc=1") and "bad leader transferee" in got[2], got
    if not EtcdCluster.available():
        return
    with EtcdCluster(tmp_path / "etcd", 3) as etcd:
        etcd.start()
        want = _move_leader_transcript(etcd)
    assert got == want


async def test_move_leader_errors(tmp_path: Path) -> None:
    with K8semuStoreCluster(tmp_path / "c", 3) as cluster:
        cluster.start()
        leader = cluster.wait_ready(timeout=60)
        ids = _ids(cluster)
        follower = next(n for n in cluster.members if n != leader)
        async with transport.channel(cluster.members[follower].endpoint) as ch:
            stub = rpc_pb2_grpc.MaintenanceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=ids[follower]))
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert err.value.details() == "etcdserver: not leader"
        async with transport.channel(cluster.members[leader].endpoint) as ch:
            stub = rpc_pb2_grpc.MaintenanceStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=42))
            assert err.value.details() == "etcdserver: bad leader transferee"
            resp = await stub.MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=ids[follower]))
            assert resp.header.member_id == ids[leader]
        assert cluster.leader(timeout=DEADLINE) == follower


async def test_sigterm_of_the_leader_hands_over_without_failed_writes(tmp_path: Path) -> None:
    """Writers spread over every endpoint, each write retried once on the next endpoint:
    SIGTERM of the leader costs no write, and the leader is handed over before it exits."""
    # A 5 s election timeout: the one new term is the hand-over's, not an election after
    # heartbeats 50 ms apart missed the default 500 ms on a busy host (nor one the writes
    # could ride out: "no leader" is refused below).
    with K8semuStoreCluster(tmp_path / "c", 3, election_ms=5000) as cluster:
        cluster.start()
        leader = cluster.wait_ready(timeout=60)
        term = cluster.statuses()[leader].raftTerm  # type: ignore[attr-defined]
        endpoints = list(cluster.endpoints)
        channels = [transport.channel(e) for e in endpoints]
        stubs = [rpc_pb2_grpc.KVStub(ch) for ch in channels]
        failures: list[str] = []
        retried: list[str] = []
        done = asyncio.Event()
        count = [0]  # writes acknowledged

        async def writer(w: int) -> None:
            for n in itertools.count():
                if done.is_set():
                    return
                key = f"w{w}/{n}".encode()
                first = (w + n) % len(stubs)
                for attempt in range(2):
                    stub = stubs[(first + attempt) % len(stubs)]
                    try:
                        await stub.Put(rpc_pb2.PutRequest(key=key, value=b"v"), timeout=5)
                        count[0] += 1
                        break
                    except grpc.aio.AioRpcError as exc:
                        text = f"{exc.code().name}: {exc.details()}"
                        (retried if attempt == 0 else failures).append(text)

        async def written(at_least: int) -> int:
            """Waits for the writers' count to reach `at_least` (no rate is asserted: a busy
            host writes slowly); the count then."""
            end = time.monotonic() + DEADLINE
            while (n := count[0]) < at_least:
                assert time.monotonic() < end, f"{n} writes, not {at_least}, in {DEADLINE} s"
                await asyncio.sleep(0.05)
            return n

        writers = [asyncio.create_task(writer(w)) for w in range(6)]
        try:
            before = await written(10)  # writes flowing
            await asyncio.to_thread(cluster.stop, leader, 10.0)
            # The survivors agree on a leader at once: no election timeout to wait for.
            statuses = cluster.statuses()
            new_leader = cluster.current_leader()
            after = await written(before + 20)  # and they go on under the new leader
        finally:
            done.set()
            await asyncio.gather(*writers)
            for ch in channels:
                await ch.close()
        assert failures == [], f"writes failed after one retry: {failures} (first try: {retried})"
        assert after > before + 10
        assert new_leader is not None and new_leader != leader, statuses
        new_term = cluster.statuses()[new_leader].raftTerm  # type: ignore[attr-defined]
        assert new_term == term + 1
        assert "leadership transferred before stop" in cluster.members[leader].log_tail(400)
        assert not any("no leader" in f for f in retried), retried


def test_sigterm_of_a_lone_leader_stops_promptly(tmp_path: Path) -> None:
    """With no follower to hand over to, a graceful stop does not wait."""
    with K8semuStoreCluster(tmp_path / "c", 1) as cluster:
        cluster.start()
        leader = cluster.wait_ready(timeout=60)
        started = time.monotonic()
        cluster.stop(leader, 20.0)
        assert not cluster.members[leader].running
        assert "leadership transfer" not in cluster.members[leader].log_tail(400)
        assert time.monotonic() - started < 20

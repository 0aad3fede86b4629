"""Partitions on one host (k8semu.chaos.netfilter), with real processes and real kernel rules:
a store leader cut off from its followers steps down while the majority elects a new leader in
a higher term, the isolated replica serves no linearizable read (serializable reads still
answer), and after the heal it follows the new leader; a one-way cut; an API server cut off
from the store. Every rule and cgroup is removed by the fixture, also when a test fails, and
checked gone. Skipped with the reason when the machine cannot make partitions (not root, no
nft, no cgroup v2)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from k8semu import transport
from k8semu.bench._clusterrun import BenchCluster, ClusterLayout
from k8semu.chaos import netfilter
from k8semu.chaos.netfilter import Partitions
from k8semu.client import Client, ClientError, Timeouts
from k8semu.cluster.processes import CGROUP_PARENT_ENV, K8semuStoreCluster, Member, in_own_cgroup
from k8semu.pb.api.v1 import core_pb2
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc
from tests.support.poll import Eventually

pytestmark = pytest.mark.slow

WHY_NOT = netfilter.unsupported_reason()
needs_partitions = pytest.mark.skipif(WHY_NOT is not None, reason=f"partitions: {WHY_NOT}")
eventually = Eventually(interval=0.1)
KEY = b"/partition/k"


def _nothing_left(parts: Partitions) -> None:
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert parts.table not in tables, tables
    assert not parts.cgroup_parent.exists(), list(parts.cgroup_parent.iterdir())
    # The shared k8semu/ cgroup goes too, unless another run (another test process) uses it.
    top = parts.cgroup_parent.parent
    assert not top.exists() or any(top.iterdir()), f"{top} left behind, empty"


@pytest.fixture
def parts() -> Iterator[Partitions]:
    p = Partitions([])
    try:
        p.open()
        yield p
    finally:
        p.close()
        _nothing_left(p)


class _CgroupStore(K8semuStoreCluster):
    """Store replicas each started in its own cgroup below the run's parent."""

    def __init__(self, *args: Any, cgroup_parent: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cgroup_parent = cgroup_parent

    def environment(self, member: Member) -> dict[str, str]:
        env = super().environment(member)
        env[CGROUP_PARENT_ENV] = str(self.cgroup_parent)
        return env


@pytest.fixture
def store(parts: Partitions, tmp_path: Path) -> Iterator[_CgroupStore]:
    cluster = _CgroupStore(tmp_path / "store", 3, cgroup_parent=parts.cgroup_parent)
    try:
        cluster.start()
        parts.add_components(cluster.members)
        cluster.wait_ready(timeout=60)
        yield cluster
    finally:
        cluster.close()


async def _status(endpoint: str) -> rpc_pb2.StatusResponse | None:
    try:
        async with transport.channel(endpoint) as ch:
            resp: rpc_pb2.StatusResponse = await rpc_pb2_grpc.MaintenanceStub(ch).Status(
                rpc_pb2.StatusRequest(), timeout=1.0
            )
            return resp
    except grpc.RpcError:
        return None


async def _range(endpoint: str, *, serializable: bool, timeout: float) -> bytes:
    async with transport.channel(endpoint) as ch:
        resp = await rpc_pb2_grpc.KVStub(ch).Range(
            rpc_pb2.RangeRequest(key=KEY, serializable=serializable), timeout=timeout
        )
        return bytes(resp.kvs[0].value) if resp.kvs else b""


async def _put(endpoint: str, value: bytes) -> None:
    async with transport.channel(endpoint) as ch:
        await rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=KEY, value=value), timeout=5.0)


async def _leader_of(store: _CgroupStore, names: list[str]) -> tuple[str, int] | None:
    """The member among `names` that leads with the votes of all of `names`, and its term."""
    statuses = {n: await _status(store.member(n).endpoint) for n in names}
    ids = {n: s.header.member_id for n, s in statuses.items() if s is not None}
    for n, s in statuses.items():
        if (
            s is not None
            and s.leader == ids.get(n)
            and all(o is not None and o.leader == s.leader for o in statuses.values())
        ):
            return n, s.raftTerm
    return None


async def _isolate_leader_and_heal(store: _CgroupStore, parts: Partitions, way: str) -> None:
    names = list(store.members)
    found = await eventually(lambda: _leader_of(store, names), what="a leader")
    old, term0 = found
    others = [n for n in names if n != old]
    old_ep = store.member(old).endpoint
    await _put(old_ep, b"before")
    old_id = (await _status(old_ep)).header.member_id  # type: ignore[union-attr]

    cuts = parts.partition([old], others, way)
    try:
        new, term1 = await eventually(
            lambda: _leader_of(store, others), what=f"a new leader among {others}"
        )
        assert new != old and term1 > term0

        async def stepped_down() -> bool:
            s = await _status(old_ep)
            return s is not None and s.leader != old_id

        # Check-quorum: a leader that no longer hears a majority stops acting as one.
        await eventually(stepped_down, what=f"{old} steps down")
        if way == "both":
            # The minority cannot confirm it is current: no linearizable read...
            with pytest.raises(grpc.RpcError):
                await _range(old_ep, serializable=False, timeout=2.0)
            # ...but its local copy still answers serializable reads.
            assert await _range(old_ep, serializable=True, timeout=2.0) == b"before"
        await _put(store.member(new).endpoint, b"during")
    finally:
        for cut in cuts:
            parts.heal(cut)
    assert parts.drop_rules() == 0

    async def follows() -> bool:
        s = await _status(old_ep)
        return s is not None and s.leader not in (0, old_id) and s.raftTerm >= term1

    await eventually(follows, what=f"{old} rejoins as a follower")
    # Caught up: a linearizable read on the old leader sees the write made without it.
    got = await eventually(
        lambda: _range(old_ep, serializable=False, timeout=2.0),
        what="a linearizable read on the healed replica",
    )
    assert got == b"during"


@needs_partitions
async def test_isolated_leader_steps_down_majority_elects_minority_refuses_reads(
    store: _CgroupStore, parts: Partitions
) -> None:
    await _isolate_leader_and_heal(store, parts, "both")


@needs_partitions
async def test_one_way_cut_of_the_leader_still_moves_leadership(
    store: _CgroupStore, parts: Partitions
) -> None:
    # What the leader sends is lost; it still hears its followers. Their heartbeats stop
    # arriving, so they elect another leader, and the old one, hearing no acknowledgements,
    # steps down.
    await _isolate_leader_and_heal(store, parts, "out")


@needs_partitions
async def test_cut_is_precise_other_components_still_talk(
    store: _CgroupStore, parts: Partitions
) -> None:
    # s1 and s2 cut from each other only: both still reach s3, and this test's client (in no
    # cgroup of the run) reaches all three, so a quorum keeps naming one leader and writes and
    # linearizable reads through s3 still work.
    cuts = parts.partition(["s1"], ["s2"], "both")
    try:
        ep = store.member("s3").endpoint
        await eventually(lambda: _status(store.member("s1").endpoint), what="s1 answers")
        await eventually(lambda: _status(store.member("s2").endpoint), what="s2 answers")
        await _put(ep, b"through-s3")
        assert await _range(ep, serializable=False, timeout=5.0) == b"through-s3"
        assert store.leader(timeout=20)
    finally:
        for cut in cuts:
            parts.heal(cut)


class _CgroupBenchCluster(BenchCluster):
    def __init__(self, *args: Any, cgroup_parent: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cgroup_parent = cgroup_parent

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        env[CGROUP_PARENT_ENV] = str(self.cgroup_parent)
        return env


@needs_partitions
async def test_api_server_cut_off_from_the_store_then_healed(
    parts: Partitions, tmp_path: Path
) -> None:
    layout = ClusterLayout(
        name="partition", real_nodes=1, runtime="simulated", proxies=False, ready_timeout_s=120
    )
    cluster = _CgroupBenchCluster(
        layout, workdir=tmp_path, cgroup_parent=parts.cgroup_parent, say=lambda _: None
    )
    with cluster:
        state = cluster.start()
        parts.add_components(c.name for c in state.components)
        apiserver = next(c.name for c in state.components if c.kind == "apiserver")
        stores = [c.name for c in state.components if c.kind == "store"]
        # Every component joined its own cgroup before its first socket.
        for c in state.components:
            procs = (parts.cgroup_parent / c.name / "cgroup.procs").read_text().split()
            assert str(c.pid) in procs, (c.name, procs)
        async with Client(cluster.api_servers, timeouts=Timeouts(call=3.0)) as client:

            def configmap(name: str) -> core_pb2.ConfigMap:
                cm = core_pb2.ConfigMap()
                cm.metadata.name, cm.metadata.namespace = name, "default"
                return cm

            await client.create(configmap("before"))
            cuts = parts.partition([apiserver], stores, "both")
            try:
                with pytest.raises(ClientError):
                    await client.create(configmap("during"))
            finally:
                for cut in cuts:
                    parts.heal(cut)
            assert parts.drop_rules() == 0
            created = await Eventually(interval=0.2, retry_on=(ClientError,))(
                lambda: client.create(configmap("after")), what="a write once healed"
            )
            assert created.metadata.name == "after"


def test_components_join_their_cgroup_only_when_asked(tmp_path: Path) -> None:
    argv = ["/bin/echo", "hi"]
    assert in_own_cgroup(argv, "store-s1", {}) == argv
    wrapped = in_own_cgroup(argv, "store-s1", {CGROUP_PARENT_ENV: str(tmp_path)})
    assert wrapped[-2:] == argv and str(tmp_path / "store-s1") in wrapped
    # The step keeps the pid (exec) and writes it where the cgroup wants it; a plain directory
    # stands in for the cgroup here, so this part runs without root.
    done = subprocess.run(
        [*wrapped[:-2], "/bin/sh", "-c", "echo $$"], capture_output=True, text=True, check=True
    )
    assert (tmp_path / "store-s1" / "cgroup.procs").read_text().strip() == done.stdout.strip()

"""`k8semu store replace NAME` on a cluster run by `k8semu up --detach`: the data dir of a
store replica is removed while a writer writes; the command replaces the member (new id, same
addresses), the supervisor starts it empty, it catches up, and no acknowledged write is lost."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import grpc
import pytest

from k8semu import transport
from k8semu.cluster import certs
from k8semu.cluster.state import read_state
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc
from tests.support import cluster as harness

pytestmark = pytest.mark.slow


def _channel(state_dir: Path, endpoint: str) -> grpc.Channel:
    """To a store replica of the cluster in `state_dir`: TLS (the default) with the
    cluster's health-check client certificate."""
    tls = certs.PKIPaths(state_dir).store_tls()
    return grpc.secure_channel(endpoint, transport.channel_credentials(tls))


def _members(state_dir: Path, endpoint: str) -> dict[str, int]:
    with _channel(state_dir, endpoint) as ch:
        listed = rpc_pb2_grpc.ClusterStub(ch).MemberList(rpc_pb2.MemberListRequest(), timeout=5)
    return {m.name: m.ID for m in listed.members}


def test_replace_a_replica_whose_data_dir_was_removed(tmp_path: Path) -> None:
    env = harness.user_env(tmp_path)
    config = harness.write_config(
        tmp_path / "c.yaml", name="repl", stores=3, workers=False, addons=False
    )
    state_dir = tmp_path / "state"
    try:
        harness.up_detached(env, config, state_dir)
        _replace_under_a_writer(env, state_dir)
    finally:
        harness.stop_recorded([state_dir])


def _replace_under_a_writer(env: dict[str, str], state_dir: Path) -> None:
    state = read_state(state_dir)
    endpoints = dict(state.store_members)
    before = _members(state_dir, endpoints["s1"])

    acked: dict[bytes, bytes] = {}
    stop = threading.Event()

    def writer() -> None:
        targets = [endpoints["s1"], endpoints["s3"]]
        n = 0
        while not stop.is_set():
            key, value = f"r{n % 50}".encode(), f"v{n}".encode()
            with _channel(state_dir, targets[n % 2]) as ch:
                try:
                    rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=key, value=value), timeout=5)
                except grpc.RpcError:
                    n += 1
                    continue
            acked[key] = value
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        s2 = state.component("store-s2")
        assert s2 is not None
        shutil.rmtree(s2.data_dir)
        run = harness.k8semu(env, "store", "replace", "s2", "--state-dir", state_dir, timeout=150)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "replaced store member s2" in run.stdout
    finally:
        stop.set()
        thread.join()

    # Caught up, it publishes its name through the leader (shown unstarted, unnamed, until).
    def published() -> dict[str, int] | None:
        listed = _members(state_dir, endpoints["s1"])
        return listed if sorted(listed) == ["s1", "s2", "s3"] else None

    after = harness.until("s2 published its name", published)
    assert after["s2"] != before["s2"] and after["s1"] == before["s1"]
    rows = harness.by_name(harness.status(env, state_dir))
    assert rows["store-s2"]["alive"] and rows["store-s2"]["health"] == "SERVING", rows
    assert acked, "the writer wrote nothing"
    with _channel(state_dir, endpoints["s2"]) as ch:
        got = rpc_pb2_grpc.KVStub(ch).Range(
            rpc_pb2.RangeRequest(key=b"r", range_end=b"s"), timeout=10
        )
    assert {kv.key: kv.value for kv in got.kvs} == acked
    # Bad input is refused, naming it; nothing changes.
    unknown = harness.k8semu(env, "store", "replace", "s9", "--state-dir", state_dir)
    assert unknown.returncode == 1 and "no store replica 's9'" in unknown.stderr
    healthy = harness.k8semu(env, "store", "replace", "s1", "--state-dir", state_dir)
    assert healthy.returncode == 1 and "runs with its data" in healthy.stderr
    down = harness.k8semu(env, "down", "--state-dir", state_dir)
    assert down.returncode == 0, down.stdout + down.stderr

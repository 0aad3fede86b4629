"""`k8semu store scale --replicas N` and `k8semu store remove NAME` on a cluster run by
`k8semu up --detach`: 3 -> 5 -> 3 online under the register workload of the chaos tests,
whose history (with a final read) must be linearizable; the state, the status, the identity
and the config follow; bad requests are refused naming what is wrong, changing nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from k8semu.chaos.linearizability import HistoryRecorder, check
from k8semu.chaos.workload import Tally, Workload, read_all, run_workload
from k8semu.cluster.probes import Probes, agreed_leader
from k8semu.cluster.state import read_state
from k8semu.cluster.supervisor import retire_request_path
from tests.support import cluster as harness

pytestmark = pytest.mark.slow


def _store_rows(env: dict[str, str], state_dir: Path) -> dict[str, bool]:
    rows = harness.by_name(harness.status(env, state_dir))
    return {n: r["alive"] for n, r in rows.items() if n.startswith("store-")}


def _alive_stores(state_dir: Path) -> list[str]:
    return [c.name for c in read_state(state_dir).components if c.kind == "store" and c.alive()]


@pytest.mark.parametrize(
    ("replicas", "text"),
    [
        ("4", "--replicas 4: an even number of members tolerates no more failures than 3"),
        ("0", "--replicas 0: a store needs at least 1 member"),
        ("9", "--replicas 9: at most 7"),
    ],
)
def test_a_size_etcd_advises_against_is_refused_before_anything(
    tmp_path: Path, replicas: str, text: str
) -> None:
    env = harness.user_env(tmp_path)
    run = harness.k8semu(env, "store", "scale", "--replicas", replicas, "--state-dir", tmp_path)
    assert run.returncode == 2 and text in run.stderr, run.stderr
    assert not list(tmp_path.iterdir()) or [p.name for p in tmp_path.iterdir()] == ["home"]


async def test_scale_the_store_3_to_5_to_3_under_a_checked_workload(tmp_path: Path) -> None:
    env = harness.user_env(tmp_path)
    config = harness.write_config(
        tmp_path / "c.yaml", name="grow", stores=3, workers=False, addons=False, tls=False
    )  # the checked workload speaks plain text to the store (a TLS store: the next test)
    state_dir = tmp_path / "state"
    try:
        await asyncio.to_thread(harness.up_detached, env, config, state_dir)
        endpoints = list(read_state(state_dir).store_endpoints)
        recorder = HistoryRecorder()
        stop = asyncio.Event()
        workload = Workload(clients=4, keys=6, max_seconds=120.0, max_ops=200_000)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(run_workload(endpoints, recorder, workload, seed=3, stop=stop))
            try:
                await asyncio.to_thread(_grow_refuse_shrink, env, state_dir)
            finally:
                stop.set()
        await read_all(endpoints, recorder, workload.key_names(), client=workload.clients)
        _followed(env, state_dir, config)
    finally:
        harness.stop_recorded([state_dir])
    history = recorder.history()
    result = await asyncio.to_thread(check, history, timeout=30.0)
    assert result.ok, result.detail
    assert Tally.of(history).status("ok") > 50, Tally.of(history)  # not vacuous


async def test_a_tls_store_grows_and_shrinks(tmp_path: Path) -> None:
    """TLS, `up`'s default: each new member gets its own certificate from the store CA and
    https URLs; the API keeps answering through the new set, 1 -> 3 -> 2 -> 1."""
    env = harness.user_env(tmp_path)
    config = harness.write_config(
        tmp_path / "c.yaml", name="growtls", stores=1, workers=False, addons=False
    )
    state_dir = tmp_path / "state"
    try:
        await asyncio.to_thread(harness.up_detached, env, config, state_dir)
        out = await asyncio.to_thread(_scale, env, state_dir, "scale", "--replicas", "3")
        assert "added store member s2" in out and "added store member s3" in out, out
        assert (state_dir / "pki" / "etcd" / "store-s3.crt").exists()
        state = read_state(state_dir)
        assert state.tls and _alive_stores(state_dir) == ["store-s1", "store-s2", "store-s3"]
        record = state.component("store-s3")
        assert record is not None and "--peer-cert-file" in record.command
        assert any(a.startswith("https://") for a in record.command)
        rows = _store_rows(env, state_dir)
        assert rows == {"store-s1": True, "store-s2": True, "store-s3": True}, rows
        out = await asyncio.to_thread(_scale, env, state_dir, "remove", "s3")
        assert "removed store member s3" in out, out
        assert [n for n, _ in read_state(state_dir).store_members] == ["s1", "s2"]
        # 2 -> 1 (issue 13): removed while it runs, as etcd does, then stopped; stopped first,
        # the other member alone had no quorum to commit the removal.
        out = await asyncio.to_thread(_scale, env, state_dir, "scale", "--replicas", "1")
        assert out.count("removed store member") == 1, out
        left = [n for n, _ in read_state(state_dir).store_members]
        assert len(left) == 1 and _alive_stores(state_dir) == [f"store-{left[0]}"], left
        assert list(state_dir.glob("store/*.removed-*")), "the removed members' data set aside"
        get = harness.k8semu(env, "get", "namespaces")
        assert get.returncode == 0 and "default" in get.stdout, get.stdout + get.stderr
    finally:
        harness.stop_recorded([state_dir])


def _scale(env: dict[str, str], state_dir: Path, *args: str) -> str:
    run = harness.k8semu(env, "store", *args, "--state-dir", state_dir, timeout=150)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def _grow_refuse_shrink(env: dict[str, str], state_dir: Path) -> None:
    out = _scale(env, state_dir, "scale", "--replicas", "5")
    assert "added store member s4" in out and "added store member s5" in out, out
    assert _alive_stores(state_dir) == [f"store-s{i}" for i in range(1, 6)]
    assert [n for n, _ in read_state(state_dir).store_members] == ["s1", "s2", "s3", "s4", "s5"]
    # Refused, nothing changed: an unknown member, the leader.
    run = harness.k8semu(env, "store", "remove", "s9", "--state-dir", state_dir)
    assert run.returncode == 1 and "no store member 's9'" in run.stderr, run.stderr
    state = read_state(state_dir)
    probes = Probes()
    try:
        statuses = probes.store_statuses([(n, a) for n, a in state.store_members], 5.0)
    finally:
        probes.close()
    leader = agreed_leader(statuses, 5)
    assert leader is not None
    run = harness.k8semu(env, "store", "remove", leader, "--state-dir", state_dir)
    assert run.returncode == 1 and f"{leader} is the leader" in run.stderr, run.stderr
    assert len(read_state(state_dir).store_members) == 5
    # A run that stopped s5 and failed before removing it: the next run carries on.
    retire_request_path(state_dir, "store-s5").write_text("retire")
    harness.until("s5 retired", lambda: read_state(state_dir).component("store-s5") is None or None)
    out = _scale(env, state_dir, "scale", "--replicas", "3")
    assert "carrying on: removing s5" in out and out.count("removed store member") == 2, out


def _followed(env: dict[str, str], state_dir: Path, config: Path) -> None:
    """The set the store has is the one state.json, cluster.json and the config name; `down`
    stops it all."""
    names = sorted(n for n, _ in read_state(state_dir).store_members)
    assert len(names) == 3 and set(_store_rows(env, state_dir)) == {f"store-{n}" for n in names}
    identity = json.loads((state_dir / "cluster.json").read_text())
    assert identity["storeMembers"] == names
    members = yaml.safe_load(config.read_text())["store"]["members"]
    assert sorted(m["name"] for m in members) == names
    assert (config.parent / "c.yaml.before-store-scale").exists()
    assert list(state_dir.glob("store/*.removed-*")), "the removed members' data set aside"
    down = harness.k8semu(env, "down", "--state-dir", state_dir)
    assert down.returncode == 0, down.stdout + down.stderr

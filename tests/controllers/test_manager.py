"""The controller manager end to end: a one-replica `k8semu store`, a `k8semu apiserver` and
`k8semu controller-manager` processes; no kubelet or scheduler, so the test plays the kubelet
by writing pod status (Running, Ready) through the API."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from k8semu.cli import controller_manager
from k8semu.client import Client, Conflict, Informer, NotFound
from k8semu.controllers import _pods
from k8semu.controllers.deployment import REVISION
from k8semu.controllers.manager import ControllerManager, resolve_controllers
from k8semu.pb.api.v1 import apps_pb2, coordination_pb2, core_pb2
from tests.controllers.conftest import (
    FAST_ELECTION,
    ControllerManagerProcess,
    deployment,
    set_ready,
)
from tests.support.apiserver import APIServerProcess
from tests.support.poll import eventually

pytestmark = pytest.mark.slow


@pytest.fixture
def managers(
    apiserver: APIServerProcess, tmp_path: Path
) -> Iterator[list[ControllerManagerProcess]]:
    started: list[ControllerManagerProcess] = []

    def start(count: int) -> list[ControllerManagerProcess]:
        for i in range(count):
            started.append(
                ControllerManagerProcess(
                    apiserver.address, tmp_path / f"cm-{len(started)}-{i}.log", FAST_ELECTION
                )
            )
        for proc in started:
            proc.wait_serving()
        return started

    holder: Any = start
    try:
        yield holder
    finally:
        for proc in started:
            proc.close()


@dataclass
class FakeKubelet:
    """Marks every pod of a namespace Running and Ready a moment after it appears, and
    records, at every pod event, how many pods exist and how many are available."""

    client: Client
    namespace: str
    delay: float = 0.15
    informer: Informer[core_pb2.Pod] = field(init=False)
    queue: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    measuring: bool = False
    min_available: int = 1 << 30
    max_pods: int = 0

    def __post_init__(self) -> None:
        self.informer = Informer(self.client, core_pb2.Pod, namespace=self.namespace)
        self.informer.add_event_handler(
            on_add=self._changed, on_update=lambda o, n: self._changed(n), on_delete=self._gone
        )

    def live(self) -> list[core_pb2.Pod]:
        return [p for p in self.informer.cache.list() if _pods.is_pod_active(p)]

    def _measure(self) -> None:
        if not self.measuring:
            return
        pods = self.live()
        self.max_pods = max(self.max_pods, len(pods))
        self.min_available = min(self.min_available, sum(1 for p in pods if _pods.is_pod_ready(p)))

    def _changed(self, pod: core_pb2.Pod) -> None:
        self._measure()
        if not _pods.is_pod_ready(pod) and _pods.is_pod_active(pod):
            self.queue.put_nowait(pod.metadata.name)

    def _gone(self, pod: core_pb2.Pod) -> None:
        self._measure()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.informer.run())
            while True:
                name = await self.queue.get()
                await asyncio.sleep(self.delay)  # pacing, so a rollout goes in visible steps
                await self._make_ready(name)

    async def _make_ready(self, name: str) -> None:
        for _ in range(5):
            cached = self.informer.cache.get_by_name(name, self.namespace)
            if cached is None or _pods.is_pod_ready(cached) or not _pods.is_pod_active(cached):
                return
            pod = _pods.copy_of(cached)
            pod.status.phase = "Running"
            set_ready(pod, time.time())
            try:
                await self.client.update_status(pod)
                return
            except NotFound:
                return
            except Conflict:
                pod = await self.client.get(core_pb2.Pod, name, namespace=self.namespace)
                self.informer.cache.put(pod)


@contextlib.asynccontextmanager
async def kubelet(client: Client, namespace: str) -> AsyncIterator[FakeKubelet]:
    fake = FakeKubelet(client, namespace)
    task = asyncio.get_running_loop().create_task(fake.run())
    try:
        yield fake
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _now() -> str:
    """Now as a Lease's renewTime (metav1.MicroTime) in JSON."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _get(client: Client, namespace: str, name: str = "web") -> apps_pb2.Deployment:
    return await client.get(apps_pb2.Deployment, name, namespace=namespace)


async def _rolled_out(client: Client, namespace: str, image: str, replicas: int) -> bool:
    d = await _get(client, namespace)
    st = d.status
    if not (
        st.observed_generation >= d.metadata.generation
        and st.updated_replicas == st.replicas == st.available_replicas == replicas
    ):
        return False
    pods = (await client.list_all(core_pb2.Pod, namespace=namespace)).items
    return len(pods) == replicas and all(p.spec.containers[0].image == image for p in pods)


def _cli(apiserver: APIServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)  # with tests/conftest.py's empty K8SEMU_CONFIG
    return subprocess.run(
        [sys.executable, "-m", "k8semu", *args, "--server", apiserver.address],
        capture_output=True, text=True, timeout=30, check=False, env=env,
    )  # fmt: skip


async def test_rolling_update_keeps_availability_and_undo_restores_the_template(
    client: Client, namespace: str, managers: Any, apiserver: APIServerProcess
) -> None:
    managers(1)
    d = deployment("web", 4, image="nginx:1", max_surge=1, max_unavailable=1, namespace=namespace)
    d.metadata.uid = ""
    d.metadata.generation = 0
    async with kubelet(client, namespace) as fake:
        await client.create(d)
        await eventually(
            lambda: _rolled_out(client, namespace, "nginx:1", 4), what="first rollout of 4 pods"
        )
        (first,) = (await client.list_all(apps_pb2.ReplicaSet, namespace=namespace)).items
        assert first.metadata.annotations[REVISION] == "1"

        fake.measuring = True
        # Patches, as kubectl sends: a read-modify-update of a Deployment races the controller
        # writing its status (a Conflict when that write lands after the read, on a busy host).
        image = [
            {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "nginx:2"}
        ]
        await client.patch(
            apps_pb2.Deployment, "web", image, namespace=namespace, patch_type="json"
        )
        await eventually(
            lambda: _rolled_out(client, namespace, "nginx:2", 4), what="rolling update to nginx:2"
        )
        fake.measuring = False
        # Seen by a watch on pods during the whole rollout.
        assert fake.min_available >= 4 - 1, f"available dropped to {fake.min_available}"
        assert fake.max_pods <= 4 + 1, f"{fake.max_pods} pods at once"
        sets = (await client.list_all(apps_pb2.ReplicaSet, namespace=namespace)).items
        assert sorted((x.metadata.annotations[REVISION], x.spec.replicas) for x in sets) == [
            ("1", 0),
            ("2", 4),
        ]
        events = (await client.list_all(core_pb2.Event, namespace=namespace)).items
        scaled = {e.message for e in events if e.reason == "ScalingReplicaSet"}
        assert f"Scaled up replica set {first.metadata.name} to 4" in scaled

        r = _cli(apiserver, "rollout", "undo", "deploy/web", "-n", namespace)
        assert (r.returncode, r.stdout) == (0, "deployment.apps/web rolled back\n"), r.stderr
        await eventually(
            lambda: _rolled_out(client, namespace, "nginx:1", 4), what="rollback to nginx:1"
        )
        sets = (await client.list_all(apps_pb2.ReplicaSet, namespace=namespace)).items
        assert len(sets) == 2  # the first ReplicaSet came back as revision 3
        back = next(x for x in sets if x.metadata.name == first.metadata.name)
        assert back.metadata.annotations[REVISION] == "3"
        assert (await _get(client, namespace)).metadata.annotations[REVISION] == "3"
        r = _cli(apiserver, "rollout", "history", "deploy/web", "-n", namespace)
        assert r.stdout.split()[-4:] == ["2", "<none>", "3", "<none>"], r.stdout


async def _lease_holder(client: Client) -> str:
    lease = await client.get(
        coordination_pb2.Lease, "kube-controller-manager", namespace="kube-system"
    )
    return lease.spec.holder_identity


async def test_leader_sigkill_the_standby_takes_over_without_extra_pods(
    client: Client, namespace: str, managers: Any
) -> None:
    procs: list[ControllerManagerProcess] = managers(2)
    pids = {p.pid: p for p in procs}

    async def leader() -> ControllerManagerProcess | None:
        holder = await _lease_holder(client)
        parts = holder.split("_")
        if len(parts) < 3 or not parts[-2].isdigit():
            return None
        return pids.get(int(parts[-2]))

    await eventually(lambda: _is_not_none(leader()), what="one of the two managers leads")
    d = deployment("web", 3, namespace=namespace)
    d.metadata.uid = ""
    d.metadata.generation = 0
    async with kubelet(client, namespace) as fake:
        await client.create(d)
        await eventually(lambda: _rolled_out(client, namespace, "nginx:1", 3), what="3 pods")
        active = await leader()
        assert active is not None
        fake.measuring = True
        # Scale up, and kill the leader while it is (or is about to be) creating pods.
        await client.patch(
            apps_pb2.Deployment, "web", {"spec": {"replicas": 8}}, namespace=namespace
        )
        active.kill()

        async def taken_over() -> bool:
            now = await leader()
            return now is not None and now is not active

        await eventually(taken_over, what="the standby holds the Lease")
        await eventually(lambda: _rolled_out(client, namespace, "nginx:1", 8), what="8 pods")
        # Converged: one ReplicaSet whose status agrees, exactly as many pods as replicas,
        # and never more at any moment seen by the watch (no double creation across the
        # take-over).
        sets = (await client.list_all(apps_pb2.ReplicaSet, namespace=namespace)).items
        assert len(sets) == 1 and sets[0].status.replicas == 8
        pods = (await client.list_all(core_pb2.Pod, namespace=namespace)).items
        assert len(pods) == 8
        assert fake.max_pods == 8


async def _is_not_none(value: Any) -> bool:
    return (await value) is not None


async def test_manager_runs_controllers_only_while_leading_and_starts_fresh_terms(
    apiserver: APIServerProcess, namespace: str, client: Client
) -> None:
    from k8semu.client import LeaderElectionConfig
    from k8semu.controllers.context import ControllerManagerConfig

    config = ControllerManagerConfig(
        controllers=("replicaset",),
        leader_election=LeaderElectionConfig(
            lease_duration=2.0, renew_deadline=1.5, retry_period=0.25
        ),
    )
    manager = ControllerManager(
        config, client, identity=f"test-{uuid.uuid4().hex[:6]}", listen_address="127.0.0.1:0"
    )
    await manager.start()
    try:
        assert manager.port > 0
        await eventually(lambda: manager.leading, what="leading")
        assert [c.name for c in manager.controllers] == ["replicaset"]
        rs = apps_pb2.ReplicaSet()
        rs.metadata.name = "solo"
        rs.metadata.namespace = namespace
        rs.spec.replicas = 2
        rs.spec.selector.match_labels["app"] = "solo"
        rs.spec.template.metadata.labels["app"] = "solo"
        rs.spec.template.spec.containers.add(name="c", image="busybox")
        await client.create(rs)

        async def two_pods() -> bool:
            return len((await client.list_all(core_pb2.Pod, namespace=namespace)).items) == 2

        await eventually(two_pods, what="two pods of the ReplicaSet")
        first_term = list(manager.controllers)

        # Another holder takes the Lease: the controllers stop; when that holder lets the
        # Lease expire, a new term starts with new controllers, which finish the work.
        # A patch: a read-modify-update raced the manager's own renewals (every 0.5 s).
        await client.patch(
            coordination_pb2.Lease,
            "kube-controller-manager",
            {"spec": {"holderIdentity": "thief", "leaseDurationSeconds": 2, "renewTime": _now()}},
            namespace="kube-system",
        )
        await eventually(lambda: not manager.leading, what="stopped leading")
        live = await client.get(apps_pb2.ReplicaSet, "solo", namespace=namespace)
        live.spec.replicas = 3
        await client.update(live)
        await eventually(lambda: manager.leading and manager.terms == 2, what="leading again")
        assert all(a is not b for a, b in zip(manager.controllers, first_term, strict=True))

        async def three_pods() -> bool:
            return len((await client.list_all(core_pb2.Pod, namespace=namespace)).items) == 3

        await eventually(three_pods, what="the new term creates the third pod")
    finally:
        await manager.stop(1.0)
    assert not manager.leading


async def test_stopped_leader_releases_its_lease_for_the_standby(
    apiserver: APIServerProcess, client: Client
) -> None:
    from k8semu.controllers.context import ControllerManagerConfig

    # The defaults (what `k8semu controller-manager` runs with): a stop on purpose clears the
    # holder, so a rolling restart's standby need not wait out the lease duration.
    config = ControllerManagerConfig(controllers=("replicaset",))
    assert config.leader_election.release_on_cancel
    identity = f"release-{uuid.uuid4().hex[:6]}"
    manager = ControllerManager(config, client, identity=identity)
    await manager.start()
    try:
        await eventually(lambda: manager.leading, what="leading")
        assert await _lease_holder(client) == identity
    finally:
        await manager.stop(1.0)
    assert await _lease_holder(client) == ""


def test_resolve_controllers_star_minus_and_unknown() -> None:
    assert [n for n, _ in resolve_controllers(("*",))][:2] == ["replicaset", "deployment"]
    assert next(n for n, _ in resolve_controllers(("*", "-deployment"))) == "replicaset"
    assert "deployment" not in [n for n, _ in resolve_controllers(("*", "-deployment"))]
    with pytest.raises(ValueError, match="unknown controller 'nope'"):
        resolve_controllers(("nope",))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers: must be >= 1"),
        (["--node-monitor-period", "fast"], "--node-monitor-period: 'fast' is not a duration"),
        (["--controllers", "replicaset,bogus"], "unknown controller 'bogus'"),
        (["--cluster-cidr", "10.0.0.0/33"], "--cluster-cidr:"),
        (["--listen-address", "nowhere"], "--listen-address: expected HOST:PORT"),
        (
            ["--leader-elect-renew-deadline", "5s", "--leader-elect-lease-duration", "4s"],
            "--leader-elect-lease-duration: must be greater than --leader-elect-renew-deadline",
        ),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert controller_manager.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("k8semu controller-manager: ") and message in err, err


def test_bad_flag_exits_2_from_the_command() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "k8semu", "controller-manager", "--gc-interval", "0s"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert r.returncode == 2
    assert "--gc-interval: must be > 0" in r.stderr

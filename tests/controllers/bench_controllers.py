"""Controller manager figures on real processes (not collected by pytest; prints a table):

    .venv/bin/python -m tests.controllers.bench_controllers [--replicas 100] [--rounds 3]

- scale-up: a Deployment of N replicas created -> N pods exist (Deployment and ReplicaSet
  controllers, slow-start batches, one API server, one store replica);
- rolling update: image changed -> rollout complete, N replicas, maxSurge/maxUnavailable 25%,
  with a stand-in kubelet marking each pod Ready as soon as it appears;
- fail-over: SIGKILL of the leading controller-manager -> the standby holds the Lease, at the
  test timings (lease 2 s, renew 1.5 s, retry 250 ms) and the emulator defaults (4 s/3 s/500 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from k8semu.client import Client
from k8semu.cluster.processes import K8semuStoreCluster
from k8semu.pb.api.v1 import coordination_pb2, core_pb2
from tests.controllers.conftest import FAST_ELECTION, ControllerManagerProcess, deployment
from tests.controllers.test_manager import FakeKubelet, _get, _rolled_out
from tests.support.apiserver import APIServerProcess


async def _until(check, timeout: float = 120.0) -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > timeout:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


async def _namespace(client: Client) -> str:
    ns = core_pb2.Namespace()
    ns.metadata.name = f"bench-{uuid.uuid4().hex[:6]}"
    await client.create(ns)
    return ns.metadata.name


async def _rollouts(address: str, replicas: int) -> tuple[float, float]:
    async with Client([address]) as client:
        namespace = await _namespace(client)
        fake = FakeKubelet(client, namespace, delay=0.0)
        task = asyncio.get_running_loop().create_task(fake.run())
        try:
            d = deployment("web", replicas, namespace=namespace)
            d.metadata.uid = ""
            d.metadata.generation = 0
            await client.create(d)

            async def pods_exist() -> bool:
                pods = (await client.list_all(core_pb2.Pod, namespace=namespace)).items
                return len(pods) >= replicas

            scale_up = await _until(pods_exist)
            await _until(lambda: _rolled_out(client, namespace, "nginx:1", replicas))
            live = await _get(client, namespace)
            live.spec.template.spec.containers[0].image = "nginx:2"
            began = time.monotonic()
            await client.update(live)
            await _until(lambda: _rolled_out(client, namespace, "nginx:2", replicas))
            return scale_up, time.monotonic() - began
        finally:
            task.cancel()


async def _holder(client: Client) -> str:
    lease = await client.get(
        coordination_pb2.Lease, "kube-controller-manager", namespace="kube-system"
    )
    return lease.spec.holder_identity


async def _failover(address: str, base: Path, election: tuple[str, ...]) -> float:
    procs = [
        ControllerManagerProcess(address, base / f"cm-{uuid.uuid4().hex[:6]}.log", election)
        for _ in range(2)
    ]
    try:
        for p in procs:
            p.wait_serving()
        by_pid = {p.pid: p for p in procs}
        async with Client([address]) as client:

            async def someone_of_ours() -> bool:
                parts = (await _holder(client)).split("_")
                return len(parts) >= 3 and parts[-2].isdigit() and int(parts[-2]) in by_pid

            await _until(someone_of_ours, 60)
            old = await _holder(client)
            by_pid[int(old.split("_")[-2])].kill()
            start = time.monotonic()

            async def other() -> bool:
                return await _holder(client) not in ("", old)

            await _until(other, 60)
            return time.monotonic() - start
    finally:
        for p in procs:
            p.close()


async def main_async(replicas: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        with K8semuStoreCluster(base / "store", 1) as store:
            store.start()
            store.wait_ready(timeout=60)
            api = APIServerProcess(store, base / "apiserver.log")
            try:
                api.wait_serving()
                ups, rolls, fast, default = [], [], [], []
                cm = ControllerManagerProcess(
                    api.address, base / "cm.log", ("--no-leader-elect", "--log-level", "warning")
                )
                try:
                    cm.wait_serving()
                    for _ in range(rounds):
                        up, roll = await _rollouts(api.address, replicas)
                        ups.append(up)
                        rolls.append(roll)
                finally:
                    cm.close()
                for _ in range(rounds):
                    fast.append(await _failover(api.address, base, FAST_ELECTION))
                for _ in range(rounds):
                    default.append(await _failover(api.address, base, ()))
            finally:
                api.close()

    def row(name: str, values: list[float]) -> str:
        med = statistics.median(values)
        return f"| {name} | {med:.2f} | {min(values):.2f}-{max(values):.2f} | {len(values)} |"

    print("| figure (s) | median | range | n |")
    print("| --- | ---: | ---: | ---: |")
    print(row(f"Deployment created -> {replicas} pods exist", ups))
    print(row(f"rolling update of {replicas} replicas (25%/25%), pods ready at once", rolls))
    print(row("fail-over, lease 2s/1.5s/250ms: SIGKILL -> standby holds the Lease", fast))
    print(row("fail-over, defaults 4s/3s/500ms: SIGKILL -> standby holds the Lease", default))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--replicas", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    ns = p.parse_args()
    asyncio.run(main_async(ns.replicas, ns.rounds))


if __name__ == "__main__":
    main()

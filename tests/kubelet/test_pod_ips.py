"""A finished pod gives its IP back (the kubelet's sandbox teardown), on real processes: a
node whose pod range holds 13 IPs runs more finished pods than that, before and after a
kubelet restart, while a running pod keeps its IP; a finished pod's logs stay readable."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from k8semu.client import Client
from k8semu.pb.api.v1 import core_pb2
from tests.kubelet.conftest import KubeletProcess, eventually
from tests.kubelet.test_e2e_process import get_pod, make_pod, pid_alive, running_pid
from tests.kubelet.test_logs_exec import k8semu
from tests.support.apiserver import APIServerProcess

pytestmark = pytest.mark.slow

CIDR = "127.244.90.0/28"  # pod IPs .2 to .14: 13
BATCH = 15  # finished pods per round: more than the range holds


async def _run_batch(client: Client, namespace: str, node: str, prefix: str) -> None:
    for i in range(BATCH):
        pod = make_pod(
            namespace, f"{prefix}-{i}", node, ["sh", "-c", f"echo {prefix}-{i} done"],
            restart_policy="Never",
        )  # fmt: skip
        await client.create(pod)

    async def all_succeeded() -> bool:
        pods = (await client.list(core_pb2.Pod, namespace=namespace)).items
        ours = [p for p in pods if p.metadata.name.startswith(f"{prefix}-")]
        return len(ours) == BATCH and all(p.status.phase == "Succeeded" for p in ours)

    await eventually(all_succeeded, what=f"every {prefix} pod Succeeded", timeout=90)


async def _ips(client: Client, namespace: str) -> dict[str, str]:
    pods = (await client.list(core_pb2.Pod, namespace=namespace)).items
    return {p.metadata.name: p.status.pod_ip for p in pods}


async def test_finished_pods_release_their_ips(
    client: Client,
    namespace: str,
    apiserver: APIServerProcess,
    kubelets: Callable[..., KubeletProcess],
) -> None:
    k = kubelets("--pod-cidr", CIDR)
    await client.create(make_pod(namespace, "runner", k.name, ["sleep", "300"]))
    runner = await eventually(lambda: _running(client, namespace, "runner"), what="runner running")
    held, runner_pid = runner.status.pod_ip, running_pid(runner)
    # A pod that ends leaving a process behind in its session: killed when it finishes.
    await client.create(
        make_pod(namespace, "leaver", k.name, ["sh", "-c", "sleep 300 & echo $!"],
                 restart_policy="Never")
    )  # fmt: skip

    await _run_batch(client, namespace, k.name, "first")
    out = await asyncio.to_thread(k8semu, apiserver, "logs", "leaver", "-n", namespace)
    assert out.returncode == 0, out.stderr
    left_pid = int(out.stdout.split()[0])
    await eventually(lambda: not pid_alive(left_pid), what="the leftover process killed")
    before = await _ips(client, namespace)
    assert before["runner"] == held
    assert all(ip for ip in before.values()), before  # kept in the status as history
    assert held not in [ip for name, ip in before.items() if name != "runner"], before
    logs = await asyncio.to_thread(k8semu, apiserver, "logs", "first-0", "-n", namespace)
    assert logs.returncode == 0 and logs.stdout == "first-0 done\n", logs

    # A restarted kubelet keeps the running pod's IP and does not take the released ones.
    k.kill()
    k.start()
    await _run_batch(client, namespace, k.name, "second")
    after = await _ips(client, namespace)
    assert {n: after[n] for n in before} == before
    assert held not in [ip for name, ip in after.items() if name != "runner"], after
    runner = await get_pod(client, namespace, "runner")
    assert running_pid(runner) == runner_pid and pid_alive(runner_pid)
    logs = await asyncio.to_thread(k8semu, apiserver, "logs", "first-1", "-n", namespace)
    assert logs.returncode == 0 and logs.stdout == "first-1 done\n", logs


async def _running(client: Client, namespace: str, name: str) -> core_pb2.Pod | None:
    pod = await get_pod(client, namespace, name)
    return pod if running_pid(pod) else None

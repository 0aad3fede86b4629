"""`k8semu logs` and `k8semu exec` against a real kubelet, through the API server's Node
annotation."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable

import pytest

from k8semu.client import Client
from k8semu.kubelet.containerlog import parse_time
from k8semu.kubelet.containerlog import stamp as stamp_of
from k8semu.pb.api.v1 import core_pb2
from tests.kubelet.conftest import KubeletProcess, eventually
from tests.kubelet.test_e2e_process import get_pod, make_pod, running_pid, status_of
from tests.support.apiserver import APIServerProcess

pytestmark = pytest.mark.slow


def k8semu(apiserver: APIServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k8semu", args[0], "--server", apiserver.address, *args[1:]],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_logs_and_exec_via_cli(
    client: Client,
    namespace: str,
    apiserver: APIServerProcess,
    kubelets: Callable[..., KubeletProcess],
) -> None:
    k = kubelets()
    script = "for i in 1 2 3 4 5; do echo line-$i; done; echo run-done; exec sleep 300"
    pod = make_pod(namespace, "talker", k.name, ["sh", "-c", script])
    env = pod.spec.containers[0].env.add(name="GREETING")
    env.value = "hello-$(POD_NAME)"
    await client.create(pod)
    await eventually(lambda: _running(client, namespace), what="running")

    def logs(*extra: str) -> subprocess.CompletedProcess[str]:
        return k8semu(apiserver, "logs", "talker", "-n", namespace, *extra)

    done = await eventually(
        lambda: _ok(asyncio.to_thread(logs), "run-done"), what="logs show the output"
    )
    assert done.stdout.splitlines() == [f"line-{i}" for i in range(1, 6)] + ["run-done"]
    tail = await asyncio.to_thread(logs, "--tail", "2")
    assert tail.returncode == 0 and tail.stdout.splitlines() == ["line-5", "run-done"]
    timed = await asyncio.to_thread(logs, "--timestamps", "--since", "1h", "--tail", "1")
    stamp, _, text = timed.stdout.rstrip("\n").partition(" ")
    assert timed.returncode == 0 and text == "run-done", timed
    assert stamp == stamp_of(parse_time(stamp)).decode()  # RFC 3339, nine digits, UTC
    later = await asyncio.to_thread(logs, "--since-time", "2999-01-01T00:00:00Z")
    assert (later.returncode, later.stdout) == (0, "")
    cut = await asyncio.to_thread(logs, "--limit-bytes", "9")
    assert cut.stdout == "line-1\nli"
    for bad, why in [
        (["--since", "5s", "--since-time", stamp], "at most one of --since-time or --since"),
        (["--since-time", "noon"], "--since-time: "),
        (["--limit-bytes", "0"], "--limit-bytes: must be greater than 0"),
    ]:
        refused = await asyncio.to_thread(logs, *bad)
        assert refused.returncode == 1 and why in refused.stderr, refused
    no_prev = await asyncio.to_thread(logs, "--previous")
    assert no_prev.returncode == 1 and "previous terminated container" in no_prev.stderr, (
        no_prev,
        await get_pod(client, namespace, "talker"),
        sorted(k.root.rglob("*")),
    )

    out = await asyncio.to_thread(
        k8semu, apiserver, "exec", "talker", "-n", namespace, "--",
        "sh", "-c", "echo $GREETING $POD_NAMESPACE; pwd; echo oops >&2; exit 7",
    )  # fmt: skip
    assert out.returncode == 7, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"hello-talker {namespace}"
    assert lines[1].endswith(f"/pods/{(await get_pod(client, namespace, 'talker')).metadata.uid}")
    assert out.stderr == "oops\n"

    bad = await asyncio.to_thread(
        k8semu, apiserver, "exec", "talker", "-n", namespace, "-c", "nope", "--", "true"
    )
    assert bad.returncode == 1 and "container nope is not valid for pod talker" in bad.stderr
    missing = await asyncio.to_thread(k8semu, apiserver, "logs", "ghost", "-n", namespace)
    assert missing.returncode == 1 and 'pods "ghost" not found' in missing.stderr

    # --previous after a restart shows the earlier run; -f follows the new one.
    p = await get_pod(client, namespace, "talker")
    import os

    os.kill(running_pid(p), 9)

    async def restarted() -> bool:
        s = status_of(await get_pod(client, namespace, "talker"))
        return s is not None and s.restart_count == 1 and s.state.HasField("running")

    await eventually(restarted, what="restarted")
    prev = await asyncio.to_thread(logs, "--previous")
    assert prev.returncode == 0 and prev.stdout.endswith("run-done\n")
    follow = subprocess.Popen(  # noqa: ASYNC220 - read from a thread below
        [sys.executable, "-m", "k8semu", "logs", "talker", "-n", namespace, "-f",
         "--server", apiserver.address],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert follow.stdout is not None
        first = await asyncio.wait_for(asyncio.to_thread(follow.stdout.readline), 30)
        assert first == "line-1\n"
    finally:
        follow.kill()
        follow.wait()
        if follow.stdout is not None:
            follow.stdout.close()


async def _running(client: Client, namespace: str) -> bool:
    return running_pid(await get_pod(client, namespace, "talker")) > 0


async def _ok(
    result: asyncio.Future[subprocess.CompletedProcess[str]] | object, needle: str
) -> subprocess.CompletedProcess[str] | None:
    done = await result  # type: ignore[misc]
    return done if done.returncode == 0 and needle in done.stdout else None


_ = core_pb2

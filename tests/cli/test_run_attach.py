"""`k8semu run -i --rm ... -- /bin/sh -c ...`, the walkthrough's load-generator shape, against
a real store, API server and kubelet: the container's output is shown until it ends, then the
pod is deleted. (No scheduler here: `--overrides` puts the pod on the kubelet's node.)"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from k8semu.client import Client, NotFound
from k8semu.pb.api.v1 import core_pb2
from tests.kubelet.conftest import KubeletProcess, kubelets  # noqa: F401  (the fixture)
from tests.support.apiserver import APIServerProcess
from tests.support.poll import eventually

pytestmark = pytest.mark.slow


async def _gone(client: Client, namespace: str) -> bool:
    try:
        await client.get(core_pb2.Pod, "talker", namespace=namespace)
    except NotFound:
        return True
    return False


async def test_run_attached_shows_the_output_then_removes_the_pod(
    apiserver: APIServerProcess,
    client: Client,
    namespace: str,
    kubelets: object,  # noqa: F811
) -> None:
    node: KubeletProcess = kubelets()  # type: ignore[operator]
    overrides = json.dumps({"spec": {"nodeName": node.name}})
    cmd = [
        sys.executable, "-m", "k8semu", "run", "talker", "--image=busybox:1.28",
        "--restart=Never", "-i", "--tty", "--rm", "--overrides", overrides,
        "-n", namespace, "--server", apiserver.address,
        "--", "/bin/sh", "-c", "echo hello; echo from-the-pod",
    ]  # fmt: skip
    proc = await asyncio.to_thread(
        subprocess.run, cmd, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [
        "If you don't see a command prompt, try pressing enter.",
        "hello",
        "from-the-pod",
        'pod "talker" deleted',
    ]
    await eventually(lambda: _gone(client, namespace), 60, "the pod deleted")


def test_rm_needs_attach_and_overrides_must_be_json() -> None:
    for extra, words in (
        (("--rm",), "--rm should only be used"),
        (("--overrides", "{"), "not JSON"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "k8semu", "run", "x", "--image=nginx", "--server",
             "127.0.0.1:9", *extra],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert proc.returncode == 1 and words in proc.stderr, proc.stderr

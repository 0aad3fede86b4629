"""Container logs rotate as the kubelet's (--container-log-max-size, --container-log-max-files)
on a real kubelet: the files stay bounded, `logs` reads the newest, `logs -f` follows the run
through its rotations to its last line."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from k8semu.client import Client
from tests.kubelet.conftest import KubeletProcess, eventually
from tests.kubelet.test_e2e_process import get_pod, make_pod, running_pid
from tests.kubelet.test_logs_exec import k8semu
from tests.support.apiserver import APIServerProcess

pytestmark = pytest.mark.slow

MAX_BYTES = 4096
# 60 bursts of 5 lines (~60 bytes each as records), 50 ms apart: ~18 kB, four or more rotations.
SCRIPT = (
    "sleep 2; i=0; while [ $i -lt 60 ]; do for j in 1 2 3 4 5; do"
    " echo line-$i-$j-xxxxxxxxxxxxxxxx; done; i=$((i+1)); sleep 0.05; done;"
    " echo run-done; exec sleep 300"
)


async def test_a_container_log_rotates_and_follow_reads_through_it(
    client: Client,
    namespace: str,
    apiserver: APIServerProcess,
    kubelets: Callable[..., KubeletProcess],
) -> None:
    k = kubelets("--container-log-max-size", "4Ki", "--container-log-max-files", "2")
    await client.create(make_pod(namespace, "chatty", k.name, ["sh", "-c", SCRIPT]))

    async def started() -> bool:
        return running_pid(await get_pod(client, namespace, "chatty")) > 0

    await eventually(started, what="running")
    argv = [sys.executable, "-m", "k8semu", "logs", "chatty", "-n", namespace, "-f",
            "--server", apiserver.address]  # fmt: skip
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as follow:  # noqa: ASYNC220
        try:
            seen = await asyncio.wait_for(asyncio.to_thread(_until_done, follow), 90)
        finally:
            follow.kill()
    # Every line the follower saw, in order, to the run's last: it went on through the files.
    assert seen[-1] == "run-done" and len(seen) > 2 * MAX_BYTES // 60, seen[-3:]
    numbers = [tuple(int(x) for x in s.split("-")[1:3]) for s in seen[:-1]]
    assert numbers == sorted(numbers)

    pod = await get_pod(client, namespace, "chatty")
    cdir = k.root / "pods" / pod.metadata.uid / "main"
    files = sorted(p.name for p in cdir.glob("0.log*"))
    assert len(files) == 2 and files[0] == "0.log", files  # max-files 2: current + one
    for name in files:
        # Rotated after the write that passed the limit: one write (a burst) over at most.
        assert (cdir / name).stat().st_size < MAX_BYTES + 2048, name
    newest = await asyncio.to_thread(k8semu, apiserver, "logs", "chatty", "-n", namespace)
    lines = newest.stdout.splitlines()
    assert newest.returncode == 0 and lines[-1] == "run-done"
    assert len(lines) < len(seen)  # only the current file


def _until_done(proc: subprocess.Popen[str]) -> list[str]:
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line.rstrip("\n"))
        if seen[-1] == "run-done":
            break
    return seen


def test_container_log_flags_are_checked() -> None:
    from k8semu.kubelet.config import ConfigError, KubeletConfig

    assert KubeletConfig(node_name="n").container_log_max_bytes == 10 * 1024 * 1024
    for size, why in (("lots", "--container-log-max-size"), ("0", "must be > 0")):
        with pytest.raises(ConfigError, match=why):
            KubeletConfig(node_name="n", container_log_max_size=size)
    with pytest.raises(ConfigError, match="--container-log-max-files: must be >= 2, got 1"):
        KubeletConfig(node_name="n", container_log_max_files=1)

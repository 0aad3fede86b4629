"""The log pump's cost (not collected by pytest; prints a table):

    .venv/bin/python -m tests.kubelet.bench_logs [--rate 10000] [--seconds 10]

One store, one API server and one `k8semu kubelet` (cgroups off); a pod prints `--rate`
lines a second, one write() per line (the pump's worst case: a wake-up per line), and the
kubelet's CPU (utime+stime from /proc) is sampled over `--seconds` of it, next to an idle
pod's. Each figure is kubelet CPU seconds per wall second (1.0 = one core).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from k8semu.client import Client
from k8semu.cluster.processes import K8semuStoreCluster
from k8semu.pb.api.v1 import core_pb2
from tests.kubelet.conftest import KubeletProcess, end_pods
from tests.kubelet.test_e2e_process import make_pod, running_pid
from tests.support.apiserver import APIServerProcess

FLOOD = """
import os, sys, time
rate = int(sys.argv[1]); n = 0; start = time.monotonic()
while True:
    due = int((time.monotonic() - start) * rate)
    while n < due:
        n += 1
        os.write(1, b"line %d of the flood, about sixty bytes long: abcdefghij\\n" % n)
    time.sleep(0.001)
"""


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _sample(pid: int, seconds: float) -> float:
    cpu0, t0 = _cpu(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (_cpu(pid) - cpu0) / (time.monotonic() - t0)


async def _running(client: Client, ns: str, name: str) -> None:
    for _ in range(600):
        pod = await client.get(core_pb2.Pod, name, namespace=ns)
        if running_pid(pod) > 0:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"pod {name} not running")


async def _measure(api: APIServerProcess, k: KubeletProcess, rate: int, secs: float) -> None:
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    async with Client([api.address]) as client:
        namespace = core_pb2.Namespace()
        namespace.metadata.name = ns
        await client.create(namespace)
        await client.create(make_pod(ns, "idle", k.name, ["sleep", "600"]))
        await _running(client, ns, "idle")
        await asyncio.sleep(2)  # the start's own work settles
        idle = await _sample(k.pid, secs)
        flood = make_pod(ns, "flood", k.name, [sys.executable, "-c", FLOOD, str(rate)])
        await client.create(flood)
        await _running(client, ns, "flood")
        await asyncio.sleep(2)
        busy = await _sample(k.pid, secs)
    logs = list(k.root.glob("pods/*/main/0.log"))
    size = max((p.stat().st_size for p in logs), default=0)
    print(f"load average {Path('/proc/loadavg').read_text().split()[:3]}")
    print(f"| kubelet CPU (cores) | idle pod | pod printing {rate} lines/s |")
    print("| --- | ---: | ---: |")
    print(f"| {k.name} | {idle:.3f} | {busy:.3f} |")
    print(f"(largest log file: {size / 1e6:.1f} MB)")


async def main_async(rate: int, secs: float) -> None:
    with tempfile.TemporaryDirectory() as tmp, K8semuStoreCluster(Path(tmp) / "s", 1) as store:
        store.start()
        store.wait_ready(timeout=60)
        api = APIServerProcess(store, Path(tmp) / "apiserver.log")
        api.wait_serving()
        k = KubeletProcess(api, Path(tmp), "--cgroups", "off").start()
        try:
            await _measure(api, k, rate, secs)
        finally:
            k.close()
            end_pods(k.name, k.root)
            api.close()


if __name__ == "__main__":
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("--rate", type=int, default=10_000)
    args.add_argument("--seconds", type=float, default=10.0)
    opts = args.parse_args()
    asyncio.run(main_async(opts.rate, opts.seconds))

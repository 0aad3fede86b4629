#!/usr/bin/env python3
"""What the resource metrics cost the API server (figures for docs/apiserver.md): a one-replica
store, two API servers on it (one scraping at --metric-resolution, one with 0: the baseline,
serving the same idle cluster), a hollow kubelet of NODES nodes and PODS pods with modelled
usage. Once every pod has its PodMetrics, both API servers' CPU time (/proc/PID/stat) is
read over SECONDS; the difference, per scrape and per 100 pods, is the scrape's cost.

Usage: scripts/measure_metrics_scrape.py [--pods 200] [--nodes 4] [--resolution 2s]
       [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from k8semu import durations
from k8semu.client import Client
from k8semu.cluster.component import APIServerProcess, ComponentProcess
from k8semu.cluster.processes import K8semuStoreCluster
from k8semu.pb.api.v1 import core_pb2, metrics_pb2

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def pod(ns: str, i: int, node: str) -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name, p.metadata.namespace = f"load-{i}", ns
    p.metadata.annotations.update({"k8semu.io/usage-cpu": "50m", "k8semu.io/usage-memory": "32Mi"})
    p.spec.node_name = node
    p.spec.containers.add(name="main", image="k8semu-test/python", command=["serve"])
    return p


async def fill(address: str, nodes: list[str], pods: int) -> None:
    async with Client([address]) as client:
        ns = core_pb2.Namespace()
        ns.metadata.name = "scrape"
        await client.create(ns)
        for i in range(pods):
            await client.create(pod("scrape", i, nodes[i % len(nodes)]))
        end = time.monotonic() + 120
        while time.monotonic() < end:
            got = await client.list(metrics_pb2.PodMetrics, namespace="scrape")
            if len(got.items) == pods:
                return
            await asyncio.sleep(0.5)
        raise SystemExit(f"only {len(got.items)} of {pods} PodMetrics within 120 s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pods", type=int, default=200)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--resolution", default="2s")
    p.add_argument("--seconds", type=float, default=30.0)
    ns = p.parse_args()
    resolution = durations.parse_ms(ns.resolution) / 1000
    base = Path(tempfile.mkdtemp(prefix="scrape-"))
    with K8semuStoreCluster(base / "store", 1) as store:
        store.start()
        store.wait_ready(timeout=60)
        on = APIServerProcess(
            store.endpoints, base / "on.log", ["--metric-resolution", ns.resolution]
        )
        off = APIServerProcess(store.endpoints, base / "off.log", ["--metric-resolution", "0"])
        hollow = ComponentProcess(
            "kubelet",
            ["--server", on.address, "--node-name", "hollow", "--runtime", "simulated",
             "--count", str(ns.nodes), "--root-dir", str(base / "kubelet")],
            base / "kubelet.log",
        )  # fmt: skip
        hollow.argv[hollow.argv.index("--listen-address") + 1] = "127.0.0.1:0"
        try:
            on.wait_serving()
            off.wait_serving()
            hollow.start()
            names = [f"hollow-{i}" for i in range(ns.nodes)]
            asyncio.run(fill(on.address, names, ns.pods))
            before = (cpu_seconds(on.pid), cpu_seconds(off.pid), time.monotonic())
            time.sleep(ns.seconds)
            after = (cpu_seconds(on.pid), cpu_seconds(off.pid), time.monotonic())
        finally:
            for proc in (hollow, on, off):
                proc.close()
    wall = after[2] - before[2]
    scraping, idle = after[0] - before[0], after[1] - before[1]
    scrapes = wall / resolution
    per_scrape = (scraping - idle) / scrapes
    print(f"{ns.pods} pods on {ns.nodes} hollow nodes, resolution {ns.resolution}, {wall:.0f} s")
    print(f"API server CPU: scraping {scraping:.2f} s, baseline {idle:.2f} s")
    print(f"per scrape: {per_scrape * 1000:.1f} ms CPU; per 100 pods: "
          f"{per_scrape * 1000 * 100 / ns.pods:.1f} ms per scrape")  # fmt: skip
    print(f"at the default 15s resolution: {per_scrape / 15 * 100 * 100 / ns.pods:.3f}% of a core"
          " per 100 pods")  # fmt: skip
    print(f"load average: {Path('/proc/loadavg').read_text().strip()}")


if __name__ == "__main__":
    main()

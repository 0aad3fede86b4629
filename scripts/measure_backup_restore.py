#!/usr/bin/env python3
"""Backup time and size, and restore RTO, of the default cluster layout with 200 objects
(docs/operations.md, "Backups and disaster recovery").

Starts the default layout (3 store replicas, one API server, scheduler and controller manager,
3 process-runtime workers, the DNS add-on) on free ports with `k8semu up --detach`, creates
200 objects (10 Deployments of 1 echo pod with a NodePort Service each, 60 ConfigMaps, 60
Secrets, 60 ClusterIP Services), waits until every Deployment is available, then times
`k8semu backup -o FILE` and `k8semu restore FILE --yes` until every Deployment is available
again and every Service answers on its NodePort (the RTO): once with the pods still
running (they are adopted), once after `k8semu down` killed everything. Prints the figures
and the load average; stops the cluster.

Usage: scripts/measure_backup_restore.py [DIR]   (default: a temporary directory)
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from k8semu.api import manifest
from k8semu.bench._clusterrun import ClusterLayout, bench_config
from k8semu.client import Client, ClientError
from k8semu.cluster.state import read_state
from k8semu.pb.api.v1 import apps_pb2, core_pb2

DEPLOYMENTS, CONFIGMAPS, SECRETS, SERVICES = 10, 60, 60, 60


def _objects() -> str:
    docs = ["apiVersion: v1\nkind: Namespace\nmetadata: {name: dr}\n"]
    for i in range(DEPLOYMENTS):
        docs.append(
            f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web{i}, namespace: dr}}\n"
            f"spec: {{replicas: 1, selector: {{matchLabels: {{app: web{i}}}}}, template:"
            f" {{metadata: {{labels: {{app: web{i}}}}}, spec: {{containers: [{{name: echo,"
            f" image: k8semu/echo, ports: [{{containerPort: 8080}}]}}]}}}}}}\n"
        )
        docs.append(
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: web{i}, namespace: dr}}\n"
            f"spec: {{type: NodePort, selector: {{app: web{i}}}, ports: [{{port: 80,"
            f" targetPort: 8080}}]}}\n"
        )
    for i in range(CONFIGMAPS):
        docs.append(
            f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm{i}, namespace: dr}}\n"
            f"data: {{k: v{i}}}\n"
        )
    for i in range(SECRETS):
        docs.append(
            f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s{i}, namespace: dr}}\n"
            "data: {k: czNjcmV0}\n"
        )
    for i in range(SERVICES):
        docs.append(
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: svc{i}, namespace: dr}}\n"
            f"spec: {{selector: {{app: none{i}}}, ports: [{{port: 80}}]}}\n"
        )
    return "---\n".join(docs)


async def _all_available(client: Client) -> bool:
    try:
        items = (await client.list(apps_pb2.Deployment, namespace="dr")).items
    except ClientError:
        return False
    return len(items) == DEPLOYMENTS and all(
        d.status.available_replicas == 1 and d.status.observed_generation == d.metadata.generation
        for d in items
    )


async def _services_answer(client: Client, node_ip: str) -> bool:
    """Every web Service answers an HTTP GET on its NodePort (a restored Deployment's status
    says available at once: the pods behind it must really serve)."""
    try:
        services = (await client.list(core_pb2.Service, namespace="dr")).items
    except ClientError:
        return False
    ports = [s.spec.ports[0].node_port for s in services if s.metadata.name.startswith("web")]
    if len(ports) != DEPLOYMENTS:
        return False
    answers = [await asyncio.to_thread(_http_ok, f"http://{node_ip}:{p}/") for p in ports]
    return all(answers)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


async def _wait_available(api: list[str], node_ip: str, timeout: float) -> float:
    """Until every Deployment is available and every Service answers; the time then."""
    t0 = time.monotonic()
    async with Client(api) as client:
        while not (await _all_available(client) and await _services_answer(client, node_ip)):
            if time.monotonic() - t0 > timeout:
                raise SystemExit(f"Deployments not available within {timeout:g}s")
            await asyncio.sleep(0.2)
    return time.monotonic()


def _restore(backup: Path, config: Path, state: Path, api: list[str], node_ip: str) -> str:
    t0 = time.monotonic()
    _k8semu("restore", backup, "-f", config, "--state-dir", state, "--yes")
    restored = time.monotonic() - t0
    rto = asyncio.run(_wait_available(api, node_ip, 300)) - t0
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"`k8semu restore --yes` returned after {restored:.1f}s; every Deployment available and"
        f" every Service answering {rto:.1f}s after the command (RTO); load {load}"
    )


async def _create(api: list[str]) -> None:
    async with Client(api) as client:
        for obj in manifest.load_all(_objects(), source="objects"):
            await client.create(obj)


def _k8semu(*args: str | Path) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(
        [sys.executable, "-m", "k8semu", *map(str, args)], capture_output=True, text=True
    )
    if run.returncode != 0:
        raise SystemExit(f"k8semu {' '.join(map(str, args))} failed:\n{run.stdout}{run.stderr}")
    return run


def main() -> None:
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="k8semu-dr-"))
    state = work / "state"
    config = work / "cluster.yaml"
    layout = ClusterLayout(name="dr", real_nodes=3, addons=("dns",), timings={})
    config.write_text(yaml.safe_dump(bench_config(layout)))
    _k8semu("up", "-f", config, "--state-dir", state, "--detach")
    try:
        api = read_state(state).api_servers
        node_ip = next(n["nodeIP"] for n in yaml.safe_load(config.read_text())["nodes"])
        asyncio.run(_create(api))
        asyncio.run(_wait_available(api, node_ip, 300))
        backup = work / "dr.k8semu-backup"
        t0 = time.monotonic()
        out = _k8semu("backup", "-o", backup, "--state-dir", state).stdout.strip()
        took = time.monotonic() - t0
        print(f"backup: {out}")
        print(f"backup: `k8semu backup` command {took:.2f}s wall, {backup.stat().st_size} bytes;"
              f" load {os.getloadavg()[0]:.2f}")  # fmt: skip
        print(f"restore, pods still running: {_restore(backup, config, state, api, node_ip)}")
        _k8semu("down", "--state-dir", state)  # every process gone, pods too: a disaster
        print(f"restore, nothing running: {_restore(backup, config, state, api, node_ip)}")
    finally:
        subprocess.run([sys.executable, "-m", "k8semu", "down", "--state-dir", str(state)],
                       capture_output=True)  # fmt: skip
    if len(sys.argv) <= 1:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

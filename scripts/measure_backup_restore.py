#!/usr/bin/env python3
"""Backup time and size, and restore RTO, of the default cluster layout with 200 objects
(docs/operations.md, "Backups and disaster recovery").

Starts the default layout (3 store replicas, one API server, scheduler and controller manager,
3 process-runtime workers, the DNS add-on) on free ports with `k8semu up --detach`, creates
200 objects (k8semu.bench.dr's: 10 Deployments of 1 echo pod with a NodePort Service each,
60 ConfigMaps, 60 Secrets, 60 ClusterIP Services), waits until every Deployment is available,
then times
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
from pathlib import Path

import yaml

from k8semu.bench import dr
from k8semu.bench._clusterrun import ClusterLayout, bench_config
from k8semu.cluster.state import read_state

DEPLOYMENTS, OBJECTS = 10, 200


def _restore(backup: Path, config: Path, state: Path, api: list[str], node_ip: str) -> str:
    t0 = time.monotonic()
    _k8semu("restore", backup, "-f", config, "--state-dir", state, "--yes")
    restored = time.monotonic() - t0
    rto = asyncio.run(dr.wait_serving(api, node_ip, DEPLOYMENTS, 300)) - t0
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"`k8semu restore --yes` returned after {restored:.1f}s; every Deployment available and"
        f" every Service answering {rto:.1f}s after the command (RTO); load {load}"
    )


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
        asyncio.run(dr.create_objects(api, dr.objects_yaml(DEPLOYMENTS, OBJECTS)))
        asyncio.run(dr.wait_serving(api, node_ip, DEPLOYMENTS, 300))
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

#!/usr/bin/env python3
"""The Kubernetes HorizontalPodAutoscaler walkthrough, with `k8semu` for `kubectl`, on a
fresh local cluster (1 store replica, 1 process-runtime node, the DNS add-on, free ports):
php-apache (registry.k8s.io/hpa-example, 200m requested, 500m limit) and its Service,
`autoscale --cpu-percent=50 --min=1 --max=10`, the busybox load generator through
`run -i --tty --rm`, then `get hpa` every 5 s until the HPA reaches 3 replicas (or 150 s),
and `describe hpa`. Prints the table as it goes; the cluster is stopped at the end (its
state dir is kept under --workdir for the logs).

Usage: scripts/walkthrough_hpa.py [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from k8semu.bench._clusterrun import BenchCluster, ClusterLayout

PHP_APACHE = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: php-apache}
spec:
  selector: {matchLabels: {run: php-apache}}
  template:
    metadata: {labels: {run: php-apache}}
    spec:
      containers:
      - name: php-apache
        image: registry.k8s.io/hpa-example
        ports: [{containerPort: 80}]
        resources: {limits: {cpu: 500m}, requests: {cpu: 200m}}
---
apiVersion: v1
kind: Service
metadata: {name: php-apache, labels: {run: php-apache}}
spec:
  ports: [{port: 80}]
  selector: {run: php-apache}
"""
LOAD = "while sleep 0.01; do wget -q -O- http://php-apache; done"
TARGET_REPLICAS = 3
DEADLINE = 150.0  # seconds of load at most


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/k8semu-hpa-walkthrough"))
    args = parser.parse_args()
    layout = ClusterLayout(
        name="hpawalk", store_replicas=1, real_nodes=1, addons=("dns",), timings={}
    )
    with BenchCluster(layout, workdir=args.workdir, keep=True) as cluster:
        state = cluster.start()
        server = state.api_servers[0]

        def k8semu(*argv: str, stdin: str | None = None) -> str:
            cmd = [sys.executable, "-m", "k8semu", *argv, "--server", server]
            proc = subprocess.run(
                cmd, env=cluster.env, capture_output=True, text=True, input=stdin, timeout=60
            )
            return proc.stdout + proc.stderr

        print(k8semu("apply", "-f", "-", stdin=PHP_APACHE), end="")
        print(k8semu("autoscale", "deployment", "php-apache", "--cpu-percent=50", "--min=1",
                     "--max=10"), end="")  # fmt: skip
        load = subprocess.Popen(
            [sys.executable, "-m", "k8semu", "run", "-i", "--tty", "load-generator", "--rm",
             "--image=busybox:1.28", "--restart=Never", "--server", server,
             "--", "/bin/sh", "-c", LOAD],
            env=cluster.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        start = time.monotonic()
        reached = None
        try:
            while time.monotonic() - start < DEADLINE:
                row = k8semu("get", "hpa", "php-apache", "--no-headers").strip()
                elapsed = time.monotonic() - start
                print(f"{elapsed:5.0f}s  {row}  (load {os.getloadavg()[0]:.1f})", flush=True)
                replicas = row.split()[6] if len(row.split()) > 6 else ""
                if replicas.isdigit() and int(replicas) >= TARGET_REPLICAS:
                    reached = elapsed
                    break
                time.sleep(5)
        finally:
            load.send_signal(2)  # Ctrl-C: the load generator stops and --rm deletes its pod
            try:
                load.wait(30)
            except subprocess.TimeoutExpired:
                load.kill()
                load.wait()
        print(k8semu("describe", "hpa", "php-apache"), end="")
        took = "not reached" if reached is None else f"{reached:.0f} s"
        print(f"{TARGET_REPLICAS} replicas after: {took}")
        return 0 if reached is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())

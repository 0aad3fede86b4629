#!/usr/bin/env python3
"""What a cgroup costs a container run (figures for docs/kubelet.md): RUNS runs of `true`
spawned plainly, then each in a fresh cgroup as the process runtime does it (prepare: make it
and write the limits; join: the shell in front; ended: kill what is left and remove it).

Needs root and usable cgroups; makes its cgroups under a throw-away kubelet hierarchy and
removes them, also on failure.

Usage: scripts/measure_cgroup_overhead.py [--runs 50]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time

from k8semu.kubelet import cgroups as cg
from k8semu.kubelet.runtime import Resources

LIMITS = Resources(cpu_request_milli=100, cpu_limit_milli=200, memory_limit=64 << 20)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=50)
    runs = p.parse_args().runs
    groups, why = cg.discover()
    if groups is None or os.geteuid() != 0:
        raise SystemExit(f"no usable cgroups: {why or 'needs root'}")
    node = cg.NodeCgroups(
        groups, cg.hierarchy_name("measure", tempfile.mkdtemp()), pod_pids_limit=1024
    )
    try:
        start = time.perf_counter()
        for _ in range(runs):
            subprocess.run(["true"], check=True)
        plain = (time.perf_counter() - start) / runs
        start = time.perf_counter()
        for i in range(runs):
            procs = node.prepare(f"u{i}", "main", LIMITS)
            subprocess.run(cg.join_argv(procs, ["true"]), check=True)
            node.ended(f"u{i}", "main")
        in_cgroup = (time.perf_counter() - start) / runs
    finally:
        groups.remove(node.hierarchy, kill=True)
        groups.remove_top_if_empty()
    print(
        f"cgroup v{groups.version}, {runs} runs: spawn `true` {plain * 1000:.1f} ms;"
        f" in a fresh cgroup (prepare, join, spawn, remove) {in_cgroup * 1000:.1f} ms;"
        f" load average {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()

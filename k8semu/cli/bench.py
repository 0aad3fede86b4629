"""`k8semu bench ...`: the benchmarks that compare k8semu with the real thing."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# Benchmark name -> module under k8semu.bench with a `main(argv)`; imported only when run.
BENCHMARKS: dict[str, str] = {
    "store": "store",
    "api": "api",
    "proxy": "proxy",
    "ingress": "ingress",
    "pods": "pods",
    "cluster": "cluster",
    "ha": "ha",
    "dr": "dr",
    "soak": "soak",
    "autoscale": "autoscale",
    "tls": "tls",
}


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: k8semu bench {{{','.join(BENCHMARKS)}}} [--help]", file=sys.stderr)
        return 2
    module = importlib.import_module(f"k8semu.bench.{BENCHMARKS[argv[0]]}")
    return int(module.main(list(argv[1:])))

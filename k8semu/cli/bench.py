"""`k8semu bench ...`: the benchmarks that compare k8semu with the real thing."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str]) -> int:
    if not argv or argv[0] not in ("store", "api"):
        print("usage: k8semu bench {store,api} [--help]", file=sys.stderr)
        return 2
    if argv[0] == "api":
        from k8semu.bench import api

        return api.main(list(argv[1:]))
    from k8semu.bench import store

    return store.main(list(argv[1:]))

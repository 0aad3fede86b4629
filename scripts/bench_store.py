#!/usr/bin/env python3
"""Run the store benchmark (same as `k8semu bench store`); see k8semu/bench/store.py."""

from __future__ import annotations

import sys

from k8semu.bench.store import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

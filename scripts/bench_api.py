#!/usr/bin/env python3
"""Run the API server benchmark (same as `k8semu bench api`); see k8semu/bench/api.py."""

from __future__ import annotations

import sys

from k8semu.bench.api import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

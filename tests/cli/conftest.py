"""Fixtures: `k8semu`, which runs `python -m k8semu VERB ... --server ADDRESS` as a subprocess
against the shared module-scoped `apiserver` (a one-replica `k8semu store` and a
`python -m k8semu apiserver`, from tests/support/fixtures.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.apiserver import APIServerProcess


@dataclass
class Result:
    code: int
    out: str
    err: str


Run = Callable[..., Result]


@pytest.fixture
def k8semu(apiserver: APIServerProcess, tmp_path: Path) -> Run:
    # No kubeconfig: the default path (~/.k8semu/config) is absent in a fresh HOME.
    env = {k: v for k, v in os.environ.items() if k != "K8SEMU_CONFIG"}
    env["HOME"] = str(tmp_path)

    def run(*args: str, stdin: str | None = None, server: bool = True) -> Result:
        cmd = [sys.executable, "-m", "k8semu", *args]
        if server:
            cmd += ["--server", apiserver.address]
        proc = subprocess.run(
            cmd, input=stdin, capture_output=True, text=True, env=env, timeout=30, check=False
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run

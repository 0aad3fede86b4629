"""`k8semu join --tunnel-port`: its default and a bad value, refused before anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from k8semu.cluster.config import DEFAULT_TUNNEL_PORT, default_tunnel_port


def test_default_tunnel_port_follows_the_node_ip() -> None:
    assert DEFAULT_TUNNEL_PORT == 10262
    assert default_tunnel_port("10.213.4.2") == 10262
    assert default_tunnel_port("192.0.2.7") == 10262
    assert default_tunnel_port("127.0.1.1") == 0  # this host only: nobody else could use it
    assert default_tunnel_port("::1") == 0
    assert default_tunnel_port("not an ip") == 0


def test_a_bad_tunnel_port_is_refused_naming_the_flag(tmp_path: Path) -> None:
    env = dict(os.environ, HOME=str(tmp_path), K8SEMU_CONFIG=str(tmp_path / "config"))
    run = subprocess.run(
        [sys.executable, "-m", "k8semu", "join", "--server", "127.0.0.1:1",
         "--node-name", "j1", "--node-ip", "10.213.0.2", "--tunnel-port", "70000",
         "--state-dir", str(tmp_path / "state")],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert run.returncode == 2, run.stdout + run.stderr
    assert "--tunnel-port: must be 0 (off) or 1-65535, got 70000" in run.stderr
    assert not (tmp_path / "state").exists()

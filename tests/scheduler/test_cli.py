"""`k8semu scheduler` flags: parsed into SchedulerConfig; bad ones named, exit 2 (or 1)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from k8semu.cli import scheduler as cli
from k8semu.cluster.probes import PROBE_CHANNEL_OPTIONS
from k8semu.cluster.processes import free_loopback_ports


def test_flags_make_the_config() -> None:
    ns = cli._parser().parse_args(
        [
            "--scheduler-name", "my-scheduler",
            "--no-leader-elect",
            "--leader-elect-lease-duration", "15s",
            "--leader-elect-renew-deadline", "10s",
            "--leader-elect-retry-period", "2s",
            "--percentage-of-nodes-to-score", "20",
            "--listen-address", "127.0.0.1:0",
        ]
    )  # fmt: skip
    config = cli.config_from_args(ns)
    assert config.scheduler_name == "my-scheduler"
    assert not config.leader_elect
    le = config.leader_election
    assert (le.lease_duration, le.renew_deadline, le.retry_period) == (15.0, 10.0, 2.0)
    assert config.percentage_of_nodes_to_score == 20
    defaults = cli.config_from_args(cli._parser().parse_args([]))
    assert defaults.leader_elect and defaults.leader_election.lease_duration == 4.0
    assert defaults.leader_election.retry_period == 0.5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--leader-elect-retry-period", "5x"],
            "--leader-elect-retry-period: '5x' is not a duration",
        ),
        (
            ["--leader-elect-lease-duration", "2s"],
            "--leader-elect-lease-duration: must be greater than --leader-elect-renew-deadline",
        ),
        (
            ["--percentage-of-nodes-to-score", "101"],
            "--percentage-of-nodes-to-score: must be 0..100",
        ),
        (["--server", "nohost"], "server 'nohost': expected HOST:PORT"),
        (["--kubeconfig", "/nonexistent/config"], "kubeconfig /nonexistent/config: no such file"),
        (["--scheduler-name", ""], "--scheduler-name: must not be empty"),
        (["--bind-concurrency", "0"], "--bind-concurrency: must be >= 1"),
    ],
)
def test_bad_flags_are_named(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(args) == 2
    assert message in capsys.readouterr().err


def test_an_unusable_listen_address_exits_1() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "k8semu", "scheduler", "--listen-address", "192.0.2.1:0",
         "--server", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "--listen-address: cannot listen on 192.0.2.1:0" in proc.stderr


def test_without_an_api_server_it_waits_not_serving_and_stops_on_sigterm() -> None:
    api, health_port = free_loopback_ports(2)
    address = f"127.0.0.1:{health_port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "k8semu", "scheduler", "--server", f"127.0.0.1:{api}",
         "--listen-address", address, "--log-level", "error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        end = time.monotonic() + 60
        status = None
        # Fast reconnect: with gRPC's default back-off the attempts refused while the
        # scheduler imports (a busy host) push the next one past the 60 s.
        with grpc.insecure_channel(address, options=PROBE_CHANNEL_OPTIONS) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while status is None:
                assert time.monotonic() < end, "no health answer"
                assert proc.poll() is None, "scheduler exited"
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                except grpc.RpcError:
                    time.sleep(0.05)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

"""`ComponentProcess`: one k8semu component (`python -m k8semu VERB ...`) as a subprocess of
a benchmark or a test, serving grpc.health.v1 on a loopback address and ended by the pid it
started.

It owns starting, the wait for SERVING and ending; a component's flags come from the
launcher's builders in `plan` (`APIServerProcess`, `SchedulerProcess` here), so a benchmark
or a test starts a component with the command line `k8semu up` gives it. It never signals a
process it did not start. A component that exits or is not serving in time is a
`ComponentStartError` carrying its log.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from k8semu import transport
from k8semu.cluster.errors import ComponentStartError
from k8semu.cluster.plan import apiserver_args, scheduler_args
from k8semu.cluster.probes import PROBE_CHANNEL_OPTIONS
from k8semu.cluster.processes import free_loopback_ports

__all__ = ["APIServerProcess", "ComponentProcess", "SchedulerProcess"]

SERVING_TIMEOUT = 30.0
CLOSE_TIMEOUT = 10.0


class ComponentProcess:
    """`python -m k8semu VERB --listen-address ADDRESS ARGS...` on 127.0.0.1:`port` (a free
    one unless given); its output is appended to `log_path` across restarts. Nothing runs
    until `start()`; `proc` is then the latest process, running or not."""

    component = "component"  # names the process in failures
    serving_timeout = SERVING_TIMEOUT

    def __init__(
        self, verb: str, args: Sequence[str], log_path: Path, *, port: int | None = None
    ) -> None:
        self.port = free_loopback_ports(1)[0] if port is None else port
        self.address = f"127.0.0.1:{self.port}"
        self.argv = [sys.executable, "-m", "k8semu", verb, "--listen-address", self.address]
        self.argv += args
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        #: The CA and client certificate `wait_serving` asks a TLS component with.
        self.probe_tls: transport.ClientTLS | None = None

    def start(self) -> Self:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ComponentStartError(f"{self.component} was never started")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_serving(self, timeout: float | None = None) -> None:
        """Poll the health service until it says SERVING; ComponentStartError with the log if
        the process exits first or `timeout` (default `serving_timeout`) passes."""
        if self.proc is None:
            raise ComponentStartError(f"{self.component} was never started")
        timeout = self.serving_timeout if timeout is None else timeout
        end = time.monotonic() + timeout
        with self._channel() as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < end:
                if self.proc.poll() is not None:
                    raise ComponentStartError(
                        f"{self.component} exited: {self.output()}", exited=True
                    )
                try:
                    resp = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if resp.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        raise ComponentStartError(f"{self.component} not serving in {timeout}s: {self.output()}")

    def _channel(self) -> grpc.Channel:
        # The launcher's probe options: with gRPC's default back-off (1 s growing 1.6x to
        # 120 s) the connections refused while a component imports on a busy host push the
        # next attempt ever later (at load 22 an API server ready 9 s after its start was
        # seen 7 s after that); a start of 45 s is seen only after a 60 s wait has ended.
        options = PROBE_CHANNEL_OPTIONS
        if self.probe_tls is None:
            return grpc.insecure_channel(self.address, options=options)
        credentials = transport.channel_credentials(self.probe_tls)
        return grpc.secure_channel(self.address, credentials, options=options)

    def kill(self) -> None:
        """SIGKILL, by pid."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        """SIGTERM, then SIGKILL after CLOSE_TIMEOUT seconds."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(CLOSE_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class APIServerProcess(ComponentProcess):
    """`k8semu apiserver` on the store at `store_endpoints`, with `extra_args` after the
    launcher's flags; starts at once unless `start=False`. Its health service says SERVING
    once the system namespaces exist."""

    component = "apiserver"

    def __init__(
        self,
        store_endpoints: Sequence[str],
        log_path: Path,
        extra_args: Sequence[str] = (),
        *,
        start: bool = True,
    ) -> None:
        self.extra_args = tuple(extra_args)
        super().__init__(
            "apiserver", [*apiserver_args(store_endpoints), *self.extra_args], log_path
        )
        if start:
            self.start()

    def restart(self) -> None:
        """SIGKILL, then the same command on the same address, waited for until SERVING."""
        self.kill()
        self.start()
        self.wait_serving()


class SchedulerProcess(ComponentProcess):
    """`k8semu scheduler` on the API servers `servers`, with `extra_args`; starts at once
    unless `start=False`."""

    component = "scheduler"

    def __init__(
        self,
        servers: Sequence[str],
        log_path: Path,
        extra_args: Sequence[str] = (),
        *,
        start: bool = True,
    ) -> None:
        super().__init__("scheduler", list(scheduler_args(servers, extra_args)), log_path)
        if start:
            self.start()

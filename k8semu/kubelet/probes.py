"""Container probes: their timing rules (pure) and the three ways to run one.

Kubernetes' semantics: the first probe runs `initialDelaySeconds` after the container started,
then one every `periodSeconds`, each with `timeoutSeconds` to answer (a timeout is a
failure). The result flips to Success after `successThreshold` successes in a row and to
Failure after `failureThreshold` failures in a row. Before any flip, readiness and startup
count as failing (not ready, not started) and liveness as passing. Zero fields take
Kubernetes' defaults (period 10 s, timeout 1 s, success 1, failure 3). While a startup probe
exists and has not succeeded, liveness and readiness do not run.

`ProbeTracker` and `ProbeTiming` are pure; `run_probe` does the I/O (an HTTP GET or TCP
connect to the pod IP, or a command through a caller-given exec function).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from k8semu.pb.api.v1 import core_pb2, meta_pb2

DEFAULT_PERIOD = 10
DEFAULT_TIMEOUT = 1
DEFAULT_SUCCESS_THRESHOLD = 1
DEFAULT_FAILURE_THRESHOLD = 3


class ProbeKind(enum.Enum):
    STARTUP = "Startup"
    LIVENESS = "Liveness"
    READINESS = "Readiness"


@dataclass(frozen=True, slots=True)
class ProbeTiming:
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int

    @classmethod
    def of(cls, probe: core_pb2.Probe, kind: ProbeKind) -> ProbeTiming:
        success = probe.success_threshold or DEFAULT_SUCCESS_THRESHOLD
        if kind is not ProbeKind.READINESS:
            success = 1  # Kubernetes: liveness and startup must have successThreshold 1
        return cls(
            initial_delay=max(probe.initial_delay_seconds, 0),
            period=probe.period_seconds or DEFAULT_PERIOD,
            timeout=probe.timeout_seconds or DEFAULT_TIMEOUT,
            success_threshold=success,
            failure_threshold=probe.failure_threshold or DEFAULT_FAILURE_THRESHOLD,
        )

    def probe_times(self, started_at: float) -> Callable[[int], float]:
        """When the n-th probe (n = 0, 1, ...) is due, for a container started at `started_at`."""
        return lambda n: started_at + self.initial_delay + n * self.period


class ProbeTracker:
    """The result of one probe of one container run, from the outcomes so far."""

    def __init__(self, kind: ProbeKind, timing: ProbeTiming) -> None:
        self.kind = kind
        self.timing = timing
        self.result = kind is ProbeKind.LIVENESS  # before any flip
        self._successes = 0
        self._failures = 0

    @property
    def failing(self) -> bool:
        """`failureThreshold` failures in a row (for a startup probe: give up, restart)."""
        return self._failures >= self.timing.failure_threshold

    def observe(self, ok: bool) -> bool:
        """Count one outcome; returns the (possibly new) result."""
        if ok:
            self._successes += 1
            self._failures = 0
            if self._successes >= self.timing.success_threshold:
                self.result = True
        else:
            self._failures += 1
            self._successes = 0
            if self._failures >= self.timing.failure_threshold:
                self.result = False
        return self.result


ExecFunc = Callable[[Sequence[str], float], Awaitable[tuple[int, bytes]]]


def _port(value: meta_pb2.IntOrString, container: core_pb2.Container) -> int:
    which = value.WhichOneof("value")
    if which == "int_val":
        return int(value.int_val)
    if which == "str_val":
        if value.str_val.isdigit():
            return int(value.str_val)
        for port in container.ports:
            if port.name == value.str_val:
                return port.container_port
        raise ValueError(f"port {value.str_val!r}: no container port of that name")
    raise ValueError("port: Required value")


async def _http_get(action: core_pb2.HTTPGetAction, host: str, port: int, timeout: float) -> str:
    """'' on a 2xx/3xx answer, else why not."""
    if action.scheme and action.scheme.upper() != "HTTP":
        return f"scheme {action.scheme}: only HTTP is supported"
    path = action.path or "/"
    if not path.startswith("/"):
        path = "/" + path
    headers = {"Host": f"{host}:{port}", "User-Agent": "kube-probe/k8semu", "Accept": "*/*"}
    for header in action.http_headers:
        headers[header.name] = header.value
    request = f"GET {path} HTTP/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write((request + "\r\n").encode("latin-1"))
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
    parts = line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        return f"HTTP probe failed: malformed status line {line[:80]!r}"
    code = int(parts[1])
    if 200 <= code < 400:
        return ""
    return f"HTTP probe failed with statuscode: {code}"


async def run_probe(
    probe: core_pb2.Probe | core_pb2.LifecycleHandler,
    container: core_pb2.Container,
    pod_ip: str,
    timeout: float,
    exec_func: ExecFunc,
) -> str:
    """Run `probe` once: '' on success, else a message saying why it failed. A lifecycle
    handler's exec, httpGet and tcpSocket actions are the probes' and run the same way."""
    try:
        if probe.HasField("exec"):
            if not probe.exec.command:
                return "exec probe: command: Required value"
            code, output = await exec_func(list(probe.exec.command), timeout)
            if code == 0:
                return ""
            text = output.decode(errors="replace").strip()[:200]
            return f"command exited with {code}: {text}" if text else f"command exited with {code}"
        if probe.HasField("http_get"):
            host = probe.http_get.host or pod_ip
            return await _http_get(
                probe.http_get, host, _port(probe.http_get.port, container), timeout
            )
        if probe.HasField("tcp_socket"):
            host = probe.tcp_socket.host or pod_ip
            port = _port(probe.tcp_socket.port, container)
            async with asyncio.timeout(timeout):
                _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return ""
    except TimeoutError:
        return f"probe timed out after {timeout:g}s"
    except (OSError, ValueError) as exc:
        return f"probe failed: {exc}"
    return "probe has no handler (exec, httpGet or tcpSocket)"

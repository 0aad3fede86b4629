"""Service proxy benchmark: the same traffic direct to a backend, through our proxy and
through haproxy, side by side in one run (``k8semu bench proxy``).

Processes, all on this machine and all on loopback:

backends
    one subprocess (``--serve-backends``, uvloop) with two "pods" on 127.244.254.1 and .2,
    each serving a minimal HTTP/1.1 keep-alive server (every request gets the same 2-byte
    answer) and a bulk server (a client sends ``N\\n`` and gets N bytes, then EOF).
our proxy
    one subprocess (``--serve-proxy``) running `k8semu.proxy.Proxier` fed a static Service
    and Endpoints (no API server), on the same event loop choice as ``k8semu proxy``.
haproxy
    ``/usr/sbin/haproxy`` with a generated config: the same two backends, ``balance
    roundrobin``, ``mode tcp``, one thread (``nbthread 1``: like our proxy, one process, one
    core), stopped by pid.

The client (this process, uvloop) runs, per path: bulk transfer (``--bulk-mb`` over one
connection, and the same total over 8), small HTTP requests/s over ``--connections``
keep-alive connections (one request in flight per connection) for ``--seconds``, new
connections/s (``--new-conn-workers`` loops of connect, one request with ``Connection:
close``, wait for the close), and per-request latency on one keep-alive connection
(``--latency-requests`` one after another); "added" latency is the path's percentile minus
the direct one. Proxy CPU seconds per phase come from /proc. Every phase is bounded in count
and time; nothing leaves 127.0.0.0/8.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k8semu.bench._common import (
    CpuMeter,
    options_from_args,
    percentile,
    positive_float,
    positive_int,
    ratio,
    run_and_print,
    run_loop,
    say,
    serve_as_proxy,
)
from k8semu.cluster.processes import free_loopback_ports

__all__ = ["ProxyBenchOptions", "main", "run"]

HAPROXY = "/usr/sbin/haproxy"
BACKEND_IPS = ("127.244.254.1", "127.244.254.2")
OUR_IP = "127.96.254.1"
HAPROXY_IP = "127.96.254.2"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: k8semu-bench\r\n\r\n"
CLOSE_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
_CHUNK = b"\x00" * (256 * 1024)
_READY_S = 20.0
_PHASE_CAP_S = 60.0
PATHS = ("direct", "proxy", "haproxy")
TARGET_THROUGHPUT_RATIO = 0.5
TARGET_ADDED_LATENCY_RATIO = 2.0


@dataclass(frozen=True, kw_only=True)
class ProxyBenchOptions:
    bulk_mb: int = 200
    bulk_connections: int = 8
    connections: int = 64
    seconds: float = 5.0
    new_conn_workers: int = 16
    latency_requests: int = 5000
    rounds: int = 3
    haproxy_threads: int = 1
    phases: tuple[str, ...] = ("bulk_1", "bulk_n", "rps", "new_conns", "latency")
    paths: tuple[str, ...] = PATHS


@dataclass
class PathResult:
    path: str
    bulk_1_mbps: float = 0.0
    bulk_n_mbps: float = 0.0
    rps: float = 0.0
    new_conns_per_s: float = 0.0
    p50_us: float = 0.0
    p99_us: float = 0.0
    added_p50_us: float | None = None
    added_p99_us: float | None = None
    errors: int = 0
    cpu_s: dict[str, float | None] = field(default_factory=dict)


# -- backends (a subprocess) -----------------------------------------------------------------


class _HTTPBackend(asyncio.Protocol):
    def __init__(self) -> None:
        self.t: Any = None
        self.buf = b""

    def connection_made(self, transport: Any) -> None:
        self.t = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        n = buf.count(b"\r\n\r\n")
        if n:
            self.t.write(RESPONSE * n)
            if b"Connection: close" in buf:
                self.t.close()
            buf = buf[buf.rindex(b"\r\n\r\n") + 4 :]
        self.buf = buf[-65536:]


class _BulkBackend(asyncio.Protocol):
    def __init__(self) -> None:
        self.t: Any = None
        self.buf = b""
        self.left = -1
        self.paused = False

    def connection_made(self, transport: Any) -> None:
        self.t = transport

    def data_received(self, data: bytes) -> None:
        if self.left >= 0:
            return
        self.buf += data
        line, sep, _ = self.buf.partition(b"\n")
        if not sep:
            if len(self.buf) > 64:
                self.t.close()
            return
        try:
            self.left = max(0, int(line))
        except ValueError:
            self.t.close()
            return
        self._pump()

    def _pump(self) -> None:
        while self.left > 0 and not self.paused:
            n = min(self.left, len(_CHUNK))
            self.t.write(_CHUNK if n == len(_CHUNK) else _CHUNK[:n])
            self.left -= n
        if self.left == 0:
            self.left = -2
            self.t.close()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.left > 0:
            self._pump()


async def _serve_backends(ips: Sequence[str], http_port: int, bulk_port: int) -> None:
    loop = asyncio.get_running_loop()
    servers = []
    for ip in ips:
        servers.append(await loop.create_server(_HTTPBackend, ip, http_port, backlog=4096))
        servers.append(await loop.create_server(_BulkBackend, ip, bulk_port, backlog=4096))
    print("ready", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()


# -- our proxy (a subprocess) ----------------------------------------------------------------


def bench_service(
    ips: Sequence[str], ports: dict[str, tuple[int, int]], cluster_ip: str = OUR_IP
) -> tuple[Any, Any]:
    """The static Service bench/web (`ports`: name -> (port, target)) on `cluster_ip` and
    its Endpoints: the backends `ips`."""
    from k8semu.pb.api.v1 import core_pb2

    svc = core_pb2.Service()
    svc.metadata.namespace, svc.metadata.name = "bench", "web"
    svc.spec.cluster_ip = cluster_ip
    eps = core_pb2.Endpoints()
    eps.metadata.namespace, eps.metadata.name = "bench", "web"
    subset = eps.subsets.add()
    for ip in ips:
        subset.addresses.add(ip=ip)
    for name, (port, target) in ports.items():
        svc.spec.ports.add(name=name, port=port, protocol="TCP").target_port.int_val = target
        subset.ports.add(name=name, port=target, protocol="TCP")
    return svc, eps


async def _serve_proxy(ips: Sequence[str], ports: dict[str, tuple[int, int]]) -> None:
    from k8semu.proxy import Proxier

    svc, eps = bench_service(ips, ports)
    proxier = Proxier()
    await proxier.start()
    await proxier.apply_objects([svc], [eps])
    if proxier.bind_errors:
        raise SystemExit(f"proxy: {proxier.bind_errors}")
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await proxier.stop()


# -- haproxy ---------------------------------------------------------------------------------


def haproxy_config(
    ips: Sequence[str], ports: dict[str, tuple[int, int]], *, threads: int = 1
) -> str:
    lines = [
        "global",
        "  maxconn 4096",
        f"  nbthread {threads}",
        "defaults",
        "  mode tcp",
        "  timeout connect 2s",
        "  timeout client 60s",
        "  timeout server 60s",
    ]
    for name, (port, target) in ports.items():
        lines += [
            f"frontend fe_{name}",
            f"  bind {HAPROXY_IP}:{port}",
            f"  default_backend be_{name}",
            f"backend be_{name}",
            "  balance roundrobin",
            *(f"  server s{i} {ip}:{target}" for i, ip in enumerate(ips)),
        ]
    return "\n".join(lines) + "\n"


# -- client ----------------------------------------------------------------------------------


class _BulkClient(asyncio.Protocol):
    def __init__(self, nbytes: int, done: asyncio.Future[int]) -> None:
        self.nbytes = nbytes
        self.got = 0
        self.done = done

    def connection_made(self, transport: Any) -> None:
        transport.write(b"%d\n" % self.nbytes)

    def data_received(self, data: bytes) -> None:
        self.got += len(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.got)


async def _bulk(host: str, port: int, total: int, conns: int) -> tuple[float, int]:
    """MB/s of `total` bytes over `conns` connections (download), and errors."""
    loop = asyncio.get_running_loop()
    share = total // conns
    futures = [loop.create_future() for _ in range(conns)]
    started = time.perf_counter()
    async with asyncio.timeout(_PHASE_CAP_S):
        for fut in futures:
            await loop.create_connection(lambda f=fut: _BulkClient(share, f), host, port)  # type: ignore[misc]
        got = await asyncio.gather(*futures)
    elapsed = time.perf_counter() - started
    errors = sum(1 for g in got if g != share)
    return sum(got) / elapsed / 1e6, errors


class _RequestClient(asyncio.Protocol):
    """Keep-alive, one request in flight; counts answers (they all have RESPONSE's length)."""

    def __init__(self, latencies: array.array[float] | None = None, limit: int = 0) -> None:
        self.t: Any = None
        self.pending = 0
        self.count = 0
        self.running = True
        self.latencies = latencies
        self.limit = limit
        self.sent_at = 0.0
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.t = transport

    def send(self) -> None:
        self.sent_at = time.perf_counter()
        self.t.write(REQUEST)

    def data_received(self, data: bytes) -> None:
        self.pending += len(data)
        if self.pending < len(RESPONSE):
            return
        now = time.perf_counter()
        self.pending -= len(RESPONSE)
        self.count += 1
        if self.latencies is not None:
            self.latencies.append(now - self.sent_at)
        if self.limit and self.count >= self.limit:
            self.running = False
        if self.running:
            self.send()
        elif not self.finished.done():
            self.finished.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            self.finished.set_result(None)


async def _rps(host: str, port: int, conns: int, seconds: float) -> tuple[float, int]:
    loop = asyncio.get_running_loop()
    clients: list[_RequestClient] = []
    async with asyncio.timeout(_PHASE_CAP_S):
        for _ in range(conns):
            _, c = await loop.create_connection(_RequestClient, host, port)
            clients.append(c)
        started = time.perf_counter()
        for c in clients:
            c.send()
        await asyncio.sleep(seconds)  # a steady load for a fixed time: that is the measure
        done = sum(c.count for c in clients)
        elapsed = time.perf_counter() - started
        for c in clients:
            c.running = False
        await asyncio.gather(*(c.finished for c in clients))
    for c in clients:
        c.t.close()
    errors = sum(1 for c in clients if c.count == 0)
    return done / elapsed, errors


async def _latency(host: str, port: int, n: int) -> tuple[float, float]:
    loop = asyncio.get_running_loop()
    latencies: array.array[float] = array.array("d")
    async with asyncio.timeout(_PHASE_CAP_S):
        t, c = await loop.create_connection(lambda: _RequestClient(latencies, n), host, port)
        c.send()
        await c.finished
    t.close()
    samples = sorted(latencies[min(100, n // 10) :])  # without the warm-up
    return percentile(samples, 50) * 1e6, percentile(samples, 99) * 1e6


class _OneShot(asyncio.Protocol):
    def __init__(self, done: asyncio.Future[bool]) -> None:
        self.done = done
        self.got = 0

    def connection_made(self, transport: Any) -> None:
        transport.write(CLOSE_REQUEST)

    def data_received(self, data: bytes) -> None:
        self.got += len(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(self.got >= len(RESPONSE))


async def _new_conns(host: str, port: int, workers: int, seconds: float) -> tuple[float, int]:
    loop = asyncio.get_running_loop()
    count = 0
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal count, errors
        while time.perf_counter() < deadline:
            fut: asyncio.Future[bool] = loop.create_future()
            try:
                await loop.create_connection(lambda f=fut: _OneShot(f), host, port)  # type: ignore[misc]
                ok = await fut
            except OSError:
                ok = False
                await asyncio.sleep(0.01)
            if ok:
                count += 1
            else:
                errors += 1

    started = time.perf_counter()
    async with asyncio.timeout(seconds + _PHASE_CAP_S):
        await asyncio.gather(*(worker() for _ in range(workers)))
    return count / (time.perf_counter() - started), errors


# -- the run ---------------------------------------------------------------------------------


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=out)


def _wait_ready(proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != b"ready":
        raise RuntimeError(f"{what} did not start: {log.read_text()[-2000:]}")


def _wait_port(host: str, port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    end = time.monotonic() + _READY_S
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not listening on {host}:{port}")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


_PHASES = ("bulk_1", "bulk_n", "rps", "new_conns", "latency")


async def _phase(
    phase: str, host: str, ports: dict[str, tuple[int, int]], opts: ProxyBenchOptions
) -> tuple[tuple[float, float], int]:
    """One measurement: (value, second value or 0), errors."""
    http, bulk = ports["http"][0], ports["bulk"][0]
    total = opts.bulk_mb * 1_000_000
    if phase == "bulk_1":
        v, e = await _bulk(host, bulk, total, 1)
        return (v, 0.0), e
    if phase == "bulk_n":
        v, e = await _bulk(host, bulk, total, opts.bulk_connections)
        return (v, 0.0), e
    if phase == "rps":
        v, e = await _rps(host, http, opts.connections, opts.seconds)
        return (v, 0.0), e
    if phase == "new_conns":
        v, e = await _new_conns(host, http, opts.new_conn_workers, opts.seconds)
        return (v, 0.0), e
    return await _latency(host, http, opts.latency_requests), 0


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


async def _measure_all(
    targets: dict[str, tuple[str, dict[str, tuple[int, int]], int]], opts: ProxyBenchOptions
) -> list[PathResult]:
    """Every phase, `rounds` times, the paths interleaved within each round (so a burst of
    load from elsewhere on the machine hits all of them alike); medians are reported."""
    results = {path: PathResult(path) for path in targets}
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    for phase in opts.phases:
        for k in range(opts.rounds):
            for path, (host, ports, pid) in targets.items():
                meter = CpuMeter([pid] if pid else [])
                meter.start()
                value, errors = await _phase(phase, host, ports, opts)
                used = meter.stop()
                say(f"  {phase} round {k + 1}/{opts.rounds}: {path}: {value[0]:,.1f}")
                samples.setdefault((path, phase), []).append(value)
                if used is not None:
                    cpu.setdefault((path, phase), []).append(used)
                results[path].errors += errors
    for path, r in results.items():
        for phase in opts.phases:
            values = samples[(path, phase)]
            first = _median([v[0] for v in values])
            if phase == "bulk_1":
                r.bulk_1_mbps = first
            elif phase == "bulk_n":
                r.bulk_n_mbps = first
            elif phase == "rps":
                r.rps = first
            elif phase == "new_conns":
                r.new_conns_per_s = first
            else:
                r.p50_us = first
                r.p99_us = _median([v[1] for v in values])
            if (path, phase) in cpu:
                r.cpu_s[phase] = _median(cpu[(path, phase)])
    return list(results.values())


def start_servers(
    workdir: Path, spec: str, procs: dict[str, subprocess.Popen[bytes]], *, proxy: bool
) -> None:
    """The backends (and, with `proxy`, our L4 proxy) as subprocesses of this module, given
    the JSON `spec` (ips, ports); added to `procs` as they start (the caller stops them)."""
    me = [sys.executable, "-m", "k8semu.bench.proxy"]
    for name, flag in (("backends", "--serve-backends"), ("proxy", "--serve-proxy")):
        if name == "proxy" and not proxy:
            continue
        log = workdir / f"{name}.log"
        procs[name] = _start([*me, flag, spec], log)
        _wait_ready(procs[name], name, log)


def start_haproxy(
    workdir: Path, config: str, port: int, procs: dict[str, subprocess.Popen[bytes]]
) -> None:
    """haproxy with `config`, ready once it listens on HAPROXY_IP:`port`."""
    if not Path(HAPROXY).exists():
        raise RuntimeError(f"{HAPROXY} not found (apt-get install haproxy)")
    cfg = workdir / "haproxy.cfg"
    cfg.write_text(config)
    procs["haproxy"] = _start([HAPROXY, "-db", "-f", str(cfg)], workdir / "haproxy.log")
    _wait_port(HAPROXY_IP, port, procs["haproxy"], "haproxy")


async def run(opts: ProxyBenchOptions, workdir: Path) -> list[PathResult]:
    http_target, bulk_target, http_port, bulk_port = free_loopback_ports(4)
    ports = {"http": (http_port, http_target), "bulk": (bulk_port, bulk_target)}
    spec = json.dumps({"ips": list(BACKEND_IPS), "ports": ports})
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        start_servers(workdir, spec, procs, proxy="proxy" in opts.paths)
        if "haproxy" in opts.paths:
            config = haproxy_config(BACKEND_IPS, ports, threads=opts.haproxy_threads)
            start_haproxy(workdir, config, http_port, procs)
        all_targets = {
            "direct": (BACKEND_IPS[0], {k: (t, t) for k, (_, t) in ports.items()}, 0),
            "proxy": (OUR_IP, ports, procs["proxy"].pid if "proxy" in procs else 0),
            "haproxy": (HAPROXY_IP, ports, procs["haproxy"].pid if "haproxy" in procs else 0),
        }
        targets = {p: all_targets[p] for p in PATHS if p in opts.paths}
        results = await _measure_all(targets, opts)
    finally:
        for proc in procs.values():
            _stop(proc)
    direct = next((r for r in results if r.path == "direct"), None)
    if direct is not None:
        for r in results:
            r.added_p50_us = r.p50_us - direct.p50_us
            r.added_p99_us = r.p99_us - direct.p99_us
    return results


# -- output ----------------------------------------------------------------------------------


def _rate_rows(
    by: dict[str, PathResult], cols: Sequence[str], opts: ProxyBenchOptions
) -> list[str]:
    """Throughput, rates and latency per path, for the phases that ran."""
    rows: list[tuple[str, str, Any]] = [
        (f"bulk MB/s, 1 connection ({opts.bulk_mb} MB)", "bulk_1_mbps", "{:,.0f}"),
        (f"bulk MB/s, {opts.bulk_connections} connections", "bulk_n_mbps", "{:,.0f}"),
        (f"HTTP requests/s, {opts.connections} keep-alive conns", "rps", "{:,.0f}"),
        (f"new connections/s, {opts.new_conn_workers} workers", "new_conns_per_s", "{:,.0f}"),
        ("latency p50 us, 1 connection", "p50_us", "{:,.0f}"),
        ("latency p99 us, 1 connection", "p99_us", "{:,.0f}"),
        ("added latency p50 us (vs direct)", "added_p50_us", "{:,.0f}"),
        ("added latency p99 us (vs direct)", "added_p99_us", "{:,.0f}"),
    ]
    of_phase = {"bulk_1_mbps": "bulk_1", "bulk_n_mbps": "bulk_n", "rps": "rps"}
    of_phase["new_conns_per_s"] = "new_conns"
    lines = []
    for label, attr, fmt in rows:
        if of_phase.get(attr, "latency") not in opts.phases:
            continue
        cells = []
        for c in cols:
            v = getattr(by[c], attr)
            cells.append(
                "-" if v is None or (c == "direct" and attr.startswith("added")) else fmt.format(v)
            )
        cell = "-"
        if "proxy" in by and "haproxy" in by:
            cell = ratio(getattr(by["proxy"], attr), getattr(by["haproxy"], attr))
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {cell} |")
    return lines


def _cpu_rows(by: dict[str, PathResult], cols: Sequence[str], opts: ProxyBenchOptions) -> list[str]:
    """CPU per unit of work: steadier than the rates on a busy machine."""

    def amount(phase: str, r: PathResult) -> float:
        if phase == "bulk_n":
            return opts.bulk_mb / 100
        if phase == "rps":
            return r.rps * opts.seconds
        return r.new_conns_per_s * opts.seconds

    units = {
        "bulk_n": ("proxy CPU ms per 100 MB", 1e3),
        "rps": ("proxy CPU us per request", 1e6),
        "new_conns": ("proxy CPU us per new connection", 1e6),
    }
    lines = []
    for phase, (label, scale) in units.items():
        if phase not in opts.phases:
            continue
        per: dict[str, float | None] = {}
        for c in cols:
            cpu = by[c].cpu_s.get(phase)
            n = amount(phase, by[c])
            per[c] = cpu / n * scale if cpu is not None and n else None
        cells = ["-" if per[c] is None else f"{per[c]:,.0f}" for c in cols]
        cell = ratio(per.get("proxy"), per.get("haproxy"))
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {cell} |")
    return lines


def _targets_line(p: PathResult, h: PathResult) -> str:
    """Ours against haproxy: the worst throughput ratio and the added latency, with targets."""
    worst = min(
        p.bulk_1_mbps / h.bulk_1_mbps if h.bulk_1_mbps else 0.0,
        p.bulk_n_mbps / h.bulk_n_mbps if h.bulk_n_mbps else 0.0,
        p.rps / h.rps if h.rps else 0.0,
        p.new_conns_per_s / h.new_conns_per_s if h.new_conns_per_s else 0.0,
    )
    added = (
        (p.added_p50_us or 0.0) / h.added_p50_us if h.added_p50_us and h.added_p50_us > 0 else None
    )
    verdict = "-" if added is None else "met" if added <= TARGET_ADDED_LATENCY_RATIO else "missed"
    return (
        f"throughput: worst ours/haproxy {worst:.2f}x (target >= {TARGET_THROUGHPUT_RATIO}x: "
        f"{'met' if worst >= TARGET_THROUGHPUT_RATIO else 'missed'}); added p50 latency "
        f"ours/haproxy {'-' if added is None else f'{added:.2f}x'} (target <= "
        f"{TARGET_ADDED_LATENCY_RATIO}x: {verdict})"
    )


def render(results: Sequence[PathResult], opts: ProxyBenchOptions) -> str:
    by = {r.path: r for r in results}
    cols = [p for p in PATHS if p in by]
    header = ["", *cols, "proxy/haproxy"]
    lines = [
        "| " + " | ".join(header) + " |",
        "| --- |" + " ---: |" * (len(header) - 1),
        *_rate_rows(by, cols, opts),
        *_cpu_rows(by, cols, opts),
        "| errors | " + " | ".join(str(by[c].errors) for c in cols) + " | |",
    ]
    if "proxy" in by and "haproxy" in by and set(opts.phases) == set(_PHASES):
        lines += ["", _targets_line(by["proxy"], by["haproxy"])]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    d = ProxyBenchOptions()
    p = argparse.ArgumentParser(
        prog="k8semu bench proxy",
        description="Direct vs our service proxy vs haproxy: throughput, request rate, "
        "connection rate, added latency.",
    )
    p.add_argument("--bulk-mb", type=positive_int, default=d.bulk_mb)
    p.add_argument("--bulk-connections", type=positive_int, default=d.bulk_connections)
    p.add_argument("--connections", type=positive_int, default=d.connections)
    p.add_argument("--seconds", type=positive_float, default=d.seconds, help="per rate phase")
    p.add_argument("--new-conn-workers", type=positive_int, default=d.new_conn_workers)
    p.add_argument("--latency-requests", type=positive_int, default=d.latency_requests)
    p.add_argument(
        "--haproxy-threads", type=positive_int, default=d.haproxy_threads, help="nbthread"
    )
    p.add_argument(
        "--rounds", type=positive_int, default=d.rounds, help="repeats per phase (medians)"
    )
    p.add_argument(
        "--paths", default=",".join(d.paths), help="comma-separated: direct,proxy,haproxy"
    )
    p.add_argument(
        "--phases", default=",".join(_PHASES), help=f"comma-separated: {','.join(_PHASES)}"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--keep-workdir", action="store_true", help="keep logs and haproxy.cfg")
    p.add_argument("--serve-backends", metavar="SPEC", help=argparse.SUPPRESS)
    p.add_argument("--serve-proxy", metavar="SPEC", help=argparse.SUPPRESS)
    return p


def _spec(text: str) -> tuple[list[str], dict[str, tuple[int, int]]]:
    data = json.loads(text)
    return list(data["ips"]), {k: (int(v[0]), int(v[1])) for k, v in data["ports"].items()}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.serve_backends:
        ips, ports = _spec(args.serve_backends)
        run_loop(_serve_backends(ips, *(t for _, t in ports.values())), True)
        return 0
    if args.serve_proxy:
        return serve_as_proxy(_serve_proxy(*_spec(args.serve_proxy)))
    paths = tuple(p.strip() for p in args.paths.split(",") if p.strip())
    if not paths or any(p not in PATHS for p in paths):
        print(f"k8semu bench proxy: --paths: choose from {','.join(PATHS)}", file=sys.stderr)
        return 2
    phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
    if not phases or any(p not in _PHASES for p in phases):
        print(f"k8semu bench proxy: --phases: choose from {','.join(_PHASES)}", file=sys.stderr)
        return 2
    opts = options_from_args(ProxyBenchOptions, args, phases=phases, paths=paths)
    return run_and_print(
        "proxy",
        lambda workdir: run(opts, workdir),
        opts,
        lambda results: render(results, opts),
        as_json=args.json,
        keep=args.keep_workdir,
    )


if __name__ == "__main__":
    sys.exit(main())

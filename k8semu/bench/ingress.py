"""Ingress benchmark: small HTTP requests routed by host through the built-in ingress
controller, against the same requests straight to the Service (the L4 proxy) and through
haproxy doing the same host routing, in one run (``k8semu bench ingress``).

Processes, all on loopback: the two backends of ``k8semu bench proxy`` (127.244.254.1 and
.2, a 2-byte answer per request); our L4 proxy (``bench proxy --serve-proxy``) on the
Service's ClusterIP; our ingress (``--serve-ingress``: a `Proxier` fed the same static
Service and an `IngressServer` whose only rule sends host ``bench`` to it) on its own
address; haproxy in ``mode http`` with one thread, an ACL on the Host header, ``option
forwardfor`` and ``http-reuse always`` (what our ingress does: keep-alive to the backends,
X-Forwarded-For added).

Two client shapes, each for ``--seconds``, the paths interleaved per round, medians over
``--rounds``: ``keepalive`` (``--connections`` keep-alive connections, one request in
flight on each) and ``newconn`` (``--new-conn-workers`` loops of connect, one request with
``Connection: close``, the answer, the close). Per path and shape: requests/s, p50 and p99 of
the request's time (from its write to its answer's end; newconn: from the connect), and the
CPU time of the serving process per request. Every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import functools
import json
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k8semu.bench._common import (
    CpuMeter,
    argument_parser,
    options_from_args,
    percentile,
    positive_float,
    positive_int,
    run_and_print,
    say,
    serve_as_proxy,
)
from k8semu.bench.proxy import (
    BACKEND_IPS,
    CLOSE_REQUEST,
    HAPROXY_IP,
    OUR_IP,
    REQUEST,
    _start,
    _stop,
    _wait_ready,
    bench_service,
    start_haproxy,
    start_servers,
)
from k8semu.cluster.processes import free_loopback_ports

__all__ = ["IngressBenchOptions", "main", "run"]

INGRESS_IP = "127.96.254.3"
INGRESS_SERVICE_IP = "127.96.254.4"  # the ingress process's own Service address
PATHS = ("proxy", "ingress", "haproxy")
SHAPES = ("keepalive", "newconn")
_END = b"\r\n\r\nok"  # every answer ends its headers then carries "ok"
_CAP_S = 60.0


@dataclass(frozen=True, kw_only=True)
class IngressBenchOptions:
    """What to measure (`paths`, `shapes`: of PATHS and SHAPES, in their order) and how:
    keep-alive `connections` with one request in flight on each, `new_conn_workers` loops
    of connect, one request, the answer and the close; `seconds` per path, shape and round;
    the medians of `rounds`."""

    paths: tuple[str, ...] = PATHS
    shapes: tuple[str, ...] = SHAPES
    connections: int = 16
    new_conn_workers: int = 8
    seconds: float = 3.0
    rounds: int = 3


@dataclass
class Figures:
    """One path and shape: requests/s, the request time's p50/p99, the serving process's
    CPU per request, connections that got no answer."""

    errors: int = 0
    rps: float = 0.0
    p50_us: float = 0.0
    p99_us: float = 0.0
    cpu_us_per_request: float | None = None


@dataclass
class PathResult:
    path: str
    shapes: dict[str, Figures] = field(default_factory=dict)


# -- our ingress (a subprocess) --------------------------------------------------------------


async def _serve_ingress(ips: Sequence[str], target: int, port: int) -> None:
    from k8semu.api import manifest
    from k8semu.pb.api.v1 import networking_pb2
    from k8semu.proxy import Proxier
    from k8semu.proxy.ingress import IngressServer, Listen
    from k8semu.proxy.ingress_table import build_routes

    svc, eps = bench_service(ips, {"http": (80, target)}, INGRESS_SERVICE_IP)
    ing = manifest.decode(
        {
            "metadata": {"name": "web", "namespace": "bench"},
            "spec": {
                "ingressClassName": "k8semu",
                "rules": [{"host": "bench", "http": {"paths": [_BENCH_PATH]}}],
            },
        },
        networking_pb2.Ingress,
    )
    cls = manifest.decode(
        {"metadata": {"name": "k8semu"}, "spec": {"controller": "k8semu.io/ingress"}},
        networking_pb2.IngressClass,
    )
    proxier = Proxier()
    await proxier.start()
    await proxier.apply_objects([svc], [eps])
    server = IngressServer(proxier, Listen(INGRESS_IP, port))
    server.set_routes(build_routes([ing], [cls], [svc]))  # type: ignore[list-item]
    await server.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop()
    await proxier.stop()


_BENCH_PATH = {
    "path": "/",
    "pathType": "Prefix",
    "backend": {"service": {"name": "web", "port": {"number": 80}}},
}


def haproxy_http_config(ips: Sequence[str], target: int, port: int) -> str:
    return "\n".join(
        [
            "global",
            "  maxconn 4096",
            "  nbthread 1",
            "defaults",
            "  mode http",
            "  option http-keep-alive",
            "  option forwardfor",
            "  http-reuse always",
            "  timeout connect 2s",
            "  timeout client 60s",
            "  timeout server 60s",
            "frontend fe",
            f"  bind {HAPROXY_IP}:{port}",
            "  acl is_bench hdr(host) -i bench",
            "  use_backend be if is_bench",
            "backend be",
            "  balance roundrobin",
            *(f"  server s{i} {ip}:{target}" for i, ip in enumerate(ips)),
            "",
        ]
    )


# -- clients ---------------------------------------------------------------------------------


class _Client(asyncio.Protocol):
    """One connection: keep-alive requests one at a time (`again`), or one request and the
    close. Counts answers by their end (`_END`), whatever headers the path added."""

    def __init__(self, latencies: array.array[float], request: bytes, again: bool) -> None:
        self.latencies = latencies
        self.request = request
        self.again = again
        self.running = True
        self.tail = b""
        self.count = 0
        self.t: Any = None
        self.sent_at = time.perf_counter()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.t = transport
        if not self.again:
            transport.write(self.request)

    def send(self) -> None:
        self.sent_at = time.perf_counter()
        self.t.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.tail + data
        n = buf.count(_END)
        self.tail = buf[-(len(_END) - 1) :]
        if not n:
            return
        self.count += n
        self.latencies.append(time.perf_counter() - self.sent_at)
        if self.again and self.running:
            self.send()
        elif self.again and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _keepalive(host: str, port: int, opts: IngressBenchOptions) -> tuple[Figures, int]:
    loop = asyncio.get_running_loop()
    latencies: array.array[float] = array.array("d")
    clients = []
    async with asyncio.timeout(opts.seconds + _CAP_S):
        for _ in range(opts.connections):
            _, c = await loop.create_connection(
                lambda: _Client(latencies, REQUEST, True), host, port
            )
            clients.append(c)
        started = time.perf_counter()
        for c in clients:
            c.send()
        await asyncio.sleep(opts.seconds)  # a steady load for a fixed time: that is the measure
        count, elapsed = sum(c.count for c in clients), time.perf_counter() - started
        for c in clients:
            c.running = False
        await asyncio.gather(*(c.done for c in clients))
    for c in clients:
        c.t.close()
    figures = _figures(count / elapsed, latencies)
    figures.errors = sum(1 for c in clients if c.count == 0)
    return figures, count


async def _newconn(host: str, port: int, opts: IngressBenchOptions) -> tuple[Figures, int]:
    loop = asyncio.get_running_loop()
    latencies: array.array[float] = array.array("d")
    count = errors = 0
    deadline = time.perf_counter() + opts.seconds

    async def worker() -> None:
        nonlocal count, errors
        while time.perf_counter() < deadline:
            try:
                _, c = await loop.create_connection(
                    lambda: _Client(latencies, CLOSE_REQUEST, False), host, port
                )
                await c.done
            except OSError:
                errors += 1
                await asyncio.sleep(0.01)
                continue
            count += c.count
            errors += c.count == 0

    started = time.perf_counter()
    async with asyncio.timeout(opts.seconds + _CAP_S):
        await asyncio.gather(*(worker() for _ in range(opts.new_conn_workers)))
    figures = _figures(count / (time.perf_counter() - started), latencies)
    figures.errors = errors
    return figures, count


def _figures(rps: float, latencies: array.array[float]) -> Figures:
    samples = sorted(latencies)
    if not samples:
        return Figures(rps=rps)
    return Figures(
        rps=rps, p50_us=percentile(samples, 50) * 1e6, p99_us=percentile(samples, 99) * 1e6
    )


# -- the run ---------------------------------------------------------------------------------


def _median_figures(runs: list[Figures]) -> Figures:
    def med(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    cpus = [r.cpu_us_per_request for r in runs if r.cpu_us_per_request is not None]
    return Figures(
        rps=med([r.rps for r in runs]),
        p50_us=med([r.p50_us for r in runs]),
        p99_us=med([r.p99_us for r in runs]),
        cpu_us_per_request=med(cpus) if cpus else None,
        errors=sum(r.errors for r in runs),
    )


async def _measure(
    targets: dict[str, tuple[str, int, int]], opts: IngressBenchOptions
) -> list[PathResult]:
    runs: dict[tuple[str, str], list[Figures]] = {}
    for shape in opts.shapes:
        for k in range(opts.rounds):
            for path, (host, port, pid) in targets.items():
                meter = CpuMeter([pid])
                meter.start()
                measure = _keepalive if shape == "keepalive" else _newconn
                figures, count = await measure(host, port, opts)
                used = meter.stop()
                if used is not None and count:
                    figures.cpu_us_per_request = used / count * 1e6
                say(f"  {shape} round {k + 1}/{opts.rounds}: {path}: {figures.rps:,.0f} req/s")
                runs.setdefault((path, shape), []).append(figures)
    return [
        PathResult(path, {s: _median_figures(runs[(path, s)]) for s in opts.shapes})
        for path in targets
    ]


async def run(opts: IngressBenchOptions, workdir: Path) -> list[PathResult]:
    target, bulk_target, port, bulk_port = free_loopback_ports(4)
    spec = json.dumps(
        {
            "ips": list(BACKEND_IPS),
            "ports": {"http": (port, target), "bulk": (bulk_port, bulk_target)},
        }
    )
    procs: dict[str, Any] = {}
    try:
        start_servers(workdir, spec, procs, proxy="proxy" in opts.paths)
        if "ingress" in opts.paths:
            log = workdir / "ingress.log"
            me = [sys.executable, "-m", "k8semu.bench.ingress", "--serve-ingress", spec]
            procs["ingress"] = _start(me, log)
            _wait_ready(procs["ingress"], "ingress", log)
        if "haproxy" in opts.paths:
            start_haproxy(workdir, haproxy_http_config(BACKEND_IPS, target, port), port, procs)
        addresses = {"proxy": OUR_IP, "ingress": INGRESS_IP, "haproxy": HAPROXY_IP}
        targets = {p: (addresses[p], port, procs[p].pid) for p in PATHS if p in opts.paths}
        return await _measure(targets, opts)
    finally:
        for proc in procs.values():
            _stop(proc)
            if proc.stdout is not None:  # the "ready" pipe
                proc.stdout.close()


def render(results: Sequence[PathResult], opts: IngressBenchOptions) -> str:
    lines = [
        f"ingress benchmark: {opts.connections} keep-alive connections, {opts.new_conn_workers}"
        f" new-connection workers, {opts.seconds:g} s per phase, median of {opts.rounds}",
        "",
        f"{'path':<9} {'shape':<10} {'req/s':>9} {'p50 us':>8} {'p99 us':>8} {'CPU us/req':>11}"
        f" {'errors':>6}",
    ]
    for r in results:
        for shape, f in r.shapes.items():
            cpu = f"{f.cpu_us_per_request:,.0f}" if f.cpu_us_per_request is not None else "-"
            lines.append(
                f"{r.path:<9} {shape:<10} {f.rps:>9,.0f} {f.p50_us:>8,.0f} {f.p99_us:>8,.0f}"
                f" {cpu:>11} {f.errors:>6}"
            )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    d = IngressBenchOptions()
    p = argument_parser(
        "k8semu bench ingress",
        "Host-routed HTTP through our ingress vs straight to the Service (our L4 proxy) vs"
        " haproxy's host routing: requests/s, p50/p99, CPU per request.",
    )
    numbers: list[tuple[str, Any, Any, str]] = [
        ("--connections", positive_int, d.connections, "keep-alive connections"),
        ("--new-conn-workers", positive_int, d.new_conn_workers, "new-connection loops"),
        ("--seconds", positive_float, d.seconds, "per phase"),
        ("--rounds", positive_int, d.rounds, "repeats (medians)"),
    ]
    for flag, kind, default, text in numbers:
        p.add_argument(flag, type=kind, default=default, help=text)
    for flag, choices in (("--paths", PATHS), ("--shapes", SHAPES)):
        p.add_argument(flag, default=",".join(choices), help=f"of {','.join(choices)}")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--serve-ingress", metavar="SPEC", help=argparse.SUPPRESS)
    return p


def _choice(text: str, allowed: Sequence[str], flag: str) -> tuple[str, ...]:
    chosen = tuple(p.strip() for p in text.split(",") if p.strip())
    if not chosen or any(c not in allowed for c in chosen):
        raise ValueError(f"{flag}: choose from {','.join(allowed)}")
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.serve_ingress:
        data = json.loads(args.serve_ingress)
        port, target = data["ports"]["http"]
        return serve_as_proxy(_serve_ingress(data["ips"], int(target), int(port)))
    try:
        paths = _choice(args.paths, PATHS, "--paths")
        shapes = _choice(args.shapes, SHAPES, "--shapes")
    except ValueError as exc:
        print(f"k8semu bench ingress: {exc}", file=sys.stderr)
        return 2
    opts = options_from_args(IngressBenchOptions, args, paths=paths, shapes=shapes)
    measure, table = functools.partial(run, opts), functools.partial(render, opts=opts)
    return run_and_print("ingress", measure, opts, table, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())

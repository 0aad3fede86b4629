"""The loadgen image (k8semu/loadgen): a bounded HTTP/1.1 load generator.

``--url URL`` with ``--concurrency C`` keep-alive connections (closed loop: each sends its next
request when the last answered), optionally paced to ``--rate R`` requests/s in total, until
``--requests N`` were sent or ``--duration D`` seconds passed (10 s when neither is given; it
always stops by itself), or following ``--profile`` (env LOADGEN_PROFILE): a rate that holds,
steps, ramps and spikes over time, e.g. ``10/30s,20/30s,10-50/1m,200/5s,0/20s`` (see
`_loadprofile`), for as long as the profile lasts. Prints a progress line every ``--progress``
seconds and, at the end, one JSON summary line: requests, ok, errors, status codes, latency
percentiles, rps.

Host names resolve through the cluster DNS when K8SEMU_DNS_SERVER (host:port) is set — with
the search domains in K8SEMU_DNS_SEARCH, as a pod's resolv.conf would — else the system
resolver. Non-2xx/3xx answers and connection failures both count as errors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import socket
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from k8semu import durations
from k8semu.images import _common
from k8semu.images import _dnswire as w
from k8semu.images._loadprofile import Profile, ProfileError, parse_profile

MAX_RESPONSE_HEADER = 64 * 1024


@dataclass(slots=True)
class LoadConfig:
    url: str
    host: str
    port: int
    path: str
    concurrency: int = 8
    rate: float = 0.0
    duration: float | None = None
    requests: int | None = None
    timeout: float = 5.0
    progress: float = 1.0
    method: str = "GET"
    headers: list[tuple[str, str]] = field(default_factory=list)
    dns_server: tuple[str, int] | None = None
    search: list[str] = field(default_factory=list)
    profile: Profile | None = None


class ResponseError(Exception):
    pass


class _Connection(asyncio.Protocol):
    """One keep-alive connection; `request()` sends the fixed request and waits for a reply."""

    def __init__(self, payload: bytes, head_only: bool) -> None:
        self.payload = payload
        self.head_only = head_only
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[int] | None = None
        self.reusable = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.reusable = False
        if self.waiter is not None and not self.waiter.done():
            # A close-delimited body ends here; anything else is an error.
            status = self._close_delimited_status()
            if status is not None:
                self.waiter.set_result(status)
            else:
                self.waiter.set_exception(ResponseError("connection closed"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        try:
            status = self._parse()
        except ResponseError as exc:
            self.waiter.set_exception(exc)
            self.close()
            return
        if status is not None:
            self.waiter.set_result(status)

    def request(self) -> asyncio.Future[int]:
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        assert self.transport is not None
        self.transport.write(self.payload)
        return self.waiter

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.close()

    def _head(self) -> tuple[int, dict[str, str], int] | None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_RESPONSE_HEADER:
                raise ResponseError("response header too large")
            return None
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ResponseError(f"bad status line {lines[0][:80]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(parts[1]), headers, end + 4

    def _parse(self) -> int | None:
        head = self._head()
        if head is None:
            return None
        status, headers, start = head
        if "close" in headers.get("connection", "").lower():
            self.reusable = False
        if self.head_only or status in (204, 304) or 100 <= status < 200:
            del self.buffer[:start]
            return status
        if "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise ResponseError("bad Content-Length") from None
            if len(self.buffer) < start + length:
                return None
            del self.buffer[: start + length]
            return status
        if "chunked" in headers.get("transfer-encoding", "").lower():
            pos = start
            while True:
                line_end = self.buffer.find(b"\r\n", pos)
                if line_end < 0:
                    return None
                size_text = bytes(self.buffer[pos:line_end]).split(b";")[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise ResponseError("bad chunk size") from None
                if size == 0:
                    trailer_end = self.buffer.find(b"\r\n\r\n", line_end)
                    if trailer_end < 0:
                        return None
                    del self.buffer[: trailer_end + 4]
                    return status
                pos = line_end + 2 + size + 2
                if len(self.buffer) < pos:
                    return None
        self.reusable = False  # body runs to the close
        return None

    def _close_delimited_status(self) -> int | None:
        try:
            head = self._head()
        except ResponseError:
            return None
        return head[0] if head is not None else None


@dataclass(slots=True)
class Stats:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    sent: int = 0

    @property
    def done(self) -> int:
        return len(self.latencies) + sum(self.error_kinds.values())

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
        return ordered[index] * 1000


class LoadGenerator:
    def __init__(self, config: LoadConfig, address: str, log: _common.Log) -> None:
        self.config = config
        self.address = address
        self.log = log
        self.stats = Stats()
        self.stop = asyncio.Event()
        host_header = config.host if config.port == 80 else f"{config.host}:{config.port}"
        lines = [
            f"{config.method} {config.path} HTTP/1.1",
            f"Host: {host_header}",
            "User-Agent: k8semu-loadgen",
            "Accept: */*",
            *(f"{k}: {v}" for k, v in config.headers),
        ]
        self.payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._start = 0.0
        self._slot = 0

    def _take_slot(self) -> float | None:
        """The time the next request may start, or None when the budget is spent."""
        cfg = self.config
        if self.stop.is_set():
            return None
        if cfg.requests is not None and self._slot >= cfg.requests:
            return None
        now = time.monotonic()
        if cfg.duration is not None and now - self._start >= cfg.duration:
            return None
        index = self._slot
        self._slot += 1
        if cfg.profile is not None:
            due = cfg.profile.time_of(index)
            return None if due is None else self._start + due
        return self._start + index / cfg.rate if cfg.rate > 0 else now

    async def _worker(self) -> None:
        conn: _Connection | None = None
        loop = asyncio.get_running_loop()
        cfg = self.config
        while True:
            at = self._take_slot()
            if at is None:
                break
            delay = at - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
                if self.stop.is_set():
                    break
                if cfg.duration is not None and time.monotonic() - self._start >= cfg.duration:
                    break
            started = time.monotonic()
            self.stats.sent += 1
            try:
                if conn is None or not conn.reusable or conn.transport is None:
                    if conn is not None:
                        conn.close()
                    _, fresh = await asyncio.wait_for(
                        loop.create_connection(
                            lambda: _Connection(self.payload, cfg.method == "HEAD"),
                            self.address,
                            cfg.port,
                        ),
                        cfg.timeout,
                    )
                    conn = fresh
                status = await asyncio.wait_for(conn.request(), cfg.timeout)
            except (OSError, TimeoutError, ResponseError) as exc:
                kind = type(exc).__name__ if not isinstance(exc, ResponseError) else str(exc)
                self.stats.error_kinds[kind] = self.stats.error_kinds.get(kind, 0) + 1
                self.stats.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
                continue
            self.stats.latencies.append(time.monotonic() - started)
            key = str(status)
            self.stats.statuses[key] = self.stats.statuses.get(key, 0) + 1
            if not 200 <= status < 400:
                self.stats.errors += 1
        if conn is not None:
            conn.close()

    async def _progress(self) -> None:
        last_done, last_t = 0, self._start
        while True:
            await asyncio.sleep(self.config.progress)
            now = time.monotonic()
            done = self.stats.done
            rps = (done - last_done) / max(1e-9, now - last_t)
            target = ""
            if self.config.profile is not None:
                target = f" target={self.config.profile.rate_at(now - self._start):.1f}"
            self.log.info(
                f"progress t={now - self._start:.1f}s requests={done} "
                f"errors={self.stats.errors} rps={rps:.1f}{target}"
            )
            last_done, last_t = done, now

    async def run(self) -> dict[str, object]:
        self._start = time.monotonic()
        workers = [asyncio.create_task(self._worker()) for _ in range(self.config.concurrency)]
        progress = asyncio.create_task(self._progress()) if self.config.progress > 0 else None
        try:
            await asyncio.gather(*workers)
        finally:
            if progress is not None:
                progress.cancel()
        return self.summary(time.monotonic() - self._start)

    def summary(self, elapsed: float) -> dict[str, object]:
        s = self.stats
        done = s.done
        return {
            "url": self.config.url,
            "address": f"{self.address}:{self.config.port}",
            "requests": done,
            "ok": done - s.errors,
            "errors": s.errors,
            "status_codes": dict(sorted(s.statuses.items())),
            "error_kinds": s.error_kinds,
            "duration_s": round(elapsed, 3),
            "rps": round(done / elapsed, 1) if elapsed > 0 else 0.0,
            "latency_ms": {
                "p50": round(s.percentile(50), 3),
                "p90": round(s.percentile(90), 3),
                "p99": round(s.percentile(99), 3),
                "max": round(max(s.latencies, default=0.0) * 1000, 3),
                "mean": round(sum(s.latencies) / len(s.latencies) * 1000, 3)
                if s.latencies
                else 0.0,
            },
            "concurrency": self.config.concurrency,
            "rate": self.config.rate or None,
            "profile": self.config.profile is not None,
        }


async def resolve_host(
    host: str, dns_server: tuple[str, int] | None, search: Sequence[str], timeout: float = 2.0
) -> str:
    """An IP address for `host`: literal, cluster DNS (with search domains), system resolver."""
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(host.strip("[]")))
    if dns_server is not None:
        candidates = []
        if not host.endswith(".") and host.count(".") < 5:
            candidates = [f"{host}.{domain}" for domain in search]
        candidates.append(host)
        for name in candidates:
            try:
                reply = await w.query(dns_server, name, w.A, timeout)
            except (OSError, w.DNSFormatError):
                continue
            found = w.addresses(reply)
            if found:
                return found[0]
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return str(infos[0][4][0])


def dns_settings(env: Mapping[str, str]) -> tuple[tuple[str, int] | None, list[str]]:
    server = env.get("K8SEMU_DNS_SERVER", "").strip()
    search = env.get("K8SEMU_DNS_SEARCH", "").split()
    return (w.parse_server(server) if server else None), search


def _rate(text: str) -> float:
    return float(text.strip().removesuffix("/s"))


def _seconds(text: str) -> float:
    """Plain seconds (``2.5``) or a duration (``500ms``, ``1m30s``)."""
    try:
        return float(text)
    except ValueError:
        return durations.parse_ms(text) / 1000


def parse_args(argv: Sequence[str], env: Mapping[str, str]) -> LoadConfig:
    parser = argparse.ArgumentParser(prog="loadgen", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", "-c", type=int, default=8)
    parser.add_argument("--rate", type=_rate, default=0.0, help="requests/s in total (100, 100/s)")
    parser.add_argument("--duration", type=_seconds, default=None, help="seconds, or 30s, 1m")
    parser.add_argument("--requests", "-n", type=int, default=None)
    parser.add_argument("--timeout", type=_seconds, default=5.0, help="per request (5, 500ms)")
    parser.add_argument("--progress", type=float, default=1.0, help="seconds; 0: off")
    parser.add_argument("--method", default="GET", choices=["GET", "HEAD"])
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    parser.add_argument(
        "--profile",
        default=env.get("LOADGEN_PROFILE", ""),
        help="RATE/DURATION or FROM-TO/DURATION segments, e.g. 10/30s,10-50/1m,200/5s",
    )
    args = parser.parse_args(list(argv))
    url = urllib.parse.urlsplit(args.url if "://" in args.url else "http://" + args.url)
    if url.scheme != "http" or not url.hostname:
        raise _common.UsageError(f"--url: want http://HOST[:PORT]/PATH, got {args.url!r}")
    try:
        port = url.port or 80
    except ValueError:
        raise _common.UsageError(f"--url: bad port in {args.url!r}") from None
    if args.concurrency < 1 or args.concurrency > 10000:
        raise _common.UsageError("--concurrency must be 1..10000")
    if args.rate < 0 or (args.duration is not None and args.duration <= 0):
        raise _common.UsageError("--rate must be >= 0 and --duration > 0")
    if args.requests is not None and args.requests < 0:
        raise _common.UsageError("--requests must be >= 0")
    if args.timeout <= 0:
        raise _common.UsageError("--timeout must be > 0")
    headers = []
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep or not name.strip() or "\r" in h or "\n" in h:
            raise _common.UsageError(f"-H: want 'Name: value', got {h!r}")
        headers.append((name.strip(), value.strip()))
    duration = args.duration
    profile = None
    if args.profile:
        if args.rate:
            raise _common.UsageError("--profile and --rate: give one of them")
        try:
            profile = parse_profile(args.profile)
        except ProfileError as exc:
            raise _common.UsageError(f"--profile: {exc}") from None
        duration = profile.duration if duration is None else min(duration, profile.duration)
    if duration is None and args.requests is None:
        duration = 10.0
    dns_server, search = dns_settings(env)
    path = url.path or "/"
    if url.query:
        path += "?" + url.query
    return LoadConfig(
        url=args.url,
        host=url.hostname,
        port=port,
        path=path,
        concurrency=args.concurrency,
        rate=args.rate,
        duration=duration,
        requests=args.requests,
        timeout=args.timeout,
        progress=args.progress,
        method=args.method,
        headers=headers,
        dns_server=dns_server,
        search=search,
        profile=profile,
    )


async def run(config: LoadConfig) -> int:
    log = _common.Log()
    stop = _common.stop_event()
    try:
        address = await resolve_host(config.host, config.dns_server, config.search)
    except OSError as exc:
        log.info(f"loadgen: cannot resolve {config.host}: {exc}")
        return 1
    log.info(f"loadgen: {config.method} {config.url} -> {address}:{config.port}")
    gen = LoadGenerator(config, address, log)
    stopper = asyncio.create_task(stop.wait())
    stopper.add_done_callback(lambda _: gen.stop.set())
    try:
        summary = await gen.run()
    finally:
        stopper.cancel()
    log.info(json.dumps(summary, separators=(",", ":")))
    ok = cast(int, summary["ok"])
    return 0 if ok > 0 or summary["requests"] == 0 else 1


def main(argv: Sequence[str] | None = None) -> int:
    return _common.main(argv, lambda args, env: run(parse_args(args, env)))


if __name__ == "__main__":
    raise SystemExit(main())

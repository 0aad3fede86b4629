"""Service availability as a client sees it: a bounded loop of HTTP GETs to a Service address,
each on a new connection (so every request is routed afresh by the proxy), retried once on
failure as a well-behaved client would. Counts what succeeded; the report turns it into an
availability figure per fault window. No cluster knowledge here: only an address."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

DEFAULT_TIMEOUT = 2.0


@dataclass(slots=True)
class ProbeResult:
    """`samples`: (monotonic start, ok after at most one retry, first try ok, latency s)."""

    samples: list[tuple[float, bool, bool, float]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.samples)

    @property
    def ok(self) -> int:
        return sum(1 for s in self.samples if s[1])

    def availability(self, start: float = float("-inf"), end: float = float("inf")) -> float:
        """Share of requests begun in [start, end) that succeeded (1.0 when there were none)."""
        window = [s for s in self.samples if start <= s[0] < end]
        return sum(1 for s in window if s[1]) / len(window) if window else 1.0


async def http_get(host: str, port: int, path: str = "/", timeout: float = DEFAULT_TIMEOUT) -> int:
    """One GET on a new connection; the status code (ValueError on a malformed answer)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            status_line = await reader.readline()
            parts = status_line.split()
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
                raise ValueError(f"not an HTTP answer: {status_line[:80]!r}")
            await reader.read()  # the body, until the server closes
            return int(parts[1])
        finally:
            writer.close()


async def probe_loop(
    host: str,
    port: int,
    *,
    duration: float,
    rate: float = 20.0,
    path: str = "/",
    timeout: float = DEFAULT_TIMEOUT,
    result: ProbeResult | None = None,
) -> ProbeResult:
    """GET `rate` times per second for `duration` seconds (requests overlap when slow)."""
    out = result if result is not None else ProbeResult()
    pending: set[asyncio.Task[None]] = set()

    async def one() -> None:
        began = time.monotonic()
        first = await _try(host, port, path, timeout)
        ok = first or await _try(host, port, path, timeout)
        out.samples.append((began, ok, first, time.monotonic() - began))

    end = time.monotonic() + duration
    interval = 1.0 / rate
    next_at = time.monotonic()
    while next_at < end:
        task = asyncio.create_task(one())
        pending.add(task)
        task.add_done_callback(pending.discard)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    if pending:
        await asyncio.wait(pending)
    return out


async def _try(host: str, port: int, path: str, timeout: float) -> bool:
    try:
        return 200 <= await http_get(host, port, path, timeout) < 400
    except (OSError, TimeoutError, ValueError):
        return False

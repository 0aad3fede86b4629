"""The HTTP load of ``k8semu bench autoscale``: requests to one address (a Service's
ClusterIP) on a rate that follows a load profile, in two client shapes at once, each request
retried once.

Shapes (the issue's "measure with more than one client shape"): ``new-connection`` opens a
connection per request (``Connection: close``), as a shell ``wget`` loop does; ``keep-alive``
reuses idle connections from a pool, as a browser or an HTTP client library does, and closes a
connection after ``keepalive_requests`` requests, so that new pods behind an L4 proxy get
traffic too (a connection stays with the pod it was opened to). Request k of the profile
(``k8semu.images._loadprofile``, the loadgen image's) goes to shape ``k % len(shapes)``, so
each shape carries an equal share of the rate on one absolute schedule.

Bounded: at most ``max_in_flight`` requests at once (a request due while that many are
outstanding is not sent and is counted in ``skipped``: the client, not the server, was the
limit), a ``timeout`` per attempt, and the profile's end. A failed attempt (refused, reset,
timed out, a status other than 2xx) is retried once at once, on a fresh connection;
``Outcome`` records whether the first attempt and the request as a whole succeeded.

Owns no cluster and no report. Traffic goes only to the address given.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from k8semu.bench._common import cancel
from k8semu.images._loadprofile import Profile

__all__ = ["KEEP_ALIVE", "NEW_CONNECTION", "SHAPES", "LoadDriver", "Outcome"]

NEW_CONNECTION = "new-connection"
KEEP_ALIVE = "keep-alive"
SHAPES = (NEW_CONNECTION, KEEP_ALIVE)
MAX_HEADER = 16 * 1024
MAX_BODY = 1024 * 1024


class _Failed(Exception):
    """One attempt failed; the message says how (for the error kinds)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request: ``t`` is when it was due, in seconds since the load started; ``latency``
    from its first send to its final answer (both attempts when retried)."""

    t: float
    shape: str
    latency: float
    first_ok: bool
    ok: bool


@dataclass(slots=True)
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    used: int = 0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


@dataclass
class LoadDriver:
    """Drives ``profile`` against ``host:port``; ``run()`` returns when the profile is over
    and every request answered or timed out. ``outcomes`` fills as requests end."""

    host: str
    port: int
    profile: Profile
    shapes: Sequence[str] = SHAPES
    path: str = "/"
    timeout: float = 5.0
    max_in_flight: int = 64
    keepalive_requests: int = 50
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    _idle: list[_Conn] = field(default_factory=list)
    _in_flight: set[asyncio.Task[None]] = field(default_factory=set)
    _stopped: bool = False

    def __post_init__(self) -> None:
        unknown = [s for s in self.shapes if s not in SHAPES]
        if unknown or not self.shapes:
            raise ValueError(f"client shapes: want some of {', '.join(SHAPES)}, got {unknown}")

    def _request_bytes(self, close: bool) -> bytes:
        lines = [f"GET {self.path} HTTP/1.1", f"Host: {self.host}", "User-Agent: k8semu-bench"]
        if close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def _exchange(self, conn: _Conn, close: bool) -> bool:
        """Send one request on ``conn`` and read its answer; whether the connection may be
        used again. Raises _Failed."""
        conn.writer.write(self._request_bytes(close))
        try:
            head = await conn.reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise _Failed("response header too large") from None
        except asyncio.IncompleteReadError:
            raise _Failed("connection closed") from None
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise _Failed("bad status line")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if not 0 <= length <= MAX_BODY:
            raise _Failed("bad Content-Length")
        try:
            await conn.reader.readexactly(length)
        except asyncio.IncompleteReadError:
            raise _Failed("connection closed") from None
        status = int(parts[1])
        if not 200 <= status < 300:
            raise _Failed(f"HTTP {status}")
        return not close and "close" not in headers.get("connection", "").lower()

    async def _open(self) -> _Conn:
        reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEADER)
        return _Conn(reader, writer)

    async def _attempt(self, shape: str, fresh: bool) -> None:
        """One attempt in ``shape``; raises _Failed. ``fresh``: never an idle connection."""
        close = shape == NEW_CONNECTION
        conn = None if close or fresh or not self._idle else self._idle.pop()
        keep = False
        try:
            async with asyncio.timeout(self.timeout):
                if conn is None:
                    conn = await self._open()
                conn.used += 1
                reusable = await self._exchange(conn, close)
            keep = reusable and conn.used < self.keepalive_requests and not self._stopped
        except TimeoutError:
            raise _Failed("timeout") from None
        except OSError as exc:
            raise _Failed(type(exc).__name__) from None
        finally:
            # Closed on every way out but a reusable answer, a cancellation included.
            if conn is not None and not keep:
                conn.close()
        if keep:
            self._idle.append(conn)  # keep implies a connection

    def _count(self, exc: _Failed) -> None:
        kind = str(exc)
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    async def _one(self, due: float, shape: str) -> None:
        t0 = time.monotonic()
        first_ok = ok = True
        try:
            await self._attempt(shape, fresh=False)
        except _Failed as exc:
            self._count(exc)
            first_ok = False
            try:
                await self._attempt(shape, fresh=True)
            except _Failed as again:
                self._count(again)
                ok = False
        self.outcomes.append(Outcome(due, shape, time.monotonic() - t0, first_ok, ok))

    async def run(self) -> None:
        """Send the profile's requests on schedule, then wait for the last answers."""
        loop = asyncio.get_running_loop()
        self.started = time.monotonic()
        k = 0
        try:
            while (due := self.profile.time_of(k)) is not None:
                delay = self.started + due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                shape = self.shapes[k % len(self.shapes)]
                k += 1
                if len(self._in_flight) >= self.max_in_flight:
                    self.skipped += 1
                    continue
                task = loop.create_task(self._one(due, shape))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
            if self._in_flight:
                await asyncio.wait(set(self._in_flight), timeout=2 * self.timeout + 1)
        finally:
            self._stopped = True
            await cancel(*self._in_flight)
            for conn in self._idle:
                conn.close()
            self._idle.clear()

    def elapsed(self) -> float:
        """Seconds since the load started (0 before)."""
        return time.monotonic() - self.started if self.started else 0.0

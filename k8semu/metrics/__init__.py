"""Prometheus metrics of one process: the registry, the `/metrics` HTTP listener and the
metric families every component shares (docs/operations.md, "Metrics").

One registry per process: prometheus_client's default one, which already carries the
process collector (process_cpu_seconds_total, process_resident_memory_bytes,
process_open_fds, ...) and the Python GC/platform collectors. Each component module defines
its own families at import (names as Kubernetes and etcd spell them); this module serves
them. The listener runs on the component's own event loop: a scrape is one short HTTP
exchange, and nothing on a request path waits for it.

Rendering is not free: an API server's registry after some traffic (~90 label sets of a
23-bucket histogram) takes 15 ms to collect and 19 ms to format (measured at load 6.3 on the
shared 2-core machine), which on the loop would stall every call in flight once per scrape.
So a scrape reads the *live* collectors - those reading the component's own state (a leader,
queue lengths, running pods), which only the loop may touch, and cheap - on the loop, and
collects and formats everything in a thread (prometheus_client's metrics are thread-safe).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from k8semu.log import get_logger
from k8semu.transport import AddressError

__all__ = ["MetricsServer", "before_scrape", "live", "parse_address", "serve", "snapshot"]

_log = get_logger(__name__)
# No `<name>_created` series: Kubernetes' and etcd's exposition has none, and they double
# the lines of every counter and histogram.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped upstream
# A scrape request is a request line and a few headers; anything bigger is not one.
_MAX_REQUEST = 16 * 1024
_READ_TIMEOUT = 5.0
# Awaited before each scrape, in order: values that must be read where they live (e.g. a
# SQLite page count on the store's own thread) rather than kept up to date on a hot path.
_REFRESH: list[Callable[[], Awaitable[None]]] = []
# Collectors that read component state: collected on the loop, at scrape time (`snapshot`).
_LIVE: list[Collector] = []


def live(collector: Collector) -> None:
    """Collect `collector` on the event loop at each scrape (it reads the component's own
    state, which only the loop may touch); keep it cheap."""
    _LIVE.append(collector)


class _Readings(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def snapshot() -> CollectorRegistry:
    """Every metric of the process: the live collectors read now (call it on the loop), and
    the default registry, collected when the result is (from any thread)."""
    view = CollectorRegistry(auto_describe=False)
    view.register(_Readings([family for c in list(_LIVE) for family in c.collect()]))
    view.register(REGISTRY)
    return view


def before_scrape(refresh: Callable[[], Awaitable[None]]) -> Callable[[], None]:
    """Await `refresh` before every scrape from now on; returns the call that undoes it.
    A refresh that fails is logged and the scrape goes on with the values it had."""
    _REFRESH.append(refresh)
    return lambda: _REFRESH.remove(refresh) if refresh in _REFRESH else None


def parse_address(text: str, *, flag: str) -> tuple[str, int]:
    """`HOST:PORT` (or `http://HOST:PORT`, as etcd's --listen-metrics-urls) -> (host, port);
    AddressError naming `flag` otherwise. Port 0: any free port."""
    value = text.strip()
    if value.startswith("http://"):
        value = value[len("http://") :].rstrip("/")
    elif "://" in value:
        raise AddressError(f"{flag}: {text!r}: only http:// is supported (no TLS yet)")
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise AddressError(f"{flag}: {text!r}: expected HOST:PORT")
    return host, int(port_text)


class MetricsServer:
    """`/metrics` over HTTP on the running event loop. `await start()`, then `port`."""

    def __init__(self, address: str, *, flag: str) -> None:
        self.host, self._port = parse_address(address, flag=flag)
        self._flag = flag
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self._port)
        except OSError as exc:
            raise AddressError(
                f"{self._flag}: cannot listen on {self.host}:{self._port}: {exc.strerror or exc}"
            ) from exc
        self.port = self._server.sockets[0].getsockname()[1]
        _log.info("metrics serving", address=f"{self.host}:{self.port}")

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        # Scrapes in flight end on their own (a few ms; each connection serves one).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)
        self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(_READ_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.LimitOverrunError, asyncio.IncompleteReadError, TimeoutError):
                return
            if len(head) > _MAX_REQUEST:
                return
            method, _, rest = head.partition(b" ")
            path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
            if method not in (b"GET", b"HEAD"):
                writer.write(_response(405, "text/plain", b"method not allowed\n"))
            elif path != b"/metrics":
                writer.write(_response(404, "text/plain", b"only /metrics is served\n"))
            else:
                await _refresh()
                body = await asyncio.to_thread(generate_latest, snapshot())
                writer.write(
                    _response(200, CONTENT_TYPE_LATEST, b"" if method == b"HEAD" else body)
                )
            await writer.drain()
        except (ConnectionError, OSError):
            pass  # the scraper went away: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


async def _refresh() -> None:
    for refresh in list(_REFRESH):
        try:
            await refresh()
        except Exception:
            _log.warning("metrics refresh failed", exc_info=True)


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}


def _response(code: int, content_type: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {code} {_REASONS[code]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


async def serve(address: str, *, flag: str) -> MetricsServer:
    """A started MetricsServer on `address`; AddressError naming `flag` when it cannot bind."""
    server = MetricsServer(address, flag=flag)
    await server.start()
    return server

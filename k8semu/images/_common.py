"""What every built-in image shares: the listen address rule, stdout logs, SIGTERM, uvloop.

A built-in program is a container's main process: it logs to stdout (the kubelet captures it),
reads its pod identity from the environment the kubelet sets (POD_NAME, POD_IP, HOSTNAME) and
must stop within a second of SIGTERM with exit code 0. Only the programs' `main()` functions read
the environment; everything below them takes parameters.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

DEFAULT_HOST = "127.0.0.1"


class UsageError(Exception):
    """A bad flag or argument: the program prints it and exits 2."""


def pod_ip(env: Mapping[str, str]) -> str:
    """The address a pod's servers bind: POD_IP, or 127.0.0.1 outside a pod."""
    return env.get("POD_IP", "").strip() or DEFAULT_HOST


def container_root(env: Mapping[str, str], cwd: Path) -> Path:
    """Where the image's absolute paths live: K8SEMU_ROOT (the pod directory, when the kubelet
    sets it) or else the working directory, which is the pod directory unless the container
    sets workingDir. `/usr/share/nginx/html` means `<root>/usr/share/nginx/html`."""
    root = env.get("K8SEMU_ROOT", "").strip()
    return Path(root) if root else cwd


def parse_listen(value: str | None, default_port: int, default_host: str) -> tuple[str, int]:
    """``:5678``, ``5678``, ``host:port``, ``[v6]:port`` or ``host`` -> (host, port).

    An empty host means `default_host` (the pod IP). Port 0 asks the kernel for a free port.
    """
    if value is None or not value.strip():
        return default_host, default_port
    text = value.strip()
    host, port_text = default_host, ""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise UsageError(f"bad listen address {value!r}")
        host = text[1:end]
        rest = text[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host_part, port_text = text.split(":")
        host = host_part or default_host
    elif text.isdigit():
        port_text = text
    elif ":" in text:
        raise UsageError(f"bad listen address {value!r} (write IPv6 as [addr]:port)")
    else:
        host = text
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"bad port in listen address {value!r}")
    return host, int(port_text)


class Log:
    """Line logger to a stream (stdout), flushed a moment later so a busy server does not pay
    one write system call per request, and at once for important lines."""

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self.quiet = quiet
        self._flush_scheduled = False

    def info(self, message: str, *, flush: bool = True) -> None:
        self._write(message, flush)

    def request(self, message: str) -> None:
        """A per-request access log line; dropped with --quiet."""
        if not self.quiet:
            self._write(message, False)

    def _write(self, message: str, flush: bool) -> None:
        try:
            self._stream.write(message + "\n")
            if flush:
                self._stream.flush()
            elif not self._flush_scheduled:
                self._flush_scheduled = True
                try:
                    asyncio.get_running_loop().call_later(0.2, self._flush)
                except RuntimeError:
                    self._flush()
        except (OSError, ValueError):
            pass  # stdout gone (log pipe closed): serving matters more than logging

    def _flush(self) -> None:
        self._flush_scheduled = False
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()


def http_date(ts: float | None = None) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(ts))


def stop_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (call inside the running loop)."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, event.set)
    return event


def run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run `main` on uvloop when it is installed, else asyncio; usage errors exit 2."""
    try:
        import uvloop

        runner: Callable[[Coroutine[Any, Any, int]], int] = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        return runner(main())
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()


def env() -> dict[str, str]:
    """The process environment as a plain dict (read only in programs' main functions)."""
    return dict(os.environ)


Program = Callable[[Sequence[str], Mapping[str, str]], Coroutine[Any, Any, int]]
"""A built-in's body: parse (args, environment), serve, return the exit code."""


def main(argv: Sequence[str] | None, program: Program) -> int:
    """A built-in's `main()`: `program` with the command line (sys.argv when `argv` is None)
    and the environment, on the event loop; usage errors exit 2 (see `run`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    environment = env()
    return run(lambda: program(args, environment))

"""The HorizontalPodAutoscaler walkthrough's image (registry.k8s.io/hpa-example): a web page
that burns CPU on every request and answers ``OK!``.

The original is an Apache + PHP page whose index.php computes ``x += sqrt(x)`` a million
times. This one runs the same loop (``--iterations``, default 1,000,000) in the request
handler, one request at a time (as one Apache worker would; a CPU limit holds it anyway), on
port 80 (``--listen``). ``/healthz`` answers without burning. What one request costs here is
in docs/images.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from k8semu.images import _common
from k8semu.images._http import HTTPServer, Request, Response

DEFAULT_PORT = 80
DEFAULT_ITERATIONS = 1_000_000
MAX_ITERATIONS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class HPAExampleConfig:
    host: str
    port: int
    iterations: int = DEFAULT_ITERATIONS
    quiet: bool = False


def burn(iterations: int) -> float:
    """The walkthrough page's loop: sqrt summed `iterations` + 1 times (CPU, no allocation)."""
    x = 0.0001
    sqrt = math.sqrt
    for _ in range(iterations + 1):
        x += sqrt(x)
    return x


class HPAExampleApp:
    """The request handler; `served` and `busy_seconds` say how much it burned."""

    def __init__(self, config: HPAExampleConfig) -> None:
        self.config = config
        self.served = 0
        self.busy_seconds = 0.0

    def __call__(self, request: Request) -> Response:
        if request.path == "/healthz":
            return Response(200, b"ok\n")
        started = time.process_time()
        burn(self.config.iterations)
        self.busy_seconds += time.process_time() - started
        self.served += 1
        return Response(200, b"OK!")


def parse_args(argv: Sequence[str], env: Mapping[str, str]) -> HPAExampleConfig:
    parser = argparse.ArgumentParser(prog="hpa-example", description=__doc__)
    parser.add_argument("--listen", default=None, help=":PORT or HOST:PORT (default :80)")
    parser.add_argument(
        "--iterations", type=int, default=DEFAULT_ITERATIONS, help="sqrt steps per request"
    )
    parser.add_argument("--quiet", action="store_true", help="no access log")
    args = parser.parse_args(list(argv))
    if not 0 <= args.iterations <= MAX_ITERATIONS:
        raise _common.UsageError(f"--iterations: must be 0..{MAX_ITERATIONS}")
    host, port = _common.parse_listen(args.listen, DEFAULT_PORT, _common.pod_ip(env))
    return HPAExampleConfig(host=host, port=port, iterations=args.iterations, quiet=args.quiet)


async def serve(config: HPAExampleConfig) -> int:
    log = _common.Log(quiet=config.quiet)
    app = HPAExampleApp(config)
    server = HTTPServer(app, log, name="k8semu-hpa-example")
    stop = _common.stop_event()
    try:
        host, port = await server.start(config.host, config.port)
    except OSError as exc:
        log.info(f"hpa-example: cannot listen on {config.host}:{config.port}: {exc}")
        return 1
    log.info(f"hpa-example: listening on {host}:{port}, {config.iterations} iterations a request")
    await stop.wait()
    await server.stop()
    mean = app.busy_seconds / app.served * 1000 if app.served else 0.0
    log.info(f"hpa-example: stopped after {app.served} requests, {mean:.1f} ms CPU each")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    env = _common.env()
    args = sys.argv[1:] if argv is None else argv

    async def go() -> int:
        return await serve(parse_args(args, env))

    return _common.run(go)


if __name__ == "__main__":
    raise SystemExit(main())

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
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from k8semu.images import _common
from k8semu.images._http import HTTPServer, Request, Response, serve_until_stopped

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

    def summary(self) -> str:
        mean = self.busy_seconds / self.served * 1000 if self.served else 0.0
        return f"hpa-example: stopped after {self.served} requests, {mean:.1f} ms CPU each"


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
    app = HPAExampleApp(config)
    server = HTTPServer(app, _common.Log(quiet=config.quiet), name="k8semu-hpa-example")
    detail = f", {config.iterations} iterations a request"
    return await serve_until_stopped(
        server, config.host, config.port, prog="hpa-example", detail=detail, farewell=app.summary
    )


def main(argv: Sequence[str] | None = None) -> int:
    return _common.main(argv, lambda args, env: serve(parse_args(args, env)))


if __name__ == "__main__":
    raise SystemExit(main())

"""The Kubernetes tutorials' sample web apps, as their images answer.

- ``kubernetes-bootcamp`` ("Learn Kubernetes Basics":
  ``gcr.io/google-samples/kubernetes-bootcamp:v1``, ``jocatalin/kubernetes-bootcamp:v1|v2``):
  a Node.js server on 8080 answering every request
  ``Hello Kubernetes bootcamp! | Running on: POD | v=1`` (v2: ``v=2``) and logging a line
  per request with the running total.
- ``hello-app`` ("Exposing an External IP Address", ``gcr.io/google-samples/hello-app:1.0|2.0``):
  a Go server on 8080 (env ``PORT``) answering ``Hello, world!``, ``Version: 2.0.0`` and
  ``Hostname: POD``, logging ``Serving request: /path``.

``python -m k8semu.images.samples {bootcamp|hello-app} [--version V] [--listen ADDR] [--quiet]``.
Which tags exist is `k8semu.images`' table: another tag is not built in (ErrImagePull).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from k8semu.images import _common
from k8semu.images._http import HTTPServer, Request, Response, serve_until_stopped

APPS = ("bootcamp", "hello-app")
DEFAULT_PORT = 8080


@dataclass(frozen=True, slots=True)
class SampleConfig:
    app: str
    version: str
    host: str
    port: int
    hostname: str
    quiet: bool = False


class SampleApp:
    """The request handler of one of `APPS`; `served` counts requests."""

    def __init__(self, config: SampleConfig, log: _common.Log) -> None:
        self.config = config
        self.log = log
        self.started = time.time()
        self.served = 0

    def banner(self) -> str:
        """The line the real app logs when it starts."""
        if self.config.app == "bootcamp":
            when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.started))
            return (
                f"Kubernetes Bootcamp App Started At: {when} | Running On:  {self.config.hostname}"
            )
        return f"Server listening on port {self.config.port}"

    def __call__(self, request: Request) -> Response:
        self.served += 1
        name = self.config.hostname
        if self.config.app == "bootcamp":
            uptime = int(time.time() - self.started)
            self.log.request(
                f"Running On: {name} | Total Requests: {self.served} | App Uptime: {uptime}"
                f" seconds | Log Time: {_common.http_date()}"
            )
            text = f"Hello Kubernetes bootcamp! | Running on: {name} | v={self.config.version}\n"
            return Response(200, text.encode())
        self.log.request(f"Serving request: {request.path}")
        text = f"Hello, world!\nVersion: {self.config.version}\nHostname: {name}\n"
        return Response(200, text.encode())


def parse_args(argv: Sequence[str], env: Mapping[str, str]) -> SampleConfig:
    parser = argparse.ArgumentParser(prog="samples", description=__doc__)
    parser.add_argument("app", choices=APPS)
    parser.add_argument("--version", default="", help="what the app says it is (v=1, 2.0.0)")
    parser.add_argument("--listen", default=None, help=":PORT or HOST:PORT (default :8080)")
    parser.add_argument("--quiet", action="store_true", help="no access log")
    args = parser.parse_args(list(argv))
    version = args.version or ("1" if args.app == "bootcamp" else "1.0.0")
    # hello-app listens on $PORT when it is set, as the Go original does.
    listen = args.listen
    if listen is None and args.app == "hello-app" and env.get("PORT", "").isdigit():
        listen = f":{env['PORT']}"
    host, port = _common.parse_listen(listen, DEFAULT_PORT, _common.pod_ip(env))
    hostname = env.get("HOSTNAME") or env.get("POD_NAME") or "localhost"
    return SampleConfig(args.app, version, host, port, hostname, quiet=args.quiet)


async def serve(config: SampleConfig) -> int:
    log = _common.Log(quiet=config.quiet)
    app = SampleApp(config, log)
    # The app's own request lines replace the server's access log (the real apps log theirs).
    server = HTTPServer(app, _common.Log(quiet=True), name=f"k8semu-{config.app}")
    log.info(app.banner())
    return await serve_until_stopped(server, config.host, config.port, prog=config.app)


def main(argv: Sequence[str] | None = None) -> int:
    return _common.main(argv, lambda args, env: serve(parse_args(args, env)))


if __name__ == "__main__":
    raise SystemExit(main())

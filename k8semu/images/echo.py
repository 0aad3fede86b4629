"""The echo image (hashicorp/http-echo, ealen/echo-server, echoserver, k8semu/echo).

Answers every request with a text naming the pod (POD_NAME, HOSTNAME, POD_IP) followed by the
request line and headers — or, with http-echo's ``-text=...``, with exactly that text. Probe
demo endpoints: ``/healthz`` (200 "ok", or 500 once ``/fail`` was requested or
``--fail-after`` requests were served, until ``/recover``), ``/readyz`` (200 while
``--ready-file`` exists, or always without one) and http-echo's ``/health``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from k8semu.images import _common
from k8semu.images._http import HTTPServer, Request, Response, serve_until_stopped

DEFAULT_PORT = 8080


@dataclass(slots=True)
class EchoConfig:
    host: str
    port: int
    text: str | None
    pod_name: str
    hostname: str
    pod_ip: str
    node_name: str
    namespace: str
    status_code: int = 200
    fail_after: int = 0
    ready_file: str | None = None
    quiet: bool = False


class EchoApp:
    """The request handler; counts requests for --fail-after."""

    def __init__(self, config: EchoConfig) -> None:
        self.config = config
        self.served = 0
        self.failing = False
        ident = [f"pod: {config.pod_name}", f"hostname: {config.hostname}"]
        ident.append(f"pod_ip: {config.pod_ip}")
        if config.namespace:
            ident.append(f"namespace: {config.namespace}")
        if config.node_name:
            ident.append(f"node: {config.node_name}")
        self._ident = ("\n".join(ident) + "\n").encode()
        self._text = (config.text + "\n").encode() if config.text is not None else None

    def __call__(self, request: Request) -> Response:
        self.served += 1
        cfg = self.config
        if cfg.fail_after and self.served > cfg.fail_after:
            self.failing = True
        path = request.path
        if path == "/healthz" or path == "/health":
            if self.failing:
                return Response(500, b"failing\n")
            if path == "/health":
                return Response(200, b'{"status":"ok"}\n', "application/json")
            return Response(200, b"ok\n")
        if path == "/readyz":
            if cfg.ready_file is not None and not os.path.exists(cfg.ready_file):
                return Response(503, b"not ready\n")
            return Response(200, b"ready\n")
        if path == "/fail":
            self.failing = True
            return Response(200, b"/healthz now fails\n")
        if path == "/recover":
            self.failing = False
            return Response(200, b"/healthz recovered\n")
        if self._text is not None:
            return Response(cfg.status_code, self._text)
        lines = [f"request: {request.request_line}", f"client: {request.peer}", "headers:"]
        lines.extend(f"  {k}: {v}" for k, v in request.headers)
        body = self._ident + ("\n".join(lines) + "\n").encode("utf-8", "replace")
        if request.body:
            body += b"body:\n" + request.body + b"\n"
        return Response(cfg.status_code, body, headers=[("X-Pod-Name", cfg.pod_name)])


def parse_args(argv: Sequence[str], env: Mapping[str, str]) -> EchoConfig:
    parser = argparse.ArgumentParser(prog="echo", description=__doc__)
    parser.add_argument("-listen", "--listen", default=None, help=":PORT or HOST:PORT")
    parser.add_argument("-text", "--text", default=None, help="answer with exactly this text")
    parser.add_argument("-status-code", "--status-code", type=int, default=200)
    parser.add_argument("--fail-after", type=int, default=0, help="/healthz fails after N")
    parser.add_argument("--ready-file", default=None, help="/readyz is 200 while this exists")
    parser.add_argument("--quiet", action="store_true", help="no access log")
    args, unknown = parser.parse_known_args(list(argv))
    if unknown:
        print(f"echo: ignoring unknown arguments {unknown}", flush=True)
    default_port = DEFAULT_PORT
    if env.get("PORT", "").isdigit():  # ealen/echo-server
        default_port = int(env["PORT"])
    host, port = _common.parse_listen(args.listen, default_port, _common.pod_ip(env))
    hostname = env.get("HOSTNAME", "") or env.get("POD_NAME", "") or os.uname().nodename
    if not 100 <= args.status_code <= 599:
        raise _common.UsageError("-status-code must be 100..599")
    return EchoConfig(
        host=host,
        port=port,
        text=args.text,
        pod_name=env.get("POD_NAME", "") or hostname,
        hostname=hostname,
        pod_ip=env.get("POD_IP", "") or host,
        node_name=env.get("NODE_NAME", ""),
        namespace=env.get("POD_NAMESPACE", ""),
        status_code=args.status_code,
        fail_after=max(0, args.fail_after),
        ready_file=args.ready_file,
        quiet=args.quiet,
    )


async def serve(config: EchoConfig) -> int:
    app = EchoApp(config)
    server = HTTPServer(app, _common.Log(quiet=config.quiet), name="k8semu-echo")
    return await serve_until_stopped(
        server,
        config.host,
        config.port,
        prog="echo",
        detail=f" as pod {config.pod_name}",
        farewell=lambda: f"echo: stopped after {app.served} requests",
    )


def main(argv: Sequence[str] | None = None) -> int:
    return _common.main(argv, lambda args, env: serve(parse_args(args, env)))


if __name__ == "__main__":
    raise SystemExit(main())

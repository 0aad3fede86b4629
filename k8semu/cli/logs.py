"""`k8semu logs POD [-c C] [-f] [-p] [--tail N] [--since 5m | --since-time T] [--timestamps]
[--limit-bytes N] [-n NS]`: a container's log (the flags are kubectl's); and
`k8semu logs COMPONENT [-f] [--tail N]` (apiserver-1, store-s1, kubelet-node-1, ...): the log
file of a component of a cluster started with `k8semu up` on this host.

A bare NAME is a component when the cluster's state dir (--state-dir, else the current
context's cluster) has one of that name, else a pod; `component/NAME` and `pod/NAME` say
which.

Asks the API server (its PodStreams service), which finds the pod's node and relays that
node's kubelet's log stream: clients never reach a kubelet themselves (`k8semu exec` goes the
same way). Errors print kubectl-style (`error: ...`) with exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import grpc

from k8semu import transport
from k8semu.cli import _kubeconfig
from k8semu.cluster.state import component_log_path, find_state_dir
from k8semu.durations import seconds_flag
from k8semu.kubelet.containerlog import parse_time
from k8semu.pb.api.v1 import podstreams_pb2_grpc
from k8semu.pb.kubelet.v1 import kubelet_pb2

LOGS_DEADLINE = 60.0  # seconds, without --follow
FOLLOW_DEADLINE = 7 * 24 * 3600.0


class CommandError(Exception):
    """Printed as `error: <message>`, exit code 1."""


def add_target_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--namespace", default=None)
    p.add_argument("-c", "--container", default="")
    p.add_argument("--server", "-s", default=None, help="API servers, HOST:PORT[,HOST:PORT]")
    p.add_argument("--kubeconfig", default=None)
    p.add_argument("--context", default=None)


def pod_name(text: str) -> str:
    for prefix in ("pod/", "pods/", "po/"):
        if text.startswith(prefix):
            return text[len(prefix) :]
    if "/" in text:
        raise CommandError(f"{text!r}: only pods have logs and exec (POD or pod/POD)")
    return text


def rpc_error(exc: grpc.aio.AioRpcError, target: _kubeconfig.Target) -> CommandError:
    if exc.code() == grpc.StatusCode.UNAVAILABLE and not exc.details():
        return CommandError(f"API server at {','.join(target.servers)} is not reachable")
    return CommandError(exc.details() or str(exc.code()))


async def stream_log(target: _kubeconfig.Target, request: kubelet_pb2.LogsRequest) -> None:
    """Write the container's log to stdout as it comes, through the API server's PodStreams
    (the API server reaches the kubelet)."""
    out = sys.stdout.buffer
    async with transport.channel(list(target.servers), target.tls()) as channel:
        stub = podstreams_pb2_grpc.PodStreamsStub(channel)
        deadline = FOLLOW_DEADLINE if request.follow else LOGS_DEADLINE
        try:
            async for chunk in stub.Logs(request, timeout=deadline):
                out.write(chunk.data)
                out.flush()
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc, target) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="k8semu logs", description="Print a container's log.")
    p.add_argument("pod")
    add_target_flags(p)
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-p", "--previous", action="store_true")
    p.add_argument("--tail", type=int, default=-1, help="lines from the end (-1: all)")
    p.add_argument(
        "--since", type=seconds_flag, default=None, help="only lines newer than this (5s, 2m, 1h)"
    )
    p.add_argument("--since-time", default="", help="only lines from this RFC 3339 time on")
    p.add_argument(
        "--timestamps", action="store_true", help="each line prefixed with the time it was read"
    )
    p.add_argument("--limit-bytes", type=int, default=None, help="stop after this many bytes")
    p.add_argument("--state-dir", type=Path, default=None, help="the cluster of a COMPONENT's log")
    return p


def component_log(ns: argparse.Namespace) -> Path | None:
    """The log file `ns.pod` names as a component, or None when it names a pod."""
    name: str = ns.pod
    if name.startswith(("pod/", "pods/", "po/")):
        return None
    explicit = name.startswith("component/")
    name = name.removeprefix("component/")
    state_dir = find_state_dir(ns.state_dir, None, os.environ)
    path = component_log_path(state_dir, name)
    if path is None and explicit:
        raise CommandError(f"no component {name!r} in the cluster at {state_dir}")
    return path


def print_file(path: Path, *, tail: int, follow: bool) -> None:
    """`path`'s last `tail` lines (all when < 0); with `follow`, then what is appended."""
    out = sys.stdout.buffer
    try:
        with path.open("rb") as f:
            data = f.read()
            if tail >= 0:
                lines = data.splitlines(keepends=True)
                data = b"".join(lines[-tail:]) if tail else b""
            out.write(data)
            out.flush()
            while follow:
                chunk = f.read()
                if chunk:
                    out.write(chunk)
                    out.flush()
                elif os.fstat(f.fileno()).st_size < f.tell():
                    f.seek(0)  # rotated (copied, then truncated in place): read it anew
                else:
                    time.sleep(0.2)
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None


async def _logs(ns: argparse.Namespace, target: _kubeconfig.Target) -> None:
    request = kubelet_pb2.LogsRequest(namespace=target.namespace, pod=pod_name(ns.pod))
    request.container, request.since_time = ns.container, ns.since_time
    request.previous, request.follow, request.timestamps = ns.previous, ns.follow, ns.timestamps
    if ns.tail >= 0:
        request.tail_lines = ns.tail
    if ns.since is not None:
        # As kubectl: whole seconds, at least one.
        request.since_seconds = max(int(-(-ns.since // 1)), 1)
    if ns.limit_bytes is not None:
        request.limit_bytes = ns.limit_bytes
    await stream_log(target, request)


def _check(ns: argparse.Namespace) -> None:
    if ns.since is not None and ns.since_time:
        raise CommandError("at most one of --since-time or --since may be used")
    if ns.limit_bytes is not None and ns.limit_bytes < 1:
        raise CommandError(f"--limit-bytes: must be greater than 0, not {ns.limit_bytes}")
    if ns.since_time:
        try:
            parse_time(ns.since_time)
        except ValueError as exc:
            raise CommandError(f"--since-time: {exc}") from None


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    try:
        path = component_log(ns)
        if path is not None:
            print_file(path, tail=ns.tail, follow=ns.follow)
            return 0
        _check(ns)
        target = _kubeconfig.resolve(
            server=ns.server, namespace=ns.namespace, kubeconfig=ns.kubeconfig, context=ns.context
        )
        asyncio.run(_logs(ns, target))
    except (CommandError, _kubeconfig.ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0

"""`k8semu exec POD [-c C] [-n NS] [-i] -- CMD...`: run a command in a container.

The command runs on the pod's node, in the container's environment (its env and working
directory); its stdout and stderr are printed and its exit code is this command's.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import grpc

from k8semu import durations, transport
from k8semu.cli import _kubeconfig
from k8semu.cli.logs import CommandError, add_target_flags, kubelet_endpoint, pod_name, rpc_error
from k8semu.pb.kubelet.v1 import kubelet_pb2, kubelet_pb2_grpc

EXEC_TIMEOUT = 60.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="k8semu exec", description="Run a command in a container: k8semu exec POD -- CMD..."
    )
    p.add_argument("pod")
    add_target_flags(p)
    p.add_argument("-i", "--stdin", action="store_true", help="pass this command's stdin")
    p.add_argument(
        "--timeout",
        type=durations.seconds_flag,
        default=EXEC_TIMEOUT,
        help="duration (30s, 1m; a bare number is seconds)",
    )
    return p


async def _exec(
    ns: argparse.Namespace, target: _kubeconfig.Target, command: list[str], stdin: bytes
) -> int:
    name = pod_name(ns.pod)
    endpoint = await kubelet_endpoint(target, target.namespace, name)
    request = kubelet_pb2.ExecRequest(
        namespace=target.namespace,
        pod=name,
        container=ns.container,
        command=command,
        stdin=stdin,
        timeout_seconds=ns.timeout,
    )
    async with transport.channel(endpoint) as channel:
        stub = kubelet_pb2_grpc.KubeletStub(channel)
        try:
            resp = await stub.Exec(request, timeout=ns.timeout + 5)
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc, endpoint) from None
    sys.stdout.buffer.write(resp.stdout)
    sys.stdout.buffer.flush()
    sys.stderr.buffer.write(resp.stderr)
    sys.stderr.buffer.flush()
    return int(resp.exit_code)


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    if "--" in args:
        cut = args.index("--")
        args, command = args[:cut], args[cut + 1 :]
    else:
        command = []
    ns = _parser().parse_args(args)
    if not command:
        print("error: you must specify a command: k8semu exec POD -- CMD...", file=sys.stderr)
        return 1
    if ns.timeout <= 0:
        print("error: --timeout: must be > 0", file=sys.stderr)
        return 1
    stdin = sys.stdin.buffer.read() if ns.stdin else b""
    try:
        target = _kubeconfig.resolve(
            server=ns.server, namespace=ns.namespace, kubeconfig=ns.kubeconfig, context=ns.context
        )
        return asyncio.run(_exec(ns, target, command, stdin))
    except (CommandError, _kubeconfig.ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

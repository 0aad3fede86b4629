"""`k8semu exec POD [-c C] [-n NS] [-i] -- CMD...`: run a command in a container.

The command runs on the pod's node, in the container's environment (its env and working
directory), reached through the API server (its PodStreams service relays the kubelet's
Interact stream); its stdout and stderr are printed as they come and its exit code is this
command's (124 after --timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Sequence

import grpc

from k8semu import durations, transport
from k8semu.cli import _kubeconfig
from k8semu.cli.logs import CommandError, add_target_flags, pod_name, rpc_error
from k8semu.pb.api.v1 import podstreams_pb2_grpc
from k8semu.pb.kubelet.v1 import kubelet_pb2

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
    start = kubelet_pb2.ExecStart(
        namespace=target.namespace,
        pod=pod_name(ns.pod),
        container=ns.container,
        command=command,
        stdin=ns.stdin,
        stdout=True,
        stderr=True,
    )

    async def inputs() -> AsyncIterator[kubelet_pb2.InteractInput]:
        yield kubelet_pb2.InteractInput(start=start)
        if ns.stdin:
            if stdin:
                yield kubelet_pb2.InteractInput(stdin=stdin)
            yield kubelet_pb2.InteractInput(stdin_closed=True)

    async with transport.channel(list(target.servers), target.tls()) as channel:
        stub = podstreams_pb2_grpc.PodStreamsStub(channel)
        try:
            async for out in stub.Interact(inputs(), timeout=ns.timeout):
                for data, stream in ((out.stdout, sys.stdout), (out.stderr, sys.stderr)):
                    if data:
                        stream.buffer.write(data)
                        stream.buffer.flush()
                if out.HasField("exit_code"):
                    return int(out.exit_code)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                print(f"exec: timed out after {ns.timeout:g}s", file=sys.stderr)
                return 124
            raise rpc_error(exc, target) from None
    raise CommandError("the exec ended without an exit code")


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

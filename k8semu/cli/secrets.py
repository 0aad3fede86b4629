"""`k8semu secrets rewrite [-n NS | -A] [-s SERVER] [--kubeconfig F] [--context C]`: every
Secret read and written back unchanged, so that the API servers store it encrypted with the
first provider and key of their --encryption-provider-config (key rotation; turning encryption
on or off), as `kubectl get secrets -A -o json | kubectl replace -f -` does. An unchanged
update writes only a value stored otherwise than a write would now (docs/security.md).

Prints one `secret/NAME rewritten` line per Secret (with its namespace under -A); exit 1 when
one failed (the others are still done), 2 for bad flags.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from k8semu.cli import _kubeconfig
from k8semu.client import APIStatusError, Client, Conflict, ConnectFailed, NotFound, Timeouts
from k8semu.pb.api.v1 import core_pb2

_RETRIES = 5  # a Secret written meanwhile is read again and rewritten


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="k8semu secrets", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    rw = sub.add_parser("rewrite", help="write every Secret back (re-encrypt with the first key)")
    rw.add_argument("-n", "--namespace", default=None)
    rw.add_argument("-A", "--all-namespaces", action="store_true")
    rw.add_argument("--server", "-s", default=None, help="API servers, HOST:PORT[,HOST:PORT]")
    rw.add_argument("--kubeconfig", default=None)
    rw.add_argument("--context", default=None)
    rw.add_argument("--request-timeout", type=float, default=20.0, help="seconds per call")
    return p


async def _rewrite_one(client: Client, secret: core_pb2.Secret) -> None:
    for _ in range(_RETRIES):
        try:
            await client.update(secret)
            return
        except Conflict:
            m = secret.metadata
            secret = await client.get(core_pb2.Secret, m.name, namespace=m.namespace)
    raise Conflict(f'secrets "{secret.metadata.name}": written too often meanwhile; run again')


async def rewrite(client: Client, namespace: str | None, *, qualified: bool) -> int:
    """Rewrite every Secret of `namespace` (None: all); the number that failed."""
    failed = 0
    listed = await client.list_all(core_pb2.Secret, namespace=namespace)
    for secret in listed.items:
        m = secret.metadata
        name = f"{m.namespace}/{m.name}" if qualified else m.name
        try:
            await _rewrite_one(client, secret)
        except NotFound:
            continue  # deleted meanwhile: nothing to rewrite
        except APIStatusError as exc:
            failed += 1
            print(f"error: secret/{name}: {exc.message}", file=sys.stderr)
            continue
        print(f"secret/{name} rewritten")
    return failed


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    try:
        target = _kubeconfig.resolve(
            server=ns.server, namespace=ns.namespace, kubeconfig=ns.kubeconfig, context=ns.context
        )
    except (ValueError, _kubeconfig.ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not ns.request_timeout > 0:
        print("error: --request-timeout: must be > 0", file=sys.stderr)
        return 2

    async def run() -> int:
        async with Client(
            list(target.servers), timeouts=Timeouts(call=ns.request_timeout), tls=target.tls()
        ) as client:
            namespace = None if ns.all_namespaces else target.namespace
            return await rewrite(client, namespace, qualified=ns.all_namespaces)

    try:
        failed = asyncio.run(run())
    except (APIStatusError, ConnectFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 1 if failed else 0

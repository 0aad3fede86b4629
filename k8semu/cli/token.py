"""`k8semu token create`: a bootstrap token (kubeadm's), for a new node to join with.

    k8semu token create [--ttl 24h] [--description TEXT] [--print-join-command]
                        [--server/--kubeconfig/--context]

Writes the Secret `kube-system/bootstrap-token-<id>` (type bootstrap.kubernetes.io/token;
`expiration` after --ttl, 0: never) through the API server and prints `<id>.<secret>`; the
API servers (`--enable-bootstrap-token-auth`, which `k8semu up` sets under TLS) then take it
as `system:bootstrap:<id>` in `system:bootstrappers` until it expires or the Secret is
deleted (`k8semu delete secret bootstrap-token-<id> -n kube-system`). --print-join-command
prints `k8semu join --server <HTTPS address> --token <token> --discovery-token-ca-cert-hash
sha256:<hash of the CA>` (kubeadm's), the address from kube-public/cluster-info.
docs/security.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import sys
from collections.abc import Sequence

from k8semu.apiserver.auth import bootstrap
from k8semu.cli import _kubeconfig
from k8semu.cluster import clusterinfo
from k8semu.durations import parse_ms

DEFAULT_TTL = "24h"  # kubeadm's


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="k8semu token", description="Bootstrap tokens (kubeadm's).")
    sub = p.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="make a bootstrap token and print it")
    create.add_argument("--ttl", default=DEFAULT_TTL, help="lifetime (24h, 30m; 0: never expires)")
    create.add_argument("--description", default="", help="a note kept in the Secret")
    create.add_argument(
        "--print-join-command",
        action="store_true",
        help="print the whole `k8semu join` command (server, token, CA hash) instead",
    )
    create.add_argument("--server", default=None, help="API servers HOST:PORT,...")
    create.add_argument("--kubeconfig", default=None)
    create.add_argument("--context", default=None)
    return p


def _ttl(text: str) -> datetime.timedelta | None:
    if text.strip() == "0":
        return None
    try:
        seconds = parse_ms(text) / 1000
    except ValueError as exc:
        raise ValueError(f"--ttl: {exc}") from None
    if seconds <= 0:
        raise ValueError(f"--ttl: must be > 0 (or 0 for never), got {text!r}")
    return datetime.timedelta(seconds=seconds)


async def _create(
    target: _kubeconfig.Target, token: str, data: dict[str, str], want_server: bool
) -> str:
    """Create the token's Secret; the API server's HTTPS address kube-public/cluster-info
    names ("" when not asked or none)."""
    from k8semu.client import Client
    from k8semu.pb.api.v1 import core_pb2

    secret = core_pb2.Secret(api_version="v1", kind="Secret", type=bootstrap.SECRET_TYPE)
    secret.metadata.name = bootstrap.SECRET_PREFIX + token.partition(".")[0]
    secret.metadata.namespace = bootstrap.NAMESPACE
    for key, value in data.items():
        secret.data[key] = value.encode()
    async with Client(target.servers, tls=target.tls()) as client:
        await client.create(secret)
        if not want_server:
            return ""
        cm = await client.get(core_pb2.ConfigMap, clusterinfo.NAME, namespace=clusterinfo.NAMESPACE)
    return clusterinfo.parse(cm.data.get(clusterinfo.KEY, "")).rest.partition("://")[2]


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    try:
        ttl = _ttl(ns.ttl)
        target = _kubeconfig.resolve(server=ns.server, kubeconfig=ns.kubeconfig, context=ns.context)
    except (ValueError, _kubeconfig.ConfigError) as exc:
        print(f"k8semu token: {exc}", file=sys.stderr)
        return 2
    if ns.print_join_command and target.ca is None:
        print("k8semu token: --print-join-command: the cluster serves no TLS", file=sys.stderr)
        return 2
    token = bootstrap.new_token()
    data = bootstrap.secret_data(token, ttl, ns.description)
    try:
        server = asyncio.run(_create(target, token, data, ns.print_join_command))
    except clusterinfo.DiscoveryError as exc:
        print(f"k8semu token: --print-join-command: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # ClientError and connection failures: say it, no traceback
        print(f"k8semu token: cannot create the token's Secret: {exc}", file=sys.stderr)
        return 1
    if not ns.print_join_command:
        print(token)
        return 0
    assert target.ca is not None
    print(
        f"k8semu join --server {server} --token {token}"
        f" {clusterinfo.PIN_FLAG} {clusterinfo.ca_hash(target.ca)}"
    )
    return 0

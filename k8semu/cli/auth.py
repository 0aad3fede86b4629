"""`k8semu auth can-i VERB RESOURCE [NAME] [-n NS] [-A] [--as USER] [--as-group G]
[--token T]`: may I (or USER, impersonated) do this? Prints `yes` (exit 0) or `no` (exit 1),
as `kubectl auth can-i`; asks the API server's authorizers with a SelfSubjectAccessReview
over gRPC (the Review method). RESOURCE may name a subresource (`pods/log`) and a group
(`deployments.apps`); a path (`/healthz`) asks about a non-resource URL.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

import grpc

from k8semu import transport
from k8semu.api import kinds
from k8semu.api.errors import UnknownKindError
from k8semu.cli import _kubeconfig
from k8semu.pb.api.v1 import apiserver_pb2_grpc, authorization_pb2

DEADLINE = 20.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="k8semu auth", description="inspect authorization")
    sub = p.add_subparsers(dest="command", required=True)
    can = sub.add_parser("can-i", help="check whether an action is allowed")
    can.add_argument("verb")
    can.add_argument("resource", help="RESOURCE[/SUBRESOURCE] (pods, pods/log, deployments.apps)"
                     " or a URL path (/healthz)")  # fmt: skip
    can.add_argument("name", nargs="?", default="")
    can.add_argument("-n", "--namespace", default=None)
    can.add_argument("-A", "--all-namespaces", action="store_true")
    can.add_argument("--as", dest="as_user", default="", help="the user to impersonate")
    can.add_argument("--as-group", action="append", default=[], help="groups to impersonate")
    can.add_argument("--token", default="", help="bearer token to authenticate with")
    can.add_argument("--server", "-s", default=None, help="API servers, HOST:PORT[,HOST:PORT]")
    can.add_argument("--kubeconfig", default=None)
    can.add_argument("--context", default=None)
    return p


def review(ns: argparse.Namespace, namespace: str) -> authorization_pb2.SelfSubjectAccessReview:
    """The review the arguments ask for (ValueError for an unknown resource)."""
    out = authorization_pb2.SelfSubjectAccessReview()
    if ns.resource.startswith("/"):
        out.spec.non_resource_attributes.path = ns.resource
        out.spec.non_resource_attributes.verb = ns.verb
        return out
    resource, _, sub = ns.resource.partition("/")
    attrs = out.spec.resource_attributes
    attrs.verb, attrs.subresource, attrs.name = ns.verb, sub, ns.name
    if resource == "*":
        attrs.resource, attrs.group = "*", "*"
    else:
        try:
            kind = kinds.for_resource(resource)
        except UnknownKindError as exc:
            raise ValueError(str(exc)) from None
        attrs.resource, attrs.group = kind.plural, kind.group
        attrs.namespace = "" if ns.all_namespaces or not kind.namespaced else namespace
    return out


async def _ask(
    target: _kubeconfig.Target, request: authorization_pb2.SelfSubjectAccessReview,
    metadata: list[tuple[str, str]],
) -> bool:  # fmt: skip
    async with transport.channel(list(target.servers), tls=target.tls()) as channel:
        stub = apiserver_pb2_grpc.APIStub(channel)
        answer = await stub.Review(request, metadata=metadata, timeout=DEADLINE)
    return bool(answer.status.allowed)


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    try:
        target = _kubeconfig.resolve(
            server=ns.server, namespace=ns.namespace, kubeconfig=ns.kubeconfig, context=ns.context
        )
        request = review(ns, target.namespace)
    except (ValueError, _kubeconfig.ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    metadata = [("authorization", f"Bearer {ns.token}")] if ns.token else []
    if ns.as_user:
        metadata.append(("impersonate-user", ns.as_user))
    metadata += [("impersonate-group", g) for g in ns.as_group]
    try:
        allowed = asyncio.run(_ask(target, request, metadata))
    except grpc.aio.AioRpcError as exc:
        print(f"error: {exc.details()}", file=sys.stderr)
        return 1
    print("yes" if allowed else "no")
    return 0 if allowed else 1

"""`k8semu bench api --auth`: the authorization overhead, measured side by side.

A second API server on the same store runs with a static token file and
`--authorization-mode Node,RBAC`; the bench user `bench` is bound (ClusterRoleBindings,
created through the first, open server) to `edit` and to a role that may create
namespaces, so every call goes through authentication, the RBAC index and a rule scan of
a real role (not the system:masters shortcut). The same phases run against both servers
and the report gives the p99 ratio per verb (target: within 1.3x). The client adds the
bearer token with a channel interceptor, on every call and watch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from k8semu.apiserver.auth import policy
from k8semu.pb.api.v1 import apiserver_pb2 as api
from k8semu.pb.api.v1 import rbac_pb2

TOKEN = "bench-token"
USER = "bench"
TARGET_AUTH_RATIO = 1.3
API = "/k8semu.api.v1.API/"


class _Bearer:
    def __init__(self, token: str) -> None:
        self.metadata = (("authorization", f"Bearer {token}"),)

    def _with(self, details: Any) -> Any:
        return details._replace(metadata=[*(details.metadata or ()), *self.metadata])


# Two classes: grpc.aio files an interceptor under the first kind it is an instance of.
class _BearerUnary(_Bearer, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return await continuation(self._with(details), request)


class _BearerStream(_Bearer, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return await continuation(self._with(details), request)


def channel(address: str, options: Sequence[tuple[str, Any]], token: str) -> grpc.aio.Channel:
    """A plain channel to `address`, sending `token` as a bearer token when there is one."""
    interceptors: Any = [_BearerUnary(token), _BearerStream(token)] if token else None
    return grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)


def server_args(workdir: Path) -> list[str]:
    """The secured API server's flags (its token file written in `workdir`)."""
    tokens = workdir / "tokens.csv"
    tokens.write_text(f"{TOKEN},{USER},{USER}-uid\n")
    return ["--token-auth-file", str(tokens), "--authorization-mode", "Node,RBAC"]


def _objects() -> list[Any]:
    role = rbac_pb2.ClusterRole(
        api_version="rbac.authorization.k8s.io/v1",
        kind="ClusterRole",
        rules=[policy.rule(("create", "get"), ("",), ("namespaces",))],
    )
    role.metadata.name = "bench-namespaces"
    out: list[Any] = [role]
    for ref in ("edit", "bench-namespaces"):
        binding = rbac_pb2.ClusterRoleBinding(
            api_version="rbac.authorization.k8s.io/v1",
            kind="ClusterRoleBinding",
            role_ref=rbac_pb2.RoleRef(api_group=policy.GROUP, kind="ClusterRole", name=ref),
            subjects=[rbac_pb2.Subject(kind="User", api_group=policy.GROUP, name=USER)],
        )
        binding.metadata.name = f"bench-{ref}"
        out.append(binding)
    return out


async def grant(open_address: str, timeout: float) -> None:
    """Create the bench user's roles and bindings through the open server (idempotent)."""
    plural = {"ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings"}
    async with grpc.aio.insecure_channel(open_address) as ch:
        create = ch.unary_unary(
            API + "Create",
            request_serializer=api.CreateRequest.SerializeToString,
            response_deserializer=api.ObjectResponse.FromString,
        )
        for obj in _objects():
            req = api.CreateRequest(resource=plural[obj.kind])
            req.object.Pack(obj)
            try:
                await create(req, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                    raise

"""Guard: the API server's one authenticate -> authorize -> audit path, for both faces.

Authorizers run in `--authorization-mode` order (RBAC, Node, AlwaysAllow, AlwaysDeny); the
first that allows wins; when none does, the request is Forbidden with kube-apiserver's
message (and the Node authorizer's reason, when it gave one). RBAC reads Roles, Bindings
and ClusterRoles from the API server's watch caches (listed once, then followed), so a
decision costs no store round trip; the Node authorizer reads the pods cache the same way.
Impersonation (Impersonate-User/-Group) is itself authorized as verb `impersonate` on
`users`/`groups`, as Kubernetes does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, cast

from google.protobuf.message import Message

from k8semu.api import kinds
from k8semu.apiserver.auth import node, rbac
from k8semu.apiserver.auth.attributes import Attributes, forbidden_message
from k8semu.apiserver.auth.audit import AuditLog
from k8semu.apiserver.auth.authn import Authenticator, Credentials
from k8semu.apiserver.auth.tokens import Issuer
from k8semu.apiserver.auth.user import (
    ANONYMOUS,
    ANONYMOUS_USER,
    REQUESTER,
    SA_PREFIX,
    UserInfo,
    authenticated,
    service_account,
)
from k8semu.apiserver.errors import Forbidden, Invalid
from k8semu.apiserver.objects import decode, key
from k8semu.apiserver.watchcache import WatchCache, WatchCaches
from k8semu.pb.api.v1 import core_pb2

MODES = ("AlwaysAllow", "AlwaysDeny", "RBAC", "Node")
_RBAC_KINDS = ("roles", "clusterroles", "rolebindings", "clusterrolebindings")
_MEMO_LIMIT = 10_000  # users x namespaces remembered per index before starting over


def parse_modes(text: str) -> tuple[str, ...]:
    """--authorization-mode: a comma-separated list of MODES (case as Kubernetes spells it)."""
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    for m in modes:
        if m not in MODES:
            raise ValueError(
                f"--authorization-mode: unknown mode {m!r} (want a list of {', '.join(MODES)})"
            )
    if len(set(modes)) != len(modes):
        raise ValueError(f"--authorization-mode: a mode is listed twice: {text!r}")
    return modes or ("AlwaysAllow",)


@dataclass(eq=False)
class Guard:
    """One per API server (the faces skip it altogether when the server runs without
    authentication: AlwaysAllow, as before)."""

    authenticator: Authenticator
    modes: tuple[str, ...]
    caches: WatchCaches
    _: KW_ONLY
    audit: AuditLog | None = None
    issuer: Issuer | None = None
    _rbac: tuple[tuple[int, ...], rbac.Index] | None = field(default=None, init=False)
    _graph: tuple[int, node.Graph] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        authenticator = self.authenticator
        authenticator.lookup = authenticator.lookup or self.uid
        authenticator.secrets = authenticator.secrets or self._secret

    # ---- authentication -------------------------------------------------------------------

    async def authenticate(self, creds: Credentials) -> UserInfo:
        """The user the request acts as: its own, or the one it impersonates (when allowed);
        also the request's REQUESTER from here on."""
        user = await self._authenticate(creds)
        REQUESTER.set(user)
        return user

    async def _authenticate(self, creds: Credentials) -> UserInfo:
        user = await self.authenticator.authenticate(creds)
        if not creds.impersonate_user:
            if creds.impersonate_groups:
                raise Invalid("Impersonate-Group requires Impersonate-User")
            return user
        wanted = creds.impersonate_user
        if wanted.startswith(SA_PREFIX) and wanted.count(":") == 3:
            # A ServiceAccount is impersonated as the serviceaccounts resource of its
            # namespace, and gets its groups, as Kubernetes does.
            namespace, name = wanted.split(":")[2:]
            await self.authorize(
                Attributes(user, "impersonate", "serviceaccounts", "", "", namespace, name)
            )
            as_user = service_account(namespace, name)
        else:
            await self.authorize(Attributes(user, "impersonate", "users", name=wanted))
            as_user = authenticated(wanted) if wanted != ANONYMOUS else ANONYMOUS_USER
        for group in creds.impersonate_groups:
            await self.authorize(Attributes(user, "impersonate", "groups", name=group))
        extra = tuple(g for g in creds.impersonate_groups if g not in as_user.groups)
        return UserInfo(as_user.name, "", (*as_user.groups, *extra))

    async def uid(self, resource: str, namespace: str, name: str) -> str | None:
        """The uid of an object, None when it does not exist."""
        found = await self._object(resource, namespace, name)
        return None if found is None else str(found.metadata.uid)

    async def _secret(self, namespace: str, name: str) -> Any:
        return await self._object("secrets", namespace, name)

    async def _object(self, resource: str, namespace: str, name: str) -> Any:
        """An object, None when it does not exist: from the watch cache, and on a miss from
        the store (the cache may not have seen a create of a moment ago)."""
        cache = await self._cache(resource)
        k = key(cache.kind, namespace, name)
        kv = cache.objects.get(k)
        if kv is None:
            found = await self.caches.store.get(k)
            if not found.kvs:
                return None
            kv = found.kvs[0]
        return cast(Any, decode(cache.kind, kv.value, kv.mod_revision))

    # ---- authorization --------------------------------------------------------------------

    async def decide(self, attrs: Attributes) -> tuple[bool, str]:
        """(allowed, reason) through the authorizers in order."""
        reasons: list[str] = []
        for mode in self.modes:
            if mode == "AlwaysAllow":
                return True, ""
            if mode == "AlwaysDeny":
                return False, ""
            if mode == "RBAC" and (await self._rbac_index()).authorize(attrs):
                return True, ""
            if mode == "Node" and attrs.user.node_name:
                await self._cache("pods")  # what the Node authorizer's graph is made of
                allowed, reason = node.decide(attrs, self.pod, self._node_graph)
                if allowed:
                    return True, ""
                if reason:
                    reasons.append(reason)
        return False, "; ".join(reasons)

    async def authorize(self, attrs: Attributes) -> None:
        """Forbidden unless an authorizer allows `attrs`."""
        allowed, reason = await self.decide(attrs)
        if not allowed:
            raise Forbidden(
                forbidden_message(attrs, reason), resource=attrs.resource, name=attrs.name
            )

    async def _cache(self, resource: str) -> WatchCache:
        cache = self.caches.get(kinds.for_resource(resource))
        await cache.wait_ready()
        return cache

    async def _rbac_index(self) -> rbac.Index:
        caches = [await self._cache(r) for r in _RBAC_KINDS]
        stamp = tuple(c.revision for c in caches)
        if self._rbac is None or self._rbac[0] != stamp or self._rbac[1].remembered > _MEMO_LIMIT:
            objs = [list(_decoded(c)) for c in caches]
            index = rbac.Index(objs[0], objs[1], objs[2], objs[3])  # type: ignore[arg-type]
            self._rbac = (stamp, index)
        return self._rbac[1]

    def _pods_cache(self) -> WatchCache:
        return self.caches.get(kinds.for_resource("pods"))

    def pod(self, namespace: str, name: str) -> core_pb2.Pod | None:
        cache = self._pods_cache()
        kv = cache.objects.get(key(cache.kind, namespace, name))
        return None if kv is None else cast(core_pb2.Pod, decode(cache.kind, kv.value, 0))

    def _node_graph(self) -> node.Graph:
        cache = self._pods_cache()
        if self._graph is None or self._graph[0] != cache.revision:
            self._graph = (cache.revision, node.Graph(cast(Any, _decoded(cache))))
        return self._graph[1]

    async def warm(self) -> None:
        """List what authorization reads before the first request needs it."""
        await self._rbac_index()
        if "Node" in self.modes:
            await self._cache("pods")


def _decoded(cache: WatchCache) -> Iterable[Message]:
    return (decode(cache.kind, kv.value, kv.mod_revision) for kv in list(cache.objects.values()))

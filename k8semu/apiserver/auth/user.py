"""UserInfo: who a request is from, as Kubernetes' user.Info (name, uid, groups, extra)."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

ANONYMOUS = "system:anonymous"
UNAUTHENTICATED = "system:unauthenticated"
AUTHENTICATED = "system:authenticated"
MASTERS = "system:masters"
NODES = "system:nodes"
NODE_PREFIX = "system:node:"
SA_PREFIX = "system:serviceaccount:"
SERVICEACCOUNTS = "system:serviceaccounts"


@dataclass(frozen=True, slots=True)
class UserInfo:
    """An authenticated (or anonymous) user. `groups` holds system:authenticated for every
    authenticated user, as Kubernetes adds it."""

    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = field(default=())

    @property
    def node_name(self) -> str:
        """The node a kubelet's identity names (`system:node:NAME` in system:nodes), or ""."""
        if NODES in self.groups and self.name.startswith(NODE_PREFIX):
            return self.name[len(NODE_PREFIX) :]
        return ""


def authenticated(name: str, uid: str = "", groups: tuple[str, ...] = ()) -> UserInfo:
    """A user the chain accepted: its groups plus system:authenticated (once)."""
    extra = () if AUTHENTICATED in groups else (AUTHENTICATED,)
    return UserInfo(name, uid, (*groups, *extra))


def service_account(namespace: str, name: str, uid: str = "") -> UserInfo:
    """The user of a ServiceAccount token: system:serviceaccount:NS:NAME in
    system:serviceaccounts and system:serviceaccounts:NS."""
    return authenticated(
        f"{SA_PREFIX}{namespace}:{name}", uid, (SERVICEACCOUNTS, f"{SERVICEACCOUNTS}:{namespace}")
    )


ANONYMOUS_USER = UserInfo(ANONYMOUS, "", (UNAUTHENTICATED,))


#: The user the current request acts as, set by the Guard once authenticated (None: no
#: authentication, or no request). What a kind's admission reads when Kubernetes records
#: the requester in the object (CertificateSigningRequest's spec.username and groups).
REQUESTER: ContextVar[UserInfo | None] = ContextVar("requester", default=None)

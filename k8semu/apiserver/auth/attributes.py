"""What a request asks to do (Kubernetes' authorizer.Attributes) and the 403 it gets.

A resource request names a verb (get, list, watch, create, update, patch, delete,
deletecollection), an API group, a resource, maybe a subresource (`pods/log`), a namespace
("" at the cluster scope) and a name; a non-resource request names a verb and a path
(`/version`, `/api`). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from k8semu.apiserver.auth.user import UserInfo


@dataclass(frozen=True, slots=True)
class Attributes:
    user: UserInfo
    verb: str
    resource: str = ""
    api_group: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""  # a non-resource request's URL path
    resource_request: bool = True

    @property
    def full_resource(self) -> str:
        """`pods` or `pods/log`, as RBAC rules and messages name it."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def forbidden_message(attrs: Attributes, reason: str = "") -> str:
    """kube-apiserver's wording: `pods "web" is forbidden: User "u" cannot get resource
    "pods" in API group "" in the namespace "default"` (plus `: reason` when the deciding
    authorizer gave one)."""
    user = attrs.user.name
    if not attrs.resource_request:
        text = f'forbidden: User "{user}" cannot {attrs.verb} path "{attrs.path}"'
    else:
        group_resource = (
            f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
        )
        what = f'{group_resource} "{attrs.name}"' if attrs.name else group_resource
        where = (
            f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
        )
        text = (
            f'{what} is forbidden: User "{user}" cannot {attrs.verb} resource'
            f' "{attrs.full_resource}" in API group "{attrs.api_group}" {where}'
        )
    return f"{text}: {reason}" if reason else text

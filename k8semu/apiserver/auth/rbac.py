"""RBAC evaluation (Kubernetes' RBAC authorizer) over the rbac.authorization.k8s.io objects.

A request is allowed when a rule of a role bound to the user allows it: ClusterRoleBindings
grant their ClusterRole everywhere; RoleBindings grant their Role or ClusterRole in their
own namespace only. A rule matches when its verbs, apiGroups, resources (`pods`,
`pods/log`, `*`, `*/scale`) and resourceNames (empty: any) all do; non-resource rules match
URL paths (`/healthz`, `/api/*`). A ClusterRole with an aggregationRule holds the rules of
every ClusterRole its selectors select. Nothing here denies: no match means "no opinion".

`Index` is built from one snapshot of the four kinds and keeps each user's rules per
namespace, so a request costs dictionary look-ups; a new snapshot (any of the four kinds
changed) builds a new index. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from k8semu.api.errors import SelectorError
from k8semu.api.selectors import LabelSelector
from k8semu.apiserver.auth.attributes import Attributes
from k8semu.apiserver.auth.user import UserInfo
from k8semu.pb.api.v1 import rbac_pb2

Rule = rbac_pb2.PolicyRule


def _has(values: Sequence[str], wanted: str) -> bool:
    return "*" in values or wanted in values


def _resource_matches(rule: Rule, attrs: Attributes) -> bool:
    full = attrs.full_resource
    for r in rule.resources:
        if r in ("*", full):
            return True
        # "*/scale" is any resource's scale subresource; "pods/*" any subresource of pods.
        if attrs.subresource and (r == f"*/{attrs.subresource}" or r == f"{attrs.resource}/*"):
            return True
    return False


def _path_matches(rule: Rule, path: str) -> bool:
    for url in rule.non_resource_urls:
        if url == "*" or url == path or (url.endswith("*") and path.startswith(url[:-1])):
            return True
    return False


def allows(rule: Rule, attrs: Attributes) -> bool:
    """Whether `rule` allows the request (Kubernetes' RuleAllows)."""
    if not _has(rule.verbs, attrs.verb):
        return False
    if not attrs.resource_request:
        return _path_matches(rule, attrs.path)
    if rule.non_resource_urls and not rule.resources:
        return False
    return (
        _has(rule.api_groups, attrs.api_group)
        and _resource_matches(rule, attrs)
        and (not rule.resource_names or attrs.name in rule.resource_names)
    )


def _subject_matches(subject: Any, user: UserInfo, namespace: str) -> bool:
    if subject.kind == "User":
        return bool(subject.name == user.name)
    if subject.kind == "Group":
        return subject.name in user.groups
    if subject.kind == "ServiceAccount":
        ns = subject.namespace or namespace
        return user.name == f"system:serviceaccount:{ns}:{subject.name}"
    return False


def _selector(sel: Any) -> LabelSelector | None:
    try:
        return LabelSelector.from_match(
            dict(sel.match_labels),
            [(e.key, e.operator, list(e.values)) for e in sel.match_expressions],
        )
    except SelectorError:
        return None


def aggregate(cluster_roles: Iterable[rbac_pb2.ClusterRole]) -> dict[str, list[Rule]]:
    """Each ClusterRole's rules by name, an aggregated one's from the roles it selects."""
    roles = list(cluster_roles)
    rules = {r.metadata.name: list(r.rules) for r in roles}
    for role in roles:
        selectors = role.aggregation_rule.cluster_role_selectors
        if not selectors:
            continue
        found = [s for s in map(_selector, selectors) if s is not None]
        for other in roles:
            if other is not role and any(s.matches(dict(other.metadata.labels)) for s in found):
                rules[role.metadata.name].extend(other.rules)
    return rules


class Index:
    """One snapshot of the RBAC objects, and the rules each user gets, memoised."""

    def __init__(
        self,
        roles: Iterable[rbac_pb2.Role],
        cluster_roles: Iterable[rbac_pb2.ClusterRole],
        bindings: Iterable[rbac_pb2.RoleBinding],
        cluster_bindings: Iterable[rbac_pb2.ClusterRoleBinding],
    ) -> None:
        self.cluster_rules = aggregate(cluster_roles)
        self.role_rules = {(r.metadata.namespace, r.metadata.name): list(r.rules) for r in roles}
        self.cluster_bindings = list(cluster_bindings)
        self.bindings: dict[str, list[rbac_pb2.RoleBinding]] = {}
        for b in bindings:
            self.bindings.setdefault(b.metadata.namespace, []).append(b)
        self._memo: dict[tuple[UserInfo, str], list[Compiled]] = {}

    @property
    def remembered(self) -> int:
        """How many (user, namespace) rule lists are memoised."""
        return len(self._memo)

    def rules_for(self, user: UserInfo, namespace: str) -> list[Compiled]:
        """Every rule `user` holds in `namespace` ("" : the cluster-wide ones only), compiled
        to sets (a decision is then set look-ups, not scans of protobuf lists)."""
        key = (user, namespace)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = [Compiled.of(r) for r in self._collect(user, namespace)]
        return found

    def _collect(self, user: UserInfo, namespace: str) -> list[Rule]:
        rules: list[Rule] = []
        for cb in self.cluster_bindings:
            if any(_subject_matches(s, user, "") for s in cb.subjects):
                rules.extend(self.cluster_rules.get(cb.role_ref.name, ()))
        for b in self.bindings.get(namespace, ()) if namespace else ():
            if any(_subject_matches(s, user, namespace) for s in b.subjects):
                ref = b.role_ref
                if ref.kind == "ClusterRole":
                    rules.extend(self.cluster_rules.get(ref.name, ()))
                else:
                    rules.extend(self.role_rules.get((namespace, ref.name), ()))
        return rules

    def authorize(self, attrs: Attributes) -> bool:
        return any(rule.allows(attrs) for rule in self.rules_for(attrs.user, attrs.namespace))


@dataclass(frozen=True, slots=True)
class Compiled:
    """A PolicyRule as sets; `allows` is `allows(rule, attrs)` of the rule it was made of."""

    rule: Rule
    verbs: frozenset[str]
    groups: frozenset[str]
    resources: frozenset[str]
    names: frozenset[str]

    @classmethod
    def of(cls, rule: Rule) -> Compiled:
        return cls(rule, frozenset(rule.verbs), frozenset(rule.api_groups),
                   frozenset(rule.resources), frozenset(rule.resource_names))  # fmt: skip

    def allows(self, attrs: Attributes) -> bool:
        if "*" not in self.verbs and attrs.verb not in self.verbs:
            return False
        if not attrs.resource_request or not self.resources:
            return allows(self.rule, attrs)  # non-resource rules are few: the plain check
        if "*" not in self.groups and attrs.api_group not in self.groups:
            return False
        if not self._resource_matches(attrs):
            return False
        return not self.names or attrs.name in self.names

    def _resource_matches(self, attrs: Attributes) -> bool:
        if "*" in self.resources or attrs.full_resource in self.resources:
            return True
        sub = attrs.subresource
        return bool(sub) and (
            f"*/{sub}" in self.resources or f"{attrs.resource}/*" in self.resources
        )

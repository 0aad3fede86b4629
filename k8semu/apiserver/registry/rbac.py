"""The RBAC rows (rbac.authorization.k8s.io/v1) and the ServiceAccount row: checks as
kube-apiserver's (pkg/apis/rbac/validation).

Role and ClusterRole names are path segments, not DNS names (`system:node` is one); each
rule names verbs, and either non-resource URLs (ClusterRoles only) or API groups and
resources, never both. A binding's roleRef is in the rbac group, names a Role or a
ClusterRole (a ClusterRoleBinding: a ClusterRole) and never changes; each subject is a
User, Group (rbac group) or ServiceAccount (core group, with a namespace). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from k8semu.apiserver.validation import FieldError
from k8semu.pb.api.v1 import rbac_pb2

GROUP = "rbac.authorization.k8s.io"
SUBJECT_KINDS = ("ServiceAccount", "User", "Group")


def path_segment_name(value: str) -> str | None:
    """Why `value` cannot be an RBAC object's name (Kubernetes' IsValidPathSegmentName)."""
    if value in (".", ".."):
        return f"Invalid value: \"{value}\": may not be '{value}'"
    for bad in ("/", "%"):
        if bad in value:
            return f"Invalid value: \"{value}\": may not contain '{bad}'"
    return None


def _rules(rules: Any, namespaced: bool) -> Iterator[FieldError]:
    for i, rule in enumerate(rules):
        path = f"rules[{i}]"
        if not rule.verbs:
            yield FieldError(
                f"{path}.verbs", "Required value: verbs must contain at least one value"
            )
        if rule.non_resource_urls:
            if namespaced:
                urls = ", ".join(f'"{u}"' for u in rule.non_resource_urls)
                yield FieldError(
                    f"{path}.nonResourceURLs",
                    f"Invalid value: []string{{{urls}}}: namespaced rules cannot apply to"
                    " non-resource URLs",
                )
            if rule.api_groups or rule.resources:
                yield FieldError(
                    f"{path}.nonResourceURLs",
                    "Invalid value: rules cannot apply to both regular resources and"
                    " non-resource URLs",
                )
            continue
        if not rule.api_groups:
            yield FieldError(
                f"{path}.apiGroups",
                "Required value: resource rules must supply at least one api group",
            )
        if not rule.resources:
            yield FieldError(
                f"{path}.resources",
                "Required value: resource rules must supply at least one resource",
            )


def validate_role(role: rbac_pb2.Role) -> Iterator[FieldError]:
    yield from _rules(role.rules, namespaced=True)


def validate_cluster_role(role: rbac_pb2.ClusterRole) -> Iterator[FieldError]:
    yield from _rules(role.rules, namespaced=False)
    for i, sel in enumerate(role.aggregation_rule.cluster_role_selectors):
        if not sel.match_labels and not sel.match_expressions:
            yield FieldError(
                f"aggregationRule.clusterRoleSelectors[{i}]",
                "Required value: a selector must select something",
            )


def _supported(path: str, value: str, allowed: tuple[str, ...]) -> FieldError:
    choices = ", ".join(f'"{a}"' for a in allowed)
    return FieldError(path, f'Unsupported value: "{value}": supported values: {choices}')


def _binding(binding: Any, ref_kinds: tuple[str, ...], namespaced: bool) -> Iterator[FieldError]:
    ref = binding.role_ref
    if ref.api_group != GROUP:
        yield _supported("roleRef.apiGroup", ref.api_group, (GROUP,))
    if ref.kind not in ref_kinds:
        yield _supported("roleRef.kind", ref.kind, ref_kinds)
    if not ref.name:
        yield FieldError("roleRef.name", "Required value")
    elif problem := path_segment_name(ref.name):
        yield FieldError("roleRef.name", problem)
    for i, s in enumerate(binding.subjects):
        path = f"subjects[{i}]"
        if not s.name:
            yield FieldError(f"{path}.name", "Required value")
        if s.kind not in SUBJECT_KINDS:
            yield _supported(f"{path}.kind", s.kind, SUBJECT_KINDS)
        elif s.kind == "ServiceAccount":
            if s.api_group:
                yield _supported(f"{path}.apiGroup", s.api_group, ("",))
            if not s.namespace and not namespaced:
                yield FieldError(f"{path}.namespace", "Required value")
        elif s.api_group != GROUP:
            yield _supported(f"{path}.apiGroup", s.api_group, (GROUP,))


def validate_role_binding(binding: rbac_pb2.RoleBinding) -> Iterator[FieldError]:
    yield from _binding(binding, ("Role", "ClusterRole"), namespaced=True)


def validate_cluster_role_binding(binding: rbac_pb2.ClusterRoleBinding) -> Iterator[FieldError]:
    yield from _binding(binding, ("ClusterRole",), namespaced=False)


def validate_binding_update(new: Any, old: Any) -> Iterator[FieldError]:
    if new.role_ref != old.role_ref:
        yield FieldError("roleRef", "Invalid value: cannot change roleRef")


def binding_defaults(binding: Any) -> None:
    """Kubernetes' defaults: roleRef.apiGroup and User/Group subjects' apiGroup are the rbac
    group when left out (as the v1 defaulting does)."""
    if not binding.role_ref.api_group:
        binding.role_ref.api_group = GROUP
    for s in binding.subjects:
        if not s.api_group and s.kind in ("User", "Group"):
            s.api_group = GROUP

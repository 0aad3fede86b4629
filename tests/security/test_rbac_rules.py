"""RBAC evaluation and the Node authorizer, pure: rule matching (verbs, groups, resources,
subresources, resourceNames, non-resource URLs, `*`), bindings' scopes, aggregation, the
default roles, the 403 wording, and the Node authorizer's matrix."""

from __future__ import annotations

import pytest

from k8semu.apiserver.auth import node, policy
from k8semu.apiserver.auth.attributes import Attributes, forbidden_message
from k8semu.apiserver.auth.rbac import Compiled, Index, allows
from k8semu.apiserver.auth.user import authenticated, service_account
from k8semu.apiserver.registry import rbac as rbac_rules
from k8semu.pb.api.v1 import core_pb2, rbac_pb2

ALICE = authenticated("alice", groups=("dev",))
READER = service_account("team-a", "reader")
GROUP = "rbac.authorization.k8s.io"


def _rule(verbs: str, groups: str, resources: str, names: str = "") -> rbac_pb2.PolicyRule:
    return policy.rule(tuple(verbs.split()), tuple(groups.split(",")), tuple(resources.split()),
                       tuple(names.split()))  # fmt: skip


def test_rule_matching() -> None:
    rule = _rule("get list", ",apps", "pods deployments/scale", "web")
    ask = Attributes(ALICE, "get", "pods", "", namespace="ns", name="web")
    assert allows(rule, ask)
    assert not allows(rule, Attributes(ALICE, "get", "pods", "", namespace="ns", name="db"))
    assert not allows(rule, Attributes(ALICE, "delete", "pods", "", name="web"))
    assert allows(rule, Attributes(ALICE, "get", "deployments", "apps", "scale", name="web"))
    assert not allows(rule, Attributes(ALICE, "get", "deployments", "apps", name="web"))
    assert not allows(rule, Attributes(ALICE, "get", "pods", "", "log", name="web"))
    assert allows(_rule("*", "*", "*/scale"), Attributes(ALICE, "update", "x", "g", "scale"))
    assert allows(_rule("get", "", "pods/*"), Attributes(ALICE, "get", "pods", "", "log"))
    urls = policy.urls(("get",), ("/healthz", "/api/*"))
    assert allows(urls, Attributes(ALICE, "get", path="/api/v1", resource_request=False))
    assert not allows(urls, Attributes(ALICE, "get", path="/apis", resource_request=False))
    assert not allows(urls, Attributes(ALICE, "get", "pods"))


def _binding(cls: type, name: str, ref_kind: str, ref: str, *subjects: rbac_pb2.Subject,
             namespace: str = "") -> object:  # fmt: skip
    b = cls(role_ref=rbac_pb2.RoleRef(api_group=GROUP, kind=ref_kind, name=ref), subjects=subjects)
    b.metadata.name, b.metadata.namespace = name, namespace
    return b


def _index(*bindings: object, roles: tuple[rbac_pb2.Role, ...] = ()) -> Index:
    rb = [b for b in bindings if isinstance(b, rbac_pb2.RoleBinding)]
    crb = [b for b in bindings if isinstance(b, rbac_pb2.ClusterRoleBinding)]
    return Index(roles, list(policy.cluster_roles()), rb, crb)


def test_view_in_one_namespace() -> None:
    sa = rbac_pb2.Subject(kind="ServiceAccount", name="reader", namespace="team-a")
    index = _index(
        _binding(rbac_pb2.RoleBinding, "b", "ClusterRole", "view", sa, namespace="team-a")
    )
    ask = Attributes(READER, "list", "pods", "", namespace="team-a")
    assert index.authorize(ask)
    assert index.authorize(Attributes(READER, "get", "deployments", "apps", namespace="team-a"))
    assert not index.authorize(Attributes(READER, "get", "secrets", "", namespace="team-a"))
    assert not index.authorize(Attributes(READER, "create", "pods", "", namespace="team-a"))
    assert not index.authorize(Attributes(READER, "list", "pods", "", namespace="team-b"))
    assert not index.authorize(Attributes(READER, "list", "pods", ""))  # every namespace


def test_cluster_bindings_groups_and_roles() -> None:
    masters = authenticated("root", groups=("system:masters",))
    index = _index(
        *policy.cluster_role_bindings(),
        _binding(rbac_pb2.RoleBinding, "dev", "Role", "cm-writer",
                 rbac_pb2.Subject(kind="Group", api_group=GROUP, name="dev"), namespace="ns"),
        roles=(rbac_pb2.Role(metadata={"name": "cm-writer", "namespace": "ns"},
                             rules=[_rule("create", "", "configmaps")]),),
    )  # fmt: skip
    assert index.authorize(Attributes(masters, "delete", "nodes", "", name="n1"))
    assert index.authorize(Attributes(masters, "get", path="/metrics", resource_request=False))
    assert index.authorize(Attributes(ALICE, "create", "configmaps", "", namespace="ns"))
    assert not index.authorize(Attributes(ALICE, "create", "configmaps", "", namespace="other"))
    assert index.authorize(Attributes(ALICE, "get", path="/version", resource_request=False))
    create_ssar = Attributes(ALICE, "create", "selfsubjectaccessreviews", "authorization.k8s.io")
    assert index.authorize(create_ssar)


def test_aggregation() -> None:
    extra = rbac_pb2.ClusterRole(rules=[_rule("get", "example.com", "widgets")])
    extra.metadata.name = "widgets-view"
    extra.metadata.labels["aggregate-to-view"] = "true"
    agg = rbac_pb2.ClusterRole()
    agg.metadata.name = "all-views"
    agg.aggregation_rule.cluster_role_selectors.add().match_labels["aggregate-to-view"] = "true"
    user = rbac_pb2.Subject(kind="User", api_group=GROUP, name="alice")
    index = Index([], [extra, agg], [], [_binding(rbac_pb2.ClusterRoleBinding, "x", "ClusterRole",
                                                  "all-views", user)])  # type: ignore[list-item]  # fmt: skip
    assert index.authorize(Attributes(ALICE, "get", "widgets", "example.com", namespace="n"))


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        (Attributes(ALICE, "list", "pods", "", namespace="default"),
         'pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the'
         ' namespace "default"'),
        (Attributes(ALICE, "get", "pods", "", "log", "default", "web"),
         'pods "web" is forbidden: User "alice" cannot get resource "pods/log" in API group ""'
         ' in the namespace "default"'),
        (Attributes(ALICE, "list", "deployments", "apps"),
         'deployments.apps is forbidden: User "alice" cannot list resource "deployments" in API'
         ' group "apps" at the cluster scope'),
        (Attributes(ALICE, "get", path="/metrics", resource_request=False),
         'forbidden: User "alice" cannot get path "/metrics"'),
    ],
)  # fmt: skip
def test_forbidden_wording(attrs: Attributes, message: str) -> None:
    assert forbidden_message(attrs) == message


def test_binding_validation() -> None:
    bad = rbac_pb2.RoleBinding(
        role_ref=rbac_pb2.RoleRef(api_group="x", kind="Thing", name=""),
        subjects=[rbac_pb2.Subject(kind="Robot", name="r")],
    )
    problems = [str(e) for e in rbac_rules.validate_role_binding(bad)]
    assert problems == [
        'roleRef.apiGroup: Unsupported value: "x": supported values: "rbac.authorization.k8s.io"',
        'roleRef.kind: Unsupported value: "Thing": supported values: "Role", "ClusterRole"',
        "roleRef.name: Required value",
        'subjects[0].kind: Unsupported value: "Robot": supported values: "ServiceAccount",'
        ' "User", "Group"',
    ]
    role = rbac_pb2.Role(rules=[rbac_pb2.PolicyRule(non_resource_urls=["/x"])])
    assert [str(e) for e in rbac_rules.validate_role(role)] == [
        "rules[0].verbs: Required value: verbs must contain at least one value",
        'rules[0].nonResourceURLs: Invalid value: []string{"/x"}: namespaced rules cannot apply'
        " to non-resource URLs",
    ]
    old = rbac_pb2.RoleBinding(role_ref=rbac_pb2.RoleRef(api_group=GROUP, kind="Role", name="a"))
    new = rbac_pb2.RoleBinding(role_ref=rbac_pb2.RoleRef(api_group=GROUP, kind="Role", name="b"))
    assert [str(e) for e in rbac_rules.validate_binding_update(new, old)] == [
        "roleRef: Invalid value: cannot change roleRef"
    ]
    assert rbac_rules.path_segment_name("system:node") is None
    assert rbac_rules.path_segment_name("a/b") is not None


def _pod(name: str, node_name: str) -> core_pb2.Pod:
    pod = core_pb2.Pod()
    pod.metadata.name, pod.metadata.namespace = name, "default"
    pod.spec.node_name = node_name
    pod.spec.service_account_name = "runner"
    pod.spec.volumes.add(name="v").secret.secret_name = f"{name}-secret"
    c = pod.spec.containers.add(name="c")
    c.env.add(name="X").value_from.config_map_key_ref.name = f"{name}-config"
    return pod


NODE1 = authenticated("system:node:node-1", groups=("system:nodes",))


@pytest.mark.parametrize(
    ("verb", "resource", "sub", "namespace", "name", "allowed"),
    [
        ("update", "nodes", "", "", "node-1", True),
        ("patch", "nodes", "status", "", "node-1", True),
        ("update", "nodes", "", "", "node-2", False),
        ("delete", "nodes", "", "", "node-2", False),
        ("list", "pods", "", "", "", True),
        ("update", "leases", "", "kube-node-lease", "node-1", True),
        ("update", "leases", "", "kube-node-lease", "node-2", False),
        ("patch", "pods", "status", "default", "mine", True),
        ("patch", "pods", "status", "default", "theirs", False),
        ("delete", "pods", "", "default", "mine", True),
        ("delete", "pods", "", "default", "theirs", False),
        ("create", "pods", "", "default", "", False),
        ("get", "secrets", "", "default", "mine-secret", True),
        ("get", "secrets", "", "default", "theirs-secret", False),
        ("list", "secrets", "", "default", "", False),
        ("get", "configmaps", "", "default", "mine-config", True),
        ("get", "configmaps", "", "default", "theirs-config", False),
        ("create", "serviceaccounts", "token", "default", "runner", True),
        ("create", "events", "", "default", "", True),
        ("create", "deployments", "", "default", "", False),
    ],
)
def test_node_authorizer(verb: str, resource: str, sub: str, namespace: str, name: str,
                         allowed: bool) -> None:  # fmt: skip
    pods = {"mine": _pod("mine", "node-1"), "theirs": _pod("theirs", "node-2")}
    graph = node.Graph(pods.values())
    attrs = Attributes(NODE1, verb, resource, "", sub, namespace, name)
    got, reason = node.decide(attrs, lambda ns, n: pods.get(n), lambda: graph)
    assert got is allowed
    if not allowed and name:
        assert "no relationship found between node 'node-1'" in reason or resource == "pods"


def test_compiled_rules_decide_as_the_rules() -> None:
    """Index decides with rules compiled to sets: the same answers as `allows`."""
    rules = [_rule("get list", ",apps", "pods deployments/scale", "web"), _rule("*", "*", "*"),
             _rule("*", "*", "*/scale"), _rule("get", "", "pods/*"),
             policy.urls(("get",), ("/healthz", "/api/*"))]  # fmt: skip
    asks = [
        Attributes(ALICE, verb, resource, group, sub, "ns", name)
        for verb in ("get", "list", "delete")
        for resource, group in (("pods", ""), ("deployments", "apps"), ("x", "g"))
        for sub in ("", "scale", "log")
        for name in ("", "web", "db")
    ] + [
        Attributes(ALICE, "get", path=p, resource_request=False)
        for p in ("/healthz", "/api/v1", "/x")
    ]
    for rule in rules:
        compiled = Compiled.of(rule)
        for ask in asks:
            assert compiled.allows(ask) == allows(rule, ask), (rule, ask)

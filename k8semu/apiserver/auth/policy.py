"""The default ClusterRoles and ClusterRoleBindings the API server creates at start (as
kube-apiserver's bootstrap policy), labelled kubernetes.io/bootstrapping=rbac-defaults.

cluster-admin (everything) is bound to the group system:masters; admin, edit and view are
the user-facing roles for RoleBindings (view reads everything but Secrets; edit also
writes them and workloads; admin also manages Roles and RoleBindings of its namespace);
system:discovery, system:basic-user and system:public-info-viewer let every user read
discovery and ask what it may do; the scheduler, controller manager and proxy have roles
of their names. An existing ClusterRole gets the default rules it lacks (a cluster made by
an older version), unless annotated autoupdate "false"; nothing is removed. Pure data.
"""

from __future__ import annotations

from collections.abc import Iterator

from k8semu.pb.api.v1 import rbac_pb2

GROUP = "rbac.authorization.k8s.io"
LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
#: As Kubernetes: a default ClusterRole gets the rules a newer version adds, at start,
#: unless an administrator set this annotation to "false".
AUTOUPDATE = "rbac.authorization.kubernetes.io/autoupdate"
READ = ("get", "list", "watch")
WRITE = ("create", "update", "patch", "delete", "deletecollection")

_CORE_READABLE = (
    "pods", "pods/log", "pods/status", "services", "services/status", "endpoints", "configmaps",
    "persistentvolumeclaims", "persistentvolumeclaims/status", "serviceaccounts", "events",
    "namespaces", "namespaces/status",
)  # fmt: skip
_APPS = ("deployments", "deployments/scale", "deployments/status", "replicasets",
         "replicasets/scale", "replicasets/status", "daemonsets", "daemonsets/status",
         "statefulsets", "statefulsets/scale", "statefulsets/status")  # fmt: skip
_WORKLOADS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("apps", _APPS),
    ("batch", ("jobs", "jobs/status", "cronjobs", "cronjobs/status")),
    ("autoscaling", ("horizontalpodautoscalers", "horizontalpodautoscalers/status")),
    ("policy", ("poddisruptionbudgets", "poddisruptionbudgets/status")),
    ("coordination.k8s.io", ("leases",)),
)
_DISCOVERY = ("/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*", "/version",
              "/version/", "/healthz", "/livez", "/readyz")  # fmt: skip


def rule(verbs: tuple[str, ...], groups: tuple[str, ...], resources: tuple[str, ...],
         names: tuple[str, ...] = ()) -> rbac_pb2.PolicyRule:  # fmt: skip
    return rbac_pb2.PolicyRule(
        verbs=verbs, api_groups=groups, resources=resources, resource_names=names
    )


def urls(verbs: tuple[str, ...], paths: tuple[str, ...]) -> rbac_pb2.PolicyRule:
    return rbac_pb2.PolicyRule(verbs=verbs, non_resource_urls=paths)


def _view() -> list[rbac_pb2.PolicyRule]:
    return [
        rule(READ, ("",), _CORE_READABLE),
        *(rule(READ, (group,), resources) for group, resources in _WORKLOADS),
    ]


def _edit() -> list[rbac_pb2.PolicyRule]:
    writable = tuple(r for r in _CORE_READABLE if not r.startswith("namespaces")
                     and not r.endswith("/status") and r != "pods/log")  # fmt: skip
    return [
        *_view(),
        # As Kubernetes' edit role: the proxy subresources take any method (rest/proxy.py).
        rule(READ, ("",), ("secrets", "pods/proxy", "services/proxy")),
        rule(
            WRITE,
            ("",),
            (
                *writable,
                "secrets",
                "pods/eviction",
                "pods/exec",
                "pods/attach",
                "pods/portforward",
                "pods/proxy",
                "services/proxy",
            ),
        ),
        *(
            rule(WRITE, (group,), tuple(r for r in resources if not r.endswith("/status")))
            for group, resources in _WORKLOADS
        ),
        rule(("create",), ("authentication.k8s.io", ""), ("serviceaccounts/token",)),
    ]


def _admin() -> list[rbac_pb2.PolicyRule]:
    return [*_edit(), rule((*READ, *WRITE), (GROUP,), ("roles", "rolebindings"))]


def _components() -> dict[str, list[rbac_pb2.PolicyRule]]:
    return {
        "system:kube-scheduler": [
            rule(READ, ("*",), ("*",)),
            rule(("create",), ("",), ("pods/binding", "bindings")),
            rule(("update", "patch"), ("",), ("pods/status",)),
            rule(("create", "update", "patch"), ("",), ("events",)),
            rule((*READ, *WRITE), ("coordination.k8s.io",), ("leases",)),
        ],
        # Kubernetes runs each controller as its own ServiceAccount with narrow roles; the
        # controller manager here is one identity running every loop (GC, namespaces, ...).
        "system:kube-controller-manager": [rule(("*",), ("*",), ("*",))],
        "system:node-proxier": [
            rule(READ, ("",), ("services", "endpoints", "nodes", "pods")),
            # Unlike kube-proxy, ours publishes its tunnel and gRPC endpoints as annotations
            # of its Node (k8semu.io/tunnel-endpoint, k8semu.io/proxy-endpoint).
            rule(("patch",), ("",), ("nodes",)),
            rule(("create", "update", "patch"), ("",), ("events",)),
        ],
        # kubeadm's bootstrappers (`k8semu join --token`): ask for the node's certificates.
        "system:node-bootstrapper": [
            rule(
                ("create", "get", "list", "watch"),
                ("certificates.k8s.io",),
                ("certificatesigningrequests",),
            ),
        ],
        # The built-in ingress controller runs in each node's proxy, as system:kube-proxy
        # (docs/proxy.md, "Ingress"): what ingress-nginx's role grants it.
        "system:k8semu:ingress-controller": [
            rule(READ, ("networking.k8s.io",), ("ingresses", "ingressclasses")),
            rule(("update", "patch"), ("networking.k8s.io",), ("ingresses/status",)),
            rule(READ, ("",), ("secrets",)),  # spec.tls[].secretName
        ],
    }


def cluster_roles() -> Iterator[rbac_pb2.ClusterRole]:
    roles: dict[str, list[rbac_pb2.PolicyRule]] = {
        "cluster-admin": [rule(("*",), ("*",), ("*",)), urls(("*",), ("*",))],
        "admin": _admin(),
        "edit": _edit(),
        "view": _view(),
        "system:discovery": [urls(("get",), _DISCOVERY)],
        "system:public-info-viewer": [
            urls(("get",), ("/healthz", "/livez", "/readyz", "/version", "/version/"))
        ],
        "system:basic-user": [
            rule(("create",), ("authorization.k8s.io",), ("selfsubjectaccessreviews",))
        ],
        **_components(),
    }
    for name, rules in roles.items():
        role = rbac_pb2.ClusterRole(api_version=f"{GROUP}/v1", kind="ClusterRole", rules=rules)
        role.metadata.name = name
        role.metadata.labels.update(LABELS)
        role.metadata.annotations[AUTOUPDATE] = "true"
        yield role


_BINDINGS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("cluster-admin", (("Group", "system:masters"),)),
    ("system:discovery", (("Group", "system:authenticated"),)),
    ("system:basic-user", (("Group", "system:authenticated"),)),
    (
        "system:public-info-viewer",
        (("Group", "system:authenticated"), ("Group", "system:unauthenticated")),
    ),
    ("system:kube-scheduler", (("User", "system:kube-scheduler"),)),
    ("system:kube-controller-manager", (("User", "system:kube-controller-manager"),)),
    ("system:node-proxier", (("User", "system:kube-proxy"),)),
    ("system:node-bootstrapper", (("Group", "system:bootstrappers"),)),
    ("system:k8semu:ingress-controller", (("User", "system:kube-proxy"),)),
)


# Bindings named apart from their ClusterRole: (binding, role, subjects).
_NAMED_BINDINGS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    # Nodes ask for their serving certificates as themselves (Kubernetes' system:node role
    # has the same CSR rights).
    ("system:k8semu:node-certificates", "system:node-bootstrapper", (("Group", "system:nodes"),)),
)


def cluster_role_bindings() -> Iterator[rbac_pb2.ClusterRoleBinding]:
    named = [(name, name, subjects) for name, subjects in _BINDINGS]
    for name, role, subjects in (*named, *_NAMED_BINDINGS):
        binding = rbac_pb2.ClusterRoleBinding(
            api_version=f"{GROUP}/v1",
            kind="ClusterRoleBinding",
            role_ref=rbac_pb2.RoleRef(api_group=GROUP, kind="ClusterRole", name=role),
            subjects=[rbac_pb2.Subject(kind=k, api_group=GROUP, name=n) for k, n in subjects],
        )
        binding.metadata.name = name
        binding.metadata.labels.update(LABELS)
        binding.metadata.annotations[AUTOUPDATE] = "true"
        yield binding


def reconciled(stored: rbac_pb2.ClusterRole, default: rbac_pb2.ClusterRole) -> bool:
    """Add to `stored` the rules of `default` it lacks (kube-apiserver's reconciliation of
    its bootstrap roles: rules are only added, never removed); False when nothing changed
    or its autoupdate annotation is "false"."""
    if stored.metadata.annotations.get(AUTOUPDATE) == "false":
        return False
    missing = [r for r in default.rules if r not in stored.rules]
    stored.rules.extend(missing)
    return bool(missing)

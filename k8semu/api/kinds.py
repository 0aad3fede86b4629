"""The registry of API kinds: which message class serves which apiVersion/kind and resource.

Owns the facts clients, the API server and the CLI share about each kind: group and version,
plural resource name (the `/registry/<resource>/...` key segment and the URL path), short names
(`kubectl get po`), whether objects live in a namespace, and the message and list classes. It
does no I/O and knows nothing about storage.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from google.protobuf.message import Message

from k8semu.api.errors import UnknownKindError
from k8semu.pb.api.v1 import apps_pb2 as apps
from k8semu.pb.api.v1 import authentication_pb2 as authentication
from k8semu.pb.api.v1 import authorization_pb2 as authorization
from k8semu.pb.api.v1 import autoscaling_pb2 as autoscaling
from k8semu.pb.api.v1 import batch_pb2 as batch
from k8semu.pb.api.v1 import certificates_pb2 as certificates
from k8semu.pb.api.v1 import coordination_pb2 as coordination
from k8semu.pb.api.v1 import core_pb2 as core
from k8semu.pb.api.v1 import discovery_pb2 as discovery
from k8semu.pb.api.v1 import metrics_pb2 as metrics
from k8semu.pb.api.v1 import networking_pb2 as networking
from k8semu.pb.api.v1 import policy_pb2 as policy
from k8semu.pb.api.v1 import quota_pb2 as quota
from k8semu.pb.api.v1 import rbac_pb2 as rbac
from k8semu.pb.api.v1 import scheduling_pb2 as scheduling
from k8semu.pb.api.v1 import storage_pb2 as storage


@dataclass(frozen=True)
class Kind:
    """One registered kind. `group` is "" for the core group; `plural` is lower case."""

    group: str
    version: str
    kind: str
    plural: str
    short_names: tuple[str, ...]
    namespaced: bool
    message: type[Message]
    list_message: type[Message] | None
    # Another group's kind has the same plural (metrics.k8s.io "nodes" and "pods"): requests
    # name this one qualified, and the bare names stay the core kind's (as kubectl resolves).
    qualified: bool = False
    # Kept in the store (False: served from elsewhere, read-only, e.g. the resource metrics).
    stored: bool = True

    @property
    def api_version(self) -> str:
        """ "v1" for the core group, "apps/v1" otherwise."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        """The name a request uses: the plural, qualified by the group when it is shared."""
        return f"{self.plural}.{self.group}" if self.qualified else self.plural

    @property
    def singular(self) -> str:
        return self.kind.lower()

    def new(self) -> Message:
        """An empty object of this kind with apiVersion and kind filled in."""
        obj = self.message()
        stamp(obj)
        return obj


def _kind(
    api_version: str,
    kind: str,
    plural: str,
    short_names: str,
    message: type[Message],
    list_message: type[Message] | None,
    *,
    namespaced: bool = True,
    qualified: bool = False,
    stored: bool = True,
) -> Kind:
    group, _, version = api_version.rpartition("/")
    return Kind(
        group,
        version,
        kind,
        plural,
        tuple(short_names.split()),
        namespaced,
        message,
        list_message,
        qualified,
        stored,
    )


_RBAC = "rbac.authorization.k8s.io/v1"

KINDS: tuple[Kind, ...] = (
    _kind(
        "v1", "Namespace", "namespaces", "ns", core.Namespace, core.NamespaceList, namespaced=False
    ),
    _kind("v1", "Node", "nodes", "no", core.Node, core.NodeList, namespaced=False),
    _kind("v1", "Pod", "pods", "po", core.Pod, core.PodList),
    _kind("v1", "Service", "services", "svc", core.Service, core.ServiceList),
    _kind("v1", "Endpoints", "endpoints", "ep", core.Endpoints, core.EndpointsList),
    _kind("v1", "ConfigMap", "configmaps", "cm", core.ConfigMap, core.ConfigMapList),
    _kind("v1", "Secret", "secrets", "", core.Secret, core.SecretList),
    _kind(
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        "sa",
        core.ServiceAccount,
        core.ServiceAccountList,
    ),
    _kind("v1", "Event", "events", "ev", core.Event, core.EventList),
    _kind(
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        "pv",
        core.PersistentVolume,
        core.PersistentVolumeList,
        namespaced=False,
    ),
    _kind(
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        "pvc",
        core.PersistentVolumeClaim,
        core.PersistentVolumeClaimList,
    ),
    # Binding is only ever POSTed (pods/<name>/binding); it is never stored or listed.
    _kind("v1", "Binding", "bindings", "", core.Binding, None),
    _kind("apps/v1", "ReplicaSet", "replicasets", "rs", apps.ReplicaSet, apps.ReplicaSetList),
    _kind("apps/v1", "Deployment", "deployments", "deploy", apps.Deployment, apps.DeploymentList),
    _kind("apps/v1", "DaemonSet", "daemonsets", "ds", apps.DaemonSet, apps.DaemonSetList),
    _kind("apps/v1", "StatefulSet", "statefulsets", "sts", apps.StatefulSet, apps.StatefulSetList),
    _kind(
        "apps/v1",
        "ControllerRevision",
        "controllerrevisions",
        "",
        apps.ControllerRevision,
        apps.ControllerRevisionList,
    ),
    _kind(
        "storage.k8s.io/v1",
        "StorageClass",
        "storageclasses",
        "sc",
        storage.StorageClass,
        storage.StorageClassList,
        namespaced=False,
    ),
    _kind("batch/v1", "Job", "jobs", "", batch.Job, batch.JobList),
    _kind("batch/v1", "CronJob", "cronjobs", "cj", batch.CronJob, batch.CronJobList),
    _kind(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "hpa",
        autoscaling.HorizontalPodAutoscaler,
        autoscaling.HorizontalPodAutoscalerList,
    ),
    _kind(
        "policy/v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        "pdb",
        policy.PodDisruptionBudget,
        policy.PodDisruptionBudgetList,
    ),
    _kind(
        "scheduling.k8s.io/v1",
        "PriorityClass",
        "priorityclasses",
        "pc",
        scheduling.PriorityClass,
        scheduling.PriorityClassList,
        namespaced=False,
    ),
    _kind(
        "v1",
        "ResourceQuota",
        "resourcequotas",
        "quota",
        quota.ResourceQuota,
        quota.ResourceQuotaList,
    ),
    _kind("v1", "LimitRange", "limitranges", "limits", quota.LimitRange, quota.LimitRangeList),
    _kind(
        "discovery.k8s.io/v1",
        "EndpointSlice",
        "endpointslices",
        "",
        discovery.EndpointSlice,
        discovery.EndpointSliceList,
    ),
    # Ingress: HTTP routes served by the controller its IngressClass names (docs/proxy.md).
    _kind(
        "networking.k8s.io/v1",
        "Ingress",
        "ingresses",
        "ing",
        networking.Ingress,
        networking.IngressList,
    ),
    _kind(
        "networking.k8s.io/v1",
        "IngressClass",
        "ingressclasses",
        "",
        networking.IngressClass,
        networking.IngressClassList,
        namespaced=False,
    ),
    # A node's certificates when it joins by token (docs/security.md, "Several hosts").
    _kind(
        "certificates.k8s.io/v1",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        "csr",
        certificates.CertificateSigningRequest,
        certificates.CertificateSigningRequestList,
        namespaced=False,
    ),
    _kind(
        "coordination.k8s.io/v1", "Lease", "leases", "", coordination.Lease, coordination.LeaseList
    ),
    *(
        _kind(_RBAC, kind, plural, "", message, listed, namespaced=kind.startswith("Role"))
        for kind, plural, message, listed in (
            ("Role", "roles", rbac.Role, rbac.RoleList),
            ("ClusterRole", "clusterroles", rbac.ClusterRole, rbac.ClusterRoleList),
            ("RoleBinding", "rolebindings", rbac.RoleBinding, rbac.RoleBindingList),
            (
                "ClusterRoleBinding",
                "clusterrolebindings",
                rbac.ClusterRoleBinding,
                rbac.ClusterRoleBindingList,
            ),
        )
    ),
    # Only ever POSTed (serviceaccounts/<name>/token, selfsubjectaccessreviews): never stored.
    _kind(
        "authentication.k8s.io/v1",
        "TokenRequest",
        "tokenrequests",
        "",
        authentication.TokenRequest,
        None,
    ),
    _kind(
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        "",
        authorization.SelfSubjectAccessReview,
        None,
        namespaced=False,
    ),
    # Served, not stored: the API server's last scrape of the kubelets (docs/apiserver.md).
    _kind(
        "metrics.k8s.io/v1beta1",
        "NodeMetrics",
        "nodes",
        "",
        metrics.NodeMetrics,
        metrics.NodeMetricsList,
        namespaced=False,
        qualified=True,
        stored=False,
    ),
    _kind(
        "metrics.k8s.io/v1beta1",
        "PodMetrics",
        "pods",
        "",
        metrics.PodMetrics,
        metrics.PodMetricsList,
        qualified=True,
        stored=False,
    ),
)

# Kubernetes' `all` category, in the order `kubectl get all` prints it: discovery (REST)
# lists these kinds under "categories" and `k8semu get all` expands it the same way.
ALL_CATEGORY = (
    "pods",
    "services",
    "daemonsets",
    "deployments",
    "replicasets",
    "statefulsets",
    "horizontalpodautoscalers",
    "cronjobs",
    "jobs",
)

_BY_TYPE = {(k.api_version, k.kind): k for k in KINDS}
_BY_MESSAGE = {k.message.DESCRIPTOR.full_name: k for k in KINDS}
_BY_RESOURCE: dict[str, Kind] = {}
for _k in KINDS:
    for _name in (_k.plural, _k.singular, *_k.short_names):
        # A bare name another kind already has stays that kind's (KINDS lists core first).
        _BY_RESOURCE.setdefault(_name, _k)
        _BY_RESOURCE[f"{_name}.{_k.group}" if _k.group else _name] = _k


def all_kinds() -> Iterator[Kind]:
    return iter(KINDS)


def by_type(api_version: str, kind: str) -> Kind:
    """The kind for a manifest's apiVersion and kind, e.g. ("apps/v1", "Deployment")."""
    found = _BY_TYPE.get((api_version, kind))
    if found is None:
        served = [k.api_version for k in KINDS if k.kind == kind]
        hint = f' (kind {kind} is served by apiVersion "{served[0]}")' if served else ""
        raise UnknownKindError(f'no kind "{kind}" in apiVersion "{api_version}"{hint}')
    return found


def for_message(obj: Message | type[Message]) -> Kind:
    """The kind whose message class `obj` is (or is an instance of)."""
    found = _BY_MESSAGE.get(obj.DESCRIPTOR.full_name)
    if found is None:
        raise UnknownKindError(f"{obj.DESCRIPTOR.full_name} is not a top-level API kind")
    return found


def for_resource(name: str) -> Kind:
    """Resolve what a user types after `get`: plural, singular, short name or kind, any case,
    optionally qualified by group ("deployments.apps", "po", "Deployment", "hpa")."""
    found = _BY_RESOURCE.get(name.lower())
    if found is None:
        raise UnknownKindError(f'the server doesn\'t have a resource type "{name}"')
    return found


def stamp(obj: Message) -> None:
    """Set `obj`'s apiVersion and kind from its message type (TypeMeta, as the API server does)."""
    kind = for_message(obj)
    setattr(obj, "api_version", kind.api_version)  # noqa: B010 - Message has no typed field
    setattr(obj, "kind", kind.kind)  # noqa: B010

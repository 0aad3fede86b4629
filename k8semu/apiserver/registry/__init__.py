"""The registry: one row (a `Strategy`) per stored kind, naming that kind's rules.

    strategy.py    Strategy: the row, and the generic create/update steps it composes
    pods.py        Pod: spec defaults and checks, graceful deletion, field selectors, binding
    services.py    Service: defaults, checks, immutable clusterIP, address allocation hook
    namespaces.py  Namespace: defaults, deletion by termination
    workloads.py   Deployment, ReplicaSet, DaemonSet: defaults, selector/template checks
    jobs.py        Job: defaults, the generated selector, checks, immutable fields
    cronjobs.py    CronJob: defaults, schedule and time zone checks
    disruption.py  PodDisruptionBudget: checks
    scheduling.py  PriorityClass: defaults, checks; a pod spec's scheduling fields' checks
    quota.py       ResourceQuota, LimitRange: names, quantities, LimitRange's defaults
    discovery.py   EndpointSlice: checks, the immutable addressType
    networking.py  Ingress, IngressClass: checks, the immutable controller
    certificates.py CertificateSigningRequest: checks, the requester, the immutable spec
    statefulsets.py StatefulSet: defaults, checks, the fields an update may change
    revisions.py   ControllerRevision: checks, the immutable data
    storage.py     PersistentVolume, PersistentVolumeClaim, StorageClass: defaults, checks
    autoscaling.py HorizontalPodAutoscaler: defaults and checks of k8semu.api.autoscaling
    rbac.py        Role, ClusterRole, RoleBinding, ClusterRoleBinding: checks; ServiceAccount
    events.py      Event: the field selectors (involvedObject.*, reason, type, ...)
    configdata.py  ConfigMap, Secret: keys, size, immutable data; Secret types, stringData

A kind that is served, not stored (metrics.k8s.io NodeMetrics and PodMetrics) has a row
with a `reader` when the API server serves it (`build(..., served=...)`), none otherwise:
`resolve` refuses every write to it, `resolve_read` gives Get and List its row.

`build` is the table. The verbs (`service.py`), the repairs (`repair.py`) and any other face
of the API server (the REST API) look a kind's rules up here and never branch on a kind's
name, so a new kind is a new row (docs/apiserver.md, "Adding a kind"). It is built per API
server because some rows hold configuration (the Service ranges). Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from k8semu.api import kinds
from k8semu.api.kinds import Kind
from k8semu.apiserver import ingressclass, priority, storageclass
from k8semu.apiserver.allocation import Allocator, ServiceRanges
from k8semu.apiserver.deletion import Rules
from k8semu.apiserver.errors import MethodNotAllowed, NotFound
from k8semu.apiserver.objects import resolve
from k8semu.apiserver.registry import (
    autoscaling,
    certificates,
    configdata,
    cronjobs,
    discovery,
    disruption,
    events,
    jobs,
    namespaces,
    networking,
    pods,
    quota,
    rbac,
    revisions,
    scheduling,
    services,
    statefulsets,
    storage,
    workloads,
)
from k8semu.apiserver.registry.strategy import Reader, Strategy
from k8semu.apiserver.validation import FieldError, dns1123_label


class Registry:
    """The rows by kind. Every stored kind (kinds.KINDS with a list type) has exactly one;
    a kind served, not stored, has one when it is served."""

    def __init__(self, rows: list[Strategy]) -> None:
        self._rows = {row.kind.resource: row for row in rows}
        if len(self._rows) != len(rows):
            raise ValueError("registry: two rows for one kind")
        listed = {k.resource: k for k in kinds.all_kinds() if k.list_message is not None}
        stored = {name for name, k in listed.items() if k.stored}
        if missing := sorted(stored - set(self._rows)):
            raise ValueError(f"registry: no row for {', '.join(missing)}")
        if extra := sorted(set(self._rows) - set(listed)):
            raise ValueError(f"registry: rows for kinds that are not listed: {', '.join(extra)}")

    def __iter__(self) -> Iterator[Strategy]:
        """The stored kinds' rows (the ones repairs and namespace termination walk)."""
        return (row for row in self._rows.values() if row.reader is None)

    def served(self) -> Iterator[Strategy]:
        """Every row, read-only kinds included (discovery)."""
        return iter(self._rows.values())

    def strategy(self, kind: Kind) -> Strategy:
        return self._rows[kind.resource]

    def resolve(self, resource: str) -> Strategy:
        """The row of the stored kind a request that writes or watches names (NOT_FOUND for
        anything else, MethodNotAllowed for a read-only kind)."""
        row = self.resolve_read(resource)
        if row.reader is not None:
            raise MethodNotAllowed(
                "the server does not allow this method on the requested resource"
                f" ({row.kind.resource})"
            )
        return row

    def resolve_read(self, resource: str) -> Strategy:
        """The row of the kind a Get or List names, stored or served."""
        kind = resolve(resource)
        row = self._rows.get(kind.resource)
        if row is None:
            raise NotFound(f"the server could not find the requested resource ({kind.resource})")
        return row


def _kind(resource: str) -> Kind:
    return kinds.for_resource(resource)


def _workload(resource: str, defaults: Callable[[Any], None]) -> Strategy:
    """A kind whose spec holds a pod template under a selector: the checks are shared, the
    defaults its own (the next ones, DaemonSet, StatefulSet, Job, are rows like these)."""
    return Strategy(
        kind=_kind(resource),
        defaults=defaults,
        validate=workloads.validate,
        validate_update=workloads.validate_update,
        status=True,
        scale=True,
    )


def _checked(
    resource: str,
    defaults: Callable[[Any], None],
    validate: Callable[[Any], Iterator[FieldError]],
    validate_update: Callable[[Any, Any], Iterator[FieldError]],
    *,
    status: bool = True,
    scale: bool = False,
    admit: Callable[[Any, Any], Awaitable[None]] | None = None,
) -> Strategy:
    """A row of a kind with its own defaults, checks, immutable fields (and admission step)."""
    row = Strategy(
        kind=_kind(resource),
        defaults=defaults,
        validate=validate,
        validate_update=validate_update,
        status=status,
        scale=scale,
    )
    return row if admit is None else dataclasses.replace(row, admit=admit)


def _volume_rows() -> list[Strategy]:
    """PersistentVolume and PersistentVolumeClaim (registry/storage.py)."""
    return [
        _checked("persistentvolumes", storage.pv_defaults, storage.validate_pv,
                 storage.validate_pv_update),
        # The default class written into a new claim (apiserver/storageclass.py).
        _checked("persistentvolumeclaims", storage.pvc_defaults, storage.validate_pvc,
                 storage.validate_pvc_update, admit=storageclass.admit),
    ]  # fmt: skip


def _stateful_rows() -> list[Strategy]:
    """StatefulSet, ControllerRevision and StorageClass (in KINDS' order)."""
    return [
        _checked("statefulsets", statefulsets.defaults, statefulsets.validate,
                 statefulsets.validate_update, scale=True),
        Strategy(kind=_kind("controllerrevisions"), validate=revisions.validate,
                 validate_update=revisions.validate_update),
        _checked("storageclasses", storage.class_defaults, storage.validate_class,
                 storage.validate_class_update, status=False),
    ]  # fmt: skip


def _core_data_rows() -> list[Strategy]:
    """Endpoints, ConfigMap, Secret and ServiceAccount (in KINDS' order); ConfigMap's and
    Secret's rules: registry/configdata.py."""
    return [
        Strategy(kind=_kind("endpoints")),
        Strategy(
            kind=_kind("configmaps"),
            validate=configdata.validate_config_map,
            validate_update=configdata.validate_config_map_update,
        ),
        _checked(
            "secrets",
            configdata.secret_defaults,
            configdata.validate_secret,
            configdata.validate_secret_update,
            status=False,
        ),
        Strategy(kind=_kind("serviceaccounts")),
    ]


def _policy_rows() -> list[Strategy]:
    """PodDisruptionBudget and PriorityClass (in KINDS' order)."""
    return [
        Strategy(kind=_kind("poddisruptionbudgets"), validate=disruption.validate, status=True),
        Strategy(
            kind=_kind("priorityclasses"),
            defaults=scheduling.defaults,
            validate=scheduling.validate,
            validate_update=scheduling.validate_update,
            admit=priority.admit,
        ),
    ]


def _rbac_rows() -> list[Strategy]:
    """The rbac.authorization.k8s.io kinds (names are path segments: `system:node`)."""
    name = rbac.path_segment_name
    return [
        Strategy(kind=_kind("roles"), name_rule=name, validate=rbac.validate_role),
        Strategy(kind=_kind("clusterroles"), name_rule=name, validate=rbac.validate_cluster_role),
        *(
            Strategy(
                kind=_kind(resource),
                name_rule=name,
                defaults=rbac.binding_defaults,
                validate=check,
                validate_update=rbac.validate_binding_update,
            )
            for resource, check in (
                ("rolebindings", rbac.validate_role_binding),
                ("clusterrolebindings", rbac.validate_cluster_role_binding),
            )
        ),
    ]


def _quota_rows() -> list[Strategy]:
    """ResourceQuota and LimitRange (registry/quota.py; their admission: apiserver/admission),
    and EndpointSlice (in KINDS' order)."""
    return [
        Strategy(kind=_kind("resourcequotas"), validate=quota.validate, status=True),
        Strategy(
            kind=_kind("limitranges"),
            defaults=quota.limit_range_defaults,
            validate=quota.validate_limit_range,
        ),
        Strategy(
            kind=_kind("endpointslices"),
            validate=discovery.validate,
            validate_update=discovery.validate_update,
        ),
    ]


def _networking_rows() -> list[Strategy]:
    """Ingress (its default class: apiserver/ingressclass.py) and IngressClass."""
    return [
        Strategy(
            kind=_kind("ingresses"),
            validate=networking.validate,
            status=True,
            admit=ingressclass.admit,
        ),
        Strategy(
            kind=_kind("ingressclasses"),
            validate=networking.validate_class,
            validate_update=networking.validate_class_update,
        ),
    ]


def _node_rows() -> list[Strategy]:
    """What a node writes besides its Node: CertificateSigningRequests when it joins (the
    requester recorded on create, the spec immutable) and its Lease."""
    return [
        Strategy(
            kind=_kind("certificatesigningrequests"),
            validate=certificates.validate,
            validate_update=certificates.validate_update,
            prepare_update=certificates.prepare_update,
            status=True,
            admit=certificates.admit,
        ),
        Strategy(kind=_kind("leases")),
    ]


def build(
    ranges: ServiceRanges,
    rng: random.Random | None = None,
    *,
    served: Mapping[str, Reader] | None = None,
) -> Registry:
    """The table: each stored kind and the rules that are its own, plus a read-only row for
    each kind `served` names (by resource: `nodes.metrics.k8s.io`)."""
    readers = served or {}
    return Registry(
        [
            Strategy(
                kind=_kind("namespaces"),
                name_rule=dns1123_label,
                defaults=namespaces.defaults,
                status=True,
                deletion=Rules(mark=namespaces.mark, owns_contents=True),
            ),
            Strategy(kind=_kind("nodes"), status=True),
            Strategy(
                kind=_kind("pods"),
                defaults=pods.defaults,
                validate=pods.validate,
                status=True,
                bind=pods.bind,
                eviction=True,
                admit=priority.admit,
                field_selectors=pods.FIELDS,
                deletion=Rules(grace=pods.grace_period),
            ),
            Strategy(
                kind=_kind("services"),
                name_rule=dns1123_label,
                defaults=services.defaults,
                validate=services.validate,
                validate_update=services.validate_update,
                prepare_update=services.prepare_update,
                status=True,
                allocation=services.Allocation(Allocator(ranges, rng)),
            ),
            *_core_data_rows(),
            Strategy(kind=_kind("events"), expires=True, field_selectors=events.FIELDS),
            *_volume_rows(),
            _workload("replicasets", workloads.replica_set_defaults),
            _workload("deployments", workloads.deployment_defaults),
            Strategy(
                kind=_kind("daemonsets"),
                defaults=workloads.daemon_set_defaults,
                validate=workloads.validate_daemon_set,
                validate_update=workloads.validate_update,
                status=True,
            ),
            *_stateful_rows(),
            Strategy(
                kind=_kind("jobs"),
                defaults=jobs.defaults,
                validate=jobs.validate,
                validate_update=jobs.validate_update,
                status=True,
            ),
            Strategy(
                kind=_kind("cronjobs"),
                defaults=cronjobs.defaults,
                validate=cronjobs.validate,
                status=True,
            ),
            Strategy(
                kind=_kind("horizontalpodautoscalers"),
                defaults=autoscaling.defaults,
                validate=autoscaling.validate,
                status=True,
            ),
            *_policy_rows(),
            *_quota_rows(),
            *_networking_rows(),
            *_node_rows(),
            *_rbac_rows(),
            *(Strategy(kind=_kind(name), reader=reader) for name, reader in readers.items()),
        ]
    )

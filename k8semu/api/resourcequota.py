"""What a ResourceQuota counts, as Kubernetes' quota evaluators: the usage one object adds to
its namespace, the sum over a namespace, and the check of a new object against a quota.

Resource names a quota may limit:

- object counts: `pods`, `services`, `configmaps`, `secrets`, `persistentvolumeclaims`,
  `services.nodeports`, `services.loadbalancers`, `resourcequotas`, `replicationcontrollers`,
  and `count/<plural>` (core) or `count/<plural>.<group>` for any kind;
- compute, summed over the containers of the pods that count (not Succeeded/Failed, not being
  deleted): `requests.cpu` (alias `cpu`), `requests.memory` (alias `memory`), `limits.cpu`,
  `limits.memory`; `requests.storage` over persistentvolumeclaims.

A pod that counts must specify, in every container, each compute resource a quota limits
(`must specify requests.cpu`). Pure: objects in, numbers out; used by the API server's quota
admission and by the resourcequota controller.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction

from google.protobuf.message import Message

from k8semu.api import kinds
from k8semu.api.errors import UnknownKindError
from k8semu.api.quantity import Quantity, format_quantity, parse_quantity
from k8semu.pb.api.v1 import core_pb2

Usage = dict[str, Fraction]

COUNTED = {
    "pods": "pods",
    "services": "services",
    "configmaps": "configmaps",
    "secrets": "secrets",
    "persistentvolumeclaims": "persistentvolumeclaims",
    "resourcequotas": "resourcequotas",
    "replicationcontrollers": "replicationcontrollers",
}
COMPUTE = ("requests.cpu", "cpu", "requests.memory", "memory", "limits.cpu", "limits.memory")
STANDARD = frozenset(
    {*COUNTED, *COMPUTE, "services.nodeports", "services.loadbalancers", "requests.storage"}
)
_BINARY = ("memory", "storage")


def is_quota_resource(name: str) -> bool:
    """A name a quota may limit: a standard one, or a qualified one (`count/...`,
    `requests.example.com/gpu`), as Kubernetes' validation accepts."""
    return name in STANDARD or "/" in name


def count_name(kind: kinds.Kind) -> str:
    return f"count/{kind.plural}" + (f".{kind.group}" if kind.group else "")


def source(name: str) -> kinds.Kind | None:
    """The kind whose objects make up the usage of quota resource `name` (None: no kind
    k8semu stores, or a resource it does not count)."""
    if name.startswith("count/"):
        try:
            return kinds.for_resource(name.removeprefix("count/"))
        except UnknownKindError:
            return None
    if name in COMPUTE:
        return kinds.for_message(core_pb2.Pod)
    if name.startswith("services."):
        return kinds.for_message(core_pb2.Service)
    if name == "requests.storage":
        return kinds.for_message(core_pb2.PersistentVolumeClaim)
    if name in COUNTED:
        try:
            return kinds.for_resource(name)
        except UnknownKindError:
            return None  # replicationcontrollers: not a kind k8semu serves
    return None


def pod_counts(pod: core_pb2.Pod) -> bool:
    """A pod uses quota until it has finished or is being deleted."""
    return pod.status.phase not in ("Succeeded", "Failed") and not pod.metadata.HasField(
        "deletion_timestamp"
    )


def _container_value(container: core_pb2.Container, which: str, resource: str) -> Fraction:
    res = container.resources
    values = res.requests if which == "requests" else res.limits
    text = values.get(resource) or (res.limits.get(resource) if which == "requests" else None)
    return parse_quantity(text).amount if text else Fraction(0)


def _pod_compute(pod: core_pb2.Pod) -> Usage:
    out: Usage = {}
    for which in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            total = sum(
                (_container_value(c, which, resource) for c in pod.spec.containers), Fraction(0)
            )
            # An init container runs alone: the pod needs the larger of the two.
            init = max(
                (_container_value(c, which, resource) for c in pod.spec.init_containers),
                default=Fraction(0),
            )
            out[f"{which}.{resource}"] = max(total, init)
    out["cpu"], out["memory"] = out["requests.cpu"], out["requests.memory"]
    return out


def usage(obj: Message) -> Usage:
    """What `obj` adds to its namespace's usage (empty for a pod that no longer counts)."""
    kind = kinds.for_message(obj)
    if isinstance(obj, core_pb2.Pod) and not pod_counts(obj):
        return {}
    out: Usage = {count_name(kind): Fraction(1)}
    if kind.plural in COUNTED and not kind.group:
        out[kind.plural] = Fraction(1)
    if isinstance(obj, core_pb2.Pod):
        out.update(_pod_compute(obj))
    elif isinstance(obj, core_pb2.Service):
        nodeports = sum(1 for p in obj.spec.ports if p.node_port)
        out["services.nodeports"] = Fraction(nodeports)
        out["services.loadbalancers"] = Fraction(int(obj.spec.type == "LoadBalancer"))
    elif isinstance(obj, core_pb2.PersistentVolumeClaim):
        storage = obj.spec.resources.requests.get("storage")
        out["requests.storage"] = parse_quantity(storage).amount if storage else Fraction(0)
    return out


def total(objects: Iterable[Message], names: Iterable[str]) -> Usage:
    """The namespace's usage of each of `names`, over `objects`."""
    wanted = list(names)
    out: Usage = dict.fromkeys(wanted, Fraction(0))
    for obj in objects:
        for name, amount in usage(obj).items():
            if name in out:
                out[name] += amount
    return out


def format_amount(name: str, amount: Fraction) -> str:
    binary = any(name.endswith(b) for b in _BINARY)
    return format_quantity(Quantity(amount, "BinarySI" if binary else "DecimalSI"))


def parse_map(values: Mapping[str, str]) -> Usage:
    """A quota's map of quantities; one that does not parse counts as 0 (validation keeps
    them out; an old stored object must not stop admission)."""
    out: Usage = {}
    for name, text in values.items():
        try:
            out[name] = parse_quantity(text).amount
        except ValueError:
            out[name] = Fraction(0)
    return out


def missing_requests(pod: core_pb2.Pod, hard: Iterable[str]) -> list[str]:
    """The compute resources `hard` limits that a container of `pod` leaves unspecified."""
    missing = []
    for name in COMPUTE:
        if name not in hard:
            continue
        which, _, resource = name.partition(".") if "." in name else ("requests", ".", name)
        for c in (*pod.spec.init_containers, *pod.spec.containers):
            values = c.resources.requests if which == "requests" else c.resources.limits
            if resource not in values and resource not in c.resources.limits:
                missing.append(name)
                break
    return missing


def pretty(values: Mapping[str, Fraction]) -> str:
    """`pods=1,requests.cpu=500m`, sorted by name, as Kubernetes prints quota usage."""
    return ",".join(f"{k}={format_amount(k, v)}" for k, v in sorted(values.items()))

"""The node pools the cluster autoscaler sizes (the cloud provider's node groups in
Kubernetes), as the controller manager's ``--node-pools`` flag gives them: a JSON list that the
launcher builds from the cluster config (k8semu/cluster/plan.py ``node_pools_args``).

Each pool has node slots ``<name>-0``.. ``<name>-<maxNodes-1>``; the nodes of a pool register
with the label ``k8semu.io/node-pool=<name>``. ``template`` is the Node a new slot will
register as, for the scheduler's filters to be asked whether a pending pod would fit there.

Pure: parsing and building objects; no I/O, no clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from k8semu.api import quantity
from k8semu.durations import parse_ms
from k8semu.pb.api.v1 import core_pb2, meta_pb2

__all__ = ["POOL_LABEL", "NodePool", "parse_node_pools", "slot_index"]

POOL_LABEL = "k8semu.io/node-pool"
MAX_NODES = 100  # per pool: each slot is a process (the cluster config's bound too)
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True, slots=True, kw_only=True)
class NodePool:
    """One pool. Invariant: 0 <= min_nodes <= initial_nodes <= max_nodes <= MAX_NODES."""

    name: str
    min_nodes: int = 0
    max_nodes: int = 1
    initial_nodes: int = 0
    hollow: bool = False
    scale_down_utilization: float = 0.5
    scale_down_unneeded_time: float = 600.0  # seconds
    capacity: tuple[tuple[str, str], ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    taints: tuple[tuple[str, str, str], ...] = ()  # (key, value, effect)

    def slot(self, index: int) -> str:
        return f"{self.name}-{index}"

    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(self.slot(i) for i in range(self.max_nodes))

    def template(self, node_name: str) -> core_pb2.Node:
        """The Node slot ``node_name`` registers as, Ready (what it will be once started)."""
        labels = {
            "kubernetes.io/hostname": node_name,
            "kubernetes.io/os": "linux",
            **dict(self.labels),
            POOL_LABEL: self.name,
        }
        node = core_pb2.Node(metadata=meta_pb2.ObjectMeta(name=node_name, labels=labels))
        node.spec.taints.extend(core_pb2.Taint(key=k, value=v, effect=e) for k, v, e in self.taints)
        node.status.capacity.update(dict(self.capacity))
        node.status.allocatable.update(dict(self.capacity))
        node.status.conditions.add(type="Ready", status="True")
        return node


def slot_index(pool: NodePool, node_name: str) -> int | None:
    """The slot number of ``node_name`` in ``pool`` (None: not one of its slots)."""
    prefix = f"{pool.name}-"
    if not node_name.startswith(prefix):
        return None
    rest = node_name[len(prefix) :]
    if not rest.isdigit() or (len(rest) > 1 and rest[0] == "0"):
        return None
    index = int(rest)
    return index if index < pool.max_nodes else None


def parse_node_pools(text: str, flag: str = "--node-pools") -> tuple[NodePool, ...]:
    """The pools in ``text`` (a JSON list; "" for none); ValueError naming ``flag[i].field``."""
    if not text.strip():
        return ()
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{flag}: not JSON: {exc}") from None
    if not isinstance(raw, list):
        raise ValueError(f"{flag}: expected a JSON list of node pools")
    pools = tuple(_pool(item, f"{flag}[{i}]") for i, item in enumerate(raw))
    names = [p.name for p in pools]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"{flag}: pool {name!r} is given twice")
    return pools


def _pool(item: object, where: str) -> NodePool:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected an object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.name: required")
    sizes = {k: _integer(item, k, where) for k in ("minNodes", "maxNodes", "initialNodes")}
    low, high, initial = sizes["minNodes"], sizes["maxNodes"], sizes["initialNodes"]
    if not 1 <= high <= MAX_NODES:
        raise ValueError(f"{where}.maxNodes: must be 1-{MAX_NODES}, got {high}")
    if not 0 <= low <= high:
        raise ValueError(f"{where}.minNodes: must be 0-{high} (maxNodes), got {low}")
    if not low <= initial <= high:
        raise ValueError(f"{where}.initialNodes: must be {low}-{high}, got {initial}")
    utilization = item.get("scaleDownUtilization", 0.5)
    if isinstance(utilization, bool) or not isinstance(utilization, int | float):
        raise ValueError(f"{where}.scaleDownUtilization: expected a number")
    if not 0 < utilization <= 1:
        raise ValueError(f"{where}.scaleDownUtilization: must be in (0, 1], got {utilization}")
    try:
        unneeded = parse_ms(str(item.get("scaleDownUnneededTime", "10m"))) / 1000
    except ValueError as exc:
        raise ValueError(f"{where}.scaleDownUnneededTime: {exc}") from None
    return NodePool(
        name=name,
        min_nodes=low,
        max_nodes=high,
        initial_nodes=initial,
        hollow=bool(item.get("hollow", False)),
        scale_down_utilization=float(utilization),
        scale_down_unneeded_time=unneeded,
        capacity=_capacity(item.get("capacity", {}), f"{where}.capacity"),
        labels=_strings(item.get("labels", {}), f"{where}.labels"),
        taints=_taints(item.get("taints", []), f"{where}.taints"),
    )


def _integer(item: dict[str, object], key: str, where: str) -> int:
    value = item.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}.{key}: expected an integer")
    return value


def _strings(value: object, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(f"{where}: expected an object of strings")
    return tuple(sorted(value.items()))


def _capacity(value: object, where: str) -> tuple[tuple[str, str], ...]:
    pairs = _strings(value, where)
    for key, text in pairs:
        try:
            quantity.parse_quantity(text)
        except ValueError as exc:
            raise ValueError(f"{where}.{key}: {exc}") from None
    return pairs


def _taints(value: object, where: str) -> tuple[tuple[str, str, str], ...]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list")
    out = []
    for i, t in enumerate(value):
        if not isinstance(t, dict):
            raise ValueError(f"{where}[{i}]: expected an object")
        key, val, effect = t.get("key"), t.get("value", ""), t.get("effect")
        if not isinstance(key, str) or not key or not isinstance(val, str):
            raise ValueError(f"{where}[{i}].key: required")
        if effect not in TAINT_EFFECTS:
            raise ValueError(f"{where}[{i}].effect: must be one of {', '.join(TAINT_EFFECTS)}")
        out.append((key, val, str(effect)))
    return tuple(out)

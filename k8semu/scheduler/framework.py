"""What the scheduler knows about a pod and a node, precomputed once so that filtering and
scoring a node costs a few comparisons: `PodInfo` (requests, ports, selectors, tolerations,
affinity, owner, compiled from a Pod) and `NodeInfo` (a Node plus the running totals of the
pods bound or assumed on it, kept up to date incrementally by `add_pod`/`remove_pod`).

Pure data: no I/O, no clock, no client. The filter and score functions over these types live
in `plugins.py`; the cache that owns the NodeInfos lives in `cache.py`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from k8semu.api.errors import QuantityError
from k8semu.api.quantity import int_value, milli_value
from k8semu.pb.api.v1 import core_pb2, meta_pb2

# Kubernetes' defaults for a container that requests nothing, used only when scoring
# (so empty pods still spread), never when checking fit.
DEFAULT_MILLI_CPU_REQUEST = 100
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024

HOSTNAME_LABEL = "kubernetes.io/hostname"
_WILDCARD_IP = "0.0.0.0"


class PodSpecError(ValueError):
    """A pod the scheduler cannot evaluate (a bad quantity, a bad selector); the message names
    the pod's field."""


@functools.lru_cache(maxsize=4096)
def _milli(text: str, where: str) -> int:
    return milli_value(text, field=where)


@functools.lru_cache(maxsize=4096)
def _bytes(text: str, where: str) -> int:
    return int_value(text, field=where)


def parse_cpu(text: str, where: str) -> int:
    """Milli-CPU of a quantity string; QuantityError naming `where`."""
    return _milli(text, where)


def parse_bytes(text: str, where: str) -> int:
    return _bytes(text, where)


# ---- selectors, compiled ---------------------------------------------------------------------

IN, NOT_IN, EXISTS, DOES_NOT_EXIST, GT, LT = "In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"
NODE_OPERATORS = (IN, NOT_IN, EXISTS, DOES_NOT_EXIST, GT, LT)


@dataclass(frozen=True, slots=True)
class NodeRequirement:
    """One nodeSelectorRequirement (matchExpressions on labels, matchFields on fields)."""

    key: str
    operator: str
    values: frozenset[str]
    number: int = 0  # Gt/Lt's value


@dataclass(frozen=True, slots=True)
class NodeTerm:
    """A nodeSelectorTerm: every expression and field requirement must hold. An empty term
    matches nothing (as in Kubernetes)."""

    expressions: tuple[NodeRequirement, ...]
    fields: tuple[NodeRequirement, ...]


@dataclass(frozen=True, slots=True)
class PreferredTerm:
    weight: int
    term: NodeTerm


@dataclass(frozen=True, slots=True)
class PodSelector:
    """A compiled metav1.LabelSelector; `match_nothing` for a missing selector."""

    labels: tuple[tuple[str, str], ...] = ()
    expressions: tuple[tuple[str, str, frozenset[str]], ...] = ()
    match_nothing: bool = False

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.match_nothing:
            return False
        get = labels.get
        for key, value in self.labels:
            if get(key) != value:
                return False
        for key, op, values in self.expressions:
            have = get(key)
            if op == IN:
                if have is None or have not in values:
                    return False
            elif op == NOT_IN:
                if have is not None and have in values:
                    return False
            elif op == EXISTS:
                if have is None:
                    return False
            elif have is not None:  # DoesNotExist
                return False
        return True


@dataclass(frozen=True, slots=True)
class AffinityTerm:
    """A podAffinity or podAntiAffinity term: pods matching `selector` in `namespaces` (every
    namespace with `any_namespace`) in the same topology domain (nodes sharing the value of
    label `topology_key`). `weight` is a preferred term's (0 for a required one)."""

    selector: PodSelector
    namespaces: frozenset[str]
    topology_key: str
    weight: int = 0
    any_namespace: bool = False

    def matches_pod(self, namespace: str, labels: Mapping[str, str]) -> bool:
        return (self.any_namespace or namespace in self.namespaces) and self.selector.matches(
            labels
        )


AntiAffinityTerm = AffinityTerm  # the name the required anti-affinity terms had first


@dataclass(frozen=True, slots=True)
class SpreadConstraint:
    """A topologySpreadConstraint, compiled. `hard`: DoNotSchedule (a filter), else
    ScheduleAnyway (a score). The pods counted are those in the pod's namespace matching
    `selector` - or, for the scheduler's default constraints, the pods of the same controller
    (`owner_uid`). `system_default`: a node without `topology_key` is simply outside this
    constraint, instead of being refused or scored 0."""

    max_skew: int
    topology_key: str
    hard: bool
    selector: PodSelector
    min_domains: int = 1
    honor_node_affinity: bool = True
    honor_taints: bool = False
    owner_uid: str = ""
    system_default: bool = False


ZONE_LABEL = "topology.kubernetes.io/zone"
# kube-scheduler's system default constraints, for pods of a controller without their own.
DEFAULT_SPREAD = ((HOSTNAME_LABEL, 3), (ZONE_LABEL, 5))
_SPREAD_OWNER_KINDS = ("ReplicaSet", "StatefulSet", "ReplicationController")


def _node_requirement(req: core_pb2.NodeSelectorRequirement, where: str) -> NodeRequirement:
    op = req.operator
    if op not in NODE_OPERATORS:
        raise PodSpecError(
            f"{where}.operator: Unsupported value: {op!r}: supported values: "
            + ", ".join(NODE_OPERATORS)
        )
    if not req.key:
        raise PodSpecError(f"{where}.key: Required value")
    number = 0
    if op in (GT, LT):
        if len(req.values) != 1:
            raise PodSpecError(f"{where}.values: must have exactly one element for {op}")
        try:
            number = int(req.values[0])
        except ValueError:
            raise PodSpecError(
                f"{where}.values[0]: Invalid value: {req.values[0]!r}: must be an integer"
            ) from None
    elif op in (IN, NOT_IN) and not req.values:
        raise PodSpecError(f"{where}.values: Required value: must be non-empty for {op}")
    elif op in (EXISTS, DOES_NOT_EXIST) and req.values:
        raise PodSpecError(f"{where}.values: must be empty for {op}")
    return NodeRequirement(req.key, op, frozenset(req.values), number)


def _node_term(term: core_pb2.NodeSelectorTerm, where: str) -> NodeTerm:
    return NodeTerm(
        tuple(
            _node_requirement(r, f"{where}.matchExpressions[{i}]")
            for i, r in enumerate(term.match_expressions)
        ),
        tuple(
            _node_requirement(r, f"{where}.matchFields[{i}]")
            for i, r in enumerate(term.match_fields)
        ),
    )


def _pod_selector(sel: meta_pb2.LabelSelector, present: bool, where: str) -> PodSelector:
    if not present:
        return PodSelector(match_nothing=True)
    exprs = []
    for i, e in enumerate(sel.match_expressions):
        if e.operator not in (IN, NOT_IN, EXISTS, DOES_NOT_EXIST):
            raise PodSpecError(
                f"{where}.matchExpressions[{i}].operator: Unsupported value: {e.operator!r}"
            )
        exprs.append((e.key, e.operator, frozenset(e.values)))
    return PodSelector(tuple(sorted(sel.match_labels.items())), tuple(exprs))


def compile_selector(sel: meta_pb2.LabelSelector, where: str) -> PodSelector:
    """A present LabelSelector (empty: matches everything); PodSpecError naming `where`."""
    return _pod_selector(sel, True, where)


# ---- PodInfo ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PodInfo:
    """A pod as the scheduler sees it. `milli_cpu`/`memory` are the effective requests
    (max of the sum over containers and any init container, as Kubernetes computes them);
    `nonzero_*` substitute Kubernetes' scoring defaults for containers that request nothing.
    `host_ports` are (hostIP, protocol, port) with hostIP "0.0.0.0" for any."""

    key: str
    name: str
    namespace: str
    uid: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    milli_cpu: int = 0
    memory: int = 0
    nonzero_milli_cpu: int = 0
    nonzero_memory: int = 0
    host_ports: tuple[tuple[str, str, int], ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()
    required_terms: tuple[NodeTerm, ...] | None = None  # None: no required node affinity
    preferred_terms: tuple[PreferredTerm, ...] = ()
    tolerations: tuple[core_pb2.Toleration, ...] = ()
    anti_affinity: tuple[AffinityTerm, ...] = ()  # required podAntiAffinity
    affinity: tuple[AffinityTerm, ...] = ()  # required podAffinity
    preferred_affinity: tuple[AffinityTerm, ...] = ()
    preferred_anti_affinity: tuple[AffinityTerm, ...] = ()
    spread: tuple[SpreadConstraint, ...] = ()
    owner_uid: str = ""
    priority: int = 0
    preempt_never: bool = False  # preemptionPolicy: Never
    terminating: bool = False  # deletionTimestamp set

    @property
    def needs_node_match(self) -> bool:
        return bool(self.node_selector) or self.required_terms is not None

    @property
    def has_affinity_terms(self) -> bool:
        """Any inter-pod term, which other pods' decisions must look at."""
        return bool(
            self.anti_affinity
            or self.affinity
            or self.preferred_affinity
            or self.preferred_anti_affinity
        )


def pod_key(pod: core_pb2.Pod) -> str:
    return f"{pod.metadata.namespace}/{pod.metadata.name}"


def _container_requests(c: core_pb2.Container, where: str) -> tuple[int, int, int, int]:
    req = c.resources.requests
    cpu = parse_cpu(req["cpu"], f"{where}.resources.requests[cpu]") if "cpu" in req else None
    mem = (
        parse_bytes(req["memory"], f"{where}.resources.requests[memory]")
        if "memory" in req
        else None
    )
    return (
        cpu or 0,
        mem or 0,
        DEFAULT_MILLI_CPU_REQUEST if cpu is None else cpu,
        DEFAULT_MEMORY_REQUEST if mem is None else mem,
    )


def _pod_requests(spec: core_pb2.PodSpec, where: str) -> tuple[int, int, int, int]:
    """(milli_cpu, memory, nonzero_milli_cpu, nonzero_memory): the containers' sum, raised to
    any init container's own (init containers run one at a time, before the others)."""
    try:
        cpu = mem = nz_cpu = nz_mem = 0
        for i, c in enumerate(spec.containers):
            a, b, c_, d = _container_requests(c, f"{where}.containers[{i}]")
            cpu += a
            mem += b
            nz_cpu += c_
            nz_mem += d
        for i, c in enumerate(spec.init_containers):
            a, b, c_, d = _container_requests(c, f"{where}.initContainers[{i}]")
            cpu, mem = max(cpu, a), max(mem, b)
            nz_cpu, nz_mem = max(nz_cpu, c_), max(nz_mem, d)
    except QuantityError as exc:
        raise PodSpecError(str(exc)) from None
    return cpu, mem, nz_cpu, nz_mem


def _node_affinity(
    na: core_pb2.NodeAffinity, where: str
) -> tuple[tuple[NodeTerm, ...] | None, tuple[PreferredTerm, ...]]:
    """The required terms (None: no requirement) and the preferred ones."""
    required: tuple[NodeTerm, ...] | None = None
    if na.HasField("required_during_scheduling_ignored_during_execution"):
        req_where = f"{where}.requiredDuringSchedulingIgnoredDuringExecution"
        terms = na.required_during_scheduling_ignored_during_execution.node_selector_terms
        required = tuple(
            _node_term(t, f"{req_where}.nodeSelectorTerms[{i}]") for i, t in enumerate(terms)
        )
    pref_where = f"{where}.preferredDuringSchedulingIgnoredDuringExecution"
    preferred = tuple(
        PreferredTerm(p.weight, _node_term(p.preference, f"{pref_where}[{i}].preference"))
        for i, p in enumerate(na.preferred_during_scheduling_ignored_during_execution)
    )
    return required, preferred


NamespaceLabels = Mapping[str, Mapping[str, str]]


def _affinity_term(
    t: core_pb2.PodAffinityTerm,
    namespace: str,
    where: str,
    weight: int,
    namespace_labels: NamespaceLabels,
) -> AffinityTerm:
    """One term. Namespaces: those listed plus those `namespaceSelector` selects (an empty
    selector: every namespace); neither given: the pod's own."""
    if not t.topology_key:
        raise PodSpecError(f"{where}.topologyKey: Required value")
    selector = _pod_selector(
        t.label_selector, t.HasField("label_selector"), f"{where}.labelSelector"
    )
    namespaces = set(t.namespaces)
    any_namespace = False
    if t.HasField("namespace_selector"):
        ns_sel = _pod_selector(t.namespace_selector, True, f"{where}.namespaceSelector")
        if not ns_sel.labels and not ns_sel.expressions:
            any_namespace = True
        else:
            namespaces.update(n for n, labels in namespace_labels.items() if ns_sel.matches(labels))
    elif not namespaces:
        namespaces.add(namespace)
    return AffinityTerm(selector, frozenset(namespaces), t.topology_key, weight, any_namespace)


def _affinity_group(
    group: core_pb2.PodAffinity | core_pb2.PodAntiAffinity,
    namespace: str,
    where: str,
    namespace_labels: NamespaceLabels,
) -> tuple[tuple[AffinityTerm, ...], tuple[AffinityTerm, ...]]:
    """The required and the preferred terms of a podAffinity or podAntiAffinity."""
    required = tuple(
        _affinity_term(t, namespace, f"{where}.requiredDuringSchedulingIgnoredDuringExecution"
                       f"[{i}]", 0, namespace_labels)
        for i, t in enumerate(group.required_during_scheduling_ignored_during_execution)
    )  # fmt: skip
    pref = f"{where}.preferredDuringSchedulingIgnoredDuringExecution"
    preferred = tuple(
        _affinity_term(w.pod_affinity_term, namespace, f"{pref}[{i}].podAffinityTerm",
                       w.weight, namespace_labels)
        for i, w in enumerate(group.preferred_during_scheduling_ignored_during_execution)
    )  # fmt: skip
    return required, preferred


def _spread_constraints(pod: core_pb2.Pod, where: str) -> tuple[SpreadConstraint, ...]:
    """spec.topologySpreadConstraints; without any, the system defaults for a pod of a
    ReplicaSet or StatefulSet (hostname maxSkew 3, zone maxSkew 5, ScheduleAnyway)."""
    spec, labels = pod.spec, pod.metadata.labels
    out = []
    for i, c in enumerate(spec.topology_spread_constraints):
        c_where = f"{where}.topologySpreadConstraints[{i}]"
        if c.max_skew <= 0 or not c.topology_key:
            raise PodSpecError(f"{c_where}: maxSkew must be > 0 and topologyKey set")
        sel = _pod_selector(
            c.label_selector, c.HasField("label_selector"), f"{c_where}.labelSelector"
        )
        if c.match_label_keys and not sel.match_nothing:
            extra = tuple((k, labels[k]) for k in c.match_label_keys if k in labels)
            sel = dataclasses.replace(sel, labels=tuple(sorted(sel.labels + extra)))
        out.append(SpreadConstraint(
            c.max_skew, c.topology_key, c.when_unsatisfiable != "ScheduleAnyway", sel,
            c.min_domains if c.HasField("min_domains") else 1,
            c.node_affinity_policy != "Ignore", c.node_taints_policy == "Honor",
        ))  # fmt: skip
    if out:
        return tuple(out)
    owner = next((r for r in pod.metadata.owner_references if r.controller), None)
    if owner is None or owner.kind not in _SPREAD_OWNER_KINDS:
        return ()
    return _default_spread(owner.uid)


@functools.lru_cache(maxsize=4096)
def _default_spread(owner_uid: str) -> tuple[SpreadConstraint, ...]:
    """The system default constraints for the pods of one controller (shared: immutable)."""
    return tuple(
        SpreadConstraint(skew, key, False, PodSelector(), owner_uid=owner_uid, system_default=True)
        for key, skew in DEFAULT_SPREAD
    )


def pod_info(pod: core_pb2.Pod, namespace_labels: NamespaceLabels | None = None) -> PodInfo:
    """Compile `pod` (`namespace_labels`: each namespace's labels, for the affinity terms'
    namespaceSelector); PodSpecError naming the field when something cannot be evaluated."""
    meta = pod.metadata
    spec = pod.spec
    where = f"pod {meta.namespace}/{meta.name}: spec"
    cpu, mem, nz_cpu, nz_mem = _pod_requests(spec, where)
    ports = tuple(
        (p.host_ip or _WILDCARD_IP, p.protocol or "TCP", p.host_port)
        for c in spec.containers
        for p in c.ports
        if p.host_port > 0
    )
    required: tuple[NodeTerm, ...] | None = None
    preferred: tuple[PreferredTerm, ...] = ()
    anti: tuple[AffinityTerm, ...] = ()
    affinity: tuple[AffinityTerm, ...] = ()
    pref_aff: tuple[AffinityTerm, ...] = ()
    pref_anti: tuple[AffinityTerm, ...] = ()
    if spec.HasField("affinity"):
        aff, ns, labels = spec.affinity, meta.namespace, namespace_labels or {}
        required, preferred = _node_affinity(aff.node_affinity, f"{where}.affinity.nodeAffinity")
        affinity, pref_aff = _affinity_group(
            aff.pod_affinity, ns, f"{where}.affinity.podAffinity", labels
        )
        anti, pref_anti = _affinity_group(
            aff.pod_anti_affinity, ns, f"{where}.affinity.podAntiAffinity", labels
        )
    owner = next((ref.uid for ref in meta.owner_references if ref.controller), "")
    return PodInfo(
        key=f"{meta.namespace}/{meta.name}",
        name=meta.name,
        namespace=meta.namespace,
        uid=meta.uid,
        labels=dict(meta.labels),
        milli_cpu=cpu,
        memory=mem,
        nonzero_milli_cpu=nz_cpu,
        nonzero_memory=nz_mem,
        host_ports=ports,
        node_selector=tuple(spec.node_selector.items()),
        required_terms=required,
        preferred_terms=preferred,
        tolerations=tuple(spec.tolerations),
        anti_affinity=anti,
        affinity=affinity,
        preferred_affinity=pref_aff,
        preferred_anti_affinity=pref_anti,
        spread=_spread_constraints(pod, where),
        owner_uid=owner,
        priority=spec.priority,
        preempt_never=spec.preemption_policy == "Never",
        terminating=meta.HasField("deletion_timestamp"),
    )


def with_volume_nodes(
    info: PodInfo, affinities: Sequence[core_pb2.VolumeNodeAffinity], where: str
) -> PodInfo:
    """`info` whose required node terms also demand each bound volume's node affinity (the
    VolumeBinding plugin's check for claims already bound to a volume on some nodes: a pod
    goes where its data is). Terms are ORed, so the result is every pairing of a pod term
    with a volume term, ANDed."""
    terms = info.required_terms
    for i, aff in enumerate(affinities):
        vol = tuple(
            _node_term(t, f"{where}[{i}].nodeSelectorTerms[{j}]")
            for j, t in enumerate(aff.required.node_selector_terms)
        )
        if not vol:
            continue
        terms = vol if terms is None else tuple(
            NodeTerm(a.expressions + b.expressions, a.fields + b.fields) for a in terms for b in vol
        )  # fmt: skip
    return dataclasses.replace(info, required_terms=terms)


# ---- NodeInfo --------------------------------------------------------------------------------


def _allocatable(
    node: core_pb2.Node, name: str, parse: Callable[[str, str], int], problems: list[str]
) -> int:
    """A missing allocatable is 0, as in Kubernetes; so is an unreadable one (noted in
    `problems`), so a bad Node fits nothing instead of stopping the scheduler."""
    text = node.status.allocatable.get(name)
    if text is None:
        return 0
    try:
        return parse(text, f"node {node.metadata.name}: status.allocatable[{name}]")
    except QuantityError as exc:
        problems.append(str(exc))
        return 0


def node_ready(node: core_pb2.Node) -> bool:
    for c in node.status.conditions:
        if c.type == "Ready":
            return c.status == "True"
    return False


class NodeInfo:
    """A node and the running totals of the pods on it (bound, or assumed by this scheduler).

    Invariant: `requested_*`, `nonzero_*`, `pod_count`, `ports`, `owner_counts` and
    `label_counts` are the sums over `pods`. `node` is None while pods are known on a node
    the cache has not seen yet.
    """

    __slots__ = (
        "alloc_cpu",
        "alloc_memory",
        "alloc_pods",
        "label_counts",
        "labels",
        "name",
        "node",
        "nonzero_cpu",
        "nonzero_memory",
        "owner_counts",
        "plain",
        "pod_count",
        "pods",
        "ports",
        "prefer_taints",
        "problems",
        "ready",
        "requested_cpu",
        "requested_memory",
        "schedule_taints",
        "unschedulable",
    )

    def __init__(self, name: str, node: core_pb2.Node | None = None) -> None:
        self.name = name
        self.node: core_pb2.Node | None = None
        self.labels: dict[str, str] = {}
        self.alloc_cpu = self.alloc_memory = self.alloc_pods = 0
        self.ready = False
        self.unschedulable = False
        self.plain = False  # Ready, schedulable, no NoSchedule/NoExecute taint
        self.problems: tuple[str, ...] = ()  # what could not be read from the Node
        self.schedule_taints: tuple[core_pb2.Taint, ...] = ()  # NoSchedule, NoExecute
        self.prefer_taints: tuple[core_pb2.Taint, ...] = ()  # PreferNoSchedule
        self.pods: dict[str, PodInfo] = {}
        self.requested_cpu = self.requested_memory = 0
        self.nonzero_cpu = self.nonzero_memory = 0
        self.pod_count = 0
        self.ports: Counter[tuple[str, str, int]] = Counter()
        self.owner_counts: Counter[str] = Counter()
        # (namespace, label key, value) -> pods not being deleted that carry it: a selector
        # of one label counts its pods here with one lookup (topology spread, affinity).
        self.label_counts: Counter[tuple[str, str, str]] = Counter()
        if node is not None:
            self.set_node(node)

    def set_node(self, node: core_pb2.Node) -> None:
        self.node = node
        self.labels = dict(node.metadata.labels)
        problems: list[str] = []
        self.alloc_cpu = _allocatable(node, "cpu", parse_cpu, problems)
        self.alloc_memory = _allocatable(node, "memory", parse_bytes, problems)
        self.alloc_pods = _allocatable(node, "pods", parse_bytes, problems)
        self.problems = tuple(problems)
        self.ready = node_ready(node)
        self.unschedulable = node.spec.unschedulable
        taints = node.spec.taints
        self.schedule_taints = tuple(t for t in taints if t.effect in ("NoSchedule", "NoExecute"))
        self.prefer_taints = tuple(t for t in taints if t.effect == "PreferNoSchedule")
        self.plain = self.ready and not self.unschedulable and not self.schedule_taints

    def add_pod(self, pod: PodInfo) -> None:
        old = self.pods.get(pod.key)
        if old is not None:
            self.remove_pod(old.key)
        self.pods[pod.key] = pod
        self.requested_cpu += pod.milli_cpu
        self.requested_memory += pod.memory
        self.nonzero_cpu += pod.nonzero_milli_cpu
        self.nonzero_memory += pod.nonzero_memory
        self.pod_count += 1
        for port in pod.host_ports:
            self.ports[port] += 1
        if pod.owner_uid:
            self.owner_counts[pod.owner_uid] += 1
        if not pod.terminating:
            ns = pod.namespace
            for key, value in pod.labels.items():
                self.label_counts[(ns, key, value)] += 1

    def remove_pod(self, key: str) -> PodInfo | None:
        pod = self.pods.pop(key, None)
        if pod is None:
            return None
        self.requested_cpu -= pod.milli_cpu
        self.requested_memory -= pod.memory
        self.nonzero_cpu -= pod.nonzero_milli_cpu
        self.nonzero_memory -= pod.nonzero_memory
        self.pod_count -= 1
        for port in pod.host_ports:
            self.ports[port] -= 1
            if self.ports[port] <= 0:
                del self.ports[port]
        if pod.owner_uid:
            self.owner_counts[pod.owner_uid] -= 1
            if self.owner_counts[pod.owner_uid] <= 0:
                del self.owner_counts[pod.owner_uid]
        if not pod.terminating:
            ns = pod.namespace
            for key, value in pod.labels.items():
                label = (ns, key, value)
                self.label_counts[label] -= 1
                if self.label_counts[label] <= 0:
                    del self.label_counts[label]
        return pod


def clone_node(
    node: NodeInfo, *, drop: Collection[str] = (), add: Iterable[PodInfo] = ()
) -> NodeInfo:
    """A copy of `node` without the pods keyed in `drop` and with the pods `add` (what-if
    views for preemption and for nominated pods; the original is untouched)."""
    clone = NodeInfo(node.name, node.node)
    for key, pod in node.pods.items():
        if key not in drop:
            clone.add_pod(pod)
    for pod in add:
        clone.add_pod(pod)
    return clone

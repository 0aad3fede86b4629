"""The PriorityClass row (scheduling.k8s.io/v1), and the checks of a pod spec's scheduling
fields (topologySpreadConstraints, pod affinity terms, preemptionPolicy) shared by the Pod
row and every pod template, with kube-apiserver's messages. Pure: no I/O.

PriorityClass: `value` at most 1,000,000,000 (HighestUserDefinablePriority) unless the class
is one of the built-in `system-` ones, which keep their own values; names starting with
`system-` are reserved for those; `value` and `preemptionPolicy` cannot change; the policy is
PreemptLowerPriority (the default) or Never.
"""

from __future__ import annotations

from collections.abc import Iterator

from k8semu.api.names import qualified_name_errors
from k8semu.apiserver.validation import FieldError
from k8semu.pb.api.v1 import core_pb2, scheduling_pb2

HIGHEST_USER_DEFINABLE_PRIORITY = 1_000_000_000
SYSTEM_CRITICAL_PRIORITY = 2 * HIGHEST_USER_DEFINABLE_PRIORITY
PREEMPT_LOWER_PRIORITY = "PreemptLowerPriority"
PREEMPT_NEVER = "Never"
PREEMPTION_POLICIES = (PREEMPT_LOWER_PRIORITY, PREEMPT_NEVER)
SYSTEM_PREFIX = "system-"
# The classes every cluster has (the API server creates them at start), name -> value.
SYSTEM_CLASSES = {
    "system-cluster-critical": SYSTEM_CRITICAL_PRIORITY,
    "system-node-critical": SYSTEM_CRITICAL_PRIORITY + 1000,
}
SYSTEM_DESCRIPTIONS = {
    "system-cluster-critical": "Used for system critical pods that must run in the cluster, "
    "but can be moved to another node if necessary.",
    "system-node-critical": "Used for system critical pods that must not be moved from their "
    "current node.",
}

DO_NOT_SCHEDULE, SCHEDULE_ANYWAY = "DoNotSchedule", "ScheduleAnyway"
HONOR, IGNORE = "Honor", "Ignore"


def system_class(name: str) -> scheduling_pb2.PriorityClass:
    """A built-in class as the API server creates it."""
    pc = scheduling_pb2.PriorityClass(
        api_version="scheduling.k8s.io/v1",
        kind="PriorityClass",
        value=SYSTEM_CLASSES[name],
        description=SYSTEM_DESCRIPTIONS[name],
        preemption_policy=PREEMPT_LOWER_PRIORITY,
    )
    pc.metadata.name = name
    return pc


def defaults(pc: scheduling_pb2.PriorityClass) -> None:
    if not pc.HasField("preemption_policy"):
        pc.preemption_policy = PREEMPT_LOWER_PRIORITY


def _unsupported(path: str, value: str, supported: tuple[str, ...]) -> FieldError:
    listed = ", ".join(f'"{s}"' for s in supported)
    return FieldError(path, f'Unsupported value: "{value}": supported values: {listed}')


def validate(pc: scheduling_pb2.PriorityClass) -> Iterator[FieldError]:
    name = pc.metadata.name
    if name.startswith(SYSTEM_PREFIX):
        if name not in SYSTEM_CLASSES:
            yield FieldError(
                "metadata.name",
                f"Invalid value: \"{name}\": priority class names with '{SYSTEM_PREFIX}' prefix"
                " are reserved for system use only",
            )
        elif pc.value != SYSTEM_CLASSES[name]:
            yield FieldError(
                "value",
                f"Invalid value: {pc.value}: value of {name} must be {SYSTEM_CLASSES[name]}",
            )
    elif pc.value > HIGHEST_USER_DEFINABLE_PRIORITY:
        yield FieldError(
            "value",
            "Forbidden: maximum allowed value of a user defined priority is"
            f" {HIGHEST_USER_DEFINABLE_PRIORITY}",
        )
    if pc.preemption_policy not in PREEMPTION_POLICIES:
        yield _unsupported("preemptionPolicy", pc.preemption_policy, PREEMPTION_POLICIES)


def validate_update(
    pc: scheduling_pb2.PriorityClass, old: scheduling_pb2.PriorityClass
) -> Iterator[FieldError]:
    if pc.value != old.value:
        yield FieldError("value", "Forbidden: may not be changed in an update.")
    if pc.preemption_policy != old.preemption_policy:
        yield FieldError("preemptionPolicy", "Invalid value: field is immutable")


# ---- a pod spec's scheduling fields -----------------------------------------------------------


def _topology_key(key: str, path: str) -> Iterator[FieldError]:
    if not key:
        yield FieldError(path, "Required value: can not be empty")
        return
    for problem in qualified_name_errors(key):
        yield FieldError(path, f'Invalid value: "{key}": {problem}')


def _spread(c: core_pb2.TopologySpreadConstraint, path: str) -> Iterator[FieldError]:
    if c.max_skew <= 0:
        yield FieldError(
            f"{path}.maxSkew", f"Invalid value: {c.max_skew}: must be greater than zero"
        )
    yield from _topology_key(c.topology_key, f"{path}.topologyKey")
    when = c.when_unsatisfiable
    if when not in (DO_NOT_SCHEDULE, SCHEDULE_ANYWAY):
        if not when:
            yield FieldError(f"{path}.whenUnsatisfiable", "Required value")
        else:
            yield _unsupported(
                f"{path}.whenUnsatisfiable", when, (DO_NOT_SCHEDULE, SCHEDULE_ANYWAY)
            )
    if c.HasField("min_domains"):
        if c.min_domains <= 0:
            yield FieldError(
                f"{path}.minDomains", f"Invalid value: {c.min_domains}: must be greater than 0"
            )
        elif when != DO_NOT_SCHEDULE:
            yield FieldError(
                f"{path}.minDomains",
                f"Invalid value: {c.min_domains}: can only use minDomains if"
                f" whenUnsatisfiable={DO_NOT_SCHEDULE}, not {when}",
            )
    for policy, name in ((c.node_affinity_policy, "nodeAffinityPolicy"),
                         (c.node_taints_policy, "nodeTaintsPolicy")):  # fmt: skip
        if policy and policy not in (HONOR, IGNORE):
            yield _unsupported(f"{path}.{name}", policy, (HONOR, IGNORE))


def _affinity_terms(aff: core_pb2.Affinity, path: str) -> Iterator[FieldError]:
    for which, name in (("pod_affinity", "podAffinity"), ("pod_anti_affinity", "podAntiAffinity")):
        group = getattr(aff, which)
        where = f"{path}.{name}"
        for i, t in enumerate(group.required_during_scheduling_ignored_during_execution):
            term_path = f"{where}.requiredDuringSchedulingIgnoredDuringExecution[{i}]"
            yield from _topology_key(t.topology_key, f"{term_path}.topologyKey")
        for i, w in enumerate(group.preferred_during_scheduling_ignored_during_execution):
            term_path = f"{where}.preferredDuringSchedulingIgnoredDuringExecution[{i}]"
            if not 1 <= w.weight <= 100:
                yield FieldError(
                    f"{term_path}.weight", f"Invalid value: {w.weight}: must be in the range 1-100"
                )
            yield from _topology_key(
                w.pod_affinity_term.topology_key, f"{term_path}.podAffinityTerm.topologyKey"
            )


def validate_pod_scheduling(spec: core_pb2.PodSpec, path: str) -> Iterator[FieldError]:
    """topologySpreadConstraints, pod (anti-)affinity terms and preemptionPolicy."""
    seen: set[tuple[str, str]] = set()
    for i, c in enumerate(spec.topology_spread_constraints):
        where = f"{path}.topologySpreadConstraints[{i}]"
        yield from _spread(c, where)
        pair = (c.topology_key, c.when_unsatisfiable)
        if pair in seen:
            yield FieldError(where, f'Duplicate value: "{{{pair[0]}, {pair[1]}}}"')
        seen.add(pair)
    if spec.HasField("affinity"):
        yield from _affinity_terms(spec.affinity, f"{path}.affinity")
    policy = spec.preemption_policy
    if policy and policy not in PREEMPTION_POLICIES:
        yield _unsupported(f"{path}.preemptionPolicy", policy, PREEMPTION_POLICIES)

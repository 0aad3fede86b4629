"""Each kind's table columns: the one definition `k8semu get` prints and the API server's
Table answers (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`) carry.

A kind's `Columns` are its kubectl headers and a row function; the `wide_*` ones are what
`-o wide` adds (priority 1 in a Table's column definitions). Pure: every function takes the
object and a fixed `now` (seconds since the epoch), so tests pin the clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from k8semu.api import timestamps
from k8semu.pb.api.v1 import (
    apps_pb2,
    autoscaling_pb2,
    batch_pb2,
    certificates_pb2,
    coordination_pb2,
    core_pb2,
    discovery_pb2,
    meta_pb2,
    networking_pb2,
    policy_pb2,
    quota_pb2,
    scheduling_pb2,
    storage_pb2,
)

UNKNOWN = "<unknown>"
NONE = "<none>"


def human_duration(seconds: float) -> str:
    """kubectl's AGE (k8s.io/apimachinery duration.HumanDuration): 5s, 3m2s, 4h, 2d, 3y."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        years, days = hours // 24 // 365, (hours // 24) % 365
        return f"{years}y{days}d" if days else f"{years}y"
    return f"{hours // 24 // 365}y"


def age(ts: Timestamp, now: float) -> str:
    """The AGE of a timestamp, `<unknown>` when it is unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return "<unknown>"
    return human_duration(now - (ts.seconds + ts.nanos / 1e9))


def meta(obj: Message) -> meta_pb2.ObjectMeta:
    return cast(meta_pb2.ObjectMeta, cast(Any, obj).metadata)


# ---- columns per kind ---------------------------------------------------------------------


@dataclass(frozen=True)
class Columns:
    """A kind's table: headers and a row function; `wide_*` are appended for -o wide."""

    header: tuple[str, ...]
    row: Callable[[Any, float], list[str]]
    wide_header: tuple[str, ...] = ()
    wide_row: Callable[[Any, float], list[str]] | None = None


def pod_status(pod: core_pb2.Pod) -> str:
    """kubectl's STATUS column: the most telling container reason, else the phase."""
    reason = pod.status.reason or pod.status.phase or "Pending"
    total_init = len(pod.spec.init_containers)
    for i, cs in enumerate(pod.status.init_container_statuses):
        term = cs.state.terminated
        if cs.state.HasField("terminated") and term.exit_code == 0:
            continue
        if cs.state.HasField("terminated"):
            reason = f"Init:{term.reason}" if term.reason else f"Init:ExitCode:{term.exit_code}"
        elif cs.state.HasField("waiting") and cs.state.waiting.reason not in (
            "",
            "PodInitializing",
        ):
            reason = f"Init:{cs.state.waiting.reason}"
        else:
            reason = f"Init:{i}/{total_init}"
        break
    else:
        running = False
        for cs in reversed(pod.status.container_statuses):
            if cs.state.HasField("waiting") and cs.state.waiting.reason:
                reason = cs.state.waiting.reason
            elif cs.state.HasField("terminated"):
                term = cs.state.terminated
                if term.reason:
                    reason = term.reason
                elif term.signal:
                    reason = f"Signal:{term.signal}"
                else:
                    reason = f"ExitCode:{term.exit_code}"
            elif cs.state.HasField("running") and cs.ready:
                running = True
        if reason == "Completed" and running:
            reason = "Running"
    if pod.metadata.HasField("deletion_timestamp"):
        reason = "Unknown" if pod.status.reason == "NodeLost" else "Terminating"
    return reason


def _pod_row(pod: core_pb2.Pod, now: float) -> list[str]:
    statuses = pod.status.container_statuses
    ready = sum(1 for cs in statuses if cs.ready)
    restarts = sum(cs.restart_count for cs in statuses)
    last = max(
        (cs.last_state.terminated.finished_at.seconds for cs in statuses),
        default=0,
    )
    restart_text = str(restarts)
    if restarts and last:
        restart_text += f" ({human_duration(now - last)} ago)"
    return [
        pod.metadata.name,
        f"{ready}/{len(pod.spec.containers)}",
        pod_status(pod),
        restart_text,
        age(pod.metadata.creation_timestamp, now),
    ]


def _pod_wide(pod: core_pb2.Pod, now: float) -> list[str]:
    return [pod.status.pod_ip or NONE, pod.spec.node_name or NONE]


def selector_text(sel: meta_pb2.LabelSelector) -> str:
    parts = [f"{k}={v}" for k, v in sorted(sel.match_labels.items())]
    for expr in sel.match_expressions:
        values = ",".join(expr.values)
        if expr.operator == "In":
            parts.append(f"{expr.key} in ({values})")
        elif expr.operator == "NotIn":
            parts.append(f"{expr.key} notin ({values})")
        elif expr.operator == "Exists":
            parts.append(expr.key)
        else:
            parts.append(f"!{expr.key}")
    return ",".join(parts) or NONE


def _template_wide(template: core_pb2.PodTemplateSpec, sel: meta_pb2.LabelSelector) -> list[str]:
    containers = template.spec.containers
    return [
        ",".join(c.name for c in containers) or NONE,
        ",".join(c.image for c in containers) or NONE,
        selector_text(sel),
    ]


def _replicas(spec: apps_pb2.DeploymentSpec | apps_pb2.ReplicaSetSpec) -> int:
    return spec.replicas if spec.HasField("replicas") else 1


def _deployment_row(d: apps_pb2.Deployment, now: float) -> list[str]:
    return [
        d.metadata.name,
        f"{d.status.ready_replicas}/{_replicas(d.spec)}",
        str(d.status.updated_replicas),
        str(d.status.available_replicas),
        age(d.metadata.creation_timestamp, now),
    ]


def _replicaset_row(rs: apps_pb2.ReplicaSet, now: float) -> list[str]:
    return [
        rs.metadata.name,
        str(_replicas(rs.spec)),
        str(rs.status.replicas),
        str(rs.status.ready_replicas),
        age(rs.metadata.creation_timestamp, now),
    ]


def job_status(job: batch_pb2.Job) -> str:
    """kubectl's STATUS of a Job: its last true condition among the terminal and suspended
    ones, Terminating while deleted, else Running."""
    if job.metadata.HasField("deletion_timestamp"):
        return "Terminating"
    status = "Running"
    for c in job.status.conditions:
        if c.status == "True" and c.type in (
            "Complete", "Failed", "Suspended", "FailureTarget", "SuccessCriteriaMet"
        ):  # fmt: skip
            status = c.type
    return status


def _seconds(ts: Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def _job_row(job: batch_pb2.Job, now: float) -> list[str]:
    spec, st = job.spec, job.status
    if spec.HasField("completions"):
        completions = f"{st.succeeded}/{spec.completions}"
    elif spec.parallelism > 1:
        completions = f"{st.succeeded}/1 of {spec.parallelism}"
    else:
        completions = f"{st.succeeded}/1"
    duration = ""
    if st.HasField("start_time"):
        end = _seconds(st.completion_time) if st.HasField("completion_time") else now
        duration = human_duration(end - _seconds(st.start_time))
    return [
        job.metadata.name,
        job_status(job),
        completions,
        duration,
        age(job.metadata.creation_timestamp, now),
    ]


def _daemonset_row(ds: apps_pb2.DaemonSet, now: float) -> list[str]:
    st = ds.status
    selector = ",".join(f"{k}={v}" for k, v in sorted(ds.spec.template.spec.node_selector.items()))
    return [
        ds.metadata.name,
        str(st.desired_number_scheduled),
        str(st.current_number_scheduled),
        str(st.number_ready),
        str(st.updated_number_scheduled),
        str(st.number_available),
        selector or NONE,
        age(ds.metadata.creation_timestamp, now),
    ]


def _int_or_string(value: meta_pb2.IntOrString) -> str:
    which = value.WhichOneof("value")
    return NONE if which is None else str(getattr(value, which))


def _pdb_row(pdb: policy_pb2.PodDisruptionBudget, now: float) -> list[str]:
    spec = pdb.spec
    return [
        pdb.metadata.name,
        _int_or_string(spec.min_available) if spec.HasField("min_available") else "N/A",
        _int_or_string(spec.max_unavailable) if spec.HasField("max_unavailable") else "N/A",
        str(pdb.status.disruptions_allowed),
        age(pdb.metadata.creation_timestamp, now),
    ]


def _quota_row(q: quota_pb2.ResourceQuota, now: float) -> list[str]:
    # kubectl's: "name: used/hard" per resource, the limits.* ones in LIMIT, sorted.
    request: list[str] = []
    limit: list[str] = []
    for name in sorted(q.status.hard):
        used = q.status.used.get(name, "0")
        (limit if name.startswith("limits") else request).append(
            f"{name}: {used}/{q.status.hard[name]}"
        )
    return [
        q.metadata.name,
        age(q.metadata.creation_timestamp, now),
        ", ".join(request),
        ", ".join(limit),
    ]


def _limit_range_row(lr: quota_pb2.LimitRange, now: float) -> list[str]:
    return [lr.metadata.name, timestamps.format_time(lr.metadata.creation_timestamp)]


def _endpoint_slice_row(eps: discovery_pb2.EndpointSlice, now: float) -> list[str]:
    # kubectl's: port numbers, and the first three addresses then "+ N more...".
    ports = ",".join(str(p.port) if p.HasField("port") else "<unset>" for p in eps.ports)
    addresses = [a for ep in eps.endpoints for a in ep.addresses]
    shown = ",".join(addresses[:3]) + (
        f" + {len(addresses) - 3} more..." if len(addresses) > 3 else ""
    )
    return [
        eps.metadata.name,
        eps.address_type,
        ports or "<unset>",
        shown or NONE,
        age(eps.metadata.creation_timestamp, now),
    ]


def _ingress_row(ing: networking_pb2.Ingress, now: float) -> list[str]:
    # kubectl's: at most three hosts ("*" when none names one), the load balancer's
    # addresses, and 443 beside 80 when the Ingress has TLS.
    rules = ing.spec.rules
    hosts = [r.host for r in rules[:3] if r.host]
    shown = ",".join(hosts) or "*"
    if len(rules) > 3:
        shown += f" + {len(rules) - 3} more..."
    lb = ",".join(i.ip or i.hostname for i in ing.status.load_balancer.ingress)
    return [
        ing.metadata.name,
        ing.spec.ingress_class_name if ing.spec.HasField("ingress_class_name") else NONE,
        shown,
        lb,
        "80, 443" if ing.spec.tls else "80",
        age(ing.metadata.creation_timestamp, now),
    ]


def _csr_row(csr: certificates_pb2.CertificateSigningRequest, now: float) -> list[str]:
    # kubectl's: the True conditions' types, "Issued" once there is a certificate.
    shown = [c.type for c in csr.status.conditions if c.status == "True"]
    if csr.status.certificate:
        shown.append("Issued")
    spec = csr.spec
    duration = NONE
    if spec.HasField("expiration_seconds"):
        duration = human_duration(spec.expiration_seconds)
    return [
        csr.metadata.name,
        age(csr.metadata.creation_timestamp, now),
        spec.signer_name,
        spec.username,
        duration,
        ",".join(shown) or "Pending",
    ]


def _ingress_class_row(ic: networking_pb2.IngressClass, now: float) -> list[str]:
    parameters = NONE
    if ic.spec.HasField("parameters"):
        ref = ic.spec.parameters
        group = f".{ref.api_group}" if ref.HasField("api_group") else ""
        parameters = f"{ref.kind}{group}/{ref.name}"
    return [
        ic.metadata.name,
        ic.spec.controller,
        parameters,
        age(ic.metadata.creation_timestamp, now),
    ]


def _cronjob_row(cj: batch_pb2.CronJob, now: float) -> list[str]:
    spec, st = cj.spec, cj.status
    last = age(st.last_schedule_time, now) if st.HasField("last_schedule_time") else NONE
    return [
        cj.metadata.name,
        spec.schedule,
        spec.time_zone if spec.HasField("time_zone") else NONE,
        "True" if spec.suspend else "False",
        str(len(st.active)),
        last,
        age(cj.metadata.creation_timestamp, now),
    ]


def service_ports(svc: core_pb2.Service) -> str:
    parts = []
    for p in svc.spec.ports:
        node = f":{p.node_port}" if p.node_port else ""
        parts.append(f"{p.port}{node}/{p.protocol or 'TCP'}")
    return ",".join(parts) or NONE


def _external_ip(svc: core_pb2.Service) -> str:
    ips = list(svc.spec.external_ips)
    if svc.spec.type == "LoadBalancer":
        ips = [i.ip or i.hostname for i in svc.status.load_balancer.ingress] + ips
        return ",".join(ips) if ips else "<pending>"
    return ",".join(ips) or NONE


def _service_row(svc: core_pb2.Service, now: float) -> list[str]:
    return [
        svc.metadata.name,
        svc.spec.type or "ClusterIP",
        svc.spec.cluster_ip or NONE,
        _external_ip(svc),
        service_ports(svc),
        age(svc.metadata.creation_timestamp, now),
    ]


def _service_wide(svc: core_pb2.Service, now: float) -> list[str]:
    return [",".join(f"{k}={v}" for k, v in sorted(svc.spec.selector.items())) or NONE]


def node_status(node: core_pb2.Node) -> str:
    ready = next((c.status for c in node.status.conditions if c.type == "Ready"), "")
    text = {"True": "Ready", "False": "NotReady"}.get(ready, "Unknown")
    if node.spec.unschedulable:
        text += ",SchedulingDisabled"
    return text


def _node_row(node: core_pb2.Node, now: float) -> list[str]:
    prefix = "node-role.kubernetes.io/"
    roles = sorted(k[len(prefix) :] for k in node.metadata.labels if k.startswith(prefix))
    return [
        node.metadata.name,
        node_status(node),
        ",".join(roles) or NONE,
        age(node.metadata.creation_timestamp, now),
        node.status.node_info.kubelet_version or NONE,
    ]


def _node_wide(node: core_pb2.Node, now: float) -> list[str]:
    def address(kind: str) -> str:
        return next((a.address for a in node.status.addresses if a.type == kind), NONE)

    info = node.status.node_info
    return [
        address("InternalIP"),
        address("ExternalIP"),
        info.os_image or NONE,
        info.kernel_version or NONE,
        info.container_runtime_version or NONE,
    ]


def _namespace_row(ns: core_pb2.Namespace, now: float) -> list[str]:
    return [ns.metadata.name, ns.status.phase or "Active", age(ns.metadata.creation_timestamp, now)]


def endpoints_text(ep: core_pb2.Endpoints, limit: int = 3) -> str:
    """`10.0.0.1:80,10.0.0.2:80 + 1 more...` as kubectl prints ready addresses."""
    pairs: list[str] = []
    for subset in ep.subsets:
        ports = [p.port for p in subset.ports] or [0]
        for addr in subset.addresses:
            pairs.extend(f"{addr.ip}:{port}" if port else addr.ip for port in ports)
    if not pairs:
        return NONE
    shown = ",".join(pairs[:limit])
    return shown + (f" + {len(pairs) - limit} more..." if len(pairs) > limit else "")


def _endpoints_row(ep: core_pb2.Endpoints, now: float) -> list[str]:
    return [ep.metadata.name, endpoints_text(ep), age(ep.metadata.creation_timestamp, now)]


def event_time(ev: core_pb2.Event) -> Timestamp:
    for ts in (ev.last_timestamp, ev.first_timestamp, ev.metadata.creation_timestamp):
        if ts.seconds or ts.nanos:
            return ts
    return ev.metadata.creation_timestamp


def _event_row(ev: core_pb2.Event, now: float) -> list[str]:
    ref = ev.involved_object
    return [
        age(event_time(ev), now),
        ev.type or "Normal",
        ev.reason,
        f"{ref.kind.lower()}/{ref.name}",
        ev.message,
    ]


def _configmap_row(cm: core_pb2.ConfigMap, now: float) -> list[str]:
    count = len(cm.data) + len(cm.binary_data)
    return [cm.metadata.name, str(count), age(cm.metadata.creation_timestamp, now)]


def _secret_row(s: core_pb2.Secret, now: float) -> list[str]:
    return [
        s.metadata.name,
        s.type or "Opaque",
        str(len(s.data)),
        age(s.metadata.creation_timestamp, now),
    ]


@dataclass(frozen=True)
class MetricView:
    """One HPA metric as kubectl shows it: its `name` (`cpu`, a custom metric's name),
    `current` and `target` texts (`<unknown>` before a measurement), `raw` (a Utilization
    metric's average value, describe's `62% (124m)`), `average` (an AverageValue target of an
    Object/External metric, `(avg)`), `utilization` (a percentage-of-request target), the
    `container` or `described` object it is about."""

    type: str
    name: str
    current: str
    target: str
    raw: str = ""
    average: bool = False
    utilization: bool = False
    container: str = ""
    described: str = ""


def _resource_view(
    spec: autoscaling_pb2.MetricSpec, status: autoscaling_pb2.MetricStatus | None
) -> MetricView:
    resource = spec.type == "Resource"
    source = spec.resource if resource else spec.container_resource
    container = "" if resource else spec.container_resource.container
    got = None
    if status is not None and status.type == spec.type:
        got = status.resource.current if resource else status.container_resource.current
    raw = got.average_value if got is not None else ""
    if source.target.type == "AverageValue":
        current = raw or UNKNOWN
        return MetricView(spec.type, source.name, current, source.target.average_value,
                          container=container)  # fmt: skip
    current = UNKNOWN
    if got is not None and got.HasField("average_utilization"):
        current = f"{got.average_utilization}%"
    target = "<auto>"
    if source.target.HasField("average_utilization"):
        target = f"{source.target.average_utilization}%"
    return MetricView(
        spec.type, source.name, current, target, raw=raw, utilization=True, container=container
    )


def metric_view(
    spec: autoscaling_pb2.MetricSpec, status: autoscaling_pb2.MetricStatus | None
) -> MetricView:
    """`spec` with its `status` (None or another type: not measured yet)."""
    if spec.type in ("Resource", "ContainerResource"):
        return _resource_view(spec, status)
    measured = status is not None and status.type == spec.type
    if spec.type == "Pods":
        got = status.pods.current.average_value if measured and status else ""
        return MetricView("Pods", spec.pods.metric.name, got or UNKNOWN,
                          spec.pods.target.average_value)  # fmt: skip
    if spec.type in ("Object", "External"):
        obj = spec.type == "Object"
        source_target = spec.object.target if obj else spec.external.target
        name = spec.object.metric.name if obj else spec.external.metric.name
        value = None
        if measured and status is not None:
            value = status.object.current if obj else status.external.current
        ref = spec.object.described_object
        described = f"{ref.kind}/{ref.name}" if obj else ""
        if source_target.type == "AverageValue":
            got = value.average_value if value is not None else ""
            return MetricView(spec.type, name, got or UNKNOWN, source_target.average_value,
                              average=True, described=described)  # fmt: skip
        got = value.value if value is not None else ""
        return MetricView(spec.type, name, got or UNKNOWN, source_target.value,
                          described=described)  # fmt: skip
    return MetricView(spec.type, "", UNKNOWN, UNKNOWN)


def _metric_target(view: MetricView) -> str:
    """TARGETS' text of one metric: `cpu: 62%/50%`, `<unknown>/100`, `3/30 (avg)`."""
    if view.type in ("Resource", "ContainerResource"):
        return f"{view.name}: {view.current}/{view.target}"
    if view.type == "Pods":
        return f"{view.current}/{view.target}"
    if view.type in ("Object", "External"):
        return f"{view.current}/{view.target}" + (" (avg)" if view.average else "")
    return "<unknown type>"


def hpa_metrics(h: autoscaling_pb2.HorizontalPodAutoscaler) -> list[MetricView]:
    statuses = h.status.current_metrics
    return [
        metric_view(spec, statuses[i] if i < len(statuses) else None)
        for i, spec in enumerate(h.spec.metrics)
    ]


def hpa_targets(h: autoscaling_pb2.HorizontalPodAutoscaler) -> str:
    """kubectl's TARGETS: the first two metrics, then `+ N more...`."""
    views = hpa_metrics(h)
    if not views:
        return NONE
    text = ", ".join(_metric_target(v) for v in views[:2])
    return text if len(views) <= 2 else f"{text} + {len(views) - 2} more..."


def _hpa_row(h: autoscaling_pb2.HorizontalPodAutoscaler, now: float) -> list[str]:
    ref = h.spec.scale_target_ref
    minimum = str(h.spec.min_replicas) if h.spec.HasField("min_replicas") else "<unset>"
    current = h.status.current_replicas if h.status.HasField("current_replicas") else 0
    return [
        h.metadata.name,
        f"{ref.kind}/{ref.name}",
        hpa_targets(h),
        minimum,
        str(h.spec.max_replicas),
        str(current),
        age(h.metadata.creation_timestamp, now),
    ]


def _lease_row(lease: coordination_pb2.Lease, now: float) -> list[str]:
    return [
        lease.metadata.name,
        lease.spec.holder_identity or NONE,
        age(lease.metadata.creation_timestamp, now),
    ]


def _priorityclass_row(pc: scheduling_pb2.PriorityClass, now: float) -> list[str]:
    return [
        pc.metadata.name,
        str(pc.value),
        str(pc.global_default).lower(),
        age(pc.metadata.creation_timestamp, now),
        pc.preemption_policy,
    ]


def _generic_row(obj: Message, now: float) -> list[str]:
    return [meta(obj).name, age(meta(obj).creation_timestamp, now)]


def _statefulset_row(sts: apps_pb2.StatefulSet, now: float) -> list[str]:
    ready = f"{sts.status.ready_replicas}/{sts.spec.replicas}"
    return [sts.metadata.name, ready, age(sts.metadata.creation_timestamp, now)]


def _revision_row(cr: apps_pb2.ControllerRevision, now: float) -> list[str]:
    # kubectl's CONTROLLER: the controller's lower-case kind.group/name.
    owner = NONE
    for ref in cr.metadata.owner_references:
        if ref.controller:
            group = ref.api_version.rpartition("/")[0]
            owner = f"{ref.kind.lower()}{'.' + group if group else ''}/{ref.name}"
    return [cr.metadata.name, owner, str(cr.revision), age(cr.metadata.creation_timestamp, now)]


def _modes(modes: Iterable[str]) -> str:
    short = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX",
             "ReadWriteOncePod": "RWOP"}  # fmt: skip
    return ",".join(short.get(m, m) for m in modes)


def _pv_row(pv: core_pb2.PersistentVolume, now: float) -> list[str]:
    ref = pv.spec.claim_ref
    return [
        pv.metadata.name,
        pv.spec.capacity.get("storage", ""),
        _modes(pv.spec.access_modes),
        pv.spec.persistent_volume_reclaim_policy,
        pv.status.phase,
        f"{ref.namespace}/{ref.name}" if ref.name else "",
        pv.spec.storage_class_name,
        age(pv.metadata.creation_timestamp, now),
    ]


def _pvc_row(pvc: core_pb2.PersistentVolumeClaim, now: float) -> list[str]:
    return [
        pvc.metadata.name,
        pvc.status.phase,
        pvc.spec.volume_name,
        pvc.status.capacity.get("storage", ""),
        _modes(pvc.status.access_modes),
        pvc.spec.storage_class_name if pvc.spec.HasField("storage_class_name") else NONE,
        age(pvc.metadata.creation_timestamp, now),
    ]


def _storageclass_row(sc: storage_pb2.StorageClass, now: float) -> list[str]:
    default = sc.metadata.annotations.get("storageclass.kubernetes.io/is-default-class")
    return [
        sc.metadata.name + (" (default)" if default == "true" else ""),
        sc.provisioner,
        sc.reclaim_policy,
        sc.volume_binding_mode,
        str(sc.allow_volume_expansion).lower(),
        age(sc.metadata.creation_timestamp, now),
    ]


COLUMNS: dict[str, Columns] = {
    "Pod": Columns(
        ("NAME", "READY", "STATUS", "RESTARTS", "AGE"), _pod_row, ("IP", "NODE"), _pod_wide
    ),
    "Deployment": Columns(
        ("NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"),
        _deployment_row,
        ("CONTAINERS", "IMAGES", "SELECTOR"),
        lambda d, now: _template_wide(d.spec.template, d.spec.selector),
    ),
    "ReplicaSet": Columns(
        ("NAME", "DESIRED", "CURRENT", "READY", "AGE"),
        _replicaset_row,
        ("CONTAINERS", "IMAGES", "SELECTOR"),
        lambda rs, now: _template_wide(rs.spec.template, rs.spec.selector),
    ),
    "DaemonSet": Columns(
        ("NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE SELECTOR", "AGE"),
        _daemonset_row,
        ("CONTAINERS", "IMAGES", "SELECTOR"),
        lambda ds, now: _template_wide(ds.spec.template, ds.spec.selector),
    ),
    "StatefulSet": Columns(
        ("NAME", "READY", "AGE"),
        _statefulset_row,
        ("CONTAINERS", "IMAGES"),
        lambda sts, now: _template_wide(sts.spec.template, sts.spec.selector)[:2],
    ),
    "ControllerRevision": Columns(("NAME", "CONTROLLER", "REVISION", "AGE"), _revision_row),
    "PersistentVolume": Columns(
        (
            "NAME",
            "CAPACITY",
            "ACCESS MODES",
            "RECLAIM POLICY",
            "STATUS",
            "CLAIM",
            "STORAGECLASS",
            "AGE",
        ),
        _pv_row,
    ),
    "PersistentVolumeClaim": Columns(
        ("NAME", "STATUS", "VOLUME", "CAPACITY", "ACCESS MODES", "STORAGECLASS", "AGE"), _pvc_row
    ),
    "StorageClass": Columns(
        (
            "NAME",
            "PROVISIONER",
            "RECLAIMPOLICY",
            "VOLUMEBINDINGMODE",
            "ALLOWVOLUMEEXPANSION",
            "AGE",
        ),
        _storageclass_row,
    ),
    "Job": Columns(
        ("NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"),
        _job_row,
        ("CONTAINERS", "IMAGES", "SELECTOR"),
        lambda job, now: _template_wide(job.spec.template, job.spec.selector),
    ),
    "CronJob": Columns(
        ("NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"),
        _cronjob_row,
        ("CONTAINERS", "IMAGES", "SELECTOR"),
        lambda cj, now: _template_wide(
            cj.spec.job_template.spec.template, cj.spec.job_template.spec.selector
        ),
    ),
    "Service": Columns(
        ("NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"),
        _service_row,
        ("SELECTOR",),
        _service_wide,
    ),
    "Node": Columns(
        ("NAME", "STATUS", "ROLES", "AGE", "VERSION"),
        _node_row,
        ("INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"),
        _node_wide,
    ),
    "Namespace": Columns(("NAME", "STATUS", "AGE"), _namespace_row),
    "Endpoints": Columns(("NAME", "ENDPOINTS", "AGE"), _endpoints_row),
    "Event": Columns(("LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"), _event_row),
    "ConfigMap": Columns(("NAME", "DATA", "AGE"), _configmap_row),
    "Secret": Columns(("NAME", "TYPE", "DATA", "AGE"), _secret_row),
    "HorizontalPodAutoscaler": Columns(
        ("NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"), _hpa_row
    ),
    "Lease": Columns(("NAME", "HOLDER", "AGE"), _lease_row),
    "PriorityClass": Columns(
        ("NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"), _priorityclass_row
    ),
    "EndpointSlice": Columns(
        ("NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"), _endpoint_slice_row
    ),
    "Ingress": Columns(("NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"), _ingress_row),
    "IngressClass": Columns(("NAME", "CONTROLLER", "PARAMETERS", "AGE"), _ingress_class_row),
    "CertificateSigningRequest": Columns(
        ("NAME", "AGE", "SIGNERNAME", "REQUESTOR", "REQUESTEDDURATION", "CONDITION"), _csr_row
    ),
    "LimitRange": Columns(("NAME", "CREATED AT"), _limit_range_row),
    "ResourceQuota": Columns(("NAME", "AGE", "REQUEST", "LIMIT"), _quota_row),
    "PodDisruptionBudget": Columns(
        ("NAME", "MIN AVAILABLE", "MAX UNAVAILABLE", "ALLOWED DISRUPTIONS", "AGE"), _pdb_row
    ),
}
GENERIC = Columns(("NAME", "AGE"), _generic_row)

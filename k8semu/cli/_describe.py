"""`describe`: an object's key fields in kubectl's `Key:  value` layout, then its events.

Pure: takes the object, the events that involve it and a fixed `now`; returns text.
Pods, Deployments, ReplicaSets, Services, Nodes, Namespaces, HorizontalPodAutoscalers and
Ingresses get
kubectl's hand-picked fields; other kinds print their remaining top-level sections (spec,
data, ...) as YAML.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from k8semu.api import kinds, manifest
from k8semu.cli import _printers as p
from k8semu.cli._apply import LAST_APPLIED
from k8semu.pb.api.v1 import apps_pb2, autoscaling_pb2, core_pb2, meta_pb2, networking_pb2


def _fmt_time(ts: Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return p.NONE
    return ts.ToDatetime().strftime("%a, %d %b %Y %H:%M:%S +0000")


# Lines are built as "<indent>Key:\tvalue"; `_align` then lines the values up per indent level,
# as kubectl's tabwriter does.


def _map_lines(key: str, values: Iterable[tuple[str, str]], indent: int = 0) -> list[str]:
    pad = " " * indent
    items = sorted(values)
    if not items:
        return [f"{pad}{key}:\t{p.NONE}"]
    lines = [f"{pad}{key}:\t{items[0][0]}={items[0][1]}"]
    lines += [f"{pad}\t{k}={v}" for k, v in items[1:]]
    return lines


def _kv(pairs: Sequence[tuple[str, str]], indent: int = 0) -> list[str]:
    pad = " " * indent
    return [f"{pad}{k}:\t{v}" for k, v in pairs]


def _align(lines: Sequence[str]) -> list[str]:
    widths: dict[int, int] = {}
    for line in lines:
        if "\t" in line:
            indent = len(line) - len(line.lstrip(" "))
            key = line.split("\t", 1)[0]
            widths[indent] = max(widths.get(indent, 0), len(key))
    out = []
    for line in lines:
        if "\t" not in line:
            out.append(line)
            continue
        indent = len(line) - len(line.lstrip(" "))
        key, value = line.split("\t", 1)
        out.append(f"{key:<{widths[indent] + 2}}{value}".rstrip())
    return out


def _header(obj: Message, kind_name: str) -> list[str]:
    m = p.meta(obj)
    lines = [f"Name:\t{m.name}"]
    if kinds.for_message(obj).namespaced:
        lines.append(f"Namespace:\t{m.namespace}")
    if kind_name != "Pod":
        lines.append(f"CreationTimestamp:\t{_fmt_time(m.creation_timestamp)}")
    lines += _map_lines("Labels", m.labels.items())
    annotations = [(k, v) for k, v in m.annotations.items() if k != LAST_APPLIED]
    lines += _map_lines("Annotations", annotations)
    if m.HasField("deletion_timestamp"):
        lines.append(f"Status:\tTerminating (since {_fmt_time(m.deletion_timestamp)})")
    for ref in m.owner_references:
        lines.append(f"Controlled By:\t{ref.kind}/{ref.name}")
    return lines


def _containers(containers: Sequence[core_pb2.Container], statuses: Any = ()) -> list[str]:
    by_name = {cs.name: cs for cs in statuses}
    lines = []
    for c in containers:
        lines.append(f"  {c.name}:")
        pairs = [("Image", c.image)]
        ports = ",".join(f"{port.container_port}/{port.protocol or 'TCP'}" for port in c.ports)
        pairs.append(("Port", ports or p.NONE))
        if c.command:
            pairs.append(("Command", " ".join(c.command)))
        if c.args:
            pairs.append(("Args", " ".join(c.args)))
        cs = by_name.get(c.name)
        if cs is not None:
            pairs += [
                ("State", _state_name(cs.state)),
                ("Ready", str(cs.ready)),
                ("Restart Count", str(cs.restart_count)),
            ]
        for key in ("limits", "requests"):
            values = getattr(c.resources, key)
            if values:
                pairs.append((key.capitalize(), ", ".join(f"{k}: {v}" for k, v in values.items())))
        env = [f"{e.name}={e.value}" if e.value else f"{e.name} (from ref)" for e in c.env]
        if env:
            pairs.append(("Environment", ", ".join(env)))
        lines += _kv(pairs, indent=4)
    return lines or ["  <none>"]


def _state_name(state: core_pb2.ContainerState) -> str:
    if state.HasField("running"):
        return "Running"
    if state.HasField("terminated"):
        reason = state.terminated.reason or "Terminated"
        return f"{reason} (exit code {state.terminated.exit_code})"
    if state.HasField("waiting"):
        return f"Waiting ({state.waiting.reason})" if state.waiting.reason else "Waiting"
    return "Unknown"


def _conditions(conds: Iterable[Any]) -> list[str]:
    rows = [[c.type, c.status] for c in conds]
    if not rows:
        return []
    table = p.render_table(["Type", "Status"], rows)
    return ["Conditions:", *("  " + line for line in table.rstrip("\n").split("\n"))]


def _pod(pod: core_pb2.Pod) -> list[str]:
    s = pod.status
    node = pod.spec.node_name or p.NONE
    if pod.spec.node_name and s.host_ip:
        node += f"/{s.host_ip}"
    lines = _kv(
        [
            ("Node", node),
            ("Start Time", _fmt_time(s.start_time)),
            ("Status", p.pod_status(pod)),
            ("IP", s.pod_ip or p.NONE),
        ]
    )
    lines += ["Containers:", *_containers(pod.spec.containers, s.container_statuses)]
    lines += _conditions(s.conditions)
    if pod.spec.node_selector:
        lines += _map_lines("Node-Selectors", pod.spec.node_selector.items())
    return lines


def _workload(
    obj: apps_pb2.Deployment | apps_pb2.ReplicaSet, template: core_pb2.PodTemplateSpec
) -> list[str]:
    spec = obj.spec
    want = spec.replicas if spec.HasField("replicas") else 1
    sel = p.selector_text(spec.selector)
    if isinstance(obj, apps_pb2.Deployment):
        d = obj
        replicas = (
            f"{want} desired | {d.status.updated_replicas} updated | {d.status.replicas} total | "
            f"{d.status.available_replicas} available | "
            f"{d.status.unavailable_replicas} unavailable"
        )
        pairs = [("Selector", sel), ("Replicas", replicas)]
        pairs.append(("StrategyType", d.spec.strategy.type or "RollingUpdate"))
        pairs.append(("MinReadySeconds", str(d.spec.min_ready_seconds)))
    else:
        rs = obj.status
        current = rs.replicas if rs.HasField("replicas") else 0
        pairs = [
            ("Selector", sel),
            ("Replicas", f"{current} current / {want} desired"),
        ]
    lines = _kv(pairs)
    lines.append("Pod Template:")
    lines += _map_lines("Labels", template.metadata.labels.items(), indent=2)
    lines += ["  Containers:", *("  " + c for c in _containers(template.spec.containers))]
    lines += _conditions(obj.status.conditions)
    return lines


def _service(svc: core_pb2.Service) -> list[str]:
    pairs = [
        ("Selector", ",".join(f"{k}={v}" for k, v in sorted(svc.spec.selector.items())) or ""),
        ("Type", svc.spec.type or "ClusterIP"),
        ("IP", svc.spec.cluster_ip or p.NONE),
    ]
    for port in svc.spec.ports:
        name = port.name or "<unset>"
        pairs.append(("Port", f"{name}  {port.port}/{port.protocol or 'TCP'}"))
        target = manifest.to_dict(port).get("targetPort", port.port)
        pairs.append(("TargetPort", f"{target}/{port.protocol or 'TCP'}"))
        if port.node_port:
            pairs.append(("NodePort", f"{name}  {port.node_port}/{port.protocol or 'TCP'}"))
    pairs.append(("Session Affinity", svc.spec.session_affinity or "None"))
    return _kv(pairs)


def _node(node: core_pb2.Node) -> list[str]:
    info = node.status.node_info
    lines = _kv(
        [
            ("Unschedulable", str(node.spec.unschedulable).lower()),
            (
                "Taints",
                ", ".join(f"{t.key}={t.value}:{t.effect}" for t in node.spec.taints) or p.NONE,
            ),
        ]
    )
    lines += _conditions(node.status.conditions)
    if node.status.addresses:
        lines.append("Addresses:")
        lines += _kv([(a.type, a.address) for a in node.status.addresses], indent=2)
    for key in ("capacity", "allocatable"):
        values = getattr(node.status, key)
        if values:
            lines.append(f"{key.capitalize()}:")
            lines += _kv(sorted(values.items()), indent=2)
    lines.append("System Info:")
    lines += _kv(
        [
            ("Kernel Version", info.kernel_version),
            ("OS Image", info.os_image),
            ("Container Runtime Version", info.container_runtime_version),
            ("Kubelet Version", info.kubelet_version),
        ],
        indent=2,
    )
    lines.append(f"PodCIDR:\t{node.spec.pod_cidr or p.NONE}")
    return lines


def _metric_line(view: p.MetricView) -> str:
    """One `Metrics:` line as kubectl describes it: `what:\tcurrent / target`."""
    if view.type in ("Resource", "ContainerResource"):
        what = f"resource {view.name}"
        if view.container:
            what += f' of container "{view.container}"'
        if view.utilization:
            current = f"{view.current} ({view.raw})" if view.raw else view.current
            return f"  {what} on pods  (as a percentage of request):\t{current} / {view.target}"
        return f"  {what} on pods:\t{view.current} / {view.target}"
    if view.type == "Pods":
        return f'  "{view.name}" on pods:\t{view.current} / {view.target}'
    if view.type in ("Object", "External"):
        what = f'"{view.name}"' + (f" on {view.described}" if view.described else "")
        kind = "average value" if view.average else "value"
        return f"  {what} (target {kind}):\t{view.current} / {view.target}"
    return f"  <unknown metric type {view.type!r}>"


def _scaling_rules(title: str, rules: autoscaling_pb2.HPAScalingRules) -> list[str]:
    lines = [f"  {title}:"]
    if rules.HasField("stabilization_window_seconds"):
        lines.append(f"    Stabilization Window: {rules.stabilization_window_seconds} seconds")
    if rules.select_policy:
        lines.append(f"    Select Policy: {rules.select_policy}")
    if rules.policies:
        lines.append("    Policies:")
        lines += [
            f"      - Type: {x.type}  Value: {x.value}  Period: {x.period_seconds} seconds"
            for x in rules.policies
        ]
    return lines


def _hpa(h: autoscaling_pb2.HorizontalPodAutoscaler) -> list[str]:
    ref = h.spec.scale_target_ref
    lines = [f"Reference:\t{ref.kind}/{ref.name}", "Metrics:\t( current / target )"]
    lines += [_metric_line(view) for view in p.hpa_metrics(h)]
    minimum = str(h.spec.min_replicas) if h.spec.HasField("min_replicas") else "<unset>"
    lines += [f"Min replicas:\t{minimum}", f"Max replicas:\t{h.spec.max_replicas}"]
    if h.spec.HasField("behavior"):
        lines.append("Behavior:")
        if h.spec.behavior.HasField("scale_up"):
            lines += _scaling_rules("Scale Up", h.spec.behavior.scale_up)
        if h.spec.behavior.HasField("scale_down"):
            lines += _scaling_rules("Scale Down", h.spec.behavior.scale_down)
    current, desired = h.status.current_replicas, h.status.desired_replicas
    lines.append(f"{ref.kind} pods:\t{current} current / {desired} desired")
    rows = [[c.type, c.status, c.reason, c.message] for c in h.status.conditions]
    if rows:
        table = p.render_table(
            ["Type", "Status", "Reason", "Message"],
            [["----", "------", "------", "-------"], *rows],
        )
        lines += ["Conditions:", *("  " + line for line in table.rstrip("\n").split("\n"))]
    return lines


def _ingress_backend(backend: networking_pb2.IngressBackend) -> str:
    if backend.HasField("resource"):
        ref = backend.resource
        return f"APIGroup: {ref.api_group}, Kind: {ref.kind}, Name: {ref.name}"
    port = backend.service.port
    return f"{backend.service.name}:{port.name or port.number}"


def _ingress(ing: networking_pb2.Ingress) -> list[str]:
    """kubectl's layout: address, class, default backend, then a Host/Path/Backends table."""
    spec = ing.spec
    lines = _kv(
        [
            ("Address", ",".join(i.ip or i.hostname for i in ing.status.load_balancer.ingress)),
            (
                "Ingress Class",
                spec.ingress_class_name if spec.HasField("ingress_class_name") else p.NONE,
            ),
            (
                "Default backend",
                _ingress_backend(spec.default_backend)
                if spec.HasField("default_backend")
                else "<default>",
            ),
        ]
    )
    for tls in spec.tls:
        lines.append(f"TLS:\t{tls.secret_name or '<none>'} terminates {','.join(tls.hosts)}")
    rows = [["Host", "Path", "Backends"], ["----", "----", "--------"]]
    for rule in spec.rules:
        rows.append([rule.host or "*", "", ""])
        rows += [["", path.path or "/", _ingress_backend(path.backend)] for path in rule.http.paths]
    table = p.render_table(rows[0], rows[1:]).rstrip("\n").split("\n")
    return [*lines, "Rules:", *("  " + line for line in table)]


def _generic(obj: Message) -> list[str]:
    data = manifest.to_dict(obj)
    lines: list[str] = []
    for key, value in data.items():
        if key in ("apiVersion", "kind", "metadata"):
            continue
        title = key[:1].upper() + key[1:]
        if isinstance(value, dict | list):
            lines.append(f"{title}:")
            lines += ["  " + line for line in p.dump_yaml(value).rstrip("\n").split("\n")]
        else:
            lines.append(f"{title}:\t{value}")
    return lines


def events_section(events: Sequence[core_pb2.Event], now: float) -> list[str]:
    if not events:
        return ["Events:\t<none>"]
    rows = [
        ["Type", "Reason", "Age", "From", "Message"],
        ["----", "------", "----", "----", "-------"],
    ]
    for ev in sorted(events, key=lambda e: p.event_time(e).ToNanoseconds()):
        source = ev.source.component or ev.reporting_component
        when = p.age(p.event_time(ev), now)
        if ev.count > 1:
            when = f"{when} (x{ev.count} over {p.age(ev.first_timestamp, now)})"
        rows.append([ev.type or "Normal", ev.reason, when, source, ev.message])
    table = p.render_table(rows[0], rows[1:])
    return ["Events:", *("  " + line for line in table.rstrip("\n").split("\n"))]


def involves(ev: core_pb2.Event, obj: Message) -> bool:
    """Whether event `ev` is about `obj` (same uid, or same kind/namespace/name)."""
    ref: meta_pb2.ObjectReference = ev.involved_object
    m = p.meta(obj)
    if ref.uid and m.uid:
        return ref.uid == m.uid
    return (
        ref.kind == kinds.for_message(obj).kind
        and ref.name == m.name
        and ref.namespace == m.namespace
    )


def describe(obj: Message, events: Sequence[core_pb2.Event], now: float) -> str:
    kind_name = kinds.for_message(obj).kind
    lines = _header(obj, kind_name)
    if isinstance(obj, core_pb2.Pod):
        lines += _pod(obj)
    elif isinstance(obj, apps_pb2.Deployment | apps_pb2.ReplicaSet):
        lines += _workload(obj, obj.spec.template)
    elif isinstance(obj, core_pb2.Service):
        lines += _service(obj)
    elif isinstance(obj, core_pb2.Node):
        lines += _node(obj)
    elif isinstance(obj, core_pb2.Namespace):
        lines.append(f"Status:\t{obj.status.phase or 'Active'}")
    elif isinstance(obj, core_pb2.Endpoints):
        lines += _kv([("Subsets", p.endpoints_text(obj, limit=100))])
    elif isinstance(obj, autoscaling_pb2.HorizontalPodAutoscaler):
        lines += _hpa(obj)
    elif isinstance(obj, networking_pb2.Ingress):
        lines += _ingress(obj)
    else:
        lines += _generic(obj)
    if not isinstance(obj, core_pb2.Event):
        lines += events_section(events, now)
    return "\n".join(_align(lines)) + "\n"

"""Tables, ages and -o output at a fixed "now"."""

from __future__ import annotations

import json

import pytest
import yaml

from k8semu.api import kinds, manifest
from k8semu.cli import _describe, _printers
from k8semu.pb.api.v1 import apps_pb2, core_pb2

NOW = 1_700_000_000.0


def _at(seconds_ago: float) -> str:
    import datetime as dt

    t = dt.datetime.fromtimestamp(NOW - seconds_ago, dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (5, "5s"),
        (119, "119s"),
        (120, "2m"),
        (182, "3m2s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (4 * 3600 + 5 * 60, "4h5m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (2 * 86400, "2d"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (30 * 86400, "30d"),
        (3 * 365 * 86400, "3y"),
        (3 * 365 * 86400 + 86400 * 10, "3y10d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration_matches_kubectl(seconds: float, text: str) -> None:
    assert _printers.human_duration(seconds) == text


def _obj(text: str) -> object:
    return manifest.load(text, source="test")


def test_pod_table_and_wide() -> None:
    pod = _obj(f"""
apiVersion: v1
kind: Pod
metadata: {{name: web-1, namespace: default, creationTimestamp: "{_at(182)}"}}
spec:
  nodeName: node-1
  containers: [{{name: a, image: x}}, {{name: b, image: y}}]
status:
  phase: Running
  podIP: 10.0.0.5
  containerStatuses:
  - {{name: a, ready: true, restartCount: 2, state: {{running: {{}}}}}}
  - {{name: b, ready: false, restartCount: 1, state: {{waiting: {{reason: CrashLoopBackOff}}}}}}
""")
    kind = kinds.for_resource("po")
    assert _printers.table(kind, [pod], NOW) == (  # type: ignore[list-item]
        "NAME    READY   STATUS             RESTARTS   AGE\n"
        "web-1   1/2     CrashLoopBackOff   3          3m2s\n"
    )
    wide = _printers.table(kind, [pod], NOW, wide=True, with_namespace=True)  # type: ignore[list-item]
    assert wide.splitlines()[0].split() == [
        "NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE",
    ]  # fmt: skip
    assert wide.splitlines()[1].split() == [
        "default", "web-1", "1/2", "CrashLoopBackOff", "3", "3m2s", "10.0.0.5", "node-1",
    ]  # fmt: skip


def test_pod_status_terminating_and_pending() -> None:
    pod = core_pb2.Pod()
    pod.metadata.name = "p"
    assert _printers.pod_status(pod) == "Pending"
    pod.metadata.deletion_timestamp.seconds = 1
    assert _printers.pod_status(pod) == "Terminating"


def test_deployment_replicaset_service_tables() -> None:
    d = _obj(f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, creationTimestamp: "{_at(4 * 3600)}"}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: nginx, image: "nginx:1.25"}}]}}
status: {{readyReplicas: 2, updatedReplicas: 3, availableReplicas: 2}}
""")
    text = _printers.table(kinds.for_resource("deploy"), [d], NOW, wide=True)  # type: ignore[list-item]
    assert text == (
        "NAME   READY   UP-TO-DATE   AVAILABLE   AGE   CONTAINERS   IMAGES       SELECTOR\n"
        "web    2/3     3            2           4h    nginx        nginx:1.25   app=web\n"
    )
    rs = apps_pb2.ReplicaSet()
    rs.metadata.name = "web-abc"
    rs.status.replicas = 1
    text = _printers.table(kinds.for_resource("rs"), [rs], NOW)
    assert text.splitlines() == [
        "NAME      DESIRED   CURRENT   READY   AGE",
        "web-abc   1         1         0       <unknown>",
    ]
    svc = _obj(f"""
apiVersion: v1
kind: Service
metadata: {{name: lb, creationTimestamp: "{_at(2 * 86400)}"}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.10
  ports: [{{port: 80, nodePort: 30080, protocol: TCP}}, {{port: 53, protocol: UDP}}]
""")
    text = _printers.table(kinds.for_resource("svc"), [svc], NOW)  # type: ignore[list-item]
    assert text.splitlines()[1].split() == [
        "lb", "LoadBalancer", "10.96.0.10", "<pending>", "80:30080/TCP,53/UDP", "2d",
    ]  # fmt: skip


def test_job_table_status_completions_and_duration() -> None:
    done = _obj(f"""
apiVersion: batch/v1
kind: Job
metadata: {{name: pi, creationTimestamp: "{_at(600)}"}}
spec:
  completions: 3
  parallelism: 2
  template: {{spec: {{restartPolicy: Never, containers: [{{name: pi, image: perl}}]}}}}
status:
  succeeded: 3
  startTime: "{_at(590)}"
  completionTime: "{_at(545)}"
  conditions: [{{type: Complete, status: "True"}}]
""")
    queue = _obj(f"""
apiVersion: batch/v1
kind: Job
metadata: {{name: queue, creationTimestamp: "{_at(120)}"}}
spec: {{parallelism: 4, template: {{spec: {{containers: [{{name: w, image: busybox}}]}}}}}}
status: {{active: 4, startTime: "{_at(100)}"}}
""")
    text = _printers.table(kinds.for_resource("jobs"), [done, queue], NOW)  # type: ignore[list-item]
    assert text.splitlines() == [
        "NAME    STATUS     COMPLETIONS   DURATION   AGE",
        "pi      Complete   3/3           45s        10m",
        "queue   Running    0/1 of 4      100s       2m",
    ]
    cj = _obj(f"""
apiVersion: batch/v1
kind: CronJob
metadata: {{name: hello, creationTimestamp: "{_at(3600)}"}}
spec:
  schedule: "*/5 * * * *"
  timeZone: Europe/Paris
  jobTemplate: {{spec: {{template: {{spec: {{containers: [{{name: h, image: busybox}}]}}}}}}}}
status: {{lastScheduleTime: "{_at(70)}", active: [{{name: hello-1}}]}}
""")
    text = _printers.table(kinds.for_resource("cj"), [cj], NOW)  # type: ignore[list-item]
    assert text.splitlines() == [
        "NAME    SCHEDULE      TIMEZONE       SUSPEND   ACTIVE   LAST SCHEDULE   AGE",
        "hello   */5 * * * *   Europe/Paris   False     1        70s             60m",
    ]


def test_node_namespace_endpoints_event_generic_tables() -> None:
    node = _obj("""
apiVersion: v1
kind: Node
metadata:
  name: n1
  labels: {node-role.kubernetes.io/control-plane: ""}
spec: {unschedulable: true}
status:
  conditions: [{type: Ready, status: "True"}]
  nodeInfo: {kubeletVersion: v1.30.0-k8semu}
""")
    row = _printers.table(kinds.for_resource("no"), [node], NOW).splitlines()[1].split()  # type: ignore[list-item]
    assert row == ["n1", "Ready,SchedulingDisabled", "control-plane", "<unknown>", "v1.30.0-k8semu"]
    ns = core_pb2.Namespace()
    ns.metadata.name = "default"
    assert _printers.table(kinds.for_resource("ns"), [ns], NOW).splitlines()[1].split() == [
        "default", "Active", "<unknown>",
    ]  # fmt: skip
    ep = _obj("""
apiVersion: v1
kind: Endpoints
metadata: {name: web}
subsets:
- addresses: [{ip: 10.0.0.1}, {ip: 10.0.0.2}, {ip: 10.0.0.3}, {ip: 10.0.0.4}]
  ports: [{port: 80}]
""")
    assert _printers.endpoints_text(ep) == "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 1 more..."  # type: ignore[arg-type]
    ev = _obj(f"""
apiVersion: v1
kind: Event
metadata: {{name: web.1, namespace: default}}
involvedObject: {{kind: Pod, name: web, namespace: default}}
reason: Scheduled
message: assigned
type: Normal
lastTimestamp: "{_at(65)}"
""")
    assert _printers.table(kinds.for_resource("ev"), [ev], NOW) == (  # type: ignore[list-item]
        "LAST SEEN   TYPE     REASON      OBJECT    MESSAGE\n"
        "65s         Normal   Scheduled   pod/web   assigned\n"
    )
    lease = kinds.for_resource("leases").new()
    _printers.meta(lease).name = "l"
    assert "HOLDER" in _printers.table(kinds.for_resource("leases"), [lease], NOW)


def test_render_yaml_json_name_and_list() -> None:
    cm = _obj("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: ns}\ndata: {a: b}\n")
    assert _printers.render([cm], "name", single=True) == "configmap/c\n"  # type: ignore[list-item]
    d = apps_pb2.Deployment()
    d.metadata.name = "web"
    assert _printers.resource_name(d) == "deployment.apps/web"
    one = yaml.safe_load(_printers.render([cm], "yaml", single=True))  # type: ignore[list-item]
    assert one == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "ns"},
        "data": {"a": "b"},
    }
    many = json.loads(_printers.render([cm, cm], "json", single=False))  # type: ignore[list-item]
    assert many["kind"] == "List" and len(many["items"]) == 2


def test_managed_fields_are_printed_only_when_asked() -> None:
    cm = _obj("""
apiVersion: v1
kind: ConfigMap
metadata:
  name: c
  namespace: ns
  managedFields:
  - {manager: kubectl, operation: Apply, apiVersion: v1, fieldsType: FieldsV1,
     fieldsV1: {"f:data": {"f:a": {}}}}
data: {a: b}
""")
    for fmt in ("yaml", "json"):
        one = yaml.safe_load(_printers.render([cm], fmt, single=True))  # type: ignore[list-item]
        assert "managedFields" not in one["metadata"]
        many = yaml.safe_load(_printers.render([cm, cm], fmt, single=False))  # type: ignore[list-item]
        assert all("managedFields" not in i["metadata"] for i in many["items"])
        shown = _printers.render([cm], fmt, single=True, managed_fields=True)  # type: ignore[list-item]
        managers = yaml.safe_load(shown)["metadata"]["managedFields"]
        assert [m["manager"] for m in managers] == ["kubectl"]


def test_describe_pod_with_events() -> None:
    pod = _obj("""
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, uid: u1, labels: {app: web, tier: fe}}
spec: {containers: [{name: c, image: nginx}]}
status: {phase: Pending}
""")
    ev = _obj(f"""
apiVersion: v1
kind: Event
metadata: {{name: web.1, namespace: default}}
involvedObject: {{kind: Pod, name: web, namespace: default, uid: u1}}
reason: Scheduled
message: assigned to n1
source: {{component: default-scheduler}}
lastTimestamp: "{_at(10)}"
""")
    assert _describe.involves(ev, pod)  # type: ignore[arg-type]
    text = _describe.describe(pod, [ev], NOW)  # type: ignore[arg-type,list-item]
    lines = text.splitlines()
    assert lines[:5] == [
        "Name:         web",
        "Namespace:    default",
        "Labels:       app=web",
        "              tier=fe",
        "Annotations:  <none>",
    ]
    assert "Status:       Pending" in lines
    assert lines[-3:] == [
        "  Type     Reason      Age    From                Message",
        "  ----     ------      ----   ----                -------",
        "  Normal   Scheduled   10s    default-scheduler   assigned to n1",
    ]


def test_statefulset_and_storage_tables() -> None:
    sts = _obj(
        f"""
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: web, creationTimestamp: "{_at(60)}"}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: nginx, image: nginx:1}}]}}
status: {{replicas: 3, readyReplicas: 2}}
"""
    )
    text = _printers.table(kinds.for_resource("sts"), [sts], NOW)  # type: ignore[list-item]
    assert text.splitlines()[1].split() == ["web", "2/3", "60s"]
    pvc = _obj(
        f"""
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: www-web-0, creationTimestamp: "{_at(5)}"}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Gi}}}}
  storageClassName: standard
  volumeName: pvc-1
status: {{phase: Bound, accessModes: [ReadWriteOnce], capacity: {{storage: 1Gi}}}}
"""
    )
    text = _printers.table(kinds.for_resource("pvc"), [pvc], NOW)  # type: ignore[list-item]
    assert text.splitlines()[0].split()[:3] == ["NAME", "STATUS", "VOLUME"]
    assert text.splitlines()[1].split() == [
        "www-web-0", "Bound", "pvc-1", "1Gi", "RWO", "standard", "5s"
    ]  # fmt: skip

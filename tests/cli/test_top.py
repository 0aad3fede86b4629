"""`k8semu top nodes|pods` as `kubectl top`: pure printer tests of the columns, units,
percentages and sorting, then the verb against a real API server (`--metric-resolution 1s`)
scraping a hollow kubelet whose pods' usage is modelled by annotations."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from k8semu.cli import _printers as printers
from k8semu.cli.verbs.top import node_rows, pod_rows
from k8semu.cluster.processes import K8semuStoreCluster
from k8semu.pb.api.v1 import core_pb2, metrics_pb2
from tests.cli.conftest import Run
from tests.kubelet.conftest import KubeletProcess, eventually, kubelets  # noqa: F401
from tests.support.apiserver import APIServerProcess, serving


def _pod(ns: str, name: str, **containers: tuple[str, str]) -> metrics_pb2.PodMetrics:
    m = metrics_pb2.PodMetrics()
    m.metadata.name, m.metadata.namespace = name, ns
    for c, (cpu, memory) in containers.items():
        m.containers.add(name=c, usage={"cpu": cpu, "memory": memory})
    return m


def test_pod_rows_units_sorting_and_containers() -> None:
    pods = [
        _pod("a", "small", main=("1234567n", "12345678")),  # 2m (rounded up), 11Mi
        _pod("a", "big", main=("250m", "64Mi"), side=("1", "1Gi")),
    ]
    assert pod_rows(pods, sort_by="", containers=False, with_namespace=False) == [
        ["big", "1250m", "1088Mi"],
        ["small", "2m", "11Mi"],
    ]
    by_memory = pod_rows(pods, sort_by="memory", containers=True, with_namespace=True)
    assert by_memory == [
        ["a", "big", "main", "250m", "64Mi"],
        ["a", "big", "side", "1000m", "1024Mi"],
        ["a", "small", "main", "2m", "11Mi"],
    ]
    text = printers.render_table(
        ["NAME", "CPU(cores)", "MEMORY(bytes)"], [["big", "1250m", "1088Mi"]], pad_last=True
    )
    # kubectl's tabwriter: three spaces after the widest cell, the last column too.
    assert text == "NAME   CPU(cores)   MEMORY(bytes)   \nbig    1250m        1088Mi          \n"


def test_node_rows_percent_of_allocatable_and_unknown() -> None:
    nodes = []
    for name in ("n1", "n2", "n3"):
        n = core_pb2.Node()
        n.metadata.name = name
        n.status.allocatable.update({"cpu": "4", "memory": "8Gi"})
        nodes.append(n)
    metrics = []
    for name, cpu, memory in (("n1", "500m", "1Gi"), ("n2", "3", "512Mi")):
        m = metrics_pb2.NodeMetrics(usage={"cpu": cpu, "memory": memory})
        m.metadata.name = name
        metrics.append(m)
    assert node_rows(metrics, nodes, "cpu") == [
        ["n2", "3000m", "75%", "512Mi", "6%"],
        ["n1", "500m", "12%", "1024Mi", "12%"],
        ["n3", "<unknown>", "<unknown>", "<unknown>", "<unknown>"],
    ]


@pytest.fixture(scope="module")
def apiserver(metrics_apiserver: APIServerProcess) -> APIServerProcess:
    return metrics_apiserver  # `k8semu` and the kubelets fixture use this one


def _manifest(ns: str, name: str, app: str, cpu: str, memory: str, node: str) -> str:
    return f"""\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels: {{app: {app}}}
  annotations: {{k8semu.io/usage-cpu: "{cpu}", k8semu.io/usage-memory: "{memory}"}}
spec:
  nodeName: {node}
  containers:
  - {{name: main, image: k8semu-test/python, command: [serve]}}
  - {{name: side, image: k8semu-test/python, command: [serve]}}
"""


@pytest.mark.slow
async def test_top_pods_and_nodes_against_a_hollow_node(
    k8semu: Run,
    kubelets: Callable[..., KubeletProcess],  # noqa: F811
    store: K8semuStoreCluster,
    tmp_path: Path,
) -> None:
    ns = f"top-{uuid.uuid4().hex[:6]}"
    k = kubelets("--runtime", "simulated", "--listen-address", "127.0.0.1:0")
    docs = [
        f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n",
        _manifest(ns, "web-a", "web", "100m", "64Mi", k.name),
        _manifest(ns, "web-b", "web", "300m", "16Mi", k.name),
        _manifest(ns, "db", "db", "50m", "512Mi", k.name),
    ]
    assert k8semu("apply", "-f", "-", stdin="---\n".join(docs)).code == 0

    def three_pods() -> str:
        r = k8semu("top", "pods", "-n", ns)
        return r.out if r.code == 0 and r.out.count("\n") == 4 else ""

    text = await eventually(three_pods, 60, "top pods lists the three pods")
    lines = text.splitlines()
    assert re.fullmatch(r"NAME {4}CPU\(cores\) {3}MEMORY\(bytes\) {3}", lines[0])
    assert [line.split()[0] for line in lines[1:]] == ["db", "web-a", "web-b"]
    assert [line.split()[2] for line in lines[1:]] == ["1024Mi", "128Mi", "32Mi"]
    assert re.fullmatch(r"\d+m", lines[1].split()[1])

    by_cpu = k8semu("top", "pods", "-n", ns, "--sort-by", "cpu", "-l", "app=web").out
    assert [line.split()[0] for line in by_cpu.splitlines()[1:]] == ["web-b", "web-a"]
    per_container = k8semu("top", "pod", "-n", ns, "--containers", "db").out.splitlines()
    assert per_container[0].split() == ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert [line.split()[:2] for line in per_container[1:]] == [["db", "main"], ["db", "side"]]
    everywhere = k8semu("top", "pods", "-A", "--sort-by", "memory").out.splitlines()
    assert everywhere[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert [ns, "db"] in [line.split()[:2] for line in everywhere[1:]]

    nodes = k8semu("top", "nodes", k.name)
    assert nodes.code == 0, nodes.err
    header, row = nodes.out.splitlines()
    assert header.split() == ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"]
    name, _, cpu_percent, memory, _ = row.split()
    # A kubelet of one node counts its own process too: at least its pods' 1184Mi.
    assert name == k.name and cpu_percent.endswith("%") and int(memory[:-2]) >= 1184

    empty = k8semu("top", "pods", "-n", ns, "-l", "app=nothing")
    assert (empty.code, empty.err) == (0, f"No resources found in {ns} namespace.\n")
    bad = k8semu("top", "pods", "--sort-by", "name")
    assert (bad.code, bad.err) == (1, "error: --sort-by accepts only cpu or memory\n")
    write = k8semu("delete", "podmetrics", "db", "-n", ns)
    assert write.code == 1 and "MethodNotAllowed" in write.err

    # An API server that serves no resource metrics: kubectl's message.
    log = tmp_path / "no-metrics.log"
    with serving(store, log, ["--metric-resolution", "0"]) as plain:
        off = k8semu("top", "nodes", "--server", plain.address, server=False)
    assert (off.code, off.err) == (1, "error: Metrics API not available\n")

"""`k8semu top nodes|pods`: resource usage from the metrics.k8s.io API, printed as `kubectl
top` prints it (columns, `250m` cores, `64Mi` bytes, percentages of a node's allocatable,
its messages: "error: Metrics API not available", "No resources found in NS namespace.").

The API server serves NodeMetrics and PodMetrics from its last scrape of the kubelets
(k8semu/apiserver/resourcemetrics.py); this only reads and prints them.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from k8semu.api.quantity import parse_quantity
from k8semu.cli import _printers as printers
from k8semu.cli._kubeconfig import Target
from k8semu.cli._resources import UsageError
from k8semu.cli.verbs._shared import client_for, err, out
from k8semu.client import Client
from k8semu.pb.api.v1 import core_pb2, metrics_pb2

METRICS_API = "metrics.k8s.io/v1beta1"
NODES = ("node", "nodes", "no")
PODS = ("pod", "pods", "po")
SORT_KEYS = ("cpu", "memory")
UNKNOWN = "<unknown>"
_MI = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Usage:
    """CPU in millicores (rounded up, as Kubernetes' MilliValue) and memory in bytes."""

    cpu_milli: int
    memory: int

    @staticmethod
    def of(usage: Mapping[str, str]) -> Usage:
        got = dict(usage)
        return Usage(
            parse_quantity(got.get("cpu", "0")).milli(),
            parse_quantity(got.get("memory", "0")).value(),
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.cpu_milli + other.cpu_milli, self.memory + other.memory)

    def cells(self) -> list[str]:
        return [f"{self.cpu_milli}m", f"{self.memory // _MI}Mi"]


def _sorted(rows: list[tuple[Usage, list[str]]], sort_by: str) -> list[list[str]]:
    if sort_by == "cpu":
        rows.sort(key=lambda r: r[0].cpu_milli, reverse=True)
    elif sort_by == "memory":
        rows.sort(key=lambda r: r[0].memory, reverse=True)
    return [cells for _, cells in rows]


def _print(header: Sequence[str], rows: Sequence[Sequence[str]], no_headers: bool) -> None:
    text = printers.render_table(header, rows, pad_last=True)
    out(text.split("\n", 1)[1] if no_headers else text, flush=True)


def _percent(used: int, available: int) -> str:
    return f"{int(used / available * 100)}%" if available > 0 else UNKNOWN


def node_rows(
    metrics: Sequence[metrics_pb2.NodeMetrics], nodes: Sequence[core_pb2.Node], sort_by: str
) -> list[list[str]]:
    """NAME, CPU(cores), CPU(%), MEMORY(bytes), MEMORY(%); nodes without metrics last, as
    `<unknown>`."""
    allocatable = {n.metadata.name: n.status.allocatable for n in nodes}
    rows = []
    for m in metrics:
        used = Usage.of(m.usage)
        alloc: Mapping[str, str] = allocatable.get(m.metadata.name, {})
        cpu_cap = parse_quantity(alloc.get("cpu", "0")).milli()
        memory_cap = parse_quantity(alloc.get("memory", "0")).value()
        cpu, memory = used.cells()
        cells = [
            m.metadata.name,
            cpu,
            _percent(used.cpu_milli, cpu_cap),
            memory,
            _percent(used.memory, memory_cap),
        ]
        rows.append((used, cells))
    measured = {m.metadata.name for m in metrics}
    missing = [[n, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN] for n in allocatable if n not in measured]
    return _sorted(rows, sort_by) + missing


def pod_rows(
    metrics: Sequence[metrics_pb2.PodMetrics],
    *,
    sort_by: str,
    containers: bool,
    with_namespace: bool,
) -> list[list[str]]:
    """[NAMESPACE] NAME CPU MEMORY, or [NAMESPACE] POD NAME CPU MEMORY per container; sorted
    by the pods' totals."""
    rows: list[tuple[Usage, list[str]]] = []
    for m in sorted(metrics, key=lambda p: (p.metadata.namespace, p.metadata.name)):
        first = [m.metadata.namespace] if with_namespace else []
        usages = [(c.name, Usage.of(c.usage)) for c in m.containers]
        total = sum((u for _, u in usages), Usage(0, 0))
        if not containers:
            rows.append((total, [*first, m.metadata.name, *total.cells()]))
            continue
        for name, used in usages:
            rows.append((total, [*first, m.metadata.name, name, *used.cells()]))
    return _sorted(rows, sort_by)


async def _metrics_served(client: Client) -> None:
    if not any(r.api_version == METRICS_API for r in await client.discovery()):
        raise UsageError("Metrics API not available")


async def _top_nodes(ns: argparse.Namespace, client: Client) -> None:
    if ns.name:
        found = [await client.get(metrics_pb2.NodeMetrics, ns.name)]
        nodes = [await client.get(core_pb2.Node, ns.name)]
    else:
        found = list((await client.list(metrics_pb2.NodeMetrics, label_selector=ns.selector)).items)
        nodes = list((await client.list(core_pb2.Node, label_selector=ns.selector)).items)
    if not found:
        raise UsageError("metrics not available yet")
    header = ("NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)")
    _print(header, node_rows(found, nodes, ns.sort_by), ns.no_headers)


async def _top_pods(ns: argparse.Namespace, target: Target, client: Client) -> None:
    namespace = "" if ns.all_namespaces else target.namespace
    if ns.name:
        found = [await client.get(metrics_pb2.PodMetrics, ns.name, namespace=namespace)]
    else:
        listed = await client.list(
            metrics_pb2.PodMetrics, namespace=namespace, label_selector=ns.selector
        )
        found = list(listed.items)
    if not found:
        err(
            "No resources found"
            if ns.all_namespaces
            else f"No resources found in {target.namespace} namespace."
        )
        return
    header = [*(["NAMESPACE"] if ns.all_namespaces else []), "NAME", "CPU(cores)", "MEMORY(bytes)"]
    if ns.containers:
        header.insert(header.index("NAME"), "POD")
    rows = pod_rows(
        found, sort_by=ns.sort_by, containers=ns.containers, with_namespace=ns.all_namespaces
    )
    _print(header, rows, ns.no_headers)


async def cmd_top(ns: argparse.Namespace, target: Target) -> None:
    resource = ns.resource.lower()
    if resource not in NODES + PODS:
        raise UsageError(f'unknown command "{ns.resource}" for "top": nodes or pods')
    if ns.sort_by and ns.sort_by not in SORT_KEYS:
        raise UsageError("--sort-by accepts only cpu or memory")
    if ns.name and ns.selector:
        raise UsageError("only one of NAME or --selector can be provided")
    if resource in NODES and (ns.containers or ns.all_namespaces):
        raise UsageError("--containers and --all-namespaces are for pods, not nodes")
    async with client_for(target, ns) as client:
        await _metrics_served(client)
        if resource in NODES:
            await _top_nodes(ns, client)
        else:
            await _top_pods(ns, target, client)

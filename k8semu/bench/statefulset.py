"""StatefulSet bring-up on a whole cluster: ``python -m k8semu.bench.statefulset``.

Starts a cluster with ``k8semu up`` (``k8semu.bench._clusterrun``: 3 store replicas, an API
server, a scheduler, a controller manager, one hollow kubelet of ``--nodes`` simulated nodes),
creates a StatefulSet of ``--replicas`` (100) OrderedReady pods (``--parallel`` for Parallel),
optionally with a volumeClaimTemplate (``--claims``: each pod's claim is provisioned by the
persistentvolume controller from a WaitForFirstConsumer class), and measures the time from
the create to status.readyReplicas == replicas (polled every 100 ms) and that time per pod
(OrderedReady's step: create -> bind -> run -> Ready seen by the controller -> next create).

Bounded by ``--timeout``; all traffic on 127.0.0.0/8.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from k8semu.bench._clusterrun import BenchCluster, ClusterLayout
from k8semu.bench._common import argument_parser, positive_float, positive_int, say
from k8semu.client import Client
from k8semu.pb.api.v1 import apps_pb2, core_pb2, storage_pb2


@dataclass
class StatefulSetBenchResult:
    replicas: int
    nodes: int
    policy: str
    claims: bool
    ready_seconds: float = 0.0
    ready: int = 0
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    timed_out: bool = False


def _stateful_set(namespace: str, replicas: int, policy: str, claims: bool) -> apps_pb2.StatefulSet:
    sts = apps_pb2.StatefulSet(api_version="apps/v1", kind="StatefulSet")
    sts.metadata.name, sts.metadata.namespace = "web", namespace
    sts.spec.replicas = replicas
    sts.spec.service_name = "web"
    sts.spec.pod_management_policy = policy
    sts.spec.selector.match_labels["app"] = "web"
    sts.spec.template.metadata.labels["app"] = "web"
    c = sts.spec.template.spec.containers.add(name="main", image="busybox")
    c.resources.requests.update({"cpu": "10m", "memory": "16Mi"})
    sts.spec.template.spec.termination_grace_period_seconds = 0
    if claims:
        c.volume_mounts.add(name="data", mount_path="/data")
        claim = sts.spec.volume_claim_templates.add()
        claim.metadata.name = "data"
        claim.spec.access_modes.append("ReadWriteOnce")
        claim.spec.resources.requests["storage"] = "1Mi"
        claim.spec.storage_class_name = f"bench-{namespace}"
    return sts


async def new_namespace(client: Client, prefix: str) -> str:
    """A fresh namespace `<prefix>-<random>` for one run; its name."""
    ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
    ns.metadata.name = f"{prefix}-{secrets.token_hex(3)}"
    await client.create(ns)
    return ns.metadata.name


async def run_workload(
    api_servers: Sequence[str], result: StatefulSetBenchResult, timeout: float
) -> None:
    async with Client(list(api_servers)) as client:
        namespace = await new_namespace(client, "bench-sts")
        if result.claims:
            sc = storage_pb2.StorageClass(api_version="storage.k8s.io/v1", kind="StorageClass")
            sc.metadata.name = f"bench-{namespace}"
            sc.provisioner = "k8semu.io/local"
            sc.volume_binding_mode = "WaitForFirstConsumer"
            await client.create(sc)
        t0 = time.monotonic()
        await client.create(_stateful_set(namespace, result.replicas, result.policy, result.claims))

        async def ready() -> int:
            sts = await client.get(apps_pb2.StatefulSet, "web", namespace=namespace)
            return sts.status.ready_replicas

        result.ready, result.timed_out = await wait_for(ready, result.replicas, t0 + timeout)
        result.ready_seconds = time.monotonic() - t0
        result.load_after = os.getloadavg()


async def wait_for(
    read: Callable[[], Awaitable[int]], wanted: int, deadline: float
) -> tuple[int, bool]:
    """Poll `read` every 100 ms until it gives `wanted` or the monotonic `deadline` passes:
    (the last value read, whether the deadline passed first)."""
    got = 0
    while time.monotonic() < deadline:
        got = await read()
        if got >= wanted:
            return got, False
        await asyncio.sleep(0.1)
    return got, True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argument_parser("python -m k8semu.bench.statefulset", __doc__.split("\n")[0])
    parser.add_argument("--replicas", type=positive_int, default=100)
    parser.add_argument("--nodes", type=positive_int, default=20, help="hollow nodes")
    parser.add_argument("--parallel", action="store_true", help="podManagementPolicy Parallel")
    parser.add_argument("--claims", action="store_true", help="a volumeClaimTemplate per pod")
    parser.add_argument("--timeout", type=positive_float, default=300.0, help="seconds")
    args = parser.parse_args(argv)
    result = StatefulSetBenchResult(
        replicas=args.replicas,
        nodes=args.nodes,
        policy="Parallel" if args.parallel else "OrderedReady",
        claims=args.claims,
    )
    layout = ClusterLayout(name="bench-sts", hollow_nodes=args.nodes, proxies=False)
    with BenchCluster(layout, say=say) as cluster:
        cluster.start()
        asyncio.run(run_workload(cluster.api_servers, result, args.timeout))
    per_pod = result.ready_seconds / max(1, result.ready) * 1e3
    print(
        f"StatefulSet of {result.replicas} ({result.policy}"
        f"{', with claims' if result.claims else ''}) on {result.nodes} hollow nodes:"
        f" {result.ready}/{result.replicas} ready in {result.ready_seconds:.1f} s"
        f"{' (timed out)' if result.timed_out else ''}, {per_pod:.0f} ms per pod;"
        f" load average after {' '.join(f'{x:.2f}' for x in result.load_after)}"
    )
    return 1 if result.timed_out else 0


if __name__ == "__main__":
    raise SystemExit(main())

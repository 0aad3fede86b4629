"""/metrics of real component processes, scraped over HTTP and read with prometheus_client's
text parser (the format Prometheus itself reads): a three-replica store, then an API server,
scheduler, controller manager, kubelet and proxy on a one-replica store, after a pod ran.
And the flag's bad input: a malformed address (exit 2) and a busy one (exit 1), both naming
the flag.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from k8semu.client import Client, NotFound
from k8semu.cluster.component import ComponentProcess
from k8semu.cluster.plan import scheduler_args
from k8semu.cluster.processes import K8semuStoreCluster, Member, free_loopback_ports
from k8semu.pb.api.v1 import core_pb2
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc
from tests.support.apiserver import APIServerProcess, running, serving
from tests.support.metrics import Samples, scrape, value
from tests.support.poll import Eventually

pytestmark = pytest.mark.slow
eventually = Eventually()


async def ascrape(port: int) -> Samples:
    return await asyncio.to_thread(scrape, port)


# ---- the store ---------------------------------------------------------------------------


class MeteredStore(K8semuStoreCluster):
    """Replicas that also serve /metrics (etcd's --listen-metrics-urls), on free ports."""

    def __init__(self, data_dir: Path, size: int) -> None:
        super().__init__(data_dir, size)
        self.metrics_ports = dict(zip(self.members, free_loopback_ports(size), strict=True))

    def command(self, member: Member) -> list[str]:
        url = f"http://127.0.0.1:{self.metrics_ports[member.name]}"
        return [*super().command(member), "--listen-metrics-urls", url]


async def test_store_replicas_report_leader_proposals_and_disk(tmp_path: Path) -> None:
    with running(MeteredStore(tmp_path / "store", 3)) as store:
        leader = store.wait_ready(timeout=60)
        stub = rpc_pb2_grpc.KVStub(store.channel(leader))
        for i in range(5):
            stub.Put(rpc_pb2.PutRequest(key=f"k{i}".encode(), value=b"v"), timeout=10)

        async def all_applied() -> dict[str, Samples] | None:
            got = {n: await ascrape(p) for n, p in store.metrics_ports.items()}
            ok = all(value(s, "etcd_server_proposals_applied_total") >= 5 for s in got.values())
            return got if ok else None

        scraped = await eventually(all_applied, what="every replica applied the puts")
        for name, samples in scraped.items():
            assert value(samples, "etcd_server_has_leader") == 1, name
            assert value(samples, "etcd_server_is_leader") == (name == leader), name
            assert value(samples, "etcd_server_proposals_committed_total") >= 5, name
            assert value(samples, "etcd_server_leader_changes_seen_total") >= 1, name
            fsyncs = "etcd_disk_wal_fsync_duration_seconds"
            assert value(samples, f"{fsyncs}_count") >= 1, name
            commits = "etcd_disk_backend_commit_duration_seconds"
            assert value(samples, f"{commits}_count") >= 1, name
            size = value(samples, "etcd_mvcc_db_total_size_in_bytes")
            assert 0 < value(samples, "etcd_mvcc_db_total_size_in_use_in_bytes") <= size
            assert value(samples, "process_resident_memory_bytes") > 0
            assert value(samples, "process_open_fds") > 0

        # A leadership transfer is a leader change every replica sees.
        before = {n: value(s, "etcd_server_leader_changes_seen_total") for n, s in scraped.items()}
        store.statuses()
        target = next(n for n in store.members if n != leader)
        maintenance = rpc_pb2_grpc.MaintenanceStub(store.channel(leader))
        request = rpc_pb2.MoveLeaderRequest(targetID=store.members[target].member_id)
        maintenance.MoveLeader(request, timeout=15)

        async def counted() -> bool:
            for name, port in store.metrics_ports.items():
                samples = await ascrape(port)
                changes = "etcd_server_leader_changes_seen"
                if value(samples, f"{changes}_total") <= before[name]:
                    return False
                if value(samples, "etcd_server_is_leader") != (name == target):
                    return False
            return True

        await eventually(counted, what="the transfer counted on every replica")


# ---- the components above the store -----------------------------------------------------


class Component(ComponentProcess):
    """`k8semu VERB` with --metrics-address on a free port."""

    def __init__(self, verb: str, args: list[str], logs: Path) -> None:
        self.metrics_port = free_loopback_ports(1)[0]
        metrics = ["--metrics-address", f"127.0.0.1:{self.metrics_port}"]
        super().__init__(verb, [*args, *metrics], logs / f"{verb}.log")
        self.component = verb


@pytest.fixture(scope="module")
def api_metrics_port() -> int:
    return free_loopback_ports(1)[0]


@pytest.fixture(scope="module")
def apiserver(
    store: K8semuStoreCluster, api_metrics_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[APIServerProcess]:
    """The module's API server (the `client` fixture's too), serving /metrics."""
    log = tmp_path_factory.mktemp("apiserver") / "apiserver.log"
    with serving(store, log, ["--metrics-address", f"127.0.0.1:{api_metrics_port}"]) as server:
        yield server


@pytest.fixture(scope="module")
def components(
    apiserver: APIServerProcess, api_metrics_port: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, int]]:
    """A scheduler, controller manager, kubelet (simulated runtime) and proxy on the API
    server, each serving /metrics: component name -> metrics port (the API server's too)."""
    logs = tmp_path_factory.mktemp("components")
    server = ["--server", apiserver.address, "--log-level", "warning"]
    node = ["--node-name", "metrics-node", "--node-ip", "127.0.0.1"]
    kubelet = [*server, *node, "--runtime", "simulated", "--root-dir", str(logs / "kubelet")]
    made = {
        "scheduler": Component("scheduler", list(scheduler_args([apiserver.address])), logs),
        "controller-manager": Component("controller-manager", server, logs),
        "kubelet": Component("kubelet", kubelet, logs),
        "proxy": Component("proxy", [*server, *node], logs),
    }
    try:
        for proc in made.values():
            proc.start()
        for proc in made.values():
            proc.wait_serving()
        ports = {name: proc.metrics_port for name, proc in made.items()}
        yield {"apiserver": api_metrics_port, **ports}
    finally:
        for proc in made.values():
            proc.close()


async def test_components_report_requests_scheduling_queues_and_pods(
    components: dict[str, int], namespace: str, client: Client
) -> None:
    pod = core_pb2.Pod()
    pod.metadata.name = "p"
    pod.metadata.namespace = namespace
    pod.spec.containers.add(name="c", image="busybox", command=["sleep", "3600"])
    await client.create(pod)

    async def running_pod() -> bool:
        got = await client.get(core_pb2.Pod, "p", namespace=namespace)
        return got.status.phase == "Running"

    await eventually(running_pod, what="the pod runs")
    ports = components

    async def observed() -> dict[str, Samples] | None:
        got = {name: await ascrape(port) for name, port in ports.items()}
        kubelet = got["kubelet"]
        started = value(kubelet, "kubelet_pod_start_duration_seconds_count")
        done = started >= 1 and value(kubelet, "kubelet_running_pods") >= 1
        return got if done else None

    scraped = await eventually(observed, what="the kubelet counted the pod start")
    for name, samples in scraped.items():
        assert value(samples, "process_cpu_seconds_total") > 0, name

    api = scraped["apiserver"]
    total = "apiserver_request_total"
    assert value(api, total, verb="POST", resource="pods", code="201") >= 1
    assert value(api, total, verb="GET", resource="pods", code="200") >= 1
    binding = {"subresource": "binding", "code": "200"}
    assert value(api, total, verb="POST", resource="pods", **binding) >= 1
    duration = "apiserver_request_duration_seconds"
    assert value(api, f"{duration}_count", verb="LIST", resource="pods") >= 1
    assert value(api, "apiserver_longrunning_requests", verb="WATCH", resource="pods") >= 1
    # A refused request is counted with its code.
    with pytest.raises(NotFound):
        await client.get(core_pb2.Pod, "missing", namespace=namespace)
    api = await ascrape(ports["apiserver"])
    assert value(api, total, verb="GET", resource="pods", code="404") >= 1

    sched = scraped["scheduler"]
    attempts = "scheduler_schedule_attempts"
    assert value(sched, f"{attempts}_total", result="scheduled") >= 1
    attempt = "scheduler_scheduling_attempt_duration_seconds"
    assert value(sched, f"{attempt}_count", result="scheduled") >= 1
    assert {s.labels["queue"] for s in sched["scheduler_pending_pods"]} == {
        "active", "backoff", "unschedulable",
    }  # fmt: skip
    assert value(sched, "leader_election_master_status", name="kube-scheduler") == 1

    cm = scraped["controller-manager"]
    assert value(cm, "leader_election_master_status", name="kube-controller-manager") == 1
    assert value(cm, "workqueue_adds_total") >= 1
    assert "workqueue_depth" in cm
    queue = "workqueue_queue_duration_seconds"
    assert value(cm, f"{queue}_count") >= 1

    # The proxy has a frontend for the kubernetes Service at least.
    proxy = scraped["proxy"]
    assert any(s.labels.get("service") == "kubernetes" for s in proxy["k8semu_proxy_connections"])


# ---- bad input ---------------------------------------------------------------------------


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k8semu", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_malformed_metrics_address_is_a_usage_error() -> None:
    res = _run("scheduler", "--server", "127.0.0.1:1", "--metrics-address", "nowhere")
    assert res.returncode == 2
    assert "--metrics-address" in res.stderr and "nowhere" in res.stderr
    res = _run("store", "--listen-metrics-urls", "https://127.0.0.1:1")
    assert res.returncode == 2
    assert "--listen-metrics-urls" in res.stderr


def test_busy_metrics_address_names_the_flag(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        client, peer = free_loopback_ports(2)
        res = _run(
            "store",
            "--data-dir", str(tmp_path / "d"),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--listen-metrics-urls", f"http://127.0.0.1:{port}",
        )  # fmt: skip
    assert res.returncode == 1
    assert "--listen-metrics-urls" in res.stderr and str(port) in res.stderr

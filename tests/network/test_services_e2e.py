"""Issue 5 end to end on a real cluster started with `k8semu up` (3 store replicas, API server,
scheduler, controller manager, 3 process-runtime workers with proxies, the DNS add-on), on
free ports and address ranges of its own:

- a web app of 3 echo pods behind a ClusterIP and a NodePort: requests from the host through
  every node's NodePort, and from a client pod through the ClusterIP and the DNS name, reach
  all three replicas;
- deleting a pod, or failing its readiness probe, loses no request of a client that retries
  once; scaling to 10 brings the new pods into rotation;
- UDP through the proxy: DNS queries to the kube-dns ClusterIP; a garbage packet there is
  survived;
- bad input: a NodePort already taken is refused naming the field; a Service selecting
  nothing closes connections cleanly.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from google.protobuf.message import Message

from k8semu.api import manifest
from k8semu.bench._clusterrun import BenchCluster, ClusterLayout
from k8semu.chaos.probe import http_get, probe_loop
from k8semu.client import Client, Invalid
from k8semu.images import _dnswire
from k8semu.pb.api.v1 import apps_pb2, core_pb2

APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: echo
          image: k8semu/echo
          ports: [{containerPort: 8080, name: http}]
          readinessProbe:
            httpGet: {path: /healthz, port: http}
            periodSeconds: 1
            failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers:
    - {name: c, image: busybox, command: ["sh", "-c", "sleep 3600"]}
"""


def _eventually(check: object, timeout: float = 60.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while True:
        if check():  # type: ignore[operator]
            return
        if time.monotonic() > end:
            raise AssertionError(f"not true within {timeout}s: {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def cluster() -> Iterator[BenchCluster]:
    layout = ClusterLayout(
        name="net", real_nodes=3, runtime="process", addons=("dns",), ready_timeout_s=180
    )
    c = BenchCluster(layout, say=lambda _line: None)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def _apply_and_wait(c: BenchCluster) -> core_pb2.Service:
    async with Client(c.api_servers) as client:
        for obj in manifest.load_all(APP, source="app"):
            await client.create(obj)
        end = time.monotonic() + 120
        while time.monotonic() < end:
            d = await client.get(apps_pb2.Deployment, "web")
            eps = await client.list(core_pb2.Endpoints, field_selector="metadata.name=web")
            ready = sum(len(s.addresses) for e in eps.items for s in e.subsets)
            client_pod = await client.get(core_pb2.Pod, "client")
            if d.status.ready_replicas == 3 and ready == 3 and client_pod.status.phase == "Running":
                return await client.get(core_pb2.Service, "web")
            await asyncio.sleep(0.3)
    raise AssertionError("the web app did not become ready")


def _pods_answering(host: str, port: int, n: int) -> set[str]:
    async def go() -> set[str]:
        seen: set[str] = set()
        for _ in range(n):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            body = (await asyncio.wait_for(reader.read(), 5)).decode(errors="replace")
            writer.close()
            seen.update(line.split()[1] for line in body.splitlines() if line.startswith("pod:"))
        return seen

    return asyncio.run(go())


def _exec(c: BenchCluster, *argv: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "k8semu", "exec", "client", "--", *argv],
        capture_output=True, text=True, timeout=60, env=c.env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def web(cluster: BenchCluster) -> core_pb2.Service:
    return _run(_apply_and_wait(cluster))  # type: ignore[return-value]


def _node_ips(c: BenchCluster) -> list[str]:
    return [comp.address.split(":")[0] for comp in c.components if comp.kind == "kubelet"]


def test_nodeport_clusterip_and_dns_name_reach_all_three_replicas(
    cluster: BenchCluster, web: core_pb2.Service
) -> None:
    node_port = web.spec.ports[0].node_port
    assert 30000 <= node_port <= 32767
    for ip in _node_ips(cluster):
        assert len(_pods_answering(ip, node_port, 12)) == 3, ip
    assert len(_pods_answering(web.spec.cluster_ip, 80, 12)) == 3
    # From inside a pod: the ClusterIP, then the DNS name through the cluster DNS.
    assert len(_pods_answering_inside(cluster, f"http://{web.spec.cluster_ip}/", 12)) == 3
    out = _exec(cluster, "nslookup", "web.default.svc.cluster.local")
    assert web.spec.cluster_ip in out
    assert len(_pods_answering_inside(cluster, "http://web/", 12)) == 3


def _pods_answering_inside(c: BenchCluster, url: str, n: int) -> set[str]:
    """The pods that answer ``n`` GETs of ``url`` made in the client pod, in one exec: one
    `k8semu exec` (a CLI process, the API server, the kubelet) per GET made this test outlast
    its 300 s on a busy host; any failed GET still fails it."""
    loop = f"i=0; while [ $i -lt {n} ]; do wget -qO- {url} || exit 1; i=$((i + 1)); done"
    out = _exec(c, "sh", "-c", loop)
    return {line.split()[1] for line in out.splitlines() if line.startswith("pod:")}


def test_udp_through_the_proxy_and_garbage_to_dns(
    cluster: BenchCluster, web: core_pb2.Service
) -> None:
    async def dns_ip() -> str:
        async with Client(cluster.api_servers) as client:
            svc = await client.get(core_pb2.Service, "kube-dns", namespace="kube-system")
            return svc.spec.cluster_ip

    server = (asyncio.run(dns_ip()), 53)
    answer = _dnswire.query_sync(server, "web.default.svc.cluster.local", 1)
    assert [rr.data for rr in answer.answers] == [web.spec.cluster_ip]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"\x00garbage\xff" * 7, server)
    answer = _dnswire.query_sync(server, "web.default.svc.cluster.local", 1)
    assert [rr.data for rr in answer.answers] == [web.spec.cluster_ip]


def test_pod_deletion_and_failed_readiness_lose_no_retried_request_and_scale_out_spreads(
    cluster: BenchCluster, web: core_pb2.Service
) -> None:
    ip = web.spec.cluster_ip

    async def scenario() -> tuple[float, int]:
        async with Client(cluster.api_servers) as client:
            probing = asyncio.create_task(probe_loop(ip, 80, duration=12, rate=20))
            await asyncio.sleep(2)
            pods = (
                await client.list(core_pb2.Pod, namespace="default", label_selector="app=web")
            ).items
            await client.delete(core_pb2.Pod, pods[0].metadata.name, namespace="default")
            await asyncio.sleep(3)
            # Fail one pod's readiness: its /healthz answers 500 from now on.
            status = await http_get(pods[1].status.pod_ip, 8080, "/fail")
            assert status == 200
            result = await probing
            await client.patch(apps_pb2.Deployment, "web", {"spec": {"replicas": 10}})
            return result.availability(), result.total

    availability, total = asyncio.run(scenario())
    assert total > 100
    assert availability == 1.0
    _eventually(
        lambda: len(_pods_answering(ip, 80, 40)) >= 9,  # 10 minus the one failing readiness
        timeout=90,
        what="the scaled-out pods answer through the ClusterIP",
    )


def _draining_app() -> list[Message]:
    """The web Deployment again as `drain` (3 replicas, grace 10 s) with a preStop sleep of
    2 s, and a ClusterIP Service for it."""
    web = next(o for o in manifest.load_all(APP, source="app") if o.DESCRIPTOR.name == "Deployment")
    assert isinstance(web, apps_pb2.Deployment)
    web.metadata.name = "drain"
    for labels in (web.spec.selector.match_labels, web.spec.template.metadata.labels):
        labels["app"] = "drain"
    web.spec.template.spec.termination_grace_period_seconds = 10
    echo = web.spec.template.spec.containers[0]
    echo.lifecycle.pre_stop.sleep.seconds = 2
    service = core_pb2.Service()
    service.metadata.name = "drain"
    service.spec.selector["app"] = "drain"
    service.spec.ports.add(port=80).target_port.str_val = "http"
    return [web, service]


def test_scale_down_with_a_pre_stop_sleep_loses_no_retried_request(
    cluster: BenchCluster, web: core_pb2.Service
) -> None:
    """Issue 12 item 7: the pods chosen for removal leave the endpoints (deletionTimestamp)
    while their preStop sleep holds SIGTERM back, so a client retrying once sees no error."""

    async def ready_endpoints(client: Client) -> int:
        eps = await client.list(core_pb2.Endpoints, field_selector="metadata.name=drain")
        return sum(len(s.addresses) for e in eps.items for s in e.subsets)

    async def scenario() -> tuple[float, int, list[core_pb2.Event]]:
        async with Client(cluster.api_servers) as client:
            for obj in _draining_app():
                await client.create(obj)
            end = time.monotonic() + 90
            while await ready_endpoints(client) < 3:
                assert time.monotonic() < end, "the drain pods did not become ready"
                await asyncio.sleep(0.3)
            ip = (await client.get(core_pb2.Service, "drain")).spec.cluster_ip
            probing = asyncio.create_task(probe_loop(ip, 80, duration=10, rate=20))
            await asyncio.sleep(2)
            await client.patch(apps_pb2.Deployment, "drain", {"spec": {"replicas": 1}})
            result = await probing
            end = time.monotonic() + 60
            while True:  # the two removed pods are gone, their hooks have run
                pods = await client.list(
                    core_pb2.Pod, namespace="default", label_selector="app=drain"
                )
                if len(pods.items) == 1:
                    break
                assert time.monotonic() < end, "the removed pods were not deleted"
                await asyncio.sleep(0.3)
            events = await client.list_all(core_pb2.Event, namespace="default")
            return result.availability(), result.total, list(events.items)

    availability, total, events = asyncio.run(scenario())
    assert total > 100
    assert availability == 1.0
    drain_events = [e for e in events if e.involved_object.name.startswith("drain-")]
    assert not [e for e in drain_events if e.reason == "FailedPreStopHook"]
    assert len({e.involved_object.name for e in drain_events if e.reason == "Killing"}) == 2


def test_bad_input_taken_nodeport_and_a_selector_matching_nothing(
    cluster: BenchCluster, web: core_pb2.Service
) -> None:
    async def go() -> str:
        async with Client(cluster.api_servers) as client:
            taken = core_pb2.Service()
            taken.metadata.name = "clash"
            taken.spec.type = "NodePort"
            taken.spec.selector["app"] = "web"
            port = taken.spec.ports.add(port=81, node_port=web.spec.ports[0].node_port)
            port.target_port.str_val = "http"
            with pytest.raises(Invalid, match=r"spec\.ports\[0\]\.nodePort.*already allocated"):
                await client.create(taken)
            empty = core_pb2.Service()
            empty.metadata.name = "nobody"
            empty.spec.selector["app"] = "nothing-has-this"
            empty.spec.ports.add(port=80)
            created = await client.create(empty)
            return created.spec.cluster_ip

    ip = asyncio.run(go())

    def closed_cleanly() -> bool:
        try:
            with socket.create_connection((ip, 80), timeout=2) as s:
                s.settimeout(5)
                s.sendall(b"GET / HTTP/1.1\r\n\r\n")
                return s.recv(100) == b""  # no endpoint: the proxy closes the connection
        except (ConnectionRefusedError, ConnectionResetError):
            return True  # not listening yet, or reset: clean too
        except TimeoutError:
            return False

    _eventually(closed_cleanly, what="a Service without endpoints closes cleanly")

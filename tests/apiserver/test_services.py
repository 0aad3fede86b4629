"""Service address allocation and the `kubernetes` Service, on two real API servers.

Both servers share one 3-replica store and small ranges (so a race fills them): cluster IPs
127.96.0.0/25, node ports 30000-30199, load-balancer IPs 127.100.0.0/28; leases of 2 s so a
killed server leaves the kubernetes Endpoints quickly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2

from k8semu import transport
from k8semu.apiserver import allocation
from k8semu.apiserver.objects import range_end
from k8semu.cluster.processes import K8semuStoreCluster
from k8semu.pb.api.v1 import coordination_pb2, core_pb2
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc
from tests.support.apiserver import APIServerProcess

from .conftest import Client

RANGE = "127.96.0.0/25"  # 126 hosts: .1 is the kubernetes Service's, .2-.126 for the rest
NODE_PORTS = (30000, 30199)
POOL = "127.100.0.0/28"
RANGES = (
    "--service-cluster-ip-range", RANGE,
    "--service-node-port-range", f"{NODE_PORTS[0]}-{NODE_PORTS[1]}",
    "--load-balancer-ip-pool", POOL,
)  # fmt: skip
FLAGS = (*RANGES, "--endpoint-lease-seconds", "2")
DEADLINE = 60.0  # a wait on real processes beside busy test workers (tests/support/poll.py)


@pytest.fixture(scope="module")
def servers(
    store: K8semuStoreCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[APIServerProcess, APIServerProcess]]:
    base: Path = tmp_path_factory.mktemp("services")
    a = APIServerProcess(store, base / "a.log", FLAGS)
    b = APIServerProcess(store, base / "b.log", FLAGS)
    try:
        a.wait_serving()
        b.wait_serving()
        yield a, b
    finally:
        a.close()
        b.close()


@pytest.fixture
async def clients(
    servers: tuple[APIServerProcess, APIServerProcess],
) -> AsyncIterator[tuple[Client, Client]]:
    async with (
        transport.channel(servers[0].address) as ca,
        transport.channel(servers[1].address) as cb,
    ):
        yield Client(ca), Client(cb)


@pytest.fixture
async def kv(store: K8semuStoreCluster) -> AsyncIterator[rpc_pb2_grpc.KVStub]:
    async with transport.channel(store.endpoints) as channel:
        yield rpc_pb2_grpc.KVStub(channel)


def _svc(name: str, type_: str = "ClusterIP", **spec: Any) -> core_pb2.Service:
    svc = core_pb2.Service()
    svc.metadata.name = name
    svc.metadata.namespace = "default"
    svc.spec.type = type_
    svc.spec.selector["app"] = name
    ports = spec.pop("ports", [{"port": 80}])
    for i, p in enumerate(ports):
        svc.spec.ports.add(name=f"p{i}", **p)
    for field, value in spec.items():
        setattr(svc.spec, field, value)
    return svc


def _unpack(packed: any_pb2.Any) -> core_pb2.Service:
    svc = core_pb2.Service()
    assert packed.Unpack(svc)
    return svc


async def _create(client: Client, svc: core_pb2.Service) -> core_pb2.Service:
    return _unpack((await client.create("services", svc)).object)


async def _allocated(kv: rpc_pb2_grpc.KVStub, prefix: bytes) -> dict[str, str]:
    resp = await kv.Range(rpc_pb2.RangeRequest(key=prefix, range_end=range_end(prefix)), timeout=10)
    return {k.key[len(prefix) :].decode(): k.value.decode() for k in resp.kvs}


async def _refused(call: Any, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == code, err.value.details()
    return err.value.details() or ""


async def test_addresses_are_allocated_by_type(
    clients: tuple[Client, Client], kv: rpc_pb2_grpc.KVStub
) -> None:
    a, _ = clients
    ip = await _create(a, _svc("alloc-ip"))
    assert ip.spec.cluster_ip.startswith("127.96.0.") and ip.spec.cluster_ip != "127.96.0.1"
    assert list(ip.spec.cluster_ips) == [ip.spec.cluster_ip]
    assert ip.spec.ports[0].node_port == 0 and not ip.status.load_balancer.ingress

    node = await _create(a, _svc("alloc-np", "NodePort", ports=[{"port": 80}, {"port": 81}]))
    ports = [p.node_port for p in node.spec.ports]
    assert all(NODE_PORTS[0] <= p <= NODE_PORTS[1] for p in ports) and len(set(ports)) == 2

    lb = await _create(a, _svc("alloc-lb", "LoadBalancer"))
    assert NODE_PORTS[0] <= lb.spec.ports[0].node_port <= NODE_PORTS[1]
    [ingress] = lb.status.load_balancer.ingress
    assert ingress.ip.startswith("127.100.0.") and ingress.ip not in ("127.100.0.0", "127.100.0.15")

    headless = await _create(a, _svc("alloc-none", cluster_ip="None"))
    assert headless.spec.cluster_ip == "None"

    ips = await _allocated(kv, allocation.CLUSTER_IP_PREFIX)
    assert ips[ip.spec.cluster_ip] == "default/alloc-ip"
    assert ips["127.96.0.1"] == "default/kubernetes"
    assert "None" not in ips
    node_ports = await _allocated(kv, allocation.NODE_PORT_PREFIX)
    assert {node_ports[str(p)] for p in ports} == {"default/alloc-np"}
    assert (await _allocated(kv, allocation.LB_IP_PREFIX))[ingress.ip] == "default/alloc-lb"
    # What GET returns is what was allocated.
    got = _unpack((await a.get("services", "alloc-lb")).object)
    assert got.status.load_balancer.ingress[0].ip == ingress.ip
    for name in ("alloc-ip", "alloc-np", "alloc-lb", "alloc-none"):
        await a.delete("services", name)


async def test_requested_taken_and_out_of_range_values(
    clients: tuple[Client, Client], kv: rpc_pb2_grpc.KVStub
) -> None:
    a, b = clients
    first = await _create(
        a,
        _svc(
            "req-a", "NodePort", cluster_ip="127.96.0.5", ports=[{"port": 80, "node_port": 30080}]
        ),
    )
    assert first.spec.cluster_ip == "127.96.0.5" and first.spec.ports[0].node_port == 30080
    before = {p: await _allocated(kv, p) for p in allocation.PREFIXES}
    # Every refusal names the Service: 'services "req-b": ' and then what follows here.
    cases = [
        (_svc("req-b", cluster_ip="127.96.0.5"),
         'spec.clusterIP: Invalid value: "127.96.0.5": provided IP is already allocated'),
        (_svc("req-b", "NodePort", ports=[{"port": 80, "node_port": 30080}]),
         "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"),
        (_svc("req-b", cluster_ip="10.0.0.5"),
         'spec.clusterIP: Invalid value: "10.0.0.5": provided IP is not in the valid range.'
         " The range of valid IPs is 127.96.0.0/25"),
        (_svc("req-b", cluster_ip="127.96.0.127"),
         'spec.clusterIP: Invalid value: "127.96.0.127": provided IP is not in the valid range.'
         " The range of valid IPs is 127.96.0.0/25"),
        (_svc("req-b", cluster_ip="bogus"),
         'spec.clusterIP: Invalid value: "bogus": must be a valid IPv4 address (e.g. 10.9.8.7)'
         ' or "None"'),
        (_svc("req-b", "NodePort", ports=[{"port": 80, "node_port": 80}]),
         "spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range."
         " The range of valid ports is 30000-30199"),
        (_svc("req-b", ports=[{"port": 80, "node_port": 30100}]),
         "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"),
        (_svc("req-b", "NodePort", cluster_ip="None"),
         "spec.clusterIP: Invalid value: \"None\": may not be set to 'None' for NodePort"
         " services"),
        (_svc("req-b", "NodePort", ports=[{"port": 80, "node_port": 30101},
                                          {"port": 81, "node_port": 30101}]),
         "spec.ports[1].nodePort: Duplicate value: 30101"),
        (_svc("req-b", "LoadBalancer", load_balancer_ip="127.100.1.1"),
         'spec.loadBalancerIP: Invalid value: "127.100.1.1": provided IP is not in the'
         " load-balancer pool 127.100.0.0/28"),
    ]  # fmt: skip
    for svc, message in cases:
        # Through the other API server: the allocation state is the store's, not a server's.
        details = await _refused(_create(b, svc), grpc.StatusCode.INVALID_ARGUMENT)
        assert details == f'services "req-b": {message}'
    # A create refused for a taken value leaves nothing behind, not even its other picks.
    mixed = _svc("req-b", "NodePort", ports=[{"port": 80}, {"port": 81, "node_port": 30080}])
    details = await _refused(_create(b, mixed), grpc.StatusCode.INVALID_ARGUMENT)
    assert "spec.ports[1].nodePort: Invalid value: 30080: provided port is already" in details
    assert {p: await _allocated(kv, p) for p in allocation.PREFIXES} == before
    await _refused(b.get("services", "req-b"), grpc.StatusCode.NOT_FOUND)
    # The LoadBalancer IP can be asked for too.
    lb = await _create(b, _svc("req-lb", "LoadBalancer", load_balancer_ip="127.100.0.9"))
    assert lb.status.load_balancer.ingress[0].ip == "127.100.0.9"
    details = await _refused(
        _create(a, _svc("req-lb2", "LoadBalancer", load_balancer_ip="127.100.0.9")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert 'spec.loadBalancerIP: Invalid value: "127.100.0.9": provided IP is already' in details
    for name in ("req-a", "req-lb"):
        await a.delete("services", name)


async def test_release_on_delete_and_on_type_change(
    clients: tuple[Client, Client], kv: rpc_pb2_grpc.KVStub
) -> None:
    a, b = clients
    svc = await _create(a, _svc("rel", "LoadBalancer", cluster_ip="127.96.0.7"))
    node_port = str(svc.spec.ports[0].node_port)
    lb_ip = svc.status.load_balancer.ingress[0].ip
    assert node_port in await _allocated(kv, allocation.NODE_PORT_PREFIX)
    # An update that does not mention the allocated values keeps them (kubectl apply).
    again = _svc("rel", "LoadBalancer")
    again.metadata.resource_version = svc.metadata.resource_version
    again.spec.selector["tier"] = "web"
    kept = _unpack((await b.update("services", again)).object)
    assert kept.spec.cluster_ip == "127.96.0.7"
    assert str(kept.spec.ports[0].node_port) == node_port
    assert kept.status.load_balancer.ingress[0].ip == lb_ip
    # A client cannot write status.loadBalancer: it is the API server's.
    kept.status.load_balancer.ingress[0].ip = "127.100.0.14"
    status = _unpack((await b.update("services", kept, status=True)).object)
    assert status.status.load_balancer.ingress[0].ip == lb_ip
    # The clusterIP stays immutable.
    status.spec.cluster_ip = "127.96.0.8"
    details = await _refused(b.update("services", status), grpc.StatusCode.INVALID_ARGUMENT)
    assert "spec.clusterIP: field is immutable" in details
    # LoadBalancer -> ClusterIP frees the node port and the ingress IP, keeps the clusterIP.
    plain = _svc("rel", "ClusterIP")
    plain.metadata.resource_version = status.metadata.resource_version
    now = _unpack((await a.update("services", plain)).object)
    assert now.spec.cluster_ip == "127.96.0.7" and now.spec.ports[0].node_port == 0
    assert not now.status.load_balancer.ingress
    assert node_port not in await _allocated(kv, allocation.NODE_PORT_PREFIX)
    assert lb_ip not in await _allocated(kv, allocation.LB_IP_PREFIX)
    # ClusterIP -> NodePort allocates a node port again.
    np = _svc("rel", "NodePort")
    np.metadata.resource_version = now.metadata.resource_version
    np_now = _unpack((await a.update("services", np)).object)
    assert np_now.spec.ports[0].node_port
    # Delete frees everything; the same clusterIP and node port can be had again.
    await b.delete("services", "rel")
    assert "127.96.0.7" not in await _allocated(kv, allocation.CLUSTER_IP_PREFIX)
    assert str(np_now.spec.ports[0].node_port) not in await _allocated(
        kv, allocation.NODE_PORT_PREFIX
    )
    reuse = await _create(
        a,
        _svc(
            "rel2",
            "NodePort",
            cluster_ip="127.96.0.7",
            ports=[{"port": 80, "node_port": np_now.spec.ports[0].node_port}],
        ),
    )
    assert reuse.spec.cluster_ip == "127.96.0.7"
    await a.delete("services", "rel2")


async def test_deleting_a_namespace_releases_its_services_addresses(
    clients: tuple[Client, Client], kv: rpc_pb2_grpc.KVStub
) -> None:
    a, _ = clients
    ns = core_pb2.Namespace()
    ns.metadata.name = "svc-ns"
    await a.create("namespaces", ns)
    obj = _svc("in-ns", "NodePort")
    obj.metadata.namespace = "svc-ns"
    svc = _unpack((await a.create("services", obj)).object)
    await a.delete("namespaces", "svc-ns")
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        if svc.spec.cluster_ip not in await _allocated(kv, allocation.CLUSTER_IP_PREFIX):
            break
        await asyncio.sleep(0.1)
    assert svc.spec.cluster_ip not in await _allocated(kv, allocation.CLUSTER_IP_PREFIX)
    assert str(svc.spec.ports[0].node_port) not in await _allocated(kv, allocation.NODE_PORT_PREFIX)


async def test_two_api_servers_racing_never_hand_out_one_value_twice(
    clients: tuple[Client, Client], kv: rpc_pb2_grpc.KVStub
) -> None:
    a, b = clients
    free = 125 - len(await _allocated(kv, allocation.CLUSTER_IP_PREFIX)) + 1  # .1 is counted
    names = [f"race-{i}" for i in range(free)]
    results = await asyncio.gather(
        *(_create(a if i % 2 else b, _svc(name, "NodePort")) for i, name in enumerate(names))
    )
    ips = [s.spec.cluster_ip for s in results]
    ports = [s.spec.ports[0].node_port for s in results]
    assert len(set(ips)) == len(ips) == free  # the whole range, no duplicates
    assert len(set(ports)) == len(ports)
    held = await _allocated(kv, allocation.CLUSTER_IP_PREFIX)
    assert {held[ip] for ip in ips} == {f"default/{n}" for n in names}
    details = await _refused(_create(a, _svc("race-full")), grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert details == (
        'services "race-full": failed to allocate a cluster IP: range 127.96.0.0/25 is full'
    )
    await asyncio.gather(*(b.delete("services", n) for n in names))
    held = await _allocated(kv, allocation.CLUSTER_IP_PREFIX)
    assert not set(ips) & set(held)


async def test_kubernetes_service_and_endpoints_list_every_api_server(
    clients: tuple[Client, Client],
    servers: tuple[APIServerProcess, APIServerProcess],
    kv: rpc_pb2_grpc.KVStub,
) -> None:
    a, _ = clients
    svc = _unpack((await a.get("services", "kubernetes", "default")).object)
    assert svc.spec.cluster_ip == "127.96.0.1" and svc.spec.type == "ClusterIP"
    [port] = svc.spec.ports
    assert (port.name, port.port, port.protocol) == ("https", 443, "TCP")
    assert port.target_port.int_val in (servers[0].port, servers[1].port)
    both = {("127.0.0.1", servers[0].port), ("127.0.0.1", servers[1].port)}
    await _wait_endpoints(a, both)
    leases = await a.list(
        "leases", "kube-system", label_selector="apiserver.kubernetes.io/identity=kube-apiserver"
    )
    holders = set()
    for item in leases.items:
        lease = coordination_pb2.Lease()
        item.Unpack(lease)
        holders.add(lease.spec.holder_identity)
    assert {f"{ip}:{p}" for ip, p in both} <= holders
    # A killed API server's lease lapses and its address leaves the Endpoints.
    servers[1].kill()
    try:
        await _wait_endpoints(a, {("127.0.0.1", servers[0].port)})
    finally:
        servers[1].start()
        servers[1].wait_serving()
    await _wait_endpoints(a, both)


async def test_a_gracefully_stopped_api_server_leaves_the_endpoints_at_once(
    clients: tuple[Client, Client],
    servers: tuple[APIServerProcess, APIServerProcess],
    store: K8semuStoreCluster,
    tmp_path: Path,
) -> None:
    a, _ = clients
    both = {("127.0.0.1", servers[0].port), ("127.0.0.1", servers[1].port)}
    # An hour-long lease: only the server's own withdrawal can take its address out in time.
    third = APIServerProcess(
        store, tmp_path / "third.log", [*RANGES, "--endpoint-lease-seconds", "3600"]
    )
    try:
        third.wait_serving()
        await _wait_endpoints(a, both | {("127.0.0.1", third.port)})
        third.close()  # SIGTERM
        await _wait_endpoints(a, both)
    finally:
        third.close()


async def test_repair_frees_an_allocation_no_service_holds(
    clients: tuple[Client, Client],
    servers: tuple[APIServerProcess, APIServerProcess],
    kv: rpc_pb2_grpc.KVStub,
) -> None:
    stray = allocation.CLUSTER_IP_PREFIX + b"127.96.0.99"
    await kv.Put(rpc_pb2.PutRequest(key=stray, value=b"ghost/gone"), timeout=10)
    servers[0].restart()
    assert "127.96.0.99" not in await _allocated(kv, allocation.CLUSTER_IP_PREFIX)


async def _wait_endpoints(client: Client, want: set[tuple[str, int]]) -> None:
    end = time.monotonic() + DEADLINE
    got: set[tuple[str, int]] = set()
    while time.monotonic() < end:
        try:
            resp = await client.get("endpoints", "kubernetes", "default")
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.1)
            continue
        ep = core_pb2.Endpoints()
        resp.object.Unpack(ep)
        got = {(addr.ip, p.port) for sub in ep.subsets for addr in sub.addresses for p in sub.ports}
        if got == want:
            assert all(p.name == "https" for sub in ep.subsets for p in sub.ports)
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"kubernetes Endpoints: want {sorted(want)}, got {sorted(got)}")

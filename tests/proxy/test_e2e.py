"""End to end: Services and Endpoints written to a real API server, served by two real
`k8semu proxy` processes (node-1 on 127.0.1.1, node-2 on 127.0.1.2) sharing ClusterIP
listeners, to backends this test runs on 127.244.x.y."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections import Counter

import pytest

from k8semu.client import AlreadyExists, Client
from k8semu.pb.api.v1 import core_pb2, meta_pb2
from k8semu.proxy import scrape
from k8semu.proxy.server import BIND_FAILED_REASON

from .conftest import (
    Addresses,
    Backends,
    KeepAlive,
    ProxyProcess,
    endpoints,
    eventually,
    http_get,
    service,
)

pytestmark = pytest.mark.slow

HTTP = [{"name": "http", "port": 80, "targetPort": 8080}]
EP_HTTP = [{"name": "http", "port": 8080}]


async def _http_service(
    client: Client,
    namespace: str,
    addresses: Addresses,
    backends: Backends,
    *,
    count: int = 3,
    extra_ips: tuple[str, ...] = (),
    type_: str = "ClusterIP",
    affinity: str = "None",
    name: str = "web",
) -> tuple[str, int, list[str], int]:
    """A Service on port 80 with `count` live HTTP backends (plus `extra_ips` listed but not
    listening); returns (clusterIP, nodePort, backend IPs, target port)."""
    ips = [addresses.pod_ip() for _ in range(count)]
    target = 8080
    for i, ip in enumerate(ips):
        await backends.http(ip, target, f"{name}-{i}")
    ports = [dict(HTTP[0])]
    node_port = 0
    if type_ != "ClusterIP":
        node_port = addresses.node_port()
        ports[0]["nodePort"] = node_port
    cluster_ip = addresses.cluster_ip()
    await client.create(service(namespace, name, cluster_ip, ports, type_=type_, affinity=affinity))
    await client.create(endpoints(namespace, name, [*ips, *extra_ips], EP_HTTP))
    return cluster_ip, node_port, ips, target


async def _served(host: str, port: int, expect: int = 1) -> None:
    seen: set[str] = set()

    async def check() -> bool:
        seen.add(await http_get(host, port))
        return len(seen) >= expect

    await eventually(check, what=f"{host}:{port} answers")


async def test_cluster_ip_reaches_every_backend_and_nodeport_round_robin(
    client: Client,
    namespace: str,
    addresses: Addresses,
    backends: Backends,
    live_proxies: list[ProxyProcess],
) -> None:
    cip, np, _, _ = await _http_service(client, namespace, addresses, backends, type_="NodePort")
    await _served(cip, 80, expect=3)  # both proxies may answer: all backends are reached
    node1 = live_proxies[0]
    await _served(node1.node_ip, np)
    # One proxy's NodePort: strict rotation over the three.
    got = [await http_get(node1.node_ip, np) for _ in range(9)]
    assert got[:3] == got[3:6] == got[6:9]
    assert sorted(got[:3]) == ["web-0", "web-1", "web-2"]
    # The metrics count what went through.
    m = await node1.metrics(namespace, "web")
    assert len(m.ports) == 1
    port = m.ports[0]
    assert port.ready_endpoints == 3
    assert port.connections_total >= 9 and port.http_requests_total >= 9
    assert port.bytes_in > 0 and port.bytes_out > 0
    assert f"{node1.node_ip}:{np}" in port.listen and f"{cip}:80" in port.listen
    # ... and per endpoint: each backend got three of the nine NodePort requests (and maybe
    # some of the ClusterIP ones), one request per connection.
    assert m.instance and len(port.endpoints) == 3
    for ep in port.endpoints:
        assert ep.port == 8080 and ep.requests_total >= 3 and ep.http_requests_total >= 3
        assert ep.connections_total == ep.requests_total and ep.bytes_out > 0
    assert sum(ep.http_requests_total for ep in port.endpoints) == port.http_requests_total


async def test_proxy_names_its_endpoint_on_its_node(
    client: Client, live_proxies: list[ProxyProcess]
) -> None:
    """Where the HPA's traffic metrics find the proxies: `k8semu.io/proxy-endpoint` on the
    Node, put there once the Node exists (the kubelet registers it, maybe later)."""
    node1 = live_proxies[0]
    with contextlib.suppress(AlreadyExists):
        await client.create(core_pb2.Node(metadata=meta_pb2.ObjectMeta(name=node1.node_name)))

    async def published() -> bool:
        node = await client.get(core_pb2.Node, node1.node_name)
        return node.metadata.annotations.get(scrape.ENDPOINT_ANNOTATION) == node1.address

    try:
        await eventually(published, what="proxy endpoint annotation")
        node = await client.get(core_pb2.Node, node1.node_name)
        m = await scrape.node_metrics(node)
        assert m.node_name == node1.node_name
    finally:  # the other tests' proxies see no Node (the tunnel dialer reads Nodes)
        await client.delete(core_pb2.Node, node1.node_name)


async def test_nodeport_on_each_node_ip_only(
    client: Client,
    namespace: str,
    addresses: Addresses,
    backends: Backends,
    live_proxies: list[ProxyProcess],
) -> None:
    _, np, _, _ = await _http_service(client, namespace, addresses, backends, type_="NodePort")
    for p in live_proxies:
        await _served(p.node_ip, np)
    with pytest.raises(OSError):
        await http_get("127.0.0.1", np)


async def test_load_balancer_ingress_ip(
    client: Client,
    namespace: str,
    addresses: Addresses,
    backends: Backends,
    live_proxies: list[ProxyProcess],
) -> None:
    await _http_service(client, namespace, addresses, backends, type_="LoadBalancer", count=1)
    svc = await client.get(core_pb2.Service, "web", namespace=namespace)
    if not svc.status.load_balancer.ingress:  # no allocator in this API server yet
        svc.status.load_balancer.ingress.add(ip=addresses.lb_ip())
        svc = await client.update_status(svc)
    await _served(svc.status.load_balancer.ingress[0].ip, 80)


async def test_udp_echo_through_cluster_ip_and_session_expiry(
    client: Client,
    namespace: str,
    addresses: Addresses,
    backends: Backends,
    live_proxies: list[ProxyProcess],
) -> None:
    ips = [addresses.pod_ip() for _ in range(2)]
    for i, ip in enumerate(ips):
        await backends.udp_echo(ip, 5353, f"dns-{i}")
    cip = addresses.cluster_ip()
    ports = [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}]
    await client.create(service(namespace, "dns", cip, ports))
    await client.create(
        endpoints(namespace, "dns", ips, [{"name": "dns", "port": 5353, "protocol": "UDP"}])
    )
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    sock.connect((cip, 53))
    try:
        sent = itertools.count()

        async def ask(timeout: float) -> bytes:
            """The endpoint's name in the echo of a datagram of its own: a reply to an earlier
            one that came late (a busy proxy) is skipped, not taken for this one's."""
            token = f"d{next(sent)}".encode()
            await loop.sock_sendall(sock, token)
            async with asyncio.timeout(timeout):
                while True:
                    name, _, echoed = (await loop.sock_recv(sock, 100)).partition(b":")
                    if echoed == token:
                        return name

        async def echo() -> bool:
            return await ask(2.0) in (b"dns-0", b"dns-1")

        await eventually(echo, what="UDP echo through the ClusterIP")
        # The same client address keeps its session (and its endpoint).
        first = await ask(5.0)
        assert await ask(5.0) == first
    finally:
        sock.close()

    async def expired() -> bool:
        total = 0
        for p in live_proxies:
            m = await p.metrics(namespace, "dns")
            total += sum(port.connections_active for port in m.ports)
        return total == 0

    await eventually(expired, what="idle UDP sessions expire")


async def test_session_affinity_client_ip(
    client: Client,
    namespace: str,
    addresses: Addresses,
    backends: Backends,
    live_proxies: list[ProxyProcess],
) -> None:
    cip, _, _, _ = await _http_service(
        client, namespace, addresses, backends, count=3, affinity="ClientIP"
    )
    await _served(cip, 80)
    for source in ("127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8"):
        # Several connections from one client IP (different source ports, so either proxy
        # may accept them): always the same backend.
        got = {await http_get(cip, 80, source=source) for _ in range(8)}
        assert len(got) == 1, f"{source} went to {got}"


async def test_cluster_ip_left_to_the_proxies_with_an_endpoint(
    client: Client,
    namespace: str,
    addresses: Addresses,
    backends: Backends,
    live_proxies: list[ProxyProcess],
) -> None:
    """Both proxies share the ClusterIP's listener and the kernel hands each connection to
    either: one without a ready endpoint must not hold it, or it closes (resets) connections
    the other would serve. CI saw that when one proxy saw a new Service's Endpoints later
    than the other; here node-2 has no endpoint for good (`internalTrafficPolicy: Local`,
    every endpoint on node-1)."""
    node1, node2 = live_proxies
    ips = [addresses.pod_ip() for _ in range(2)]
    for i, ip in enumerate(ips):
        await backends.http(ip, 8080, f"web-{i}")
    cip = addresses.cluster_ip()
    svc = service(namespace, "web", cip, HTTP)
    svc.spec.internal_traffic_policy = "Local"
    await client.create(svc)
    eps = endpoints(namespace, "web", ips, EP_HTTP)
    for addr in eps.subsets[0].addresses:
        addr.node_name = node1.node_name
    await client.create(eps)

    async def programmed() -> bool:
        m1, m2 = await node1.metrics(namespace, "web"), await node2.metrics(namespace, "web")
        return (
            bool(m1.ports and m2.ports)
            and m1.ports[0].ready_endpoints == 2
            and f"{cip}:80" in m1.ports[0].listen
        )

    await eventually(programmed, what="node-1 serves the ClusterIP, node-2 knows the Service")
    # Twenty connections (as many source ports): every one answered, none by node-2.
    got = Counter([await http_get(cip, 80) for _ in range(20)])
    assert sum(got.values()) == 20 and set(got) == {"web-0", "web-1"}
    m2 = await node2.metrics(namespace, "web")
    assert m2.ports[0].listen == [] and m2.ports[0].connections_total == 0


async def test_refused_endpoint_is_skipped(
    client: Client,
    namespace: str,
    addresses: Addresses,
    backends: Backends,
    live_proxies: list[ProxyProcess],
) -> None:
    dead = addresses.pod_ip()  # listed, nobody listens there
    _, np, _, _ = await _http_service(
        client, namespace, addresses, backends, count=2, extra_ips=(dead,), type_="NodePort"
    )
    node1 = live_proxies[0]
    await _served(node1.node_ip, np)
    got = Counter([await http_get(node1.node_ip, np) for _ in range(9)])
    assert sum(got.values()) == 9 and set(got) == {"web-0", "web-1"}
    m = await node1.metrics(namespace, "web")
    assert m.ports[0].errors >= 1  # the refused attempts


async def test_removed_endpoint_drains(
    client: Client,
    namespace: str,
    addresses: Addresses,
    backends: Backends,
    live_proxies: list[ProxyProcess],
) -> None:
    _, np, ips, _ = await _http_service(client, namespace, addresses, backends, type_="NodePort")
    node1 = live_proxies[0]
    await _served(node1.node_ip, np)
    conn = await KeepAlive.open(node1.node_ip, np)
    try:
        victim = await conn.get()
        index = int(victim.rsplit("-", 1)[1])
        keep = [ip for i, ip in enumerate(ips) if i != index]
        eps = await client.get(core_pb2.Endpoints, "web", namespace=namespace)
        del eps.subsets[:]
        eps.subsets.extend(endpoints(namespace, "web", keep, EP_HTTP).subsets)
        await client.update(eps)

        async def applied() -> bool:
            m = await node1.metrics(namespace, "web")
            return m.ports[0].ready_endpoints == 2

        await eventually(applied, what="node-1 sees two endpoints")
        # The open connection still reaches the removed endpoint ...
        assert await conn.get() == victim
        # ... new ones never do.
        got = {await http_get(node1.node_ip, np) for _ in range(6)}
        assert victim not in got and len(got) == 2
        assert await conn.get() == victim
    finally:
        conn.close()


async def test_port_taken_gives_warning_event_and_proxy_keeps_going(
    client: Client,
    namespace: str,
    addresses: Addresses,
    backends: Backends,
    live_proxies: list[ProxyProcess],
) -> None:
    node1, node2 = live_proxies
    np = addresses.node_port()
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind((node1.node_ip, np))
    squatter.listen()
    try:
        ip = addresses.pod_ip()
        await backends.http(ip, 8080, "web-0")
        cip = addresses.cluster_ip()
        ports = [{**HTTP[0], "nodePort": np}]
        await client.create(service(namespace, "web", cip, ports, type_="NodePort"))
        await client.create(endpoints(namespace, "web", [ip], EP_HTTP))

        async def warned() -> bool:
            events = await client.list_all(core_pb2.Event, namespace=namespace)
            return any(
                e.type == "Warning"
                and e.reason == BIND_FAILED_REASON
                and e.involved_object.name == "web"
                and node1.node_ip in e.message
                for e in events.items
            )

        await eventually(warned, what="a Warning event about the taken port")
        # Node-1 is alive and serves the rest; node-2 serves its own NodePort.
        await _served(cip, 80)
        await _served(node2.node_ip, np)
        m = await node1.metrics()
        assert any(str(np) in e for e in m.bind_errors)
        assert node1.running
    finally:
        squatter.close()
    # Freed: node-1 binds it on its next retry.
    await _served(node1.node_ip, np)


async def test_bad_and_half_open_clients_are_closed(
    client: Client,
    namespace: str,
    addresses: Addresses,
    backends: Backends,
    live_proxies: list[ProxyProcess],
) -> None:
    node1 = live_proxies[0]
    # No endpoint: the node's own NodePort closes the connection at once; nothing listens on
    # the ClusterIP, so it refuses (kube-proxy's REJECT).
    empty_ip, empty_np = addresses.cluster_ip(), addresses.node_port()
    ports = [{**HTTP[0], "nodePort": empty_np}]
    await client.create(service(namespace, "empty", empty_ip, ports, type_="NodePort"))
    await client.create(endpoints(namespace, "empty", [], EP_HTTP))

    async def closed_at_once() -> bool:
        r, w = await asyncio.open_connection(node1.node_ip, empty_np)
        try:
            async with asyncio.timeout(2):
                return await r.read() == b""
        finally:
            w.close()

    await eventually(closed_at_once, what="no-endpoint connections are closed")
    with pytest.raises(ConnectionRefusedError):
        _, w = await asyncio.open_connection(empty_ip, 80)
        w.close()

    # Garbage to an HTTP backend: its answer comes back, then the close.
    cip, _, _, _ = await _http_service(client, namespace, addresses, backends, count=1)
    await _served(cip, 80)
    r, w = await asyncio.open_connection(cip, 80)
    w.write(bytes(range(256)) * 64 + b"\n")
    async with asyncio.timeout(10):
        assert (await r.read()).startswith(b"HTTP/1.1 400")
    w.close()

    # Half-open: the client sends EOF, the endpoint never answers nor closes; the proxy
    # closes both after its half-open timeout.
    silent_ip = addresses.pod_ip()
    await backends.silent(silent_ip, 8080)
    silent_cip = addresses.cluster_ip()
    silent_np = addresses.node_port()
    ports = [{**HTTP[0], "nodePort": silent_np}]
    await client.create(service(namespace, "silent", silent_cip, ports, type_="NodePort"))
    await client.create(endpoints(namespace, "silent", [silent_ip], EP_HTTP))

    async def listening() -> bool:
        m = await node1.metrics(namespace, "silent")
        return bool(m.ports) and m.ports[0].ready_endpoints == 1

    await eventually(listening, what="node-1 serves the silent service")
    r, w = await asyncio.open_connection(node1.node_ip, silent_np)
    w.write(b"GET / HTTP/1.1\r\n\r\n")
    w.write_eof()
    async with asyncio.timeout(15):
        with contextlib.suppress(ConnectionError):
            assert await r.read() == b""
    w.close()

    async def none_active() -> bool:
        m = await node1.metrics(namespace, "silent")
        return m.ports[0].connections_active == 0

    await eventually(none_active, what="the half-open connection is gone")
    assert all(p.running for p in live_proxies)


async def _tunnel_answer(node: ProxyProcess, request: bytes) -> bytes:
    r, w = await asyncio.open_connection(node.node_ip, node.tunnel_port)
    w.write(request)
    async with asyncio.timeout(5):
        answer = await r.readline()
        if answer == b"OK\n":
            w.write(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
            answer += await r.read()
    w.close()
    return answer


async def test_tunnel_connect_and_garbage(
    client: Client,
    namespace: str,
    backends: Backends,
    addresses: Addresses,
    live_proxies: list[ProxyProcess],
) -> None:
    node1 = live_proxies[0]
    ip, elsewhere = addresses.pod_ip(), addresses.pod_ip()
    await backends.http(ip, 8080, "tunneled")
    await backends.http(elsewhere, 8080, "not-a-pod-of-node-1")
    # The tunnel reaches only the pod IPs of its node's pods: none yet.
    refused = await _tunnel_answer(node1, f"CONNECT {ip}:8080\n".encode())
    assert refused == f"ERR {ip} is not a pod IP of node node-1\n".encode()
    pod = core_pb2.Pod(metadata=meta_pb2.ObjectMeta(name="tunneled", namespace=namespace))
    pod.spec.node_name = node1.node_name
    pod.spec.containers.add(name="c", image="i")
    pod = await client.create(pod)
    pod.status.pod_ip = ip
    await client.update_status(pod)

    async def through() -> bool:
        answer = await _tunnel_answer(node1, f"CONNECT {ip}:8080\n".encode())
        return answer.startswith(b"OK\n") and answer.endswith(b"tunneled")

    await eventually(through, what="the tunnel reaches the pod of node-1")
    assert (await _tunnel_answer(node1, f"CONNECT {elsewhere}:8080\n".encode())).startswith(b"ERR")
    for garbage in (b"CONNECT 8.8.8.8:53\n", b"HELLO\n", b"\x00" * 300):
        r, w = await asyncio.open_connection(node1.node_ip, node1.tunnel_port)
        w.write(garbage)
        async with asyncio.timeout(5):
            assert (await r.read()).startswith(b"ERR")
        w.close()
    assert node1.running


async def test_killing_one_proxy_leaves_cluster_ip_served(
    client: Client,
    namespace: str,
    addresses: Addresses,
    backends: Backends,
    live_proxies: list[ProxyProcess],
) -> None:
    cip, _, _, _ = await _http_service(client, namespace, addresses, backends, count=2)
    await _served(cip, 80, expect=2)

    async def both_serve() -> bool:
        for p in live_proxies:
            m = await p.metrics(namespace, "web")
            if not m.ports or f"{cip}:80" not in m.ports[0].listen:
                return False
        return True

    await eventually(both_serve, what="both proxies listen on the ClusterIP")
    live_proxies[1].kill()
    got = [await http_get(cip, 80) for _ in range(20)]
    assert len(got) == 20 and set(got) == {"web-0", "web-1"}


async def test_listeners_follow_service_changes(
    client: Client,
    namespace: str,
    addresses: Addresses,
    backends: Backends,
    live_proxies: list[ProxyProcess],
) -> None:
    cip, _, _, _ = await _http_service(client, namespace, addresses, backends, count=1)
    await _served(cip, 80)
    svc = await client.get(core_pb2.Service, "web", namespace=namespace)
    svc.spec.ports[0].port = 81
    await client.update(svc)
    await _served(cip, 81)

    async def refused(port: int) -> bool:
        try:
            await http_get(cip, port)
        except ConnectionRefusedError:
            return True
        return False

    await eventually(lambda: refused(80), what="the old port is closed")
    await client.delete(core_pb2.Service, "web", namespace=namespace)
    await eventually(lambda: refused(81), what="a deleted Service's port is closed")
    assert all(p.running for p in live_proxies)


async def test_addresses_allocated_by_the_api_server(
    client: Client,
    namespace: str,
    addresses: Addresses,
    backends: Backends,
    live_proxies: list[ProxyProcess],
) -> None:
    ip = addresses.pod_ip()
    await backends.http(ip, 8080, "allocated")
    svc = service(namespace, "alloc", "", HTTP, type_="LoadBalancer")
    created = await client.create(svc)
    await client.create(endpoints(namespace, "alloc", [ip], EP_HTTP))
    spec = created.spec
    if not spec.cluster_ip or not spec.ports[0].node_port:
        pytest.skip("this API server does not allocate Service addresses")
    await _served(spec.cluster_ip, 80)
    for p in live_proxies:
        await _served(p.node_ip, spec.ports[0].node_port)

    async def lb_served() -> bool:
        svc = await client.get(core_pb2.Service, "alloc", namespace=namespace)
        ingress = svc.status.load_balancer.ingress
        return bool(ingress) and await http_get(ingress[0].ip, 80) == "allocated"

    await eventually(lb_served, what="the allocated load-balancer IP answers")


async def test_external_traffic_policy_local(
    client: Client,
    namespace: str,
    addresses: Addresses,
    backends: Backends,
    live_proxies: list[ProxyProcess],
) -> None:
    node1, node2 = live_proxies
    ips = [addresses.pod_ip(), addresses.pod_ip()]
    for ip, p in zip(ips, live_proxies, strict=True):
        await backends.http(ip, 8080, f"on-{p.node_name}")
    cip, np = addresses.cluster_ip(), addresses.node_port()
    svc = service(namespace, "web", cip, [{**HTTP[0], "nodePort": np}], type_="NodePort")
    svc.spec.external_traffic_policy = "Local"
    await client.create(svc)
    eps = endpoints(namespace, "web", ips, EP_HTTP)
    for addr, p in zip(eps.subsets[0].addresses, live_proxies, strict=True):
        addr.node_name = p.node_name
    await client.create(eps)
    await _served(cip, 80, expect=2)  # the ClusterIP reaches both
    for p in live_proxies:
        await _served(p.node_ip, np)
        got = {await http_get(p.node_ip, np) for _ in range(6)}
        assert got == {f"on-{p.node_name}"}  # a NodePort only its node's endpoint
    m = await node1.metrics(namespace, "web")
    assert sorted(port.scope for port in m.ports) == ["", "external"]
    assert node2.running

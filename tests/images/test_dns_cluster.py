"""The dns image in cluster mode against a real store and API server: Services and Endpoints
created by hand are answered, and changes show up in answers."""

from __future__ import annotations

import asyncio
import http.client
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from k8semu.client import Client
from k8semu.cluster.processes import K8semuStoreCluster
from k8semu.images import _dnswire as w
from k8semu.pb.api.v1 import core_pb2
from tests.images.conftest import ImageProcess
from tests.support.apiserver import APIServerProcess, on_new_store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[APIServerProcess]:
    base = tmp_path_factory.mktemp("cluster")
    yield from on_new_store(K8semuStoreCluster(base / "store", 1), base / "apiserver.log")


@pytest.fixture
async def client(apiserver: APIServerProcess) -> AsyncIterator[Client]:
    async with Client([apiserver.address]) as c:
        yield c


async def eventually_answers(
    server: tuple[str, int], name: str, qtype: int, check: Callable[[w.Message], bool],
    timeout: float = 20.0,
) -> w.Message:  # fmt: skip
    end = time.monotonic() + timeout
    while True:
        reply = await w.query(server, name, qtype, timeout=2)
        if check(reply):
            return reply
        if time.monotonic() > end:
            raise AssertionError(f"{name}: last reply {reply}")
        await asyncio.sleep(0.05)


def ips(reply: w.Message) -> set[str]:
    return {str(rr.data) for rr in reply.answers if rr.rtype in (w.A, w.AAAA)}


async def test_cluster_mode_answers_services_endpoints_pods_and_follows_changes(
    client: Client, apiserver: APIServerProcess, start_image: Callable[..., ImageProcess],
    tmp_path: Path,
) -> None:  # fmt: skip
    ns = core_pb2.Namespace()
    ns.metadata.name = f"dns-{uuid.uuid4().hex[:6]}"
    await client.create(ns)
    namespace = ns.metadata.name

    web = core_pb2.Service()
    web.metadata.name, web.metadata.namespace = "web", namespace
    web.spec.cluster_ip = "127.96.77.7"
    web.spec.selector["app"] = "web"
    web.spec.ports.add(name="http", port=80, protocol="TCP")
    await client.create(web)

    host, port = apiserver.address.rsplit(":", 1)
    dns = start_image(
        "dns", "--kubernetes", "cluster.local", "--listen", "127.0.0.46:0",
        "--ready", "127.0.0.46:0", env={"KUBERNETES_SERVICE_HOST": host,
                                        "KUBERNETES_SERVICE_PORT": port},
        cwd=tmp_path,
    )  # fmt: skip
    server = dns.address()

    web_name = f"web.{namespace}.svc.cluster.local"
    reply = await eventually_answers(server, web_name, w.A, lambda r: r.rcode == w.NOERROR)
    assert ips(reply) == {"127.96.77.7"}
    assert all(rr.ttl == 5 for rr in reply.answers)
    srv = await w.query(server, f"_http._tcp.{web_name}", w.SRV)
    assert [rr.data for rr in srv.answers] == [(0, 100, 80, web_name)]
    assert (await w.query(server, f"_grpc._tcp.{web_name}", w.SRV)).rcode == w.NXDOMAIN
    missing = await w.query(server, f"nope.{namespace}.svc.cluster.local", w.A)
    assert missing.rcode == w.NXDOMAIN
    pod = await w.query(server, f"127-244-3-9.{namespace}.pod.cluster.local", w.A)
    assert ips(pod) == {"127.244.3.9"}
    assert (await w.query(server, "example.com", w.A)).rcode == w.REFUSED
    ready = dns.wait_line(r"health on (\S+):(\d+)")
    conn = http.client.HTTPConnection(ready.group(1), int(ready.group(2)), timeout=5)
    conn.request("GET", "/ready")
    assert conn.getresponse().status == 200  # the informers have synced
    conn.close()

    # a headless service answers with its ready endpoints, and follows their changes
    db = core_pb2.Service()
    db.metadata.name, db.metadata.namespace = "db", namespace
    db.spec.cluster_ip = "None"
    db.spec.ports.add(name="pg", port=5432, protocol="TCP")
    await client.create(db)
    eps = core_pb2.Endpoints()
    eps.metadata.name, eps.metadata.namespace = "db", namespace
    subset = eps.subsets.add()
    subset.addresses.add(ip="127.244.1.5", hostname="db-0")
    subset.addresses.add(ip="127.244.1.6")
    subset.not_ready_addresses.add(ip="127.244.1.7")
    subset.ports.add(name="pg", port=5432, protocol="TCP")
    eps = await client.create(eps)
    db_name = f"db.{namespace}.svc.cluster.local"
    reply = await eventually_answers(server, db_name, w.A, lambda r: bool(r.answers))
    assert ips(reply) == {"127.244.1.5", "127.244.1.6"}
    assert ips(await w.query(server, f"db-0.{db_name}", w.A)) == {"127.244.1.5"}
    assert ips(await w.query(server, f"127-244-1-6.{db_name}", w.A)) == {"127.244.1.6"}
    srv = await w.query(server, f"_pg._tcp.{db_name}", w.SRV)
    assert {rr.data[3] for rr in srv.answers} == {  # type: ignore[index]
        f"db-0.{db_name}", f"127-244-1-6.{db_name}",
    }  # fmt: skip

    eps.subsets[0].addresses.add(ip="127.244.1.8")
    await client.update(eps)
    await eventually_answers(
        server, db_name, w.A, lambda r: ips(r) == {"127.244.1.5", "127.244.1.6", "127.244.1.8"}
    )
    await client.delete(core_pb2.Service, "web", namespace=namespace)
    await eventually_answers(server, web_name, w.A, lambda r: r.rcode == w.NXDOMAIN)
    assert dns.terminate() == 0

"""Endpoints controller, sample-controller style (caches filled by hand, `reconcile` called,
API calls compared), and end to end against a real store and API server: Endpoints follow a
pod becoming ready and not ready."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

import pytest
from google.protobuf.message import Message

from k8semu.client import Client, Informer, NotFound, SharedInformers
from k8semu.client.events import EventRecorder
from k8semu.controllers.context import ControllerContext
from k8semu.controllers.endpoints import HEADLESS_LABEL, EndpointsController, resolve_port
from k8semu.pb.api.v1 import core_pb2, meta_pb2
from tests.controllers.conftest import ControllerHarness
from tests.support.poll import eventually


def make_service(
    name: str = "web",
    selector: dict[str, str] | None = None,
    ports: list[tuple[str, int, int | str]] | None = None,
    cluster_ip: str = "127.96.0.10",
) -> core_pb2.Service:
    svc = core_pb2.Service()
    svc.metadata.name = name
    svc.metadata.namespace = "default"
    svc.metadata.labels["team"] = "a"
    svc.spec.selector.update({"app": "web"} if selector is None else selector)
    svc.spec.cluster_ip = cluster_ip
    for port_name, port, target in [("http", 80, "http")] if ports is None else ports:
        p = svc.spec.ports.add(name=port_name, port=port, protocol="TCP")
        if isinstance(target, int):
            p.target_port.int_val = target
        else:
            p.target_port.str_val = target
    return svc


def make_pod(
    name: str,
    ip: str = "",
    *,
    ready: bool = True,
    labels: dict[str, str] | None = None,
    http_port: int = 8080,
    node: str = "n1",
) -> core_pb2.Pod:
    pod = core_pb2.Pod()
    pod.metadata.name = name
    pod.metadata.namespace = "default"
    pod.metadata.uid = f"uid-{name}"
    pod.metadata.labels.update({"app": "web"} if labels is None else labels)
    pod.spec.node_name = node
    pod.spec.containers.add(name="c", image="nginx").ports.add(
        name="http", container_port=http_port, protocol="TCP"
    )
    pod.status.phase = "Running"
    pod.status.pod_ip = ip
    pod.status.conditions.add(type="Ready", status="True" if ready else "False")
    return pod


class Harness(ControllerHarness):
    def __init__(self) -> None:
        super().__init__()
        self.ctrl = EndpointsController(self.ctx)

    def add(self, *objs: Message) -> None:
        self.client.seed(*objs)
        self.refresh()

    def refresh(self, *informers: Informer[Any]) -> None:
        """The caches catch up with what was written (as the informers' watches would)."""
        ctrl = self.ctrl
        super().refresh(*(informers or (ctrl.services, ctrl.pods, ctrl.endpoints)))

    def endpoints(self, name: str = "web") -> core_pb2.Endpoints:
        return cast(core_pb2.Endpoints, self.client.objects[("endpoints", "default", name)])


def summary(ep: core_pb2.Endpoints) -> list[tuple[list[str], list[str], list[tuple[str, int]]]]:
    return [
        (
            [a.ip for a in s.addresses],
            [a.ip for a in s.not_ready_addresses],
            [(p.name, p.port) for p in s.ports],
        )
        for s in ep.subsets
    ]


async def test_ready_and_not_ready_pods_and_the_ones_left_out() -> None:
    h = Harness()
    terminating = make_pod("terminating", "127.244.0.5")
    terminating.metadata.deletion_timestamp.GetCurrentTime()
    finished = make_pod("finished", "127.244.0.6")
    finished.status.phase = "Succeeded"
    h.add(
        make_service(),
        make_pod("ready", "127.244.0.2"),
        make_pod("starting", "127.244.0.3", ready=False),
        make_pod("no-ip"),
        make_pod("other-app", "127.244.0.4", labels={"app": "db"}),
        terminating,
        finished,
    )
    await h.ctrl.reconcile("default/web")
    assert h.client.verbs() == ["create endpoints default/web"]
    ep = h.endpoints()
    assert summary(ep) == [(["127.244.0.2"], ["127.244.0.3"], [("http", 8080)])]
    addr = ep.subsets[0].addresses[0]
    assert addr.node_name == "n1"
    assert addr.target_ref == meta_pb2.ObjectReference(
        kind="Pod", namespace="default", name="ready", uid="uid-ready"
    )
    assert dict(ep.metadata.labels) == {"team": "a"}

    # Nothing changed: nothing written.
    h.refresh()
    h.client.clear()
    await h.ctrl.reconcile("default/web")
    assert h.client.verbs() == []

    # The starting pod becomes ready: one update.
    h.add(make_pod("starting", "127.244.0.3", ready=True))
    h.client.clear()
    await h.ctrl.reconcile("default/web")
    assert h.client.verbs() == ["update endpoints default/web"]
    assert summary(h.endpoints()) == [(["127.244.0.2", "127.244.0.3"], [], [("http", 8080)])]


async def test_a_named_port_with_different_numbers_makes_two_subsets() -> None:
    h = Harness()
    h.add(
        make_service(ports=[("http", 80, "http"), ("metrics", 9000, 9090)]),
        make_pod("old", "127.244.0.2", http_port=8080),
        make_pod("new", "127.244.1.2", http_port=8081),
    )
    await h.ctrl.reconcile("default/web")
    assert summary(h.endpoints()) == [
        (["127.244.0.2"], [], [("http", 8080), ("metrics", 9090)]),
        (["127.244.1.2"], [], [("http", 8081), ("metrics", 9090)]),
    ]


def test_resolve_port() -> None:
    pod = make_pod("p", http_port=8080)
    svc = make_service(ports=[("a", 80, "http"), ("b", 81, "missing"), ("c", 82, 9000)])
    assert [resolve_port(pod, p) for p in svc.spec.ports] == [8080, None, 9000]
    udp = core_pb2.ServicePort(name="dns", port=53, protocol="UDP")
    udp.target_port.str_val = "http"
    assert resolve_port(pod, udp) is None  # the container's port "http" is TCP
    unset = core_pb2.ServicePort(name="x", port=7000)
    assert resolve_port(pod, unset) == 7000


async def test_a_pod_without_the_named_port_is_left_out_of_that_port() -> None:
    h = Harness()
    odd = make_pod("odd", "127.244.0.9")
    odd.spec.containers[0].ports[0].name = "web"
    h.add(make_service(), make_pod("ok", "127.244.0.2"), odd)
    await h.ctrl.reconcile("default/web")
    assert summary(h.endpoints()) == [(["127.244.0.2"], [], [("http", 8080)])]


async def test_headless_service_without_ports_lists_addresses_and_hostnames() -> None:
    h = Harness()
    pod = make_pod("db-0", "127.244.0.7")
    pod.spec.hostname = "db-0"
    pod.spec.subdomain = "db"
    h.add(make_service("db", cluster_ip="None", ports=[]), pod)
    await h.ctrl.reconcile("default/db")
    ep = h.endpoints("db")
    assert summary(ep) == [(["127.244.0.7"], [], [])]
    assert ep.subsets[0].addresses[0].hostname == "db-0"
    assert dict(ep.metadata.labels) == {"team": "a", HEADLESS_LABEL: ""}


async def test_a_service_without_ports_that_is_not_headless_gets_no_addresses() -> None:
    h = Harness()
    h.add(make_service(ports=[]), make_pod("p", "127.244.0.2"))
    await h.ctrl.reconcile("default/web")
    assert list(h.endpoints().subsets) == []


async def test_services_without_a_selector_are_left_to_the_user() -> None:
    h = Harness()
    user = core_pb2.Endpoints()
    user.metadata.name = "external"
    user.metadata.namespace = "default"
    user.subsets.add().addresses.add(ip="127.0.0.1")
    h.add(make_service("external", selector={}), user, make_pod("p", "127.244.0.2"))
    await h.ctrl.reconcile("default/external")
    assert h.client.verbs() == []


async def test_endpoints_go_with_their_service() -> None:
    h = Harness()
    h.add(make_service(), make_pod("p", "127.244.0.2"))
    await h.ctrl.reconcile("default/web")
    del h.client.objects[("services", "default", "web")]
    h.refresh()
    h.client.clear()
    await h.ctrl.reconcile("default/web")
    assert h.client.verbs() == ["delete endpoints default/web"]
    h.refresh()
    h.client.clear()
    await h.ctrl.reconcile("default/web")  # nothing left to do
    assert h.client.verbs() == []


async def test_an_endpoints_the_cache_has_not_seen_is_updated_not_recreated() -> None:
    h = Harness()
    h.add(make_service(), make_pod("p", "127.244.0.2"))
    stale = core_pb2.Endpoints()
    stale.metadata.name = "web"
    stale.metadata.namespace = "default"
    h.client.seed(stale)  # in the API server, not yet in the cache
    await h.ctrl.reconcile("default/web")
    assert h.client.verbs() == ["create endpoints default/web", "update endpoints default/web"]
    assert summary(h.endpoints()) == [(["127.244.0.2"], [], [("http", 8080)])]


def test_pod_events_enqueue_the_services_selecting_the_pod_before_and_after() -> None:
    h = Harness()
    h.add(
        make_service("web"),
        make_service("db", selector={"app": "db"}),
        make_service("all", selector={"tier": "x"}),
    )
    old = make_pod("p", "127.244.0.2")
    old.metadata.resource_version = "1"
    new = make_pod("p", "127.244.0.2", labels={"app": "db"})
    new.metadata.resource_version = "2"
    h.ctrl._pod_changed(old, new)
    assert sorted(h.ctrl.queue._queue) == ["default/db", "default/web"]


# ---- end to end -------------------------------------------------------------------------------


async def test_end_to_end_endpoints_follow_pod_readiness(client: Client) -> None:
    ns = core_pb2.Namespace()
    ns.metadata.name = f"ep-{uuid.uuid4().hex[:6]}"
    await client.create(ns)
    namespace = ns.metadata.name
    svc = make_service()
    svc.metadata.namespace = namespace
    svc.spec.cluster_ip = ""
    await client.create(svc)
    pod = make_pod("web-1", "")
    pod.metadata.namespace = namespace
    pod.metadata.uid = ""
    pod.status.Clear()
    pod = await client.create(pod)

    informers = SharedInformers(client)
    recorder = EventRecorder(client, "controller-manager")
    ctrl = EndpointsController(
        ControllerContext(client=client, informers=informers, recorder=recorder)
    )
    informers.start()
    runner = asyncio.get_running_loop().create_task(ctrl.run())

    async def endpoints_are(expected: Any) -> bool:
        try:
            ep = await client.get(core_pb2.Endpoints, "web", namespace=namespace)
        except NotFound:
            return False
        return summary(ep) == expected

    async def set_status(ready: bool) -> None:
        current = await client.get(core_pb2.Pod, "web-1", namespace=namespace)
        current.status.phase = "Running"
        current.status.pod_ip = "127.244.0.2"
        del current.status.conditions[:]
        current.status.conditions.add(type="Ready", status="True" if ready else "False")
        await client.update_status(current)

    try:
        await eventually(lambda: endpoints_are([]), what="empty endpoints for a pod without IP")
        await set_status(ready=False)
        await eventually(
            lambda: endpoints_are([([], ["127.244.0.2"], [("http", 8080)])]),
            what="the not-ready pod in notReadyAddresses",
        )
        await set_status(ready=True)
        await eventually(
            lambda: endpoints_are([(["127.244.0.2"], [], [("http", 8080)])]),
            what="the ready pod in addresses",
        )
        await set_status(ready=False)
        await eventually(
            lambda: endpoints_are([([], ["127.244.0.2"], [("http", 8080)])]),
            what="the pod back in notReadyAddresses",
        )
        await client.delete(core_pb2.Service, "web", namespace=namespace)

        async def endpoints_gone() -> bool:
            try:
                await client.get(core_pb2.Endpoints, "web", namespace=namespace)
            except NotFound:
                return True
            return False

        await eventually(endpoints_gone, what="the endpoints deleted with the service")
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        await informers.stop()

"""Node IPAM controller, sample-controller style: Nodes in the cache, `reconcile` called, the
recorded updates and events compared."""

from __future__ import annotations

from typing import Any, cast

import pytest

from k8semu.client import Conflict, Informer
from k8semu.controllers.context import ControllerManagerConfig
from k8semu.controllers.nodeipam import CIDRSet, NodeIPAMController
from k8semu.pb.api.v1 import core_pb2
from tests.controllers.conftest import ControllerHarness


def make_node(name: str, pod_cidr: str = "", created: int = 0) -> core_pb2.Node:
    node = core_pb2.Node()
    node.metadata.name = name
    node.metadata.creation_timestamp.FromSeconds(1_700_000_000 + created)
    if pod_cidr:
        node.spec.pod_cidr = pod_cidr
        node.spec.pod_cidrs.append(pod_cidr)
    return node


class Harness(ControllerHarness):
    def __init__(self, config: ControllerManagerConfig | None = None) -> None:
        super().__init__(config)
        self.ctrl = NodeIPAMController(self.ctx)

    def add(self, *nodes: core_pb2.Node) -> None:
        self.client.seed(*nodes)
        self.refresh()

    def delete(self, name: str) -> None:
        del self.client.objects[("nodes", "", name)]
        self.refresh()

    def refresh(self, *informers: Informer[Any]) -> None:
        super().refresh(*(informers or (self.ctrl.nodes,)))

    def cidr(self, name: str) -> tuple[str, list[str]]:
        node = cast(core_pb2.Node, self.client.objects[("nodes", "", name)])
        return node.spec.pod_cidr, list(node.spec.pod_cidrs)

    async def reconcile(self, *names: str) -> None:
        for name in names:
            await self.ctrl.reconcile(name)
        self.refresh()


async def test_nodes_get_consecutive_subnets_of_the_cluster_cidr() -> None:
    h = Harness()
    h.add(make_node("a"), make_node("b"), make_node("c"))
    await h.reconcile("a", "b", "c")
    assert h.client.verbs() == ["update nodes a", "update nodes b", "update nodes c"]
    assert h.cidr("a") == ("127.244.0.0/24", ["127.244.0.0/24"])
    assert h.cidr("b") == ("127.244.1.0/24", ["127.244.1.0/24"])
    assert h.cidr("c") == ("127.244.2.0/24", ["127.244.2.0/24"])
    # Level-triggered: a second pass writes nothing.
    h.client.clear()
    await h.reconcile("a", "b", "c")
    assert h.client.verbs() == []


async def test_a_restart_rebuilds_from_the_nodes_and_never_hands_out_a_subnet_twice() -> None:
    h = Harness()
    h.add(make_node("a", "127.244.0.0/24"), make_node("b", "127.244.2.0/24"), make_node("new"))
    await h.reconcile("new", "a", "b")
    assert h.client.verbs() == ["update nodes new"]
    assert h.cidr("new")[0] == "127.244.1.0/24"


async def test_released_subnets_come_back_only_after_the_others() -> None:
    h = Harness()
    h.add(make_node("a"), make_node("b"))
    await h.reconcile("a", "b")
    h.delete("a")
    await h.reconcile("a")  # the delete event
    assert "a" not in h.ctrl.cidrs.by_node
    h.add(make_node("c"))
    await h.reconcile("c")
    assert h.cidr("c")[0] == "127.244.2.0/24"


async def test_a_duplicate_subnet_stays_with_the_older_node_and_the_other_is_moved() -> None:
    h = Harness()
    h.add(make_node("young", "127.244.5.0/24", created=10), make_node("old", "127.244.5.0/24"))
    await h.reconcile("young", "old")
    assert h.client.verbs() == ["update nodes young"]
    assert h.cidr("old")[0] == "127.244.5.0/24"
    assert h.cidr("young")[0] == "127.244.0.0/24"
    assert h.recorder.events == [
        (
            "PodCIDRConflict",
            "young",
            "Node young: spec.podCIDR 127.244.5.0/24 is already assigned to node old;"
            " assigning another",
        )
    ]


async def test_a_node_given_a_taken_subnet_later_is_moved() -> None:
    h = Harness()
    h.add(make_node("a"))
    await h.reconcile("a")
    h.add(make_node("intruder", "127.244.0.0/24", created=5))
    await h.reconcile("intruder", "a")
    assert h.cidr("a")[0] == "127.244.0.0/24"
    assert h.cidr("intruder")[0] == "127.244.1.0/24"


async def test_bad_pod_cidrs() -> None:
    h = Harness()
    h.add(make_node("garbage", "not-a-cidr"), make_node("foreign", "10.0.0.0/24"))
    await h.reconcile("garbage", "foreign")
    assert h.client.verbs() == ["update nodes garbage"]
    assert h.cidr("garbage")[0] == "127.244.0.0/24"
    assert h.cidr("foreign")[0] == "10.0.0.0/24"
    assert [e[0] for e in h.recorder.events] == ["InvalidPodCIDR", "PodCIDROutOfRange"]
    assert "spec.podCIDR: invalid CIDR 'not-a-cidr'" in h.recorder.events[0][2]
    # Said once, not on every resync.
    await h.reconcile("foreign")
    assert len(h.recorder.events) == 2


async def test_running_out_of_subnets_and_getting_one_when_a_node_goes() -> None:
    h = Harness(ControllerManagerConfig(cluster_cidr="127.244.0.0/23", node_cidr_mask_size=24))
    h.add(make_node("a"), make_node("b"), make_node("c"))
    await h.reconcile("a", "b", "c")
    assert h.client.verbs() == ["update nodes a", "update nodes b"]
    assert [e[:2] for e in h.recorder.events] == [("CIDRNotAvailable", "c")]
    h.delete("a")
    await h.ctrl.reconcile("a")
    assert "c" in h.ctrl.queue._queue  # woken by the release
    await h.reconcile("c")
    assert h.cidr("c")[0] == "127.244.0.0/24"


async def test_a_failed_write_keeps_the_reservation_for_the_retry() -> None:
    h = Harness()
    h.add(make_node("a"), make_node("b"))
    h.client.fail_on[("update", "nodes")] = Conflict("stale")
    with pytest.raises(Conflict):
        await h.ctrl.reconcile("a")
    del h.client.fail_on[("update", "nodes")]
    await h.reconcile("b", "a")
    assert h.cidr("a")[0] == "127.244.0.0/24"
    assert h.cidr("b")[0] == "127.244.1.0/24"


async def test_a_pod_cidr_without_pod_cidrs_is_completed() -> None:
    h = Harness()
    node = make_node("a")
    node.spec.pod_cidr = "127.244.7.0/24"
    h.add(node)
    await h.reconcile("a")
    assert h.cidr("a") == ("127.244.7.0/24", ["127.244.7.0/24"])


def test_cidr_set() -> None:
    s = CIDRSet("127.244.0.0/16", 24)
    assert s.size == 256
    assert s.subnet(255) == "127.244.255.0/24"
    assert s.index_of("127.244.3.0/24") == 3
    assert s.index_of("127.244.3.1/24") is None  # host bits
    assert s.index_of("127.244.3.0/25") is None  # other size
    assert s.index_of("127.245.0.0/24") is None  # outside
    assert s.index_of("::1/128") is None
    with pytest.raises(ValueError, match="cluster_cidr: invalid CIDR"):
        CIDRSet("127.244.0.1/16", 24)
    with pytest.raises(ValueError, match="node_cidr_mask_size"):
        CIDRSet("127.244.0.0/16", 8)

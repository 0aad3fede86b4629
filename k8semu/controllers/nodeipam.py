"""Node IPAM: one pod subnet per Node, carved from the cluster CIDR (Kubernetes' range
allocator). design decision 7: the default cluster CIDR 127.244.0.0/16 with a /24 per node,
so node N's pods live in 127.244.N.0/24 on loopback.

- A Node without spec.podCIDR gets the next free subnet of `node_cidr_mask_size` (spec.podCIDR
  and spec.podCIDRs), written with an update on the cached resourceVersion (compare-and-swap).
  "Next" rotates like Kubernetes' CIDR set: a released subnet is handed out again only after
  the others, so a new node does not inherit addresses an old node's pods may still hold.
- Before the first allocation the allocator is rebuilt from every Node's spec.podCIDR, so a
  restarted or newly elected controller manager never hands out a subnet twice. A subnet
  claimed by two Nodes (bad input) stays with the older Node (creationTimestamp, then name);
  the other gets a Warning event PodCIDRConflict and a fresh subnet.
- A podCIDR that is not a CIDR gets a Warning event (naming the node and field) and is
  replaced; a valid one outside the cluster CIDR or of another size is the user's choice: a
  Warning event, and it is left alone.
- A deleted Node's subnet is released.
- No subnet left: a Warning event CIDRNotAvailable; the node is retried when one is released.

Owns spec.podCIDR/podCIDRs of Nodes; nothing else of a Node.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from k8semu.client import Client, Informer, object_key
from k8semu.client.controller import run_workers
from k8semu.client.events import WARNING, EventRecorder
from k8semu.client.workqueue import WorkQueue
from k8semu.controllers._pods import copy_of
from k8semu.controllers.context import ControllerContext
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2

log = get_logger(__name__)


class CIDRSet:
    """The subnets of size `mask` in `cluster`, by index; which are taken, and by whom.

    Invariant: `owner[i] == name` exactly when `by_node[name] == i`.
    """

    def __init__(self, cluster: str, mask: int) -> None:
        try:
            net = ipaddress.ip_network(cluster, strict=True)
        except ValueError as exc:
            raise ValueError(f"cluster_cidr: invalid CIDR {cluster!r}: {exc}") from exc
        if not isinstance(net, ipaddress.IPv4Network):
            raise ValueError(f"cluster_cidr: only IPv4 is supported, got {cluster}")
        self.cluster: ipaddress.IPv4Network = net
        if mask < self.cluster.prefixlen:
            raise ValueError(
                f"node_cidr_mask_size: /{mask} is larger than the cluster CIDR {cluster}"
            )
        self.mask = mask
        self.size = 1 << (mask - self.cluster.prefixlen)
        self._step = 1 << (32 - mask)
        self.owner: dict[int, str] = {}
        self.by_node: dict[str, int] = {}
        self._next = 0

    def subnet(self, index: int) -> str:
        base = int(self.cluster.network_address) + index * self._step
        return f"{ipaddress.IPv4Address(base)}/{self.mask}"

    def index_of(self, cidr: str) -> int | None:
        """The index of `cidr` when it is exactly one of our subnets, else None."""
        try:
            net = ipaddress.ip_network(cidr, strict=True)
        except ValueError:
            return None
        if not isinstance(net, ipaddress.IPv4Network) or net.prefixlen != self.mask:
            return None
        if not net.subnet_of(self.cluster):
            return None
        return (int(net.network_address) - int(self.cluster.network_address)) // self._step

    def occupy(self, index: int, node: str) -> bool:
        """Give `index` to `node`; False when another node has it."""
        holder = self.owner.get(index)
        if holder is not None and holder != node:
            return False
        self.release(node)
        self.owner[index] = node
        self.by_node[node] = index
        return True

    def allocate(self, node: str) -> int | None:
        """The node's subnet, or the next free one (rotating), or None when all are taken."""
        if node in self.by_node:
            return self.by_node[node]
        for offset in range(self.size):
            index = (self._next + offset) % self.size
            if index not in self.owner:
                self._next = (index + 1) % self.size
                self.occupy(index, node)
                return index
        return None

    def release(self, node: str) -> int | None:
        index = self.by_node.pop(node, None)
        if index is not None:
            del self.owner[index]
        return index

    def __len__(self) -> int:
        return len(self.owner)


@dataclass(frozen=True, slots=True)
class _Claim:
    node: core_pb2.Node
    index: int


def _age(node: core_pb2.Node) -> tuple[int, str]:
    return (node.metadata.creation_timestamp.ToNanoseconds(), node.metadata.name)


def pod_cidr_of(node: core_pb2.Node) -> str:
    return node.spec.pod_cidr or (node.spec.pod_cidrs[0] if node.spec.pod_cidrs else "")


class NodeIPAMController:
    """See the module docstring. Keys are node names."""

    name = "nodeipam"

    def __init__(self, ctx: ControllerContext) -> None:
        self._client: Client = ctx.client
        self._recorder: EventRecorder = ctx.recorder
        self._workers = ctx.config.workers
        self.cidrs = CIDRSet(ctx.config.cluster_cidr, ctx.config.node_cidr_mask_size)
        self.nodes: Informer[core_pb2.Node] = ctx.informers.informer(core_pb2.Node)
        self.queue: WorkQueue[str] = WorkQueue(name="nodeipam")
        self._rebuilt = False
        self._starved: set[str] = set()  # nodes waiting for a subnet to be released
        self._warned: dict[str, str] = {}  # node -> podCIDR we already complained about
        self.nodes.add_event_handler(
            on_add=lambda n: self.queue.add(object_key(n)),
            on_update=lambda o, n: self._node_updated(o, n),
            on_delete=lambda n: self.queue.add(object_key(n)),
        )

    def _node_updated(self, old: core_pb2.Node, new: core_pb2.Node) -> None:
        if old is new or pod_cidr_of(old) != pod_cidr_of(new) or not pod_cidr_of(new):
            self.queue.add(object_key(new))

    async def run(self) -> None:
        await self.nodes.wait_synced()
        self.rebuild()
        log.info("controller started", controller=self.name, workers=self._workers)
        await run_workers(self.queue, self.reconcile, self._workers, name=self.name)

    def rebuild(self) -> None:
        """Take in every subnet the cached Nodes already hold; older nodes win duplicates."""
        claims: list[_Claim] = []
        for node in self.nodes.cache.list():
            index = self.cidrs.index_of(pod_cidr_of(node))
            if index is not None:
                claims.append(_Claim(node, index))
        for claim in sorted(claims, key=lambda c: _age(c.node)):
            self.cidrs.occupy(claim.index, claim.node.metadata.name)  # a loser is reconciled
        self._rebuilt = True
        log.info("node CIDRs rebuilt", allocated=len(self.cidrs), subnets=self.cidrs.size)

    async def reconcile(self, key: str) -> None:
        if not self._rebuilt:
            self.rebuild()
        node = self.nodes.cache.get(key)
        if node is None:
            self._release(key)
            return
        current = pod_cidr_of(node)
        if current:
            index = self.cidrs.index_of(current)
            if index is not None:
                if self.cidrs.occupy(index, key):
                    self._warned.pop(key, None)
                    if node.spec.pod_cidr == current and node.spec.pod_cidrs[:1] == [current]:
                        return
                    await self._write(node, current)  # podCIDR or podCIDRs was missing
                    return
                holder = self.cidrs.owner[index]
                self._warn_once(
                    node,
                    current,
                    "PodCIDRConflict",
                    f"Node {key}: spec.podCIDR {current} is already assigned to node {holder};"
                    " assigning another",
                )
            elif self._parses(current):
                self._warn_once(
                    node,
                    current,
                    "PodCIDROutOfRange",
                    f"Node {key}: spec.podCIDR {current} is not a /{self.cidrs.mask} of the"
                    f" cluster CIDR {self.cidrs.cluster}; left as it is",
                )
                self.cidrs.release(key)
                return
            else:
                self._warn_once(
                    node,
                    current,
                    "InvalidPodCIDR",
                    f"Node {key}: spec.podCIDR: invalid CIDR {current!r}; assigning another",
                )
        index = self.cidrs.allocate(key)
        if index is None:
            self._starved.add(key)
            self._recorder.event(
                node,
                WARNING,
                "CIDRNotAvailable",
                f"Node {key} status is now: CIDRNotAvailable (no /{self.cidrs.mask} left in"
                f" {self.cidrs.cluster})",
            )
            log.warning("no pod CIDR left", node=key, cluster_cidr=str(self.cidrs.cluster))
            return
        self._starved.discard(key)
        cidr = self.cidrs.subnet(index)
        # A failed write keeps the reservation: the retry writes the same subnet, and the
        # node's deletion releases it.
        await self._write(node, cidr)
        log.info("pod CIDR assigned", node=key, pod_cidr=cidr)

    @staticmethod
    def _parses(cidr: str) -> bool:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            return False
        return True

    async def _write(self, node: core_pb2.Node, cidr: str) -> None:
        new = copy_of(node)
        new.spec.pod_cidr = cidr
        del new.spec.pod_cidrs[:]
        new.spec.pod_cidrs.append(cidr)
        await self._client.update(new)

    def _release(self, name: str) -> None:
        self._warned.pop(name, None)
        self._starved.discard(name)
        index = self.cidrs.release(name)
        if index is None:
            return
        log.info("pod CIDR released", node=name, pod_cidr=self.cidrs.subnet(index))
        # A node that held the same subnet by mistake can have it now.
        for node in self.nodes.cache.list():
            if self.cidrs.index_of(pod_cidr_of(node)) == index:
                self.queue.add(object_key(node))
        for waiting in sorted(self._starved):
            self.queue.add(waiting)

    def _warn_once(self, node: core_pb2.Node, cidr: str, reason: str, message: str) -> None:
        if self._warned.get(node.metadata.name) == cidr:
            return
        self._warned[node.metadata.name] = cidr
        log.warning(message, reason=reason)
        self._recorder.event(node, WARNING, reason, message)

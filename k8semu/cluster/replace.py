"""Replacing a store replica whose data is lost (``k8semu store replace NAME``), online.

The procedure etcd documents for a failed member, done on a running cluster:

1. the replica's data dir (whatever is left of it) is moved aside, never deleted, and a fresh
   one is prepared to join (``store.identity.prepare_join``): from now on, whenever the
   supervisor starts the replica, it starts as a member joining a running cluster, whatever
   its usual command says;
2. the old member is removed from the membership (``MemberRemove``; a process of it still
   running stops by itself once removed) and a new one is added with the same peer URL
   (``MemberAdd``: a new member id), retrying while the cluster is "unhealthy" (etcd's
   strict check: every member connected for 5 s); then this waits until every other member
   lists the new member (the new process joins by asking any of them);
3. the supervisor restarts the replica (``k8semu.cluster.rolling``), and this waits until it
   serves and has caught up with the leader (by snapshot when the leader's log no longer
   reaches back to it).

The replica keeps its name and addresses, so the cluster config and state need no change.
It must not signal any process itself; it refuses a replica whose data is still there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from k8semu.cluster import certs
from k8semu.cluster.errors import ClusterError
from k8semu.cluster.probes import Probes
from k8semu.cluster.rolling import Restarted, restart_components
from k8semu.cluster.state import ClusterState, ComponentRecord, read_state
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc
from k8semu.store.identity import JOIN_MARKER, prepare_join

__all__ = ["Replaced", "StoreMembers", "replace_replica"]

RPC_TIMEOUT_S = 5.0
RETRY_S = 0.5
POLL_S = 0.05
UNHEALTHY = "etcdserver: unhealthy cluster"


@dataclass(frozen=True, slots=True)
class Replaced:
    """A replica replaced: its old and new member id, where its old data went ("" when
    there was none), and its restart."""

    name: str
    old_id: int
    new_id: int
    moved_to: str
    restart: Restarted


def replace_replica(
    state_dir: Path, name: str, *, timeout: float, say: Callable[[str], None]
) -> Replaced:
    """Replace store member ``name`` of the cluster in ``state_dir`` (see the module
    docstring). ClusterError says what stopped it; each step can be run again."""
    state = read_state(state_dir)
    record = _replica(state, name)
    data = Path(record.data_dir)
    if (data / "raft.db").exists() and record.alive():
        raise ClusterError(
            f"{record.name} runs with its data ({data / 'raft.db'} exists): `k8semu store "
            "replace` is for a replica whose data is lost; `k8semu restart` restarts one"
        )
    peer_url = ("https://" if state.tls else "http://") + record.ports["peer"]
    others = [addr for member, addr in state.store_members if member != name]
    deadline = time.monotonic() + timeout
    moved = _fresh_data_dir(data, name)
    if moved:
        say(f"moved what was left of {data} to {moved}")
    probes = certs.state_probes(state)  # a TLS store is asked with the health-check client
    members = StoreMembers(others, deadline, probes)
    try:
        old_id = members.remove(name, peer_url)
        new_id = members.add(peer_url)
        members.wait_listed(new_id, old_id)
    finally:
        probes.close()
    if old_id:
        say(f"removed member {name} ({old_id:x})")
    say(f"added member {name} as {new_id:x} (peer URL {peer_url}); starting it")
    remaining = max(1.0, deadline - time.monotonic())
    restarted = restart_components(state_dir, [record.name], timeout=remaining, say=say)
    return Replaced(name, old_id, new_id, str(moved or ""), restarted[0])


def _replica(state: ClusterState, name: str) -> ComponentRecord:
    record = state.component(f"store-{name}")
    if record is None or record.kind not in ("store", "etcd"):
        names = ", ".join(n for n, _ in state.store_members) or "none"
        raise ClusterError(f"no store replica {name!r} in this cluster (store members: {names})")
    if record.kind != "store":
        raise ClusterError(
            f"{record.name} is an etcd member: replace it with etcd's own runbook "
            "(etcdctl member remove/add, then start it with --initial-cluster-state existing)"
        )
    if "peer" not in record.ports:
        raise ClusterError(f"{record.name} has no peer address recorded")
    return record


def _fresh_data_dir(data: Path, name: str) -> Path | None:
    """Move ``data`` aside (when it exists) and prepare an empty one that joins."""
    moved = None
    if data.exists() and not (data / JOIN_MARKER).exists():
        moved = data.with_name(f"{data.name}.lost-{time.strftime('%Y%m%dT%H%M%S')}")
        data.rename(moved)
    if not data.exists():
        prepare_join(data, f"prepared by `k8semu store replace {name}`")
    return moved


class StoreMembers:
    """The Cluster service of whichever other replica answers."""

    def __init__(self, endpoints: list[str], deadline: float, probes: Probes | None = None) -> None:
        """`probes`: how to reach a TLS store (`certs.state_probes`); None: plain text."""
        if not endpoints:
            raise ClusterError("no other store member to ask: a one-member store cannot be")
        self._endpoints = endpoints
        self.deadline = deadline
        self._probes = probes or Probes()

    def remove(self, name: str, peer_url: str) -> int:
        """Remove the started member ``name``; its id (0 when it is not a member any more)."""
        for member in self.call("MemberList", rpc_pb2.MemberListRequest()).members:
            if member.name == name and peer_url in member.peerURLs:
                self.call("MemberRemove", rpc_pb2.MemberRemoveRequest(ID=member.ID))
                return int(member.ID)
        return 0

    def add(self, peer_url: str) -> int:
        """Add a member with ``peer_url``; one added before and not started yet is reused."""
        for member in self.call("MemberList", rpc_pb2.MemberListRequest()).members:
            if peer_url in member.peerURLs and not member.name:
                return int(member.ID)
        added = self.call("MemberAdd", rpc_pb2.MemberAddRequest(peerURLs=[peer_url]))
        return int(added.member.ID)

    def wait_listed(self, new_id: int, gone_id: int) -> None:
        """Until every other member that answers lists ``new_id`` and not ``gone_id``.

        The new process asks whichever member answers first for the membership it joins; one
        that has not applied the change yet (a follower applies after the leader) would tell
        it that no member has its peer URL, or that its old self already started, and it
        would exit: seen as "exited after its restart" on a busy host."""
        for endpoint in self._endpoints:
            stub = rpc_pb2_grpc.ClusterStub(self._probes.channel(endpoint))
            while True:
                try:
                    listed = stub.MemberList(rpc_pb2.MemberListRequest(), timeout=RPC_TIMEOUT_S)
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                        break  # down: the new process cannot ask it either
                else:
                    ids = {m.ID for m in listed.members}
                    if new_id in ids and gone_id not in ids:
                        break
                if time.monotonic() >= self.deadline:
                    raise ClusterError(
                        f"{endpoint} does not list the new member {new_id:x} yet (or still"
                        f" lists the removed {gone_id:x}); run the command again"
                    )
                time.sleep(POLL_S)

    def call(self, method: str, request: object, *, also_retry: str = "") -> Any:
        """Ask each replica in turn until one answers; again while the cluster is unhealthy
        or has no leader (or the refusal is ``also_retry``), until the deadline."""
        last = ""
        while True:
            for endpoint in self._endpoints:
                stub = rpc_pb2_grpc.ClusterStub(self._probes.channel(endpoint))
                try:
                    return getattr(stub, method)(request, timeout=RPC_TIMEOUT_S)
                except grpc.RpcError as exc:
                    last = exc.details() or str(exc.code())
                    if exc.code() not in _RETRY and not (also_retry and also_retry in last):
                        raise ClusterError(f"{method} refused by {endpoint}: {last}") from None
            if time.monotonic() >= self.deadline:
                raise ClusterError(f"{method}: no store member agreed in time: {last}")
            time.sleep(RETRY_S)


# Unavailable: no leader, unhealthy (etcd's strict check), a replica down; deadline: slow.
_RETRY = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

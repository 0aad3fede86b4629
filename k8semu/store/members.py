"""Store membership: etcd's member add, remove and update, done as etcd does them.

Owns what a member is to the store: its context in Raft's membership, a serialized etcd
``Member`` (ID, name, peer URLs, client URLs); the bootstrap membership of a new cluster; the
leader's checks before a change (etcd's strict reconfiguration check, with etcd's error texts);
the change itself as one Raft conf-change entry, awaited until applied; the peer port's
StoreMembership service (a follower forwards a change to the leader through it, and a member
started with ``--initial-cluster-state existing`` learns the cluster from it); and that joining
member's fetch.

A member added with ``MemberAdd`` has peer URLs only, as in etcd: it gets its name (and shows
as started) when it first runs and publishes its attributes through the leader.
It must not touch the state machine's data: membership lives in Raft (log and snapshots).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from ssl import SSLContext
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from k8semu import transport
from k8semu.log import get_logger
from k8semu.pb.etcd import rpc_pb2
from k8semu.pb.raft import raft_pb2
from k8semu.pb.store import internal_pb2
from k8semu.raft import framing, membership
from k8semu.raft.driver import PeerContact
from k8semu.raft.errors import RaftError
from k8semu.raft.transport import RequestHandler, request
from k8semu.store import errors
from k8semu.store.config import StoreConfig

log = get_logger(__name__)
M = TypeVar("M", bound=Message)

# How long a joining member keeps asking its --initial-cluster peers for the cluster.
JOIN_TIMEOUT_S = 5.0
# etcd's HealthInterval: a peer counts as connected for the checks once heard from without a
# break for this long (etcd: its stream has been up that long).
HEALTH_INTERVAL_S = 5.0
_JOIN_CALL_TIMEOUT_S = 2.0


class Node(Protocol):
    """What the membership code needs of the replica's Raft node."""

    leader: int
    members: dict[int, bytes]
    contact: PeerContact

    async def propose_conf_change(self, data: bytes) -> None: ...

    def transfer_candidate(self) -> int: ...

    def progress_match(self, member_id: int) -> int | None: ...

    async def transfer_leader(self, target: int, timeout: float) -> None: ...


class Waits(Protocol):
    """The state machine's registry of proposals waiting for their apply."""

    def register(self, request_id: int) -> asyncio.Future[Any]: ...

    def forget(self, request_id: int) -> None: ...


class Host(Protocol):
    """What the membership code needs of the replica (the server)."""

    config: StoreConfig

    @property
    def node(self) -> Node: ...

    @property
    def waits(self) -> Waits: ...

    @property
    def request_timeout(self) -> float: ...

    def next_request_id(self) -> int: ...

    def members(self) -> Sequence[rpc_pb2.Member]: ...

    def contexts(self) -> dict[int, bytes]:
        """The membership: member id -> context."""
        ...


def context_of(member: rpc_pb2.Member) -> bytes:
    return member.SerializeToString()


def decode(member_id: int, context: bytes) -> rpc_pb2.Member:
    """The member a Raft context describes (an unreadable context: the id alone)."""
    member = rpc_pb2.Member()
    with contextlib.suppress(Exception):
        member.ParseFromString(context)
    member.ID = member_id
    return member


def bootstrap(config: StoreConfig) -> dict[int, bytes]:
    """The membership a new cluster starts with: every --initial-cluster member, named."""
    return {
        config.ids[name]: context_of(
            rpc_pb2.Member(
                ID=config.ids[name], name=name, peerURLs=[f"{config.peer_scheme}://{addr}"]
            )
        )
        for name, addr in config.members.items()
    }


def peer_address(member: rpc_pb2.Member) -> str | None:
    """host:port of a member's first peer URL, None when it has no usable one."""
    for url in member.peerURLs:
        with contextlib.suppress(transport.AddressError):
            return transport.parse_url(url, flag="peerURLs")
    return None


def _peer_urls(urls: Sequence[str]) -> list[str]:
    """Validated peer URLs (etcd refuses an empty list or an unparsable URL)."""
    if not urls:
        raise errors.ErrMemberBadURLs
    for url in urls:
        try:
            transport.parse_url(url, flag="peerURLs")
        except transport.AddressError:
            raise errors.ErrMemberBadURLs from None
    return list(urls)


class Reconfigurer:
    """Membership changes of one replica: done here when it leads, else by the leader."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self._lock = asyncio.Lock()

    async def change(
        self, change: internal_pb2.MemberChange, *, forwarded: bool = False
    ) -> internal_pb2.ClusterInfo:
        host = self._host
        node = host.node
        own = host.config.member_id
        # As etcd, the member asked checks the started members on its own view first, before
        # it needs a leader: a cluster short of started members says so, not "no leader".
        self._refuse_unstarted(change)
        if node.leader == 0:
            raise errors.ErrNoLeader
        if node.leader != own:
            if forwarded:
                raise errors.ErrNotLeader
            return await forward(
                _address_of(host, node.leader),
                change,
                host.request_timeout,
                ssl=host.config.peer_client_ssl(),
            )
        # One change at a time per leader: the checks must see the previous change applied.
        async with self._lock:
            return await self._change_here(change)

    def info(self) -> internal_pb2.ClusterInfo:
        host = self._host
        return internal_pb2.ClusterInfo(
            cluster_id=host.config.cluster_id, members=host.members(), leader=host.node.leader
        )

    async def _change_here(self, change: internal_pb2.MemberChange) -> internal_pb2.ClusterInfo:
        kind = change.WhichOneof("change")
        if kind == "add":
            added = await self._add(change.add)
            info = self.info()
            info.added.CopyFrom(added)
            return info
        if kind == "remove":
            if self._host.config.member_id == change.remove.ID:
                return await self._remove_self(change.remove.ID)
            await self._remove(change.remove.ID, checked=change.checked)
        elif kind == "update":
            await self._update(change.update)
        elif kind == "publish":
            await self._publish(change.publish)
        elif kind == "promote":
            await self._promote(change.promote.ID)
        else:
            raise errors.StoreError("k8semu: empty membership change")
        return self.info()

    def _refuse_unstarted(self, change: internal_pb2.MemberChange) -> None:
        """etcd's IsReadyToAddVotingMember / IsReadyToRemoveVotingMember: after the change,
        the started voting members must still be a quorum of the voting members."""
        kind = change.WhichOneof("change")
        current = self._current()
        voting = [m for m in current.values() if not m.isLearner]
        if kind == "add" and not change.add.isLearner:
            if not _started_quorum(sum(1 for m in voting if m.name), len(voting) + 1):
                raise errors.ErrMemberNotEnoughStarted
        elif kind == "remove" and any(m.ID == change.remove.ID for m in voting):
            rest = [m for m in voting if m.ID != change.remove.ID]
            if sum(1 for m in rest if m.name) < len(rest) // 2 + 1:
                raise errors.ErrMemberNotEnoughStarted

    def _current(self) -> dict[int, rpc_pb2.Member]:
        return {i: decode(i, ctx) for i, ctx in self._host.contexts().items()}

    def _reachable(self, member_id: int) -> bool:
        """Heard from within an election timeout (a follower answers every heartbeat); etcd
        asks whether its stream to the peer is up."""
        if member_id == self._host.config.member_id:
            return True
        heard = self._host.node.contact.last.get(member_id)
        window = self._host.config.election_ms / 1000
        return heard is not None and time.monotonic() - heard < window

    def _connected(self, member_id: int) -> bool:
        """Reachable, and without a break for etcd's HealthInterval."""
        if not self._reachable(member_id):
            return False
        since = self._host.node.contact.since.get(member_id, 0.0)
        own = member_id == self._host.config.member_id
        return own or time.monotonic() - since >= HEALTH_INTERVAL_S

    async def _add(self, request: rpc_pb2.MemberAddRequest) -> rpc_pb2.Member:
        urls = _peer_urls(request.peerURLs)
        current = self._current()
        voting = [m for m in current.values() if not m.isLearner]
        # etcd's order: the strict checks, then (when applying) a clashing URL.
        if request.isLearner and len(voting) < len(current):
            raise errors.ErrTooManyLearners  # etcd allows one learner at a time
        self._refuse_unstarted(internal_pb2.MemberChange(add=request))  # the leader's view
        if not all(self._connected(i) for i in current):
            raise errors.ErrUnhealthy
        _refuse_clash(current.values(), urls, skip=0)
        new_id = 0
        while new_id == 0 or new_id in current:
            new_id = secrets.randbits(64)
        member = rpc_pb2.Member(ID=new_id, peerURLs=urls, isLearner=request.isLearner)
        kind = raft_pb2.CONF_ADD_LEARNER if request.isLearner else raft_pb2.CONF_ADD_NODE
        await self._propose(kind, new_id, context_of(member))
        log.info("member added", member=f"{new_id:x}", peer_urls=urls)
        return member

    def _check_remove(self, member_id: int) -> None:
        current = self._current()
        if member_id not in current:
            raise errors.ErrMemberNotFound
        if current[member_id].isLearner:
            return  # a learner counts for no quorum: etcd removes it unchecked
        current = {i: m for i, m in current.items() if not m.isLearner}
        self._refuse_unstarted(
            internal_pb2.MemberChange(remove=rpc_pb2.MemberRemoveRequest(ID=member_id))
        )
        if member_id == self._host.config.member_id or self._reachable(member_id):
            # Removing a connected member must leave a connected quorum (a member down is
            # not part of the active quorum, so removing it is always safe).
            active = sum(1 for i in current if self._connected(i))
            if active - 1 < 1 + (len(current) - 1) // 2:
                raise errors.ErrUnhealthy

    async def _remove(self, member_id: int, *, checked: bool) -> None:
        if not checked:
            self._check_remove(member_id)
        await self._propose(raft_pb2.CONF_REMOVE_NODE, member_id, b"")
        log.info("member removed", member=f"{member_id:x}")

    async def _remove_self(self, member_id: int) -> internal_pb2.ClusterInfo:
        """The leader is to be removed: as etcd does, it first hands leadership to the most
        up-to-date follower, which then does the removal (no election, no unavailability)."""
        self._check_remove(member_id)
        host = self._host
        target = host.node.transfer_candidate()
        if not target:
            raise errors.ErrUnhealthy
        try:
            await host.node.transfer_leader(target, host.request_timeout)
        except RaftError as exc:
            raise errors.from_raft(exc) from None
        change = internal_pb2.MemberChange(
            remove=rpc_pb2.MemberRemoveRequest(ID=member_id), checked=True
        )
        return await forward(
            _address_of(host, target),
            change,
            host.request_timeout,
            ssl=host.config.peer_client_ssl(),
        )

    async def _promote(self, member_id: int) -> None:
        """etcd's MemberPromote: a learner that started and is in sync with the leader (its
        log within 90% of the leader's) becomes a voter."""
        current = self._current()
        member = current.get(member_id)
        if member is None:
            raise errors.ErrMemberNotFound
        if not member.isLearner:
            raise errors.ErrMemberNotLearner
        voting = [m for m in current.values() if not m.isLearner]
        if not _started_quorum(sum(1 for m in voting if m.name) + 1, len(voting) + 1):
            raise errors.ErrMemberNotEnoughStarted
        match = self._host.node.progress_match(member_id)
        own = self._host.node.progress_match(self._host.config.member_id)
        if match is None or own is None or match < own * 0.9:
            raise errors.ErrLearnerNotReady
        member.isLearner = False
        await self._propose(raft_pb2.CONF_ADD_NODE, member_id, context_of(member))

    async def _update(self, request: rpc_pb2.MemberUpdateRequest) -> None:
        current = self._current()
        member = current.get(request.ID)
        if member is None:
            raise errors.ErrMemberNotFound
        urls = _peer_urls(request.peerURLs)
        _refuse_clash(current.values(), urls, skip=request.ID)
        del member.peerURLs[:]
        member.peerURLs.extend(urls)
        await self._propose(raft_pb2.CONF_UPDATE_NODE, request.ID, context_of(member))

    async def _publish(self, attrs: rpc_pb2.Member) -> None:
        member = self._current().get(attrs.ID)
        if member is None:
            raise errors.ErrMemberNotFound
        if member.name == attrs.name and list(member.clientURLs) == list(attrs.clientURLs):
            return
        member.name = attrs.name
        del member.clientURLs[:]
        member.clientURLs.extend(attrs.clientURLs)
        await self._propose(raft_pb2.CONF_UPDATE_NODE, attrs.ID, context_of(member))

    async def _propose(
        self, kind: raft_pb2.ConfChangeType.ValueType, node_id: int, context: bytes
    ) -> None:
        """Propose one conf change and wait until this replica applied it."""
        host = self._host
        request_id = host.next_request_id()
        data = membership.encode(
            raft_pb2.ConfChange(id=request_id, type=kind, node_id=node_id, context=context)
        )
        applied = host.waits.register(request_id)
        try:
            async with asyncio.timeout(host.request_timeout):
                await host.node.propose_conf_change(data)
                await applied
        except TimeoutError:
            raise errors.ErrTimeout from None
        except RaftError as exc:
            raise errors.from_raft(exc) from None
        finally:
            host.waits.forget(request_id)


def _started_quorum(started: int, voting: int) -> bool:
    """etcd's rule: the started voting members are a quorum of ``voting`` (one started
    member may add a second, or the cluster could never grow from one)."""
    return (started == 1 and voting == 2) or started >= voting // 2 + 1


def _refuse_clash(members: Iterable[rpc_pb2.Member], urls: Sequence[str], *, skip: int) -> None:
    wanted = set(urls)
    for member in members:
        if skip != member.ID and wanted & set(member.peerURLs):
            raise errors.ErrPeerURLExist


def _address_of(host: Host, member_id: int) -> str:
    address = peer_address(decode(member_id, host.contexts().get(member_id, b"")))
    if address is None:
        raise errors.ErrNoLeader
    return address


async def forward(
    address: str,
    change: internal_pb2.MemberChange,
    timeout: float,
    *,
    ssl: SSLContext | None = None,
) -> internal_pb2.ClusterInfo:
    """Have the member at peer ``address`` (the leader) do ``change``; its refusal is ours."""
    try:
        payload = change.SerializeToString()
        reply = await request(address, framing.CHANGE, payload, timeout, ssl=ssl)
        return internal_pb2.ClusterInfo.FromString(reply)
    except framing.RemoteError as exc:
        raise errors.remote(_status(exc.code), exc.message) from None
    except DecodeError as exc:
        raise errors.remote(grpc.StatusCode.UNKNOWN, f"{address}: bad reply: {exc}") from None


async def _cluster(address: str, ssl: SSLContext | None = None) -> internal_pb2.ClusterInfo:
    """The cluster as the member at peer ``address`` knows it; RemoteError or DecodeError."""
    reply = await request(
        address, framing.CLUSTER, internal_pb2.ClusterRequest().SerializeToString(),
        _JOIN_CALL_TIMEOUT_S, ssl=ssl,
    )  # fmt: skip
    return internal_pb2.ClusterInfo.FromString(reply)


def _status(code: int) -> grpc.StatusCode:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status
    return grpc.StatusCode.UNKNOWN


class MembershipServicer:
    """The peer port's membership requests (framing.CLUSTER, framing.CHANGE): the serialized
    internal_pb2 messages as payloads, a refusal as its status code and message."""

    def __init__(self, reconfigurer: Reconfigurer) -> None:
        self._reconfigurer = reconfigurer

    def handlers(self) -> dict[int, RequestHandler]:
        return {framing.CLUSTER: self.cluster, framing.CHANGE: self.change}

    async def cluster(self, payload: bytes) -> bytes:
        _decode(internal_pb2.ClusterRequest, payload)
        return self._reconfigurer.info().SerializeToString()

    async def change(self, payload: bytes) -> bytes:
        change = _decode(internal_pb2.MemberChange, payload)
        try:
            info = await self._reconfigurer.change(change, forwarded=True)
        except errors.StoreError as exc:
            raise framing.RemoteError(exc.code.value[0], exc.message) from None
        return info.SerializeToString()


def _decode(cls: type[M], payload: bytes) -> M:
    """A request's payload; garbage is refused as INVALID_ARGUMENT."""
    try:
        return cls.FromString(payload)
    except DecodeError as exc:
        code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
        raise framing.RemoteError(code, f"undecodable {cls.__name__}: {exc}") from None


async def fetch_cluster(config: StoreConfig) -> tuple[internal_pb2.ClusterInfo, int]:
    """For a member started with --initial-cluster-state existing and no data: the cluster
    it joins, from the other --initial-cluster members, and its own id there (the member
    added with its peer URL and not started yet). Raises JoinError saying what is wrong."""
    own_url = config.members[config.name]
    others = [addr for name, addr in sorted(config.members.items()) if name != config.name]
    if not others:
        raise errors.JoinError(
            f"--initial-cluster-state existing: --initial-cluster names no member but "
            f"{config.name} itself; list the running cluster's members (as `etcdctl member "
            "add` prints them) so this member can join it, or use --initial-cluster-state new"
        )
    info = await _ask_peers(others, config.peer_client_ssl())
    if info is None:
        raise errors.JoinError(
            "--initial-cluster-state existing: cannot fetch cluster info from peer urls: "
            f"could not retrieve cluster information from the given URLs ({', '.join(others)})"
        )
    for member in info.members:
        if peer_address(member) != own_url:
            continue
        if member.name:
            raise errors.JoinError(
                f"member {member.name} ({member.ID:x}) with peer URL http://{own_url} already "
                f"started in cluster {info.cluster_id:x}, and this data dir is empty: its data "
                "is lost. Remove it (`etcdctl member remove ID`) and add it again "
                "(`etcdctl member add NAME --peer-urls URL`) to replace it"
            )
        return info, member.ID
    raise errors.JoinError(
        f"--initial-cluster-state existing: no member of cluster {info.cluster_id:x} has "
        f"peer URL http://{own_url} (this member's --initial-cluster entry); add it first "
        f"(`etcdctl member add {config.name} --peer-urls http://{own_url}`)"
    )


async def _ask_peers(
    addresses: Sequence[str], ssl: SSLContext | None = None
) -> internal_pb2.ClusterInfo | None:
    """The first answer (one that knows a leader, if any does) within JOIN_TIMEOUT_S."""
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    answer: internal_pb2.ClusterInfo | None = None
    while time.monotonic() < deadline:
        for address in addresses:
            try:
                info = await _cluster(address, ssl)
            except (framing.RemoteError, DecodeError) as exc:
                log.info("cluster info not fetched", peer=address, error=str(exc))
                continue
            if info.leader:
                return info
            answer = info
        if answer is not None:
            return answer
        await asyncio.sleep(0.2)
    return answer


async def removed(host: Host) -> bool:
    """Whether a peer that knows a leader no longer lists this member: its removal was
    committed without reaching it (the leader stops sending to a member once it applied its
    removal, as etcd's does; etcd's peers then answer the removed member "gone")."""
    own = host.config.member_id
    contexts = host.contexts()
    for member_id, context in contexts.items():
        address = peer_address(decode(member_id, context))
        if member_id == own or address is None:
            continue
        try:
            info = await _cluster(address, host.config.peer_client_ssl())
        except (framing.RemoteError, DecodeError):
            continue
        if info.leader and info.cluster_id == host.config.cluster_id:
            return own not in {m.ID for m in info.members}
    return False


def members_list(
    contexts: Mapping[int, bytes], client_urls: Mapping[int, list[str]]
) -> list[rpc_pb2.Member]:
    """MemberList's members in id order; client URLs as peers last told them, else as the
    member published them."""
    out = []
    for member_id in sorted(contexts):
        member = decode(member_id, contexts[member_id])
        urls = client_urls.get(member_id)
        if urls and member.name:
            del member.clientURLs[:]
            member.clientURLs.extend(urls)
        out.append(member)
    return out

"""One store replica as a process: Raft node + state machine + its two ports.

Owns start-up order (open data -> start Raft -> serve), the proposal path that the etcd
servicers share (`propose`, `linearizable_barrier`: the `service.Replica` they see), the
leader's lease-expiry loop and graceful shutdown. Client port (gRPC): etcd v3 API + health
+ reflection. Peer port: Raft's framed TCP transport (k8semu.raft.transport). It is the
store's boundary with Raft: Raft's errors become etcd's here (`errors.from_raft`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import itertools
import random
import secrets
import time
from collections import deque
from collections.abc import Coroutine, Sequence
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health, health_pb2

from k8semu import transport
from k8semu.log import get_logger
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc
from k8semu.pb.raft import raft_pb2
from k8semu.pb.store import internal_pb2
from k8semu.raft.config import Config as RaftConfig
from k8semu.raft.driver import Pacing, RaftNode
from k8semu.raft.errors import RaftError
from k8semu.raft.membership import Conf
from k8semu.raft.storage import RaftStorage
from k8semu.raft.transport import Membership, PeerServer, PeerTransport
from k8semu.store import errors, identity, members, service
from k8semu.store import metrics as store_metrics
from k8semu.store.compactor import AutoCompactor, PhysicalCompactor
from k8semu.store.config import StoreConfig
from k8semu.store.statemachine import StoreStateMachine

log = get_logger(__name__)

LEASE_CHECK_INTERVAL = 0.25
# Writes past their deadline are failed by a sweep this often (not one timer per write).
DEADLINE_SWEEP_S = 0.05
# Unacknowledged AppendEntries per follower. Few: while they are out, new entries gather and
# leave in one message when an acknowledgement comes back, so under load each follower
# fsync and each frame carries more entries (measured: ~15% less CPU per put at 64 clients
# than with 16; docs/store.md). An idle cluster still sends each write at once.
RAFT_MAX_INFLIGHT = 2
# etcd's maxGapBetweenApplyAndCommitIndex: when this replica's applies lag its commit index by
# more, new writes are refused ("too many requests") rather than queued behind the backlog,
# so a client learns at once that the store is overloaded instead of waiting seconds.
MAX_APPLY_GAP = 5000
_SERVICES = [
    rpc_pb2.DESCRIPTOR.services_by_name[name].full_name
    for name in ("KV", "Watch", "Lease", "Cluster", "Maintenance")
]


# Allocations between two collections of the youngest generation (Python's default: 700).
GC_GEN0_THRESHOLD = 20_000


def tune_gc() -> None:
    """For a replica process: everything imported so far (modules, protobuf and gRPC classes)
    is left out of every later collection (`gc.freeze`), and the youngest generation is
    collected every 20,000 allocations instead of 700. A write makes a few dozen short-lived
    objects, almost none in reference cycles, and collections were ~2% of a replica's GIL time
    at 64 clients (docs/store.md, "Performance")."""
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


class StoreServer:
    """A replica. `await start()` returns once both ports serve; `await stop()` undoes it."""

    def __init__(self, config: StoreConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self.data_dir = config.data_dir
        self.snapshot_dir = config.data_dir / "snap"
        self.sm = StoreStateMachine(config.data_dir / "kv.db")
        self.sm.on_leader_change = self._on_leader_change
        self.sm.on_conf_change = self._on_conf_change
        self._rng = rng or random.Random()
        self._storage: RaftStorage | None = None
        self.node: RaftNode = None  # type: ignore[assignment]  # set in start()
        self._client_urls: dict[int, list[str]] = {config.member_id: list(config.client_urls)}
        self._client_server: grpc.aio.Server | None = None
        self._peer_server: PeerServer | None = None
        self._health: health.aio.HealthServicer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.client_port = 0
        self._leader = 0
        # Unique across replicas and restarts: a random 62-bit start, counted up.
        self._request_ids = itertools.count(secrets.randbits(62) + 1)
        self.peer_port = 0
        self._request_timeout = max(2.0, 4 * config.election_ms / 1000)
        self.compactor = PhysicalCompactor(self.sm)
        # (deadline, result) of every write in flight, in deadline order (one timeout for all).
        self._deadlines: deque[tuple[float, asyncio.Future[Message]]] = deque()
        self.reconfigurer = members.Reconfigurer(self)
        self._peer_transport: PeerTransport | None = None
        # Who may talk on the peer port: the members' ids, updated in place as they change.
        self._allowed: set[int] = set()
        self._removed: asyncio.Future[BaseException] | None = None
        self._publishing = False
        self._joined = False
        # Contexts for members whose Raft context is empty (a snapshot made before membership
        # changes, or by `store snapshot restore`): the --initial-cluster ones.
        self._flag_contexts = members.bootstrap(config)

    async def start(self) -> None:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.snapshot_dir.mkdir(exist_ok=True)
        for leftover in self.snapshot_dir.glob("client-*.part"):
            leftover.unlink(missing_ok=True)
        bootstrap = await self._identify()
        cfg = self.config
        identity.check(cfg)
        try:
            self._storage = await RaftStorage.open(
                cfg.data_dir / "raft.db",
                cluster_id=cfg.cluster_id,
                member_id=cfg.member_id,
                bootstrap=bootstrap,
            )
        except RaftError as exc:
            raise errors.from_raft(exc) from exc
        identity.mark(cfg, joined=self._joined)
        self._storage.on_write = store_metrics.WAL_FSYNC.observe
        await self.sm.open()
        voters = sorted(bootstrap.voters) if bootstrap and cfg.member_id in bootstrap.voters else []
        self.node = RaftNode(
            RaftConfig(
                id=cfg.member_id,
                voters=tuple(voters or [cfg.member_id]),
                election_tick=cfg.election_tick,
                heartbeat_tick=1,
                max_inflight=RAFT_MAX_INFLIGHT,
            ),
            self._storage,
            self.sm,
            self.snapshot_dir,
            Pacing(tick_interval=cfg.heartbeat_ms / 1000, snapshot_count=cfg.snapshot_count),
            rng=self._rng,
        )
        store_metrics.REPLICA.track(self)
        peer_transport = await self._bind_peer_port()
        await self.node.start(peer_transport)
        self._removed = asyncio.get_running_loop().create_future()
        self._apply_members(self.node.members)
        self.node.on_members = self._apply_members
        assert self._peer_server is not None
        await self._peer_server.start()
        # The client port is bound only now: gRPC listens from the bind on, and a connection
        # made before the server starts holds its calls (up to the client's connect timeout)
        # instead of being refused, which clients fail over from at once (a restart under
        # writers had them all waiting on the restarted replica).
        self._bind_client_port()
        assert self._client_server is not None
        await self._client_server.start()
        self._start_background_tasks()
        await self._set_health(self.node.leader != 0)
        log.info(
            "store replica serving",
            member=f"{cfg.member_id:x}",
            cluster=f"{cfg.cluster_id:x}",
            client=cfg.listen_client,
            peer=cfg.listen_peer,
            applied=self.sm.applied_index,
            revision=self.sm.revision,
        )

    async def _identify(self) -> Conf | None:
        """Settle this member's ids and the membership its log starts from: from the flags
        for a member bootstrapped with its cluster, from its marker for one that joined a
        running cluster, and from that cluster for one joining now (None: raft.db has it)."""
        cfg = self.config
        bootstrap: Conf | None = Conf(members.bootstrap(cfg))
        ids = identity.recorded(cfg)
        if ids is None and identity.needs_join(cfg):
            info, own = await members.fetch_cluster(cfg)
            ids = (info.cluster_id, own, True)
            bootstrap = Conf(
                {m.ID: members.context_of(m) for m in info.members},
                {m.ID for m in info.members if m.isLearner},
            )
            log.info("joining cluster", cluster=f"{ids[0]:x}", member=f"{own:x}")
        elif ids is not None and ids[2]:
            bootstrap = None  # raft.db holds the membership this member joined with
        if ids is not None:
            cfg = dataclasses.replace(cfg, recorded_cluster_id=ids[0], recorded_member_id=ids[1])
            self.config = cfg
            self._client_urls = {ids[1]: list(cfg.client_urls)}
            self._joined = ids[2]
        return bootstrap

    def _apply_members(self, contexts: dict[int, bytes]) -> None:
        """The membership changed (or is known at start): route the peer transport to it,
        accept frames from its members only, and stop if this member was removed."""
        contexts = self._with_flag_contexts(contexts)
        own = self.config.member_id
        peers = {}
        for member_id, context in contexts.items():
            address = members.peer_address(members.decode(member_id, context))
            if address is not None and member_id != own:
                peers[member_id] = address
        self._allowed.clear()
        self._allowed.update(contexts)
        if self._peer_transport is not None:
            self._peer_transport.set_peers(peers)
        if own in contexts and not members.decode(own, contexts[own]).name and not self._publishing:
            self._publishing = True
            self._start_task(self._publish())

    def _on_conf_change(self, change: raft_pb2.ConfChange) -> None:
        """Applying its own removal stops a member, as in etcd (not merely missing from the
        membership: a joining member misses from it until it applied its own addition)."""
        own = self.config.member_id
        if change.type == raft_pb2.CONF_REMOVE_NODE and change.node_id == own:
            self._mark_removed()

    async def _watch_removal(self) -> None:
        """A member that knows no leader for a while asks its peers whether it was removed
        (its removal may have been committed without reaching it) and stops if so."""
        interval = 2 * self.config.election_ms / 1000
        while True:
            await asyncio.sleep(interval)
            if self.node.leader == 0 and await members.removed(self):
                self._mark_removed()
                return

    def _mark_removed(self) -> None:
        log.warning("this member was removed from the cluster; stopping")
        if self._removed is not None and not self._removed.done():
            self._removed.set_result(errors.ErrMemberRemoved())

    async def _publish(self) -> None:
        """A member that joined publishes its name and client URLs through the leader (it
        shows as started from then on), retrying until that is done."""
        cfg = self.config
        attrs = rpc_pb2.Member(
            ID=cfg.member_id,
            name=cfg.name,
            peerURLs=[f"http://{cfg.members[cfg.name]}"],
            clientURLs=list(cfg.client_urls),
        )
        change = internal_pb2.MemberChange(publish=attrs)
        while True:
            try:
                await self.reconfigurer.change(change)
            except errors.StoreError as exc:
                log.info("publishing member attributes deferred", error=exc.message)
                await self._until_leader(self.config.election_ms / 1000)
            else:
                log.info("member attributes published", name=cfg.name)
                return

    async def _until_leader(self, seconds: float) -> None:
        """Wait `seconds`, or less once a leader is known: a joined member learns its
        leader about when it catches up, and should show as started from then on."""
        had = self.node.leader
        for _ in range(10):
            await asyncio.sleep(seconds / 10)
            if self.node.leader and not had:
                return

    async def wait_failed(self) -> BaseException:
        """The error that stops this replica: its Raft loop failed, or it was removed."""
        assert self._removed is not None
        failed = asyncio.ensure_future(self.node.wait_failed())
        try:
            await asyncio.wait([failed, self._removed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            failed.cancel()
        return self._removed.result() if self._removed.done() else failed.result()

    def next_request_id(self) -> int:
        return next(self._request_ids)

    @property
    def waits(self) -> StoreStateMachine:
        return self.sm

    async def change_members(self, change: internal_pb2.MemberChange) -> internal_pb2.ClusterInfo:
        return await self.reconfigurer.change(change)

    async def _bind_peer_port(self) -> PeerTransport:
        """The Raft and membership servicers on the peer port (bound, not started) and the
        transport that sends to the peers (routed to the members once Raft knows them)."""
        cfg = self.config
        peer_transport = self._peer_transport = PeerTransport(
            cfg.cluster_id,
            cfg.member_id,
            {},
            self._client_urls,
            on_unreachable=self.node.report_unreachable,
            on_snapshot_sent=self.node.report_snapshot,
            ssl=cfg.peer_client_ssl(),
        )
        self._peer_server = PeerServer(
            Membership(cfg.cluster_id, self._allowed),
            self.node,
            self.snapshot_dir,
            peer_transport.learn_client_urls,
            requests=members.MembershipServicer(self.reconfigurer).handlers(),
            ssl=None if cfg.peer_tls is None else transport.server_ssl_context(cfg.peer_tls),
        )
        self.peer_port = await self._peer_server.listen(cfg.listen_peer)
        return peer_transport

    def _bind_client_port(self) -> None:
        """The etcd servicers on the client port (bound, not started)."""
        server, self._health = transport.server(_SERVICES, boundary_in_handlers=True)
        self._client_server = server
        generic: Any = transport.GenericOnly(server)  # (the stubs' type says grpc.aio.Server)
        rpc_pb2_grpc.add_KVServicer_to_server(service.KVService(self), generic)
        rpc_pb2_grpc.add_WatchServicer_to_server(service.WatchService(self), generic)
        rpc_pb2_grpc.add_LeaseServicer_to_server(service.LeaseService(self), generic)
        rpc_pb2_grpc.add_ClusterServicer_to_server(service.ClusterService(self), generic)
        rpc_pb2_grpc.add_MaintenanceServicer_to_server(service.MaintenanceService(self), generic)
        self.client_port = transport.bind(
            server,
            self.config.listen_client,
            flag="--listen-client-urls",
            tls=self.config.client_tls,
        )

    def _start_background_tasks(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._expire_leases()))
        self._tasks.append(loop.create_task(self.compactor.run()))
        if self.config.auto_compaction.enabled:
            auto = AutoCompactor(
                self.config.auto_compaction,
                revision=lambda: self.sm.revision,
                is_leader=lambda: self.sm.is_leader,
                compact=self._compact,
            )
            self._tasks.append(loop.create_task(auto.run()))
        self._tasks.append(loop.create_task(self._sweep_deadlines()))
        self._tasks.append(loop.create_task(self._watch_removal()))

    async def stop(self, grace: float) -> None:
        """Stop; with `grace` > 0 a leader first hands leadership over and client calls in
        flight get `grace` seconds; 0 stops now (crash-only, after a failure)."""
        if grace > 0:
            await self._hand_over_leadership()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client_server is not None:
            await self._client_server.stop(grace)
        if self.node is not None:
            await self.node.stop()
        self.sm.fail_pending(errors.ErrStopped)
        if self._peer_server is not None:
            await self._peer_server.close()
        await self.sm.close()
        if self._storage is not None:
            await self._storage.close()

    async def _hand_over_leadership(self) -> None:
        """On a graceful stop, a leader first transfers leadership to its most up-to-date
        follower and waits (at most two election timeouts) until it follows, as etcd does,
        so its restart costs the cluster a transfer (a few ms) instead of an election (an
        election timeout and more of 'no leader')."""
        node = self.node
        if node is None:
            return
        target = node.transfer_candidate()
        if not target:
            return
        timeout = 2 * self.config.election_ms / 1000
        started = time.monotonic()
        try:
            await node.transfer_leader(target, timeout)
        except RaftError as exc:
            log.warning(
                "leadership transfer before stop failed", error=errors.from_raft(exc).message
            )
            return
        log.info(
            "leadership transferred before stop",
            to=f"{target:x}",
            ms=round((time.monotonic() - started) * 1e3, 1),
        )

    # -- shared by the servicers ------------------------------------------------------

    async def propose(self, request: internal_pb2.InternalRequest) -> Message:
        """Replicate `request` and return the response produced by applying it here."""
        if self.node.commit_index > self.sm.applied_index + MAX_APPLY_GAP:
            raise errors.ErrTooManyRequests
        request.id = next(self._request_ids)
        data = request.SerializeToString()
        if len(data) > self.config.max_request_bytes:
            raise errors.ErrRequestTooLarge
        fut = self.sm.register(request.id)
        loop = asyncio.get_running_loop()
        try:
            self.node.propose_nowait(data, fut)
            self._deadlines.append((loop.time() + self._request_timeout, fut))
            return await fut
        except RaftError as exc:
            raise errors.from_raft(exc) from None
        finally:
            self.sm.forget(request.id)

    async def check_quota(self, cost: int) -> None:
        """etcd's quota check before a write that may grow the store: past the quota, raise
        the NOSPACE alarm cluster-wide (through the log) and refuse with ErrNoSpace."""
        quota = self.config.quota_backend_bytes
        # A write that adds nothing (a txn without puts) passes, as on etcd.
        if not quota or not cost or not self.sm.ready or self.sm.mvcc.size + cost < quota // 2:
            return
        # In the upper half of the quota, measure at a linearizable point: this replica may not
        # have applied writes just acknowledged elsewhere (applies run behind commits, followers
        # behind the leader), and the answer must not depend on which replica the client
        # reached. Below half, no replica lags by that much in practice, and the check is free.
        await self.linearizable_barrier()
        if self.sm.mvcc.size + cost < quota:
            return
        alarm = (self.config.member_id, rpc_pb2.NOSPACE)
        if alarm not in self.sm.mvcc.alarms(rpc_pb2.NOSPACE):
            request = rpc_pb2.AlarmRequest(
                action=rpc_pb2.AlarmRequest.ACTIVATE,
                memberID=self.config.member_id,
                alarm=rpc_pb2.NOSPACE,
            )
            log.warning(
                "space quota exceeded: raising the NOSPACE alarm",
                size=self.sm.mvcc.size,
                quota=quota,
            )
            with contextlib.suppress(errors.StoreError):
                await self.propose(internal_pb2.InternalRequest(alarm=request))
        raise errors.ErrNoSpace

    async def _compact(self, revision: int) -> None:
        request = rpc_pb2.CompactionRequest(revision=revision)
        await self.propose(internal_pb2.InternalRequest(compaction=request))

    async def _sweep_deadlines(self) -> None:
        """Fail writes whose deadline passed with ErrTimeout. A sweep, not a timer per
        write: asyncio.timeout's schedule-and-cancel was ~4% of a replica's CPU."""
        deadlines = self._deadlines
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(DEADLINE_SWEEP_S)
            now = loop.time()
            while deadlines and deadlines[0][0] <= now:
                _, fut = deadlines.popleft()
                if not fut.done():
                    fut.set_exception(errors.ErrTimeout)
                    fut.exception()  # retrieved: its caller may be gone already

    async def linearizable_barrier(self) -> None:
        """Wait until this replica has applied everything committed before the call."""
        try:
            async with asyncio.timeout(self._request_timeout):
                index = await self.node.read_index()
                await self.sm.wait_applied(index)
        except TimeoutError:
            raise errors.ErrTimeout from None
        except RaftError as exc:
            raise errors.from_raft(exc) from None

    async def move_leader(self, target: int) -> None:
        """etcd's MoveLeader: only the leader hands over; returns once ``target`` leads."""
        if self.node.leader != self.config.member_id:
            raise errors.ErrNotLeader
        try:
            await self.node.transfer_leader(target, self._request_timeout)
        except RaftError as exc:
            raise errors.from_raft(exc) from None

    @property
    def request_timeout(self) -> float:
        return self._request_timeout

    def members(self) -> Sequence[rpc_pb2.Member]:
        return members.members_list(self.contexts(), self._client_urls)

    def contexts(self) -> dict[int, bytes]:
        """The membership, member id -> context (see _flag_contexts for empty ones)."""
        return self._with_flag_contexts(self.node.members)

    def _with_flag_contexts(self, contexts: dict[int, bytes]) -> dict[int, bytes]:
        flags = self._flag_contexts
        return {i: ctx or flags.get(i, b"") for i, ctx in contexts.items()}

    # -- internals --------------------------------------------------------------------

    def _on_leader_change(self, leader: int, is_leader: bool) -> None:
        # Proposals sent to a leader that is gone may never come back; their outcome is
        # unknown, which is what "leader changed" tells the client (as a timeout would),
        # only sooner, so clients retry elsewhere at once.
        # From no leader to a leader nothing was sent anywhere yet: requests held during a
        # leadership transfer's election (RaftNode) go to the new leader.
        if leader != self._leader and self._leader != 0:
            self.sm.fail_pending(errors.ErrLeaderChanged, keep=self.node.held_futures())
        if leader != 0 and leader != self._leader:
            store_metrics.LEADER_CHANGES.inc()
        self._leader = leader
        self._start_task(self._set_health(leader != 0))

    def _start_task(self, work: Coroutine[Any, Any, None]) -> None:
        """A background task of this replica, cancelled by stop()."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.append(task)
        task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        if task in self._tasks:
            self._tasks.remove(task)

    async def _set_health(self, serving: bool) -> None:
        if self._health is None:
            return
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *_SERVICES]:
            await self._health.set(name, status)

    async def _expire_leases(self) -> None:
        """On the leader, revoke leases whose deadline passed (through the log)."""
        while True:
            await asyncio.sleep(LEASE_CHECK_INTERVAL)
            if not self.sm.is_leader:
                continue
            for lease_id in self.sm.lessor.expired(self.sm.clock()):
                self._start_task(self._revoke(lease_id))

    async def _revoke(self, lease_id: int) -> None:
        request = internal_pb2.InternalRequest(lease_revoke=rpc_pb2.LeaseRevokeRequest(ID=lease_id))
        try:
            await self.propose(request)
            log.info("lease expired", lease=f"{lease_id:x}")
        except errors.StoreError as exc:
            if isinstance(exc, errors.ErrLeaseNotFound):
                self.sm.lessor.revoke(lease_id)
            else:
                log.info("lease expiry deferred", lease=f"{lease_id:x}", error=exc.message)

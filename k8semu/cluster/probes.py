"""Asking running components how they are, through their public gRPC APIs only.

- any component: the standard ``grpc.health.v1.Health/Check`` on its listen address;
- the store: etcd v3 ``Maintenance.Status`` (who leads, by member id, and who says so);
- the cluster: the API server's ``List`` of Nodes (Ready condition) and of kube-system Leases
  (which scheduler / controller manager leads).

Synchronous (the launcher and ``status`` are plain loops) with a deadline on every call; calls
to several components go out at once as futures. Must not start or signal processes.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterable, Mapping, Sequence

import grpc  # type: ignore[import-untyped, unused-ignore]
from grpc_health.v1 import health_pb2, health_pb2_grpc

from k8semu import transport
from k8semu.pb.api.v1 import apiserver_pb2, apiserver_pb2_grpc, coordination_pb2, core_pb2
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc

__all__ = ["Probes", "agreed_leader"]

PROBE_CHANNEL_OPTIONS = (
    ("grpc.enable_http_proxy", 0),
    # A component that is starting answers within a second; gRPC's default reconnect back-off
    # would hide it for longer. A refused connection (a component down) still fails at once.
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
    # The least time one connection attempt gets (gRPC's MIN_CONNECT_TIMEOUT, despite the
    # name): at 50 ms a busy machine's TLS handshake (load average 30) timed out "before
    # receiving SETTINGS frame" and `k8semu status` called live components UNAVAILABLE.
    ("grpc.min_reconnect_backoff_ms", 5_000),
)
SERVING = "SERVING"


class Probes:
    """Cached channels to components, and the questions the launcher and ``status`` ask."""

    def __init__(
        self, tls: transport.ClientTLS | Mapping[str, transport.ClientTLS] | None = None
    ) -> None:
        """`tls`: the CA and client certificate to ask TLS components with, for every
        address or per address (those not listed: plain text); None: plain text."""
        self._channels: dict[str, grpc.Channel] = {}
        self._tls = tls

    def _credentials(self, address: str) -> grpc.ChannelCredentials | None:
        tls = self._tls
        if isinstance(tls, Mapping):
            tls = tls.get(address)
        return None if tls is None else transport.channel_credentials(tls)

    def channel(self, address: str) -> grpc.Channel:
        ch = self._channels.get(address)
        credentials = None if ch is not None else self._credentials(address)
        if ch is None and credentials is not None:
            ch = grpc.secure_channel(address, credentials, options=PROBE_CHANNEL_OPTIONS)
            self._channels[address] = ch
        elif ch is None:
            ch = grpc.insecure_channel(address, options=PROBE_CHANNEL_OPTIONS)
            self._channels[address] = ch
        return ch

    def forget(self, address: str) -> None:
        """Drop the channel to a restarted component (reconnect at once, not after back-off)."""
        ch = self._channels.pop(address, None)
        if ch is not None:
            with contextlib.suppress(Exception):
                ch.close()

    def close(self) -> None:
        for address in list(self._channels):
            self.forget(address)

    # -- health -------------------------------------------------------------------------------

    def health(self, addresses: Iterable[str], timeout: float) -> dict[str, str]:
        """address -> ``SERVING``, ``NOT_SERVING``, ... or ``UNAVAILABLE`` (no answer)."""
        futures = {
            a: health_pb2_grpc.HealthStub(self.channel(a)).Check.future(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
            for a in addresses
        }
        out = {}
        for address, fut in futures.items():
            try:
                resp = fut.result()
                out[address] = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
            except grpc.RpcError as exc:
                out[address] = exc.code().name
        return out

    # -- the store ----------------------------------------------------------------------------

    def store_statuses(
        self, members: Sequence[tuple[str, str]], timeout: float
    ) -> dict[str, rpc_pb2.StatusResponse | str]:
        """name -> its ``Maintenance.Status`` answer, or the gRPC code it failed with."""
        futures = {
            name: rpc_pb2_grpc.MaintenanceStub(self.channel(address)).Status.future(
                rpc_pb2.StatusRequest(), timeout=timeout
            )
            for name, address in members
        }
        out: dict[str, rpc_pb2.StatusResponse | str] = {}
        for name, fut in futures.items():
            try:
                out[name] = fut.result()
            except grpc.RpcError as exc:
                out[name] = exc.code().name
        return out

    def alarms(self, address: str, timeout: float) -> list[rpc_pb2.AlarmMember]:
        """The store's active alarms (etcd ``Maintenance.Alarm`` with action GET), as one
        replica reports them (alarms are cluster-wide). Raises grpc.RpcError."""
        resp = rpc_pb2_grpc.MaintenanceStub(self.channel(address)).Alarm(
            rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET), timeout=timeout
        )
        assert isinstance(resp, rpc_pb2.AlarmResponse)
        return list(resp.alarms)

    # -- the API ------------------------------------------------------------------------------

    def create_event(self, servers: Sequence[str], event: object, timeout: float) -> None:
        """Create ``event`` (a core/v1 Event) through the first API server that answers.
        Raises grpc.RpcError when none does."""
        from google.protobuf import any_pb2

        assert isinstance(event, core_pb2.Event)
        packed = any_pb2.Any()
        packed.Pack(event)
        last: grpc.RpcError | None = None
        for server in servers:
            stub = apiserver_pb2_grpc.APIStub(self.channel(server))
            try:
                stub.Create(
                    apiserver_pb2.CreateRequest(
                        resource="events", namespace=event.metadata.namespace, object=packed
                    ),
                    timeout=timeout,
                )
                return
            except grpc.RpcError as exc:
                last = exc
        if last is not None:
            raise last

    def _list(
        self, servers: Sequence[str], resource: str, namespace: str, timeout: float
    ) -> apiserver_pb2.ListResponse:
        last: grpc.RpcError | None = None
        for server in servers:
            stub = apiserver_pb2_grpc.APIStub(self.channel(server))
            try:
                resp = stub.List(
                    apiserver_pb2.ListRequest(resource=resource, namespace=namespace),
                    timeout=timeout,
                )
                assert isinstance(resp, apiserver_pb2.ListResponse)
                return resp
            except grpc.RpcError as exc:
                last = exc
        assert last is not None
        raise last

    def config_map(
        self, servers: Sequence[str], namespace: str, name: str, timeout: float
    ) -> dict[str, str] | None:
        """The data of ConfigMap ``namespace/name``, None when there is none. Raises
        grpc.RpcError when no API server answers."""
        last: grpc.RpcError | None = None
        for server in servers:
            stub = apiserver_pb2_grpc.APIStub(self.channel(server))
            try:
                resp = stub.Get(
                    apiserver_pb2.GetRequest(resource="configmaps", namespace=namespace, name=name),
                    timeout=timeout,
                )
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    return None
                last = exc
                continue
            cm = core_pb2.ConfigMap()
            resp.object.Unpack(cm)
            return dict(cm.data)
        assert last is not None
        raise last

    def nodes_ready(self, servers: Sequence[str], timeout: float) -> dict[str, bool]:
        """Node name -> whether its Ready condition is True. Raises grpc.RpcError when no API
        server answers."""
        out = {}
        for item in self._list(servers, "nodes", "", timeout).items:
            node = core_pb2.Node()
            item.Unpack(node)
            out[node.metadata.name] = any(
                c.type == "Ready" and c.status == "True" for c in node.status.conditions
            )
        return out

    def leases(self, servers: Sequence[str], timeout: float) -> dict[str, str]:
        """kube-system Lease name -> its holderIdentity ("" when free)."""
        out = {}
        for item in self._list(servers, "leases", "kube-system", timeout).items:
            lease = coordination_pb2.Lease()
            item.Unpack(lease)
            out[lease.metadata.name] = lease.spec.holder_identity
        return out


def agreed_leader(
    statuses: dict[str, rpc_pb2.StatusResponse | str], size: int, *, everyone: Sequence[str] = ()
) -> str | None:
    """The member that says it leads and that a quorum of ``size`` members names, or None.

    With ``everyone``, each of those members must also have answered and name it (so a client
    may spread over all of them at once).
    """
    answers = {n: s for n, s in statuses.items() if isinstance(s, rpc_pb2.StatusResponse)}
    votes = collections.Counter(s.leader for s in answers.values() if s.leader)
    for leader_id, count in votes.most_common():
        if count < size // 2 + 1:
            break
        # Followers keep naming a dead leader until their election timer fires: the leader
        # must say so itself.
        name = next((n for n, s in answers.items() if s.header.member_id == leader_id), None)
        if name is None:
            continue
        if any(n not in answers or answers[n].leader != leader_id for n in everyone):
            continue
        return name
    return None

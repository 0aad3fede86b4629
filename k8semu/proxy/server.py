"""`ProxyServer`: one node's service proxy, driven by the API.

Owns the informers on Services and Endpoints (and, with a tunnel, Nodes and Pods), turning
their caches into a service table (level-triggered: any change marks the table dirty and one
loop recomputes it whole and applies it), the Warning Events for ports it cannot bind, and the
gRPC server on `listen_address` (health + `k8semu.proxy.v1.Proxy` metrics). With a tunnel it
also publishes where its tunnel is on its own Node (annotation `k8semu.io/tunnel-endpoint`)
and adds the pod overlay: listeners on the pod IPs of other hosts' pods
(`k8semu.proxy.overlay`). The sockets and bytes belong to `Proxier`; the pure tables to
`k8semu.proxy.table` and `k8semu.proxy.overlay`.

Health is SERVING once the informers have synced and the first table is applied.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import uuid
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from k8semu import aio, transport
from k8semu.client import Client, ClientError, Indexer, SharedInformers
from k8semu.client.events import WARNING, EventRecorder
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2
from k8semu.pb.proxy.v1 import proxy_pb2, proxy_pb2_grpc
from k8semu.proxy import metrics as proxy_metrics
from k8semu.proxy.datapath import DEFAULT_DATA_PATH, DataPathConfig, Dialer, direct
from k8semu.proxy.overlay import TUNNEL_ENDPOINT_ANNOTATION, pod_rules
from k8semu.proxy.proxier import EndpointSnapshot, PortSnapshot, Proxier
from k8semu.proxy.scrape import ENDPOINT_ANNOTATION, get_metrics
from k8semu.proxy.table import ListenAddress, PortKey, build_table
from k8semu.proxy.tunnel import DEFAULT_TUNNEL_PORT, TunnelDialer, TunnelServer

log = get_logger(__name__)

DEFAULT_METRICS_PORT = 10249  # kube-proxy's metrics port
# How often the proxy checks that its Node still names its endpoint (a re-registered Node
# comes without), and how soon it tries again when it could not (no Node yet, API down).
ADVERTISE_INTERVAL = 30.0
ADVERTISE_RETRY = 1.0  # doubling up to ADVERTISE_RETRY_MAX
ADVERTISE_RETRY_MAX = 5.0
EVENT_COMPONENT = "kube-proxy"
#: Who may open a tunnel when it serves TLS: the other nodes' proxies (their certificates' CN).
TUNNEL_PEERS = ("system:kube-proxy",)
BIND_FAILED_REASON = "FailedToBindPort"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    """One node's proxy.

    - `servers`: API server endpoints (HOST:PORT).
    - `node_name`: this node (Events' host; default the host name).
    - `node_ip`: where this node's NodePorts are bound (and the tunnel listens).
    - `listen_address`: health and metrics gRPC; empty means `node_ip:10249`.
    - `tunnel_port`: 0 turns the tunnel off; otherwise this node serves CONNECT on
      `node_ip:tunnel_port` and reaches endpoints on remote nodes through theirs.
    - `serving_tls`: the certificate of the gRPC listener and the tunnel, and the CA callers'
      certificates must be of (--tls-cert-file, --tls-private-key-file, --client-ca-file);
      with it the tunnel is mutual TLS both ways (dialed with `tls`) and opened only by other
      proxies (`TUNNEL_PEERS`). None: plain text.
    """

    servers: tuple[str, ...] = ("127.0.0.1:6443",)
    #: The CA and this proxy's client certificate (None: plain text).
    tls: transport.ClientTLS | None = None
    serving_tls: transport.ServerTLS | None = None
    node_name: str = ""
    node_ip: str = "127.0.0.1"
    listen_address: str = ""
    tunnel_port: int = 0
    data_path: DataPathConfig = field(default=DEFAULT_DATA_PATH)

    @property
    def metrics_address(self) -> str:
        return self.listen_address or f"{self.node_ip}:{DEFAULT_METRICS_PORT}"


class _Metrics(proxy_pb2_grpc.ProxyServicer):
    def __init__(self, server: ProxyServer) -> None:
        self._server = server

    async def GetMetrics(
        self, request: proxy_pb2.GetMetricsRequest, context: Any
    ) -> proxy_pb2.ProxyMetrics:
        return self._server.metrics(request.namespace, request.service)


class ProxyServer:
    """`await start()` (raises OSError/AddressError when the metrics address cannot be
    bound), `await stop()`."""

    def __init__(self, config: ProxyConfig, *, client: Client | None = None) -> None:
        self.config = config
        self.node_name = config.node_name or os.uname().nodename
        self._own_client = client is None
        self.client = client if client is not None else Client(list(config.servers), tls=config.tls)
        self.informers = SharedInformers(self.client)
        self.services = self.informers.informer(core_pb2.Service)
        self.endpoints = self.informers.informer(core_pb2.Endpoints)
        self.recorder = EventRecorder(self.client, EVENT_COMPONENT, host=self.node_name)
        dialer: Dialer = direct
        self.tunnel: TunnelServer | None = None
        self.tunnel_dialer: TunnelDialer | None = None
        self.node_cache: Indexer[core_pb2.Node] = Indexer()
        self.pod_cache: Indexer[core_pb2.Pod] = Indexer()
        self._publishing: asyncio.Task[None] | None = None
        self._advertising: asyncio.Task[None] | None = None
        if config.tunnel_port:
            nodes = self.informers.informer(core_pb2.Node)
            pods = self.informers.informer(core_pb2.Pod)
            self.node_cache, self.pod_cache = nodes.cache, pods.cache
            self.tunnel_dialer = TunnelDialer(nodes.cache, tunnel_port=config.tunnel_port)
            dialer = self.tunnel_dialer
            self.tunnel = _tunnel_server(config, self.node_name)
            for watched in (nodes, pods):
                watched.add_event_handler(
                    on_add=lambda _: self._mark(),
                    on_update=lambda _o, _n: self._mark(),
                    on_delete=lambda _: self._mark(),
                )
        self.proxier = Proxier(
            config=_data_path(config), dialer=dialer, on_bind_error=self._bind_failed
        )
        for informer in (self.services, self.endpoints):
            informer.add_event_handler(
                on_add=lambda _: self._mark(),
                on_update=lambda _o, _n: self._mark(),
                on_delete=lambda _: self._mark(),
            )
        self._dirty = asyncio.Event()
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._grpc: grpc.aio.Server | None = None
        self._health: Any = None
        self._started = time.monotonic()
        self.instance = uuid.uuid4().hex
        self.port = 0
        self.endpoint = ""  # HOST:PORT of the gRPC server once started

    def _mark(self) -> None:
        self._dirty.set()

    async def start(self) -> None:
        srv, health = transport.server([proxy_pb2.DESCRIPTOR.services_by_name["Proxy"].full_name])
        proxy_pb2_grpc.add_ProxyServicer_to_server(_Metrics(self), srv)
        self.port = transport.bind(
            srv, self.config.metrics_address, flag="--listen-address", tls=self.config.serving_tls
        )
        await health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await srv.start()
        self._grpc, self._health = srv, health
        host = self.config.metrics_address.rpartition(":")[0]
        if host in ("", "0.0.0.0", "[::]", "::"):
            host = self.config.node_ip
        self.endpoint = f"{host}:{self.port}"
        if self.tunnel is not None:
            await self.tunnel.start()
        proxy_metrics.PORTS.proxier = weakref.ref(self.proxier)
        await self.proxier.start()
        self.recorder.start()
        self.informers.start()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._sync_loop(), name="sync")
        self._advertising = loop.create_task(self._advertise(), name="advertise")
        log.info(
            "proxy started",
            node=self.node_name,
            node_ip=self.config.node_ip,
            metrics=self.config.metrics_address,
        )

    async def wait_synced(self, timeout: float | None = None) -> None:
        async with asyncio.timeout(timeout):
            await self._synced.wait()

    async def stop(self, grace: float) -> None:
        """Stop syncing and forwarding; the metrics server's calls get `grace` seconds."""
        await aio.cancel_and_wait([self._task, self._publishing, self._advertising])
        self._task = self._publishing = self._advertising = None
        await self.informers.stop()
        await self.proxier.stop()
        if self.tunnel is not None:
            await self.tunnel.stop()
        await self.recorder.stop()
        if self._grpc is not None:
            await self._grpc.stop(grace)
            self._grpc = None
        if self._own_client:
            await self.client.close()

    async def _sync_loop(self) -> None:
        await self.informers.wait_synced()
        while True:
            self._dirty.clear()
            try:
                await self.sync()
            except Exception:  # a bug in the table code must not take the node's proxy down
                log.exception("sync failed")
            if not self._synced.is_set():
                self._synced.set()
                if self._health is not None:
                    await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
                log.info("serving", services=len(self.services.cache.keys()))
            await self._dirty.wait()

    async def sync(self) -> None:
        """Recompute the whole table from the caches and apply it."""
        eps = {(e.metadata.namespace, e.metadata.name): e for e in self.endpoints.cache.list()}
        table = build_table(
            self.services.cache.list(),
            eps,
            node_ip=self.config.node_ip,
            node_name=self.node_name,
        )
        if self.tunnel is not None:  # the tunnel reaches these pods and nothing else
            self.tunnel.pod_ips = node_pod_ips(self.pod_cache.list(), self.node_name)
        if self.tunnel_dialer is not None:
            self._publish_tunnel()
            nodes = {n.metadata.name: n for n in self.node_cache.list()}
            overlay = pod_rules(
                self.pod_cache.list(), nodes, is_remote=self.tunnel_dialer.is_remote
            )
            # A pod IP never equals a Service address, so the two tables cannot collide.
            table.update(overlay)
        await self.proxier.apply(table)

    @property
    def tunnel_endpoint(self) -> str:
        """What this proxy publishes on its Node: `node_ip:tunnel_port`."""
        return f"{self.config.node_ip}:{self.config.tunnel_port}"

    def _publish_tunnel(self) -> None:
        """Level-triggered: when this node's Node lacks the annotation saying where its tunnel
        is (or says something else), patch it; the next Node event re-checks."""
        node = self.node_cache.get(self.node_name)
        if node is None or (self._publishing is not None and not self._publishing.done()):
            return
        if node.metadata.annotations.get(TUNNEL_ENDPOINT_ANNOTATION) == self.tunnel_endpoint:
            return
        self._publishing = asyncio.get_running_loop().create_task(
            self._patch_node(), name="publish-tunnel"
        )

    async def _patch_node(self) -> None:
        patch = {"metadata": {"annotations": {TUNNEL_ENDPOINT_ANNOTATION: self.tunnel_endpoint}}}
        try:
            await self.client.patch(core_pb2.Node, self.node_name, patch)
        except Exception as exc:  # the Node may be gone or the API down: the next event retries
            log.warning("cannot publish the tunnel endpoint", node=self.node_name, error=str(exc))
            return
        log.info("tunnel endpoint published", node=self.node_name, endpoint=self.tunnel_endpoint)

    async def _advertise(self) -> None:
        """Keep this proxy's gRPC address on its Node (`k8semu.io/proxy-endpoint`), where
        the HPA's traffic metrics find every proxy. The kubelet registers the Node, maybe
        after this proxy started, and a re-registered Node comes without the annotation: so
        look now and then, patch when it differs; retry sooner while it fails (no Node
        yet, the API down), backing off to every 5 s."""
        retry = ADVERTISE_RETRY
        while True:
            delay = ADVERTISE_INTERVAL
            try:
                node = await self.client.get(core_pb2.Node, self.node_name)
                if node.metadata.annotations.get(ENDPOINT_ANNOTATION) != self.endpoint:
                    patch = {"metadata": {"annotations": {ENDPOINT_ANNOTATION: self.endpoint}}}
                    await self.client.patch(core_pb2.Node, self.node_name, patch)
                    log.info(
                        "proxy endpoint published", node=self.node_name, endpoint=self.endpoint
                    )
                retry = ADVERTISE_RETRY
            except ClientError as exc:
                log.debug("cannot publish the proxy endpoint", node=self.node_name, error=str(exc))
                delay, retry = retry, min(retry * 2, ADVERTISE_RETRY_MAX)
            await asyncio.sleep(delay)

    def _bind_failed(self, key: PortKey, addr: ListenAddress, message: str) -> None:
        svc = self.services.cache.get_by_name(key.service, key.namespace)
        if svc is not None:
            self.recorder.event(svc, WARNING, BIND_FAILED_REASON, f"{self.node_name}: {message}")

    def metrics(self, namespace: str = "", service: str = "") -> proxy_pb2.ProxyMetrics:
        out = proxy_pb2.ProxyMetrics(
            node_name=self.node_name,
            node_ip=self.config.node_ip,
            uptime_seconds=time.monotonic() - self._started,
            bind_errors=sorted(self.proxier.bind_errors.values()),
            instance=self.instance,
        )
        out.ports.extend(snapshot_messages(self.proxier, namespace, service))
        return out


def node_pod_ips(pods: Iterable[core_pb2.Pod], node_name: str) -> frozenset[str]:
    """The IPs of the pods bound to `node_name`: what its tunnel may reach."""
    return frozenset(
        ip
        for pod in pods
        if pod.spec.node_name == node_name
        for ip in (pod.status.pod_ip, *(a.ip for a in pod.status.pod_ips))
        if ip
    )


def _data_path(config: ProxyConfig) -> DataPathConfig:
    """The data path's config, with the client TLS of tunnels when the tunnel serves TLS."""
    tls = config.serving_tls
    if not config.tunnel_port or tls is None or tls.client_ca_file is None or config.tls is None:
        return config.data_path
    client = transport.client_ssl_context(config.tls)
    return dataclasses.replace(config.data_path, tunnel_tls=client)


def _tunnel_server(config: ProxyConfig, node_name: str) -> TunnelServer:
    """This node's tunnel: mutual TLS when the proxy serves TLS with a client CA; it reaches
    no pod until the first sync says which are this node's."""
    tls = config.serving_tls
    context = None
    if tls is not None and tls.client_ca_file is not None:
        context = transport.server_ssl_context(dataclasses.replace(tls, require_client_cert=True))
    tunnel = TunnelServer(
        config.node_ip,
        config.tunnel_port,
        config=config.data_path,
        tls=context,
        peers=TUNNEL_PEERS,
        node_name=node_name,
    )
    tunnel.pod_ips = frozenset()
    return tunnel


def _traffic(snap: PortSnapshot | EndpointSnapshot) -> dict[str, int]:
    """The fields port and endpoint messages share."""
    return {
        "connections_total": snap.connections_total,
        "connections_active": max(0, snap.connections_active),
        "bytes_in": snap.bytes_in,
        "bytes_out": snap.bytes_out,
        "http_requests_total": snap.http_requests,
    }


def snapshot_messages(
    proxier: Proxier, namespace: str = "", service: str = ""
) -> Sequence[proxy_pb2.ServicePortMetrics]:
    """The proxier's counters as messages, optionally for one namespace / service."""
    out = []
    for snap in proxier.snapshot():
        key = snap.key
        if (namespace and key.namespace != namespace) or (service and key.service != service):
            continue
        out.append(
            proxy_pb2.ServicePortMetrics(
                namespace=key.namespace,
                service=key.service,
                port_name=key.port_name,
                protocol=key.protocol,
                scope=key.scope,
                listen=snap.listen,
                ready_endpoints=snap.ready_endpoints,
                errors=snap.errors,
                requests_per_second=snap.requests_per_second,
                endpoints=[
                    proxy_pb2.EndpointMetrics(
                        ip=e.ip, port=e.port, requests_total=e.requests, **_traffic(e)
                    )
                    for e in snap.endpoints
                ],
                **_traffic(snap),
            )
        )
    return out


__all__ = [
    "BIND_FAILED_REASON",
    "DEFAULT_METRICS_PORT",
    "DEFAULT_TUNNEL_PORT",
    "ProxyConfig",
    "ProxyServer",
    "get_metrics",
    "snapshot_messages",
]

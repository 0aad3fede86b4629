"""APIServer: the gRPC server process's component (start/stop), on top of APIServicer.

Health reports NOT_SERVING until the system namespaces (default, kube-system, kube-public)
are known to exist: until then a create in `default` could fail, so clients and the
launcher wait for SERVING. The store may still be electing a leader at start, so that is
retried in the background rather than failing start().

A graceful stop (SIGTERM) costs clients nothing: health turns NOT_SERVING, the server leaves
the `kubernetes` Endpoints, refuses new calls with UNAVAILABLE marked "not applied" (trailing
metadata NOT_APPLIED: k8semu.client sends them to another API server, writes included), ends
every watch stream cleanly (clients resume from their last resourceVersion elsewhere), lets
the calls in flight finish within `shutdown_grace`, and only then stops the gRPC server
(HTTP/2 GOAWAY; a client's next call finds no connection and moves on). Only calls still
running after the grace period are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from dataclasses import dataclass, field
from typing import cast

from grpc_health.v1 import health_pb2

from k8semu import transport
from k8semu.api import kinds
from k8semu.apiserver import podstreams, registry, repair
from k8semu.apiserver.allocation import DEFAULT_RANGES, ServiceRanges
from k8semu.apiserver.auth import policy, restside
from k8semu.apiserver.auth.config import AuthConfig, build_guard
from k8semu.apiserver.bootstrap import Address, KubernetesService
from k8semu.apiserver.compaction import DEFAULT_COMPACTION_INTERVAL, Compactor
from k8semu.apiserver.encryption import Transformer
from k8semu.apiserver.errors import StatusError
from k8semu.apiserver.eventttl import DEFAULT_EVENT_TTL, EventLeases
from k8semu.apiserver.grpcface import add_api_servicer
from k8semu.apiserver.metrics import RequestMetrics
from k8semu.apiserver.resourcemetrics import DEFAULT_RESOLUTION, MetricsConfig, ResourceMetrics
from k8semu.apiserver.rest.server import RESTServer
from k8semu.apiserver.rest.streams import Streams
from k8semu.apiserver.service import APIServicer
from k8semu.apiserver.store import Store
from k8semu.apiserver.watchcache import DEFAULT_WATCH_CACHE, WatchCacheConfig
from k8semu.log import get_logger
from k8semu.pb.api.v1 import apiserver_pb2, core_pb2

log = get_logger(__name__)

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public")
_WITHDRAW_SECONDS = 2.0  # a graceful stop waits this long at most to leave the Endpoints
# Calls in flight get this long to finish on a graceful stop. A unary call waits at most the
# store deadline (5 s) for the store, but in practice takes milliseconds; withdrawing (2 s)
# plus this stays within the launcher's stop grace (launcher.stopGracePeriod, 5 s).
DEFAULT_SHUTDOWN_GRACE = 2.5
_STOP_GRACE = 0.2  # for the gRPC server itself, once the calls in flight are done
SERVICE_NAME = apiserver_pb2.DESCRIPTOR.services_by_name["API"].full_name


@dataclass(frozen=True, slots=True, kw_only=True)
class APIServerConfig:
    listen_address: str = "127.0.0.1:6443"
    # Kubernetes' REST API (kubectl, client libraries) on its own port; "" serves none.
    rest_address: str = ""
    store_endpoints: tuple[str, ...] = ("127.0.0.1:2379", "127.0.0.1:12379", "127.0.0.1:22379")
    store_deadline: float = transport.DEFAULT_DEADLINES.unary
    bookmark_interval: float = 5.0
    watch_cache_capacity: int = DEFAULT_WATCH_CACHE.capacity
    watch_max_pending: int = DEFAULT_WATCH_CACHE.max_pending
    service_ranges: ServiceRanges = field(default=DEFAULT_RANGES)
    advertise_address: str = ""  # the IP in the `kubernetes` Endpoints; "" = the listen host
    lease_seconds: float = 15.0  # an API server missing this long leaves those Endpoints
    # kube-apiserver's --etcd-compaction-interval; 0 turns the compactor off.
    compaction_interval: float = DEFAULT_COMPACTION_INTERVAL
    # A graceful stop lets calls in flight finish this long before cancelling them.
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    # kube-apiserver's --event-ttl: Events are deleted by the store this long after their last
    # write; 0 keeps them forever.
    event_ttl: float = DEFAULT_EVENT_TTL
    # metrics-server's --metric-resolution: the kubelets are scraped this often for the
    # metrics.k8s.io kinds; 0 serves no resource metrics.
    metric_resolution: float = DEFAULT_RESOLUTION
    # Authentication, authorization, audit (apiserver/auth); the default: none (AlwaysAllow).
    auth: AuthConfig = field(default_factory=AuthConfig)
    # TLS of the gRPC and REST listeners (--tls-cert-file, --tls-private-key-file,
    # --client-ca-file) and of the store client (--etcd-cafile, --etcd-certfile,
    # --etcd-keyfile); None: plain text.
    tls: transport.ServerTLS | None = None
    store_tls: transport.ClientTLS | None = None
    # How this server dials the kubelets (logs, exec, port-forward, usage summaries):
    # --kubelet-certificate-authority and --kubelet-client-certificate/-key. Kubelets serving
    # TLS take only this certificate for their pods' streams; None: plain text.
    kubelet_tls: transport.ClientTLS | None = None
    # --encryption-provider-config: the resources encrypted at rest (encryption.py); None: none.
    encryption: Transformer | None = None


def advertise_ip(config: APIServerConfig) -> str:
    """The address other components reach this server at: --advertise-address, else the
    listen host (127.0.0.1 for a wildcard or a name)."""
    if config.advertise_address:
        return config.advertise_address
    host = config.listen_address.rpartition(":")[0].strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return "127.0.0.1"
    return "127.0.0.1" if ip.is_unspecified else str(ip)


class APIServer:
    def __init__(self, config: APIServerConfig) -> None:
        self.config = config
        self.store = Store(
            config.store_endpoints,
            deadline=config.store_deadline,
            tls=config.store_tls,
            transformer=config.encryption,
        )
        self.resource_metrics: ResourceMetrics | None = None
        if config.metric_resolution > 0:
            self.resource_metrics = ResourceMetrics(
                MetricsConfig(config.metric_resolution, tls=config.kubelet_tls),
                self._list_nodes,
                self._list_pods,
            )
        self.servicer = APIServicer(
            self.store,
            bookmark_interval=config.bookmark_interval,
            watch_cache=WatchCacheConfig(
                capacity=config.watch_cache_capacity, max_pending=config.watch_max_pending
            ),
            ranges=config.service_ranges,
            event_leases=(
                EventLeases(self.store.channel, config.event_ttl, deadline=config.store_deadline)
                if config.event_ttl > 0
                else None
            ),
            rows=registry.build(
                config.service_ranges,
                served=self.resource_metrics.readers()
                if self.resource_metrics is not None
                else None,
            ),
        )
        self.server, self.health = transport.server(
            [SERVICE_NAME, podstreams.SERVICE_NAME], interceptors=[RequestMetrics(SERVICE_NAME)]
        )
        self.guard = build_guard(config.auth, self.servicer.watch_caches)
        add_api_servicer(self.servicer, self.server, self.guard)
        podstreams.add_to_server(
            self.server, Streams(self.servicer, kubelet_tls=config.kubelet_tls), self.guard
        )
        self.port = 0
        self.rest: RESTServer | None = None
        if config.rest_address:
            self.rest = RESTServer(
                self.servicer,
                config.rest_address,
                lambda: self._serving,
                [restside.middleware(self.guard)] if self.guard is not None else [],
                tls=config.tls,
                kubelet_tls=config.kubelet_tls,
            )
        self._bootstrap: asyncio.Task[None] | None = None
        self.kubernetes_service: KubernetesService | None = None
        self._serving = False  # set once the kubernetes Endpoints may list this server
        self.compactor: Compactor | None = None
        if config.compaction_interval > 0:
            self.compactor = Compactor(self.store, config.compaction_interval)
        self._compacting: asyncio.Task[None] | None = None
        self._scraping: asyncio.Task[None] | None = None

    async def _list_nodes(self) -> list[core_pb2.Node]:
        found = await self.servicer.list_objects(kinds.for_message(core_pb2.Node), "", "")
        return cast(list[core_pb2.Node], found)

    async def _list_pods(self) -> list[core_pb2.Pod]:
        found = await self.servicer.list_objects(kinds.for_message(core_pb2.Pod), "", "")
        return cast(list[core_pb2.Pod], found)

    async def start(self) -> None:
        self.port = transport.bind(
            self.server, self.config.listen_address, flag="--listen-address", tls=self.config.tls
        )
        if self.rest is not None:
            await self.rest.start()
        self.kubernetes_service = KubernetesService(
            self.servicer,
            Address(advertise_ip(self.config), self.port, self.rest.port if self.rest else 0),
            lease_seconds=self.config.lease_seconds,
        )
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        # Creates check their namespace against this cache (one store round trip, not two).
        self.servicer.watch_caches.get(kinds.for_resource("namespaces"))
        # Admission reads a namespace's quotas and limit ranges from these.
        self.servicer.watch_caches.get(kinds.for_resource("resourcequotas"))
        self.servicer.watch_caches.get(kinds.for_resource("limitranges"))
        loop = asyncio.get_running_loop()
        self._bootstrap = loop.create_task(self._ensure_namespaces())
        if self.compactor is not None:
            self._compacting = loop.create_task(self.compactor.run())
        if self.resource_metrics is not None:
            self._scraping = loop.create_task(self.resource_metrics.run())
        log.info(
            "api server started",
            port=self.port,
            rest=self.rest.url if self.rest is not None else "",
            store=",".join(self.store.endpoints),
            compaction_interval=self.config.compaction_interval,
        )

    async def stop(self, grace: float) -> None:
        """Stop; gracefully (see the module docstring; `k8semu apiserver` gives the
        --shutdown-grace-period) unless `grace` is 0."""
        serving = self._serving
        with contextlib.suppress(Exception):  # a health update never blocks the stop
            await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        # From here new calls are refused, marked as not applied, so clients go elsewhere
        # before the GOAWAY (gRPC cancels calls it has received but not yet handed to us
        # when the server stops; refusing them first keeps that window nearly empty).
        self.servicer.drain()
        log.info("api server draining", in_flight=self.servicer.in_flight)
        for task in (self._bootstrap, self._compacting, self._scraping):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if serving and grace and self.kubernetes_service is not None:
            try:
                await asyncio.wait_for(self.kubernetes_service.withdraw(), _WITHDRAW_SECONDS)
            except (StatusError, TimeoutError) as exc:
                log.info("could not withdraw from the kubernetes endpoints", error=repr(exc))
        # Watch streams would otherwise hold the whole grace period and then be cancelled.
        self.servicer.watch_caches.end_watches()
        log.info("api server stopping", grace=grace, still_in_flight=self.servicer.in_flight)
        if grace:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.servicer.idle.wait(), grace)
        if self.rest is not None:
            await self.rest.stop()
        await self.server.stop(_STOP_GRACE if grace else 0)
        await self.servicer.watch_caches.stop()
        await self.store.close()
        if self.guard is not None and self.guard.audit is not None:
            self.guard.audit.close()
        log.info("api server stopped", cancelled=self.servicer.in_flight)

    async def wait_stopped(self) -> None:
        await self.server.wait_for_termination()

    async def _set_health(
        self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def _ensure_namespaces(self) -> None:
        kind = kinds.for_resource("namespaces")
        delay = 0.1
        pending = list(SYSTEM_NAMESPACES)
        while pending:
            name = pending[0]
            ns = core_pb2.Namespace(api_version="v1", kind="Namespace")
            ns.metadata.name = name
            try:
                # Through the same create path as a client's, so the namespace is defaulted
                # and stamped; ALREADY_EXISTS (another API server won) is success.
                await self.servicer.create(kind, "", ns)
            except StatusError as exc:
                if exc.code.name != "ALREADY_EXISTS":
                    log.info("waiting for the store", namespace=name, error=exc.message)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
            pending.pop(0)
        log.info("system namespaces present", namespaces=list(SYSTEM_NAMESPACES))
        await repair.repair_all_allocations(self.store, self.servicer.registry)
        await self._ensure_policy()
        assert self.kubernetes_service is not None
        try:
            await self.kubernetes_service.reconcile()
        except StatusError as exc:
            log.warning("kubernetes service not reconciled yet", error=exc.message)
        self._serving = True
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        await self.servicer.namespaces.resume()
        await self.kubernetes_service.run()

    async def _ensure_policy(self) -> None:
        """The default ClusterRoles and bindings (auth/policy.py), created when missing; then
        authorization's caches listed before this server reports SERVING."""
        pending = [*policy.cluster_roles(), *policy.cluster_role_bindings()]
        while pending:
            try:
                await self.servicer.create(kinds.for_message(pending[0]), "", pending[0])
            except StatusError as exc:
                if exc.code.name != "ALREADY_EXISTS":
                    log.info("default RBAC policy not written yet", error=exc.message)
                    await asyncio.sleep(0.2)
                    continue
            pending.pop(0)
        if self.guard is not None:
            await self.guard.warm()


def parse_endpoints(text: str) -> tuple[str, ...]:
    """`127.0.0.1:2379,http://127.0.0.1:12379` -> ("127.0.0.1:2379", "127.0.0.1:12379")."""
    endpoints = tuple(
        transport.parse_url(part, flag="--store-endpoints")
        for part in text.split(",")
        if part.strip()
    )
    if not endpoints:
        raise transport.AddressError("--store-endpoints: at least one endpoint is required")
    return endpoints

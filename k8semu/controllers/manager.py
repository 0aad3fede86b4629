"""The controller manager: runs the registered controllers in one process, on one set of
shared informers and one Events recorder, only while it holds the leader Lease
`kube-system/kube-controller-manager` (when leader election is on).

Leadership lost: every controller, informer and the recorder are cancelled and dropped;
leadership won again: all are built fresh (no state survives from the last term, so nothing
decided on an old cache acts after another manager may have led). The gRPC health service
on `listen_address` reports SERVING once the manager is up (leader or standby), as
kube-controller-manager's /healthz does.

Owns that life cycle only: what each controller does is its own module's business.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import socket
import uuid
from typing import Any

from grpc_health.v1 import health_pb2

from k8semu import aio, transport
from k8semu.client import Client, LeaderElector, SharedInformers
from k8semu.client.events import EventRecorder
from k8semu.controllers.context import (
    Controller,
    ControllerContext,
    ControllerManagerConfig,
)
from k8semu.log import get_logger

log = get_logger(__name__)

# name -> "module:Class". Modules are imported when the manager starts, so a controller
# module that does not exist yet is skipped under "*" (and an error when named).
REGISTRY: dict[str, str] = {
    "replicaset": "k8semu.controllers.replicaset:ReplicaSetController",
    "deployment": "k8semu.controllers.deployment:DeploymentController",
    "daemonset": "k8semu.controllers.daemonset:DaemonSetController",
    "statefulset": "k8semu.controllers.statefulset:StatefulSetController",
    "persistentvolume": "k8semu.controllers.persistentvolume:PersistentVolumeController",
    "disruption": "k8semu.controllers.disruption:DisruptionController",
    "job": "k8semu.controllers.job:JobController",
    "cronjob": "k8semu.controllers.cronjob:CronJobController",
    "nodelifecycle": "k8semu.controllers.nodelifecycle:NodeLifecycleController",
    "garbagecollector": "k8semu.controllers.gc:GarbageCollector",
    "nodeipam": "k8semu.controllers.nodeipam:NodeIPAMController",
    "endpoints": "k8semu.controllers.endpoints:EndpointsController",
    "endpointslice": "k8semu.controllers.endpointslice:EndpointSliceController",
    "resourcequota": "k8semu.controllers.resourcequota:ResourceQuotaController",
    "horizontalpodautoscaling": (
        "k8semu.controllers.podautoscaler:HorizontalPodAutoscalerController"
    ),
    "clusterautoscaler": "k8semu.controllers.clusterautoscaler.controller:ClusterAutoscaler",
    "serviceaccount": "k8semu.controllers.serviceaccounts:ServiceAccountsController",
    "root-ca-cert-publisher": "k8semu.controllers.rootcacert:RootCACertPublisher",
    "csrapproving": "k8semu.controllers.certificates:CSRApprovingController",
    "csrsigning": "k8semu.controllers.certificates:CSRSigningController",
}

LEASE_NAME = "kube-controller-manager"
LEASE_NAMESPACE = "kube-system"
COMPONENT = "controller-manager"
DEFAULT_LISTEN_ADDRESS = "127.0.0.1:10257"  # kube-controller-manager's secure port
RESTART_DELAY = 1.0  # seconds before a controller whose run() failed is started again


class UnknownController(ValueError):
    """A controller name that is not in REGISTRY (or whose module cannot be imported)."""


def _load(name: str) -> type[Any] | None:
    path = REGISTRY[name]
    module_name, _, class_name = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise
    cls = getattr(module, class_name, None)
    if cls is None:
        return None
    return cls  # type: ignore[no-any-return]


def resolve_controllers(names: tuple[str, ...]) -> list[tuple[str, type[Any]]]:
    """The controller classes `names` select: "*" is every registered controller that can be
    imported, "-name" removes one, a plain name adds one (UnknownController if absent)."""
    wanted: list[str] = []
    explicit: set[str] = set()
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if name == "*":
            wanted.extend(n for n in REGISTRY if n not in wanted)
        elif name.startswith("-"):
            if name[1:] not in REGISTRY:
                raise UnknownController(f"--controllers: unknown controller {name[1:]!r}")
            wanted = [n for n in wanted if n != name[1:]]
        else:
            if name not in REGISTRY:
                known = ", ".join(sorted(REGISTRY))
                raise UnknownController(
                    f"--controllers: unknown controller {name!r} (known: {known})"
                )
            explicit.add(name)
            if name not in wanted:
                wanted.append(name)
    out = []
    for name in wanted:
        cls = _load(name)
        if cls is None:
            if name in explicit:
                raise UnknownController(f"--controllers: controller {name!r} is not available")
            log.warning("controller not available; skipped", controller=name)
            continue
        out.append((name, cls))
    return out


def default_identity() -> str:
    """hostname_pid_random: unique per process, and says which process leads."""
    return f"{socket.gethostname()}_{os.getpid()}_{uuid.uuid4().hex[:6]}"


class ControllerManager:
    """Start with `await start()`, end with `await stop()`. `leading` tells whether the
    controllers run now; `controllers` are those of the current term."""

    def __init__(
        self,
        config: ControllerManagerConfig,
        client: Client,
        *,
        leader_elect: bool = True,
        identity: str = "",
        listen_address: str | None = DEFAULT_LISTEN_ADDRESS,
        tls: transport.ServerTLS | None = None,
    ) -> None:
        """`listen_address` None: no health server (in-process use); `tls` its certificate
        and the CA its callers' certificates must be of (None: plain). UnknownController when
        `config.controllers` names a controller that is not registered or not importable."""
        self.config = config
        self.client = client
        self.leader_elect = leader_elect
        self.identity = identity or default_identity()
        self.listen_address = listen_address
        self.tls = tls
        self.classes = resolve_controllers(config.controllers)
        self.controllers: list[Controller] = []
        self.leading = False
        self.terms = 0  # how many times the controllers were started
        self.port = 0
        self._server: Any = None
        self._health: Any = None
        self._elector: LeaderElector | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.listen_address is not None:
            self._server, self._health = transport.server()
            self.port = transport.bind(
                self._server, self.listen_address, flag="--listen-address", tls=self.tls
            )
            await self._health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            await self._server.start()
        if self.leader_elect:
            self._elector = LeaderElector(
                self.client,
                name=LEASE_NAME,
                namespace=LEASE_NAMESPACE,
                identity=self.identity,
                config=self.config.leader_election,
                on_started_leading=self._lead,
                on_new_leader=lambda who: log.info("leader observed", leader=who),
            )
            self._elector.start()
        else:
            self._task = asyncio.get_running_loop().create_task(self._lead(), name="controllers")
        if self._health is not None:
            await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info(
            "controller manager started",
            identity=self.identity,
            controllers=[n for n, _ in self.classes],
            leader_elect=self.leader_elect,
            port=self.port,
        )

    async def stop(self, grace: float) -> None:
        """Stop the controllers and hand the Lease back (release_on_cancel), then the health
        server (`grace` for its calls in flight)."""
        if self._elector is not None:
            await self._elector.stop()
            self._elector = None
        task, self._task = self._task, None
        await aio.cancel_and_wait([task])
        if self._server is not None:
            await self._health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            await self._server.stop(grace)
            self._server = None

    async def _lead(self) -> None:
        """One term: build everything fresh, run until cancelled, then tear it all down."""
        self.terms += 1
        informers = SharedInformers(self.client)
        recorder = EventRecorder(self.client, COMPONENT)
        ctx = ControllerContext(
            client=self.client, informers=informers, recorder=recorder, config=self.config
        )
        controllers: list[Controller] = [cls(ctx) for _, cls in self.classes]
        self.controllers = controllers
        self.leading = True
        log.info("controllers starting", term=self.terms, controllers=[c.name for c in controllers])
        informers.start()
        recorder.start()
        try:
            async with asyncio.TaskGroup() as tg:
                for controller in controllers:
                    tg.create_task(self._supervise(controller), name=controller.name)
        finally:
            self.leading = False
            log.info("controllers stopping", term=self.terms)
            await informers.stop()
            await recorder.stop()

    async def _supervise(self, controller: Controller) -> None:
        """Run one controller; a crash is logged and it starts again after a pause, so one
        broken controller does not stop the others."""
        while True:
            try:
                await controller.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("controller failed; restarting", controller=controller.name)
            await asyncio.sleep(RESTART_DELAY)

"""The built-in ingress controller of one node (`k8semu.io/ingress`), run by the node's
proxy (`ProxyServer`) when it has an ingress port.

Owns the informers on Ingresses and IngressClasses (and, with a TLS port, Secrets: the
certificates of `spec.tls`, handed to `ingress_tls.Certificates` at each sync), the
`IngressServer` on `NODE_IP:ingress_port` (and `:ingress_tls_port`; bound at start, a port
another process holds is logged and tried again every 5 s, the proxy serving everything else
meanwhile) and the Ingresses' status:
each served Ingress lists this node's IP in `status.loadBalancer.ingress` (each node's proxy
adds its own, so `kubectl get ing` shows every node address). The routes are recomputed
whole at each of the proxy's syncs (`ingress_table.build_routes`, level-triggered like the
service table).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from k8semu import aio
from k8semu.client import Client, ClientError, Informer, SharedInformers
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2, networking_pb2
from k8semu.proxy.ingress import IngressServer, Listen
from k8semu.proxy.ingress_table import CONTROLLER, build_routes
from k8semu.proxy.ingress_tls import Certificates
from k8semu.proxy.proxier import Proxier

log = get_logger(__name__)

BIND_RETRY = 5.0


class IngressController:
    def __init__(
        self,
        client: Client,
        informers: SharedInformers,
        proxier: Proxier,
        listen: Listen,
        on_change: Callable[[], None],
        controller: str = CONTROLLER,
    ) -> None:
        self.client, self.controller, self._on_change = client, controller, on_change
        self.node_ip = listen.host
        self.ingresses = informers.informer(networking_pb2.Ingress)
        self.classes = informers.informer(networking_pb2.IngressClass)
        for informer in (self.ingresses, self.classes):
            informer.add_event_handler(
                on_add=lambda _: on_change(),
                on_update=lambda _o, _n: on_change(),
                on_delete=lambda _: on_change(),
            )
        self.secrets: Informer[core_pb2.Secret] | None = None
        certificates = None
        if listen.tls_port:  # the certificates of spec.tls[].secretName
            self.secrets = informers.informer(core_pb2.Secret)
            self.secrets.add_event_handler(
                on_add=lambda _: on_change(),
                on_update=lambda _o, _n: on_change(),
                on_delete=lambda _: on_change(),
            )
            certificates = Certificates()
        self.server = IngressServer(proxier, listen, certificates)
        self._binding: asyncio.Task[None] | None = None
        self.bind_error = ""  # why the server is not listening (yet), for the metrics
        self._writing: dict[tuple[str, str], asyncio.Task[None]] = {}

    async def start(self) -> None:
        self._binding = asyncio.get_running_loop().create_task(self._bind(), name="ingress-bind")

    async def stop(self) -> None:
        await aio.cancel_and_wait([self._binding, *self._writing.values()])
        self._binding = None
        self._writing.clear()
        await self.server.stop()

    async def _bind(self) -> None:
        last = ""
        while True:
            try:
                await self.server.start()
                self.bind_error = ""
                return
            except OSError as exc:
                message = f"cannot listen on {self.server.address}: {exc.strerror or exc}"
                self.bind_error = f"ingress: {message}"
                if message != last:
                    log.warning("ingress cannot bind", error=message)
                    last = message
            await asyncio.sleep(BIND_RETRY)

    def sync(self, services: list[core_pb2.Service]) -> None:
        """Recompute the routes; make sure every served Ingress lists this node."""
        routes = build_routes(
            self.ingresses.cache.list(), self.classes.cache.list(), services, self.controller
        )
        self.server.set_routes(routes)
        if self.secrets is not None and self.server.certificates is not None:
            self.server.certificates.update(self._pairs(routes.tls))
        for ns, name in routes.served:
            ing = self.ingresses.cache.get_by_name(name, ns)
            if ing is None or self.node_ip in (i.ip for i in ing.status.load_balancer.ingress):
                continue
            task = self._writing.get((ns, name))
            if task is None or task.done():
                self._writing[(ns, name)] = asyncio.get_running_loop().create_task(
                    self._add_address(ns, name), name="ingress-status"
                )

    def _pairs(self, hosts: dict[str, tuple[str, str]]) -> dict[str, tuple[bytes, bytes]]:
        """host -> (certificate, key) of the TLS Secrets the routes name that exist."""
        assert self.secrets is not None
        out = {}
        for host, (namespace, name) in hosts.items():
            secret = self.secrets.cache.get_by_name(name, namespace)
            if secret is None:
                continue
            cert, key = secret.data.get("tls.crt"), secret.data.get("tls.key")
            if cert and key:
                out[host] = (cert, key)
        return out

    async def _add_address(self, namespace: str, name: str) -> None:
        """Read, add this node's IP, write with the read resourceVersion (another node's
        proxy writing at once makes this a Conflict); on an error, a sync a second later
        tries again."""
        try:
            ing = await self.client.get(networking_pb2.Ingress, name, namespace=namespace)
            found = ing.status.load_balancer.ingress
            if self.node_ip in (i.ip for i in found):
                return
            found.add(ip=self.node_ip)
            ordered = sorted(found, key=lambda i: (i.ip, i.hostname))
            del found[:]
            found.extend(ordered)
            await self.client.update_status(ing)
        except ClientError as exc:
            log.debug("ingress status not written", ingress=f"{namespace}/{name}", error=str(exc))
            await asyncio.sleep(1.0)
            self._on_change()  # try again at the next sync

"""The root-ca-cert-publisher controller (kube-controller-manager's): every active namespace
has a ConfigMap `kube-root-ca.crt` whose `ca.crt` is the cluster CA (the controller
manager's `--root-ca-file`), written back when someone changes or deletes it. The kubelet
mounts it as the ServiceAccount volume's `ca.crt`, so in-cluster clients verify the API
server's certificate. Without `--root-ca-file` (a plain cluster) it publishes nothing.
"""

from __future__ import annotations

from k8semu.client import AlreadyExists, Conflict, NotFound
from k8semu.controllers.context import ControllerContext, KeyedController
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2

log = get_logger(__name__)

NAME = "kube-root-ca.crt"
KEY = "ca.crt"


class RootCACertPublisher(KeyedController):
    """One instance per process; `run()` after the context's informers are started."""

    name = "root-ca-cert-publisher"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.ca = ctx.config.root_ca
        self.namespaces = ctx.informers.informer(core_pb2.Namespace)
        self.maps = ctx.informers.informer(core_pb2.ConfigMap)
        self.watch(self.namespaces, self._namespace)
        self.maps.add_event_handler(on_update=lambda old, new: self._map(new), on_delete=self._map)

    def _namespace(self, ns: core_pb2.Namespace) -> None:
        if self.ca:
            self.queue.add(ns.metadata.name)

    def _map(self, cm: core_pb2.ConfigMap) -> None:
        if self.ca and cm.metadata.name == NAME:
            self.queue.add(cm.metadata.namespace)

    async def reconcile(self, key: str) -> None:
        """`key` is a namespace's name."""
        ns = self.namespaces.cache.get(key)
        if not self.ca or ns is None or ns.metadata.HasField("deletion_timestamp"):
            return
        if ns.status.phase == "Terminating":
            return
        current = self.maps.cache.get(f"{key}/{NAME}")
        if current is not None and dict(current.data) == {KEY: self.ca}:
            return
        cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
        cm.metadata.name, cm.metadata.namespace = NAME, key
        cm.data[KEY] = self.ca
        try:
            if current is None:
                await self.client.create(cm)
            else:
                cm.metadata.resource_version = current.metadata.resource_version
                await self.client.update(cm)
        except (AlreadyExists, Conflict):  # the cache was behind: the next event re-checks
            self.queue.add_after(key, 1.0)
            return
        except NotFound:  # the namespace went away meanwhile
            return
        log.info("root CA published", namespace=key)

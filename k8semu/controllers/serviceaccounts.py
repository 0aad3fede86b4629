"""The serviceaccounts controller (kube-controller-manager's): every active namespace has a
ServiceAccount named `default`, created when the namespace appears and again when someone
deletes it. Namespaces being terminated get none. Owns nothing else (tokens are requested
by the kubelets: the TokenRequest subresource, not Secrets).
"""

from __future__ import annotations

from k8semu.client import AlreadyExists, NotFound, object_key
from k8semu.controllers.context import ControllerContext, KeyedController
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2

log = get_logger(__name__)

DEFAULT = "default"


class ServiceAccountsController(KeyedController):
    """One instance per process; `run()` after the context's informers are started."""

    name = "serviceaccount"

    def __init__(self, ctx: ControllerContext) -> None:
        super().__init__(ctx)
        self.namespaces = ctx.informers.informer(core_pb2.Namespace)
        self.accounts = ctx.informers.informer(core_pb2.ServiceAccount)
        self.watch(self.namespaces, self._namespace)
        self.accounts.add_event_handler(on_delete=self._account_deleted)

    def _namespace(self, ns: core_pb2.Namespace) -> None:
        self.queue.add(ns.metadata.name)

    def _account_deleted(self, sa: core_pb2.ServiceAccount) -> None:
        if sa.metadata.name == DEFAULT:
            self.queue.add(sa.metadata.namespace)

    async def reconcile(self, key: str) -> None:
        """`key` is a namespace's name."""
        ns = self.namespaces.cache.get(key)
        if ns is None or ns.metadata.HasField("deletion_timestamp"):
            return
        if ns.status.phase == "Terminating":
            return
        if self.accounts.cache.get(f"{key}/{DEFAULT}") is not None:
            return
        sa = core_pb2.ServiceAccount(api_version="v1", kind="ServiceAccount")
        sa.metadata.name, sa.metadata.namespace = DEFAULT, key
        try:
            await self.client.create(sa)
        except AlreadyExists:
            return
        except NotFound:  # the namespace went away meanwhile
            return
        log.info("default service account created", namespace=key, key=object_key(sa))

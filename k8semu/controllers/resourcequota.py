"""The resourcequota controller, as Kubernetes': keeps each ResourceQuota's status (hard =
spec.hard, used = what its namespace uses of each limited resource) recalculated.

Admission (the API server's `admission/quota.py`) charges status.used as it admits a create;
this controller is what gives usage back when objects go (deleted, or a pod finished) and
corrects any overcharge (a create that failed after its charge). The informers of the kinds
quotas usually limit (pods, services, configmaps, secrets, persistentvolumeclaims) only say
when to recalculate, which also happens every `resync` seconds (Kubernetes'
--resource-quota-sync-period, 5m) for the `count/...` of other kinds.

A recalculation reads the quota and then the objects afresh from the API server, and writes
status compare-and-swap on the quota's resourceVersion, so a charge made meanwhile makes it
start again. One window remains: admission charges before it writes the object, so a count
made between the two is one short. Unlike Kubernetes (whose controller lowers usage from its
caches at once, and so can let a create past a full quota), a count that would lower usage
is only written once the quota has gone `settle` seconds without a charge, by which time the
object of any create charged is written (or its create failed, and lowering is right).
Owns the quotas' status only.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from fractions import Fraction

from google.protobuf.message import Message

from k8semu.api import resourcequota as rq
from k8semu.api.kinds import Kind
from k8semu.client import NAMESPACE_INDEX, Conflict, NotFound
from k8semu.controllers._pods import copy_of
from k8semu.controllers.context import ControllerContext, KeyedController
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2, quota_pb2

log = get_logger(__name__)

RESYNC = 300.0
SETTLE = 2.0  # seconds between two counts that lower usage
_INFORMED = (
    core_pb2.Pod,
    core_pb2.Service,
    core_pb2.ConfigMap,
    core_pb2.Secret,
    core_pb2.PersistentVolumeClaim,
)


def status(quota: quota_pb2.ResourceQuota, used: rq.Usage) -> quota_pb2.ResourceQuotaStatus:
    """The status a quota should have given its namespace's usage of its resources."""
    st = quota_pb2.ResourceQuotaStatus()
    for name, text in quota.spec.hard.items():
        st.hard[name] = text
        st.used[name] = rq.format_amount(name, used.get(name, Fraction(0)))
    return st


class ResourceQuotaController(KeyedController):
    """One instance per process; `run()` after the context's informers are started."""

    name = "resourcequota"

    def __init__(
        self,
        ctx: ControllerContext,
        *,
        resync: float = RESYNC,
        settle: float = SETTLE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(ctx, clock=clock)
        self.resync, self.settle = resync, settle
        # quota key -> (resourceVersion, when) of the first count that found usage lower
        self.settling: dict[str, tuple[str, float]] = {}
        self.quotas = self.informer(quota_pb2.ResourceQuota)
        self.watch(self.quotas, self._enqueue)
        for message in _INFORMED:
            self.informer(message).add_event_handler(
                on_add=self._namespace_changed,
                on_update=self._updated,
                on_delete=self._namespace_changed,
            )

    def _namespace_changed(self, obj: Message) -> None:
        namespace = getattr(obj, "metadata").namespace  # noqa: B009
        for quota in self.quotas.cache.by_index(NAMESPACE_INDEX, namespace):
            self._enqueue(quota)

    def _updated(self, old: Message, new: Message) -> None:
        namespace = getattr(new, "metadata").namespace  # noqa: B009
        if not self.quotas.cache.by_index(NAMESPACE_INDEX, namespace):
            return
        if rq.usage(old) != rq.usage(new):  # most pod updates (status) change no usage
            self._namespace_changed(new)

    async def _count(self, quota: quota_pb2.ResourceQuota) -> rq.Usage:
        by_kind: dict[Kind, list[str]] = defaultdict(list)
        for name in quota.spec.hard:
            if (kind := rq.source(name)) is not None:
                by_kind[kind].append(name)
        used: rq.Usage = {}
        namespace = quota.metadata.namespace
        for kind, names in by_kind.items():
            objects = (await self.client.list(kind.message, namespace=namespace)).items
            used.update(rq.total(objects, names))
        return used

    def _settled(self, key: str, version: str) -> bool:
        """Whether a count that lowers usage may be written: the quota has kept `version`
        (no charge) for `settle` seconds since such a count first saw it; if not, look
        again then."""
        now = self.clock()
        since = self.settling.get(key)
        if since is None or since[0] != version:
            self.settling[key] = since = (version, now)
        if now - since[1] >= self.settle:
            return True
        self.queue.add_after(key, since[1] + self.settle - now)
        return False

    async def reconcile(self, key: str) -> None:
        if self.quotas.cache.get(key) is None:
            return
        self.queue.add_after(key, self.resync)
        namespace, _, name = key.rpartition("/")
        try:
            quota = await self.client.get(quota_pb2.ResourceQuota, name, namespace=namespace)
        except NotFound:
            return
        used = await self._count(quota)
        old = rq.parse_map(quota.status.used)
        lowers = any(amount < old.get(n, amount) for n, amount in used.items())
        if lowers and not self._settled(key, quota.metadata.resource_version):
            return
        self.settling.pop(key, None)
        new_status = status(quota, used)
        if new_status == quota.status:
            return
        new = copy_of(quota)
        new.status.CopyFrom(new_status)
        try:
            await self.client.update_status(new)
        except Conflict:
            self.queue.add(key)

"""The ResourceQuota admission plugin, as kube-apiserver's: a create is admitted only when,
for every quota of its namespace that limits something the object uses, used + requested
stays within hard; the quota's status.used is then charged before the object is written.

The charge is an UpdateStatus compare-and-swap on the quota's resourceVersion, as Kubernetes
does it, so two concurrent creates cannot both take the last slot: the loser re-reads the
quota and decides again. A create that fails after its charge leaves the quota overcharged
until the resourcecontroller recounts (Kubernetes has the same window). A quota the
controller has not counted yet (status.used lacks a name) is counted here from the store.

Refusals are 403 Forbidden with Kubernetes' wording:
`pods "x" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2`
and `pods "x" is forbidden: failed quota: q: must specify requests.cpu`.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Protocol, cast

from google.protobuf.message import Message

from k8semu.api import kinds
from k8semu.api import resourcequota as rq
from k8semu.api.kinds import Kind
from k8semu.apiserver.errors import Conflict, Forbidden
from k8semu.apiserver.objects import describe, meta
from k8semu.pb.api.v1 import core_pb2, quota_pb2

_QUOTAS = kinds.for_message(quota_pb2.ResourceQuota)
_ATTEMPTS = 16  # the quotas changed under us (other creates, the controller): decide again


class Snapshots(Protocol):
    """The API server's watch caches (watchcache.WatchCaches)."""

    def snapshot(self, kind: Kind, namespace: str) -> list[Message] | None: ...

    def confirm_empty(self, kind: Kind, namespace: str) -> None: ...


class Verbs(Protocol):
    """What admission needs of the API server's verbs (service.APIServicer)."""

    @property
    def watch_caches(self) -> Snapshots: ...

    async def list_objects(
        self, kind: Kind, namespace: str, label_selector: str
    ) -> list[Message]: ...

    async def update_object(
        self, kind: Kind, stored: Message, mod_revision: int, obj: Message, *, status: bool = False
    ) -> Message: ...


class Exceeded(Exception):
    """A quota would be exceeded; the message is Kubernetes' reason."""


async def live(verbs: Verbs, kind: Kind, namespace: str) -> list[Message]:
    """The namespace's objects of `kind` from the store (and, when there are none, the
    watch caches told so)."""
    found = await verbs.list_objects(kind, namespace, "")
    if not found:
        verbs.watch_caches.confirm_empty(kind, namespace)
    return found


def _forbidden(kind: Kind, name: str, why: str) -> Forbidden:
    return Forbidden(f"{describe(kind, name)} is forbidden: {why}")


def charge(
    quota: quota_pb2.ResourceQuota, requested: rq.Usage, counted: rq.Usage
) -> quota_pb2.ResourceQuota | None:
    """The quota with `requested` added to its status.used (None: it limits none of it);
    `counted`: usage found in the store for names its status lacks. Raises the refusal."""
    hard = rq.parse_map(quota.spec.hard)
    names = sorted(set(hard) & set(requested))
    if not names:
        return None
    used = rq.parse_map(quota.status.used)
    used.update({n: counted.get(n, Fraction(0)) for n in names if n not in quota.status.used})
    over = [n for n in names if used[n] + requested[n] > hard[n]]
    if over:
        raise Exceeded(
            f"exceeded quota: {quota.metadata.name},"
            f" requested: {rq.pretty({n: requested[n] for n in over})},"
            f" used: {rq.pretty({n: used[n] for n in over})},"
            f" limited: {rq.pretty({n: hard[n] for n in over})}"
        )
    new = quota_pb2.ResourceQuota()
    new.CopyFrom(quota)
    for name, text in quota.spec.hard.items():
        new.status.hard[name] = text
    for n in names:
        new.status.used[n] = rq.format_amount(n, used[n] + requested[n])
    return new


def _required(kind: Kind, obj: Message, quotas: Sequence[quota_pb2.ResourceQuota]) -> None:
    if not isinstance(obj, core_pb2.Pod) or not rq.pod_counts(obj):
        return
    for q in quotas:
        if missing := rq.missing_requests(obj, q.spec.hard):
            why = f"failed quota: {q.metadata.name}: must specify {','.join(missing)}"
            raise _forbidden(kind, obj.metadata.name, why)


async def admit(verbs: Verbs, kind: Kind, obj: Message, *, dry_run: bool = False) -> None:
    """Refuse `obj` (defaulted and valid, not yet written) when a quota would be exceeded;
    otherwise charge every quota that limits what it uses (not on a dry run)."""
    if not kind.namespaced:
        return
    namespace, name = meta(obj).namespace, meta(obj).name
    quotas = verbs.watch_caches.snapshot(_QUOTAS, namespace)
    if quotas is None:
        quotas = await live(verbs, _QUOTAS, namespace)
    requested = rq.usage(obj) if quotas else {}  # counting costs: most namespaces have none
    charged: set[str] = set()
    for _ in range(_ATTEMPTS if requested else 0):
        if quotas is None:
            quotas = await live(verbs, _QUOTAS, namespace)
        mine = [
            q for q in cast(list[quota_pb2.ResourceQuota], quotas) if q.metadata.uid not in charged
        ]
        _required(kind, obj, mine)
        counted: rq.Usage = {}
        if any(n not in q.status.used for q in mine for n in set(q.spec.hard) & set(requested)):
            counted = rq.total(await verbs.list_objects(kind, namespace, ""), requested)
        try:
            updates = [(q, charge(q, requested, counted)) for q in mine]
        except Exceeded as exc:
            raise _forbidden(kind, name, str(exc)) from None
        if dry_run:
            return
        try:
            for stored, new in updates:
                if new is not None:
                    rv = int(stored.metadata.resource_version)
                    await verbs.update_object(_QUOTAS, stored, rv, new, status=True)
                charged.add(stored.metadata.uid)
        except Conflict:
            quotas = None  # stale (the cache's or a concurrent charge): read the store
            continue
        return
    if requested:
        raise Conflict(f"{describe(kind, name)}: its namespace's quotas kept changing; try again")

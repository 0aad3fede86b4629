"""Controller history (apps/v1 ControllerRevision), shared by the DaemonSet and StatefulSet
controllers as Kubernetes' pkg/controller/history is.

A revision is a snapshot of the owner's pod template: `data` holds the strategic merge patch
that puts the template back (`{"spec": {"template": {..., "$patch": "replace"}}}`, what
kubectl's `rollout undo` sends), `revision` a number growing with each distinct template. One
revision per distinct template, named `<owner>-<hash>` (the template hash the pods carry in
`controller-revision-hash`), labelled with the template's labels and that hash, controlled by
its owner (so the garbage collector removes them with it). Going back to a template an older
revision holds renumbers that revision to the next number instead of writing a copy.
History beyond `revisionHistoryLimit` (default 10) is trimmed, oldest first, never a revision
the caller says is in use (the current and update revisions, those of live pods). An owner
made again after `kubectl delete --cascade=orphan` first adopts the orphaned revisions its
selector matches (Kubernetes' ClaimControllerRevisions), so its template's hash names the
revision it had and the adopted pods are not rolled.

`plan` is pure; `RevisionHistory` holds the informer and writes the plan.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from k8semu.api import manifest
from k8semu.api.errors import ManifestError
from k8semu.client import (
    NAMESPACE_INDEX,
    OWNER_UID_INDEX,
    AlreadyExists,
    Conflict,
    NotFound,
    index_by_namespace,
    index_by_owner_uid,
    object_key,
)
from k8semu.client.workqueue import WorkQueue
from k8semu.controllers import _pods
from k8semu.controllers.context import ControllerContext
from k8semu.log import get_logger
from k8semu.pb.api.v1 import apps_pb2, core_pb2

log = get_logger(__name__)

REVISION_HASH = "controller-revision-hash"
DEFAULT_HISTORY_LIMIT = 10
# Kubernetes cuts the owner's name so that "<prefix>-<hash>" stays a valid name.
_MAX_PREFIX = 223

Owner = apps_pb2.DaemonSet | apps_pb2.StatefulSet


def revision_name(owner_name: str, hash_: str) -> str:
    return f"{owner_name[:_MAX_PREFIX]}-{hash_}"


def patch_data(template: core_pb2.PodTemplateSpec) -> dict[str, Any]:
    """The revision's data: a strategic merge patch replacing spec.template."""
    return {"spec": {"template": {**manifest.to_dict(template), "$patch": "replace"}}}


def template_of(cr: apps_pb2.ControllerRevision) -> core_pb2.PodTemplateSpec | None:
    """The pod template a revision holds (None when its data is not one of ours)."""
    data = manifest.to_dict(cr).get("data", {})  # numbers as JSON has them (30, not 30.0)
    spec = data.get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    if not isinstance(template, dict):
        return None
    body = {k: v for k, v in template.items() if k != "$patch"}
    try:
        decoded = manifest.decode(body, core_pb2.PodTemplateSpec)
    except ManifestError:
        return None
    assert isinstance(decoded, core_pb2.PodTemplateSpec)
    return decoded


def new_revision(owner: Owner, kind: str, hash_: str, number: int) -> apps_pb2.ControllerRevision:
    template = owner.spec.template
    cr = apps_pb2.ControllerRevision(api_version="apps/v1", kind="ControllerRevision")
    cr.metadata.name = revision_name(owner.metadata.name, hash_)
    cr.metadata.namespace = owner.metadata.namespace
    cr.metadata.labels.update(template.metadata.labels)
    cr.metadata.labels[REVISION_HASH] = hash_
    cr.metadata.owner_references.append(
        _pods.new_controller_ref(owner, api_version="apps/v1", kind=kind)
    )
    cr.data.update(patch_data(template))
    cr.revision = number
    return cr


def owned_revisions(
    owner: Owner, revisions: Iterable[apps_pb2.ControllerRevision]
) -> list[apps_pb2.ControllerRevision]:
    """The revisions `owner` controls, lowest number first."""
    uid = owner.metadata.uid
    mine = [
        cr
        for cr in revisions
        if (ref := _pods.controller_ref(cr)) is not None
        and ref.uid == uid
        and not cr.metadata.HasField("deletion_timestamp")
    ]
    return sorted(mine, key=lambda cr: (cr.revision, cr.metadata.name))


@dataclass(slots=True)
class Plan:
    update: str  # the name of the revision of the owner's template
    create: apps_pb2.ControllerRevision | None = None
    renumber: apps_pb2.ControllerRevision | None = None  # a copy with its new number
    deletes: list[str] = field(default_factory=list)
    collision: bool = False  # `update`'s name holds another template: bump collisionCount


def history_limit(owner: Owner) -> int:
    spec = owner.spec
    if spec.HasField("revision_history_limit"):
        return spec.revision_history_limit
    return DEFAULT_HISTORY_LIMIT


def plan(
    owner: Owner,
    kind: str,
    hash_: str,
    revisions: Iterable[apps_pb2.ControllerRevision],
    in_use: Collection[str],
) -> Plan:
    """What the history needs so that a revision of the owner's template exists and is the
    newest, with at most revisionHistoryLimit others not `in_use` (names) kept."""
    mine = owned_revisions(owner, revisions)
    name = revision_name(owner.metadata.name, hash_)
    p = Plan(update=name)
    top = mine[-1].revision if mine else 0
    same = next((cr for cr in mine if cr.metadata.name == name), None)
    if same is None:
        p.create = new_revision(owner, kind, hash_, top + 1)
    elif template_of(same) != owner.spec.template:
        p.collision = True
        return p
    elif same.revision < top:
        p.renumber = _pods.copy_of(same)
        p.renumber.revision = top + 1
    spare = [cr for cr in mine if cr.metadata.name != name and cr.metadata.name not in in_use]
    excess = len(spare) - history_limit(owner)
    p.deletes = [cr.metadata.name for cr in spare[: max(excess, 0)]]
    return p


class RevisionHistory:
    """The ControllerRevision informer of one owner kind, and the writes of a `Plan`. A
    revision's event requeues its owner (found through `lookup`, the owner informer cache's
    get_by_name)."""

    def __init__(
        self,
        ctx: ControllerContext,
        kind: str,
        queue: WorkQueue[str],
        lookup: Callable[[str, str], Any],
    ) -> None:
        self.client = ctx.client
        self.kind = kind
        self.informer = ctx.informers.informer(
            apps_pb2.ControllerRevision,
            indexers={NAMESPACE_INDEX: index_by_namespace, OWNER_UID_INDEX: index_by_owner_uid},
        )

        def changed(cr: apps_pb2.ControllerRevision) -> None:
            key = _pods.controller_key(cr, kind, lookup)
            if key is not None:
                queue.add(key)

        self.informer.add_event_handler(
            on_add=changed, on_update=lambda old, new: changed(new), on_delete=changed
        )

    def of(self, owner: Owner) -> list[apps_pb2.ControllerRevision]:
        return owned_revisions(
            owner, self.informer.cache.by_index(OWNER_UID_INDEX, owner.metadata.uid)
        )

    async def sync(self, owner: Owner, hash_: str, in_use: Collection[str]) -> bool:
        """Write what `plan` says. False on a hash collision: the owner's collisionCount is
        bumped instead (so its next hash differs) and its update event brings the next pass;
        the caller stops this one. False also when it adopted orphaned revisions: their
        update events bring the owner back, with them owned."""
        namespace = owner.metadata.namespace
        if await self._adopt_orphans(owner):
            return False
        p = plan(owner, self.kind, hash_, self.of(owner), in_use)
        if p.collision:
            await self._collided(owner, p.update)
            return False
        if p.create is not None:
            try:
                await self.client.create(p.create)
            except AlreadyExists:
                # Our own earlier write the cache has not seen yet, or another's revision of
                # that name (orphaned, or another owner's): a collision.
                live = await self.client.get(
                    apps_pb2.ControllerRevision, p.update, namespace=namespace
                )
                ref = _pods.controller_ref(live)
                if ref is None or ref.uid != owner.metadata.uid:
                    await self._collided(owner, p.update)
                    return False
        if p.renumber is not None:
            await self.client.update(p.renumber)
        for name in p.deletes:
            try:
                await self.client.delete(apps_pb2.ControllerRevision, name, namespace=namespace)
            except NotFound:
                continue
            log.info("deleted old revision", owner=object_key(owner), revision=name)
        return True

    async def _adopt_orphans(self, owner: Owner) -> bool:
        """Take the namespace's revisions without a controller whose labels the owner's
        selector matches; True when any was taken."""
        orphans = [
            cr
            for cr in self.informer.cache.by_index(NAMESPACE_INDEX, owner.metadata.namespace)
            if _pods.controller_ref(cr) is None
        ]
        adopted = False
        for cr in orphans:
            if not _pods.selecting([owner], cr.metadata.labels):
                continue
            new = _pods.adopted(cr, owner, api_version="apps/v1", kind=self.kind)
            try:
                await self.client.update(new)
            except (NotFound, Conflict):
                continue  # gone or changed: its event brings the owner back
            log.info("adopted revision", owner=object_key(owner), revision=cr.metadata.name)
            adopted = True
        return adopted

    async def _collided(self, owner: Owner, name: str) -> None:
        new = _pods.copy_of(owner)
        new.status.collision_count = owner.status.collision_count + 1
        log.warning("revision hash collision", owner=object_key(owner), revision=name)
        await self.client.update_status(new)

    def template(self, owner: Owner, name: str) -> core_pb2.PodTemplateSpec | None:
        """The template of the owner's revision `name`, if the cache has it."""
        for cr in self.of(owner):
            if cr.metadata.name == name:
                return template_of(cr)
        return None

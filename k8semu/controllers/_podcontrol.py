"""PodControl: how a workload controller creates, deletes and adopts the pods it owns, with the
Events Kubernetes records for each (its controller.PodControlInterface): SuccessfulCreate /
FailedCreate and SuccessfulDelete / FailedDelete on the owner. A pod already gone counts as
deleted (its delete event is on its way to the informer). `apply` is one reconcile's worth of
both, bracketed by the controller's expectations; creates go in slow-start batches.
`adopt_orphans` is Kubernetes' ClaimPods for the orphans: an owner made again after `kubectl
delete --cascade=orphan` takes back the pods its selector matches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, cast

from google.protobuf.message import Message

from k8semu.api.errors import SelectorError
from k8semu.client import Client, ClientError, Conflict, NotFound, object_key
from k8semu.client.events import NORMAL, WARNING, EventRecorder
from k8semu.controllers import _pods
from k8semu.controllers._pods import Expectations
from k8semu.controllers.context import ControllerContext, KeyedController
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2

log = get_logger(__name__)


class PodControl:
    def __init__(self, client: Client, recorder: EventRecorder) -> None:
        self.client = client
        self.recorder = recorder

    async def create(self, owner: Message, pod: core_pb2.Pod) -> core_pb2.Pod:
        try:
            created = cast(core_pb2.Pod, await self.client.create(pod))
        except ClientError as exc:
            self.recorder.event(owner, WARNING, "FailedCreate", f"Error creating: {exc}")
            raise
        self.recorder.event(
            owner, NORMAL, "SuccessfulCreate", f"Created pod: {created.metadata.name}"
        )
        return created

    async def delete(self, owner: Message, pod: core_pb2.Pod) -> None:
        name = pod.metadata.name
        try:
            await self.client.delete(core_pb2.Pod, name, namespace=pod.metadata.namespace)
        except NotFound:
            return
        except ClientError as exc:
            self.recorder.event(owner, WARNING, "FailedDelete", f"Error deleting pod {name}: {exc}")
            raise
        self.recorder.event(owner, NORMAL, "SuccessfulDelete", f"Deleted pod: {name}")

    async def adopt_orphans(
        self,
        owner: Message,
        pods: Iterable[core_pb2.Pod],
        *,
        api_version: str,
        kind: str,
        may_adopt: Callable[[core_pb2.Pod], bool] = lambda _: True,
    ) -> bool:
        """Make `owner` the controller of each live orphan of `pods` (its namespace's) that
        its selector matches and `may_adopt` accepts; True when it adopted any (their update
        events bring the owner's key back, with them owned). An empty or malformed selector
        adopts nothing; a pod gone or changed meanwhile is left to its own event."""
        selector = cast(Any, owner).spec.selector
        if _pods.selects_nothing(selector):
            return False
        try:
            matches = _pods.selector_of(selector).matches
        except SelectorError:
            return False
        any_adopted = False
        for pod in pods:
            if (
                _pods.controller_ref(pod) is not None
                or _pods.is_pod_terminating(pod)
                or not matches(pod.metadata.labels)
                or not may_adopt(pod)
            ):
                continue
            new = _pods.adopted(pod, owner, api_version=api_version, kind=kind)
            try:
                await self.client.update(new)
            except (NotFound, Conflict):
                continue
            log.info("adopted pod", owner=f"{kind}/{object_key(owner)}", pod=pod.metadata.name)
            any_adopted = True
        return any_adopted

    async def apply(
        self,
        owner: Message,
        expectations: Expectations,
        deletes: Sequence[core_pb2.Pod],
        creates: Sequence[core_pb2.Pod],
    ) -> BaseException | None:
        """Delete then create, telling `expectations` (under the owner's key) what to wait
        for; the first error, if any (what was not done is not expected)."""
        key = object_key(owner)
        if deletes:
            expectations.expect_deletions(key, [object_key(q) for q in deletes])
            results = await asyncio.gather(
                *(self.delete(owner, q) for q in deletes), return_exceptions=True
            )
            for pod, result in zip(deletes, results, strict=True):
                if isinstance(result, BaseException):
                    expectations.deletion_observed(key, object_key(pod))
                    return result
        if creates:
            todo = iter(creates)
            expectations.expect_creations(key, len(creates))
            created, error = await slow_start_batch(
                len(creates), 1, lambda: self.create(owner, next(todo))
            )
            for _ in range(len(creates) - created):
                expectations.creation_observed(key)
            return error
        return None


async def slow_start_batch(
    count: int, initial: int, action: Callable[[], Awaitable[Any]]
) -> tuple[int, BaseException | None]:
    """Run `action` `count` times in batches of initial, 2*initial, 4*initial, ... (each batch
    concurrently), stopping after the first batch with a failure, so a quota or a broken
    template costs one failed call, not hundreds. Returns (successes, first error)."""
    done = 0
    size = min(count, initial)
    while size > 0:
        results = await asyncio.gather(*(action() for _ in range(size)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        done += size - len(errors)
        if errors:
            return done, errors[0]
        remaining = count - done
        size = min(2 * size, remaining)
    return done, None


class PodOwnerController(KeyedController):
    """A KeyedController whose keys own pods it creates and deletes (`pods`), each write
    awaited in the informer before the next decision (`expectations`). A subclass says which
    of its keys controls a pod (`_owner_key`)."""

    def __init__(self, ctx: ControllerContext, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(ctx, clock=clock)
        self.expectations = Expectations()
        self.pods = PodControl(ctx.client, ctx.recorder)

    def _owner_key(self, pod: core_pb2.Pod) -> str | None:
        raise NotImplementedError

    def _owner_deleted(self, owner: Message) -> None:
        key = object_key(owner)
        self.expectations.forget(key)
        self.queue.add(key)

    def _pod_deleted(self, pod: core_pb2.Pod) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self.expectations.deletion_observed(key, object_key(pod))
            self.queue.add(key)

"""The DefaultStorageClass admission step (k8semu.apiserver.storageclass) on the classes a
store would list: the newest default class is written into a claim without one; a claim
that names a class, asks for none (""), or carries the legacy annotation keeps it. End to
end: tests/e2e/workloads/test_statefulset_tutorial.py (the claims show `standard`)."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from k8semu.apiserver import storageclass
from k8semu.pb.api.v1 import core_pb2, storage_pb2


class _Classes:
    """What admission reads: the stored StorageClasses."""

    def __init__(self, *classes: storage_pb2.StorageClass) -> None:
        self.classes: list[Message] = list(classes)

    async def list_objects(self, kind: Any, namespace: str, label_selector: str) -> list[Message]:
        assert kind is storageclass.STORAGE_CLASSES
        return self.classes


def _class(name: str, created: int, default: bool) -> storage_pb2.StorageClass:
    sc = storage_pb2.StorageClass()
    sc.metadata.name = name
    sc.metadata.creation_timestamp.seconds = created
    if default:
        sc.metadata.annotations[storageclass.DEFAULT_CLASS_ANNOTATION] = "true"
    return sc


async def _admitted(objects: _Classes, claim: core_pb2.PersistentVolumeClaim) -> str | None:
    await storageclass.admit(objects, claim)
    return claim.spec.storage_class_name if claim.spec.HasField("storage_class_name") else None


async def test_the_newest_default_class_is_written_into_a_claim_without_one() -> None:
    objects = _Classes(
        _class("standard", 10, True), _class("fast", 20, True), _class("slow", 30, False)
    )
    assert await _admitted(objects, core_pb2.PersistentVolumeClaim()) == "fast"
    assert (
        await _admitted(_Classes(_class("slow", 1, False)), core_pb2.PersistentVolumeClaim())
        is None
    )


async def test_a_claims_own_choice_is_kept() -> None:
    objects = _Classes(_class("standard", 10, True))
    named = core_pb2.PersistentVolumeClaim()
    named.spec.storage_class_name = "slow"
    assert await _admitted(objects, named) == "slow"
    none = core_pb2.PersistentVolumeClaim()
    none.spec.storage_class_name = ""
    assert await _admitted(objects, none) == ""
    legacy = core_pb2.PersistentVolumeClaim()
    legacy.metadata.annotations[storageclass.LEGACY_CLASS_ANNOTATION] = "slow"
    assert await _admitted(objects, legacy) is None

"""The DefaultStorageClass admission step, as kube-apiserver's plugin: a PersistentVolumeClaim
created without `spec.storageClassName` (and without the legacy
`volume.beta.kubernetes.io/storage-class` annotation) gets the name of the StorageClass
annotated `storageclass.kubernetes.io/is-default-class: "true"`, the newest one when there are
several (Kubernetes 1.26+); with none it stays without a class. So `kubectl get pvc` shows the
class a claim is provisioned from, as on a cluster with a default class. A claim that says
`storageClassName: ""` asks for no class and keeps it.

The classes are read from the store on each such create, as the Ingress class step does:
claims are created rarely and a default made a moment ago must count.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from google.protobuf.message import Message

from k8semu.api import kinds
from k8semu.pb.api.v1 import core_pb2, storage_pb2

DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"
STORAGE_CLASSES = kinds.for_message(storage_pb2.StorageClass)


class Lister(Protocol):
    """What this step reads of the API servicer (priority.Objects has it; that module is not
    imported here: the registry imports this one)."""

    async def list_objects(
        self, kind: kinds.Kind, namespace: str, label_selector: str
    ) -> list[Message]: ...


def _created(sc: storage_pb2.StorageClass) -> tuple[int, int, str]:
    t = sc.metadata.creation_timestamp
    return t.seconds, t.nanos, sc.metadata.name


async def marked_defaults(objects: Lister, kind: kinds.Kind, annotation: str) -> list[Any]:
    """The stored classes of `kind` (cluster-scoped) that `annotation` marks as the default:
    what this step and the Ingress class step (apiserver/ingressclass.py) choose from."""
    stored = await objects.list_objects(kind, "", "")
    return [c for c in stored if cast(Any, c).metadata.annotations.get(annotation) == "true"]


async def admit(objects: Lister, obj: Any) -> None:
    """Fill in a new claim's class."""
    if not isinstance(obj, core_pb2.PersistentVolumeClaim):
        return
    if (
        obj.spec.HasField("storage_class_name")
        or LEGACY_CLASS_ANNOTATION in obj.metadata.annotations
    ):
        return
    defaults = await marked_defaults(objects, STORAGE_CLASSES, DEFAULT_CLASS_ANNOTATION)
    if defaults:
        obj.spec.storage_class_name = max(defaults, key=_created).metadata.name

"""The DefaultIngressClass admission step, as kube-apiserver's plugin: an Ingress created
without `spec.ingressClassName` (and without the legacy `kubernetes.io/ingress.class`
annotation) gets the name of the IngressClass annotated
`ingressclass.kubernetes.io/is-default-class: "true"`; with no default class it stays
without one; with more than one, the create is refused (403 Forbidden:
`ingresses.networking.k8s.io "web" is forbidden: 2 default IngressClasses were found, only
1 allowed`).

The classes are read from the store on each such create: Ingress creates are rare and a
default made a moment ago must count.
"""

from __future__ import annotations

from typing import Any

from k8semu.api import kinds
from k8semu.apiserver import storageclass
from k8semu.apiserver.errors import FailedPrecondition
from k8semu.apiserver.priority import Objects
from k8semu.apiserver.registry.networking import LEGACY_CLASS_ANNOTATION
from k8semu.pb.api.v1 import networking_pb2

DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
INGRESS_CLASSES = kinds.for_message(networking_pb2.IngressClass)


async def admit(objects: Objects, obj: Any) -> None:
    """Fill in a new Ingress's class; raises FailedPrecondition (Forbidden)."""
    if not isinstance(obj, networking_pb2.Ingress):
        return
    if obj.spec.HasField("ingress_class_name"):
        return
    if LEGACY_CLASS_ANNOTATION in obj.metadata.annotations:
        return
    defaults = await storageclass.marked_defaults(
        objects, INGRESS_CLASSES, DEFAULT_CLASS_ANNOTATION
    )
    if len(defaults) > 1:
        raise FailedPrecondition(
            f'ingresses.networking.k8s.io "{obj.metadata.name}" is forbidden:'
            f" {len(defaults)} default IngressClasses were found, only 1 allowed"
        )
    if defaults:
        obj.spec.ingress_class_name = defaults[0].metadata.name

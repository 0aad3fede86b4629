"""Event: the fields a field selector may name, as kube-apiserver has them (`kubectl describe`
lists an object's Events with `involvedObject.name=...,involvedObject.uid=...`)."""

from __future__ import annotations

from google.protobuf.message import Message

from k8semu.apiserver.objects import FieldGetter


def _getter(*path: str) -> FieldGetter:
    def get(obj: Message) -> str:
        value: object = obj
        for name in path:
            value = getattr(value, name)
        return str(value)

    return get


FIELDS: dict[str, FieldGetter] = {
    "involvedObject.kind": _getter("involved_object", "kind"),
    "involvedObject.namespace": _getter("involved_object", "namespace"),
    "involvedObject.name": _getter("involved_object", "name"),
    "involvedObject.uid": _getter("involved_object", "uid"),
    "involvedObject.apiVersion": _getter("involved_object", "api_version"),
    "involvedObject.resourceVersion": _getter("involved_object", "resource_version"),
    "involvedObject.fieldPath": _getter("involved_object", "field_path"),
    "reason": _getter("reason"),
    "reportingComponent": _getter("reporting_component"),
    "source": _getter("source", "component"),
    "type": _getter("type"),
}

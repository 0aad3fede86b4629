"""Kubernetes' protobuf request bodies: kubectl's typed `create` commands (which send
`application/vnd.kubernetes.protobuf` whatever the server advertises) against the REST API,
and the decoder (k8semu.apiserver.rest.kubeproto) on bodies built here, malformed ones
included."""

from __future__ import annotations

import json

import pytest

from k8semu.apiserver.rest import kubeproto

from .conftest import REST

PROTOBUF = {"Content-Type": kubeproto.MEDIA_TYPE}


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def _bytes(number: int, value: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _entry(number: int, key: str, value: bytes) -> bytes:
    return _bytes(number, _bytes(1, key.encode()) + _bytes(2, value))


def _unknown(api_version: str, kind: str, raw: bytes) -> bytes:
    """`k8s\\x00` + runtime.Unknown{typeMeta{apiVersion, kind}, raw}."""
    type_meta = _bytes(1, api_version.encode()) + _bytes(2, kind.encode())
    return kubeproto.MAGIC + _bytes(1, type_meta) + _bytes(2, raw)


def _meta(name: str) -> bytes:
    # As Go encodes it: zero values of non-pointer fields included (generation 0, "").
    return _bytes(1, _bytes(1, name.encode()) + _bytes(2, b"") + _int(7, 0))


def test_decodes_a_secret_with_zero_values_dropped() -> None:
    raw = _meta("s") + _entry(2, "key", b"\x00\xff") + _bytes(3, b"Opaque") + _int(5, 0)
    assert kubeproto.decode(_unknown("v1", "Secret", raw)) == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "data": {"key": "AP8="},
        "type": "Opaque",
    }


def test_decodes_owner_references() -> None:
    """What `kubectl create job --from=cronjob/hello` sends: the CronJob as the controller."""
    ref = (
        _bytes(1, b"CronJob") + _bytes(3, b"hello") + _bytes(4, b"uid-1")
        + _bytes(5, b"batch/v1") + _int(6, 1)
    )  # fmt: skip
    raw = _bytes(1, _bytes(1, b"hm") + _bytes(13, ref))
    assert kubeproto.decode(_unknown("batch/v1", "Job", raw))["metadata"] == {
        "name": "hm",
        "ownerReferences": [
            {"kind": "CronJob", "name": "hello", "uid": "uid-1", "apiVersion": "batch/v1",
             "controller": True}
        ],
    }  # fmt: skip


def test_decodes_a_deployment_keeping_zero_replicas() -> None:
    container = _bytes(1, b"web") + _bytes(2, b"nginx") + _bytes(6, _int(3, 80))
    template = _bytes(2, _bytes(2, container))
    spec = _int(1, 0) + _bytes(2, _entry(1, "app", b"w")) + _bytes(3, template)
    doc = kubeproto.decode(_unknown("apps/v1", "Deployment", _meta("d") + _bytes(2, spec)))
    assert doc["spec"] == {
        "replicas": 0,
        "selector": {"matchLabels": {"app": "w"}},
        "template": {
            "spec": {
                "containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]
            }
        },
    }


@pytest.mark.parametrize(
    "body",
    [
        b"{}",  # no magic
        kubeproto.MAGIC + b"\x0a\xff",  # a length past the end
        kubeproto.MAGIC + b"\x0a",  # a truncated varint
        kubeproto.MAGIC + _bytes(2, b"\x0b"),  # wire type 3 (groups)
        _unknown("v1", "ConfigMap", _bytes(2, b"\x0a\x02\xff\xfe")),  # a key not UTF-8
    ],
)
def test_malformed_bodies_are_errors(body: bytes) -> None:
    with pytest.raises(kubeproto.ProtobufError):
        kubeproto.decode(body)


def test_kubectl_typed_creates(rest: REST) -> None:
    rest.kubectl("create", "configmap", "pb-cm", "--from-literal=a=b", "--from-literal=c=d")
    rest.kubectl("create", "secret", "generic", "pb-secret", "--from-literal=a=b")
    rest.kubectl("create", "deployment", "pb-web", "--image=nginx", "--replicas=2", "--port=80")
    rest.kubectl("create", "service", "clusterip", "pb-svc", "--tcp=80:8080")
    rest.kubectl("create", "job", "pb-job", "--image=busybox", "--", "echo", "hi")
    rest.kubectl("create", "pdb", "pb-pdb", "--selector=app=x", "--min-available=1")
    cm = json.loads(rest.kubectl("get", "cm", "pb-cm", "-o", "json", "--show-managed-fields"))
    assert cm["data"] == {"a": "b", "c": "d"}
    assert cm["metadata"]["managedFields"][0]["manager"] == "kubectl-create"
    secret = json.loads(rest.kubectl("get", "secret", "pb-secret", "-o", "json"))
    assert secret["data"] == {"a": "Yg=="}
    web = json.loads(rest.kubectl("get", "deployment", "pb-web", "-o", "json"))
    [container] = web["spec"]["template"]["spec"]["containers"]
    assert (web["spec"]["replicas"], container["image"]) == (2, "nginx")
    svc = json.loads(rest.kubectl("get", "service", "pb-svc", "-o", "json"))
    assert svc["spec"]["ports"][0]["targetPort"] == 8080
    job = json.loads(rest.kubectl("get", "job", "pb-job", "-o", "json"))
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["echo", "hi"]
    for what in ("configmap/pb-cm", "secret/pb-secret", "deployment/pb-web", "service/pb-svc"):
        rest.kubectl("delete", what)
    rest.kubectl("delete", "job/pb-job", "pdb/pb-pdb")


def test_bad_protobuf_over_http_writes_nothing(rest: REST) -> None:
    path = "/api/v1/namespaces/default/configmaps"
    code, _, raw = rest.request("POST", path, kubeproto.MAGIC + b"\x0a\xff", PROTOBUF)
    assert code == 400, raw
    lease = _unknown("coordination.k8s.io/v1", "Lease", _meta("pb-lease"))
    code, _, raw = rest.request("POST", path, lease, PROTOBUF)
    assert code == 415 and b"send JSON" in raw, raw
    code, _ = rest.json("GET", f"{path}/pb-lease")
    assert code == 404

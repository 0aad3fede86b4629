"""A Secret's stringData through the real kubectl: create, `kubectl patch` and a second
`kubectl apply` of a changed manifest all land in data, and nothing returns stringData."""

from __future__ import annotations

import base64
import json

from .conftest import REST

SECRET = """
apiVersion: v1
kind: Secret
metadata: {name: kc-secret}
stringData: {user: admin, password: first}
"""


def _data(rest: REST) -> dict[str, str]:
    doc = json.loads(rest.kubectl("get", "secret", "kc-secret", "-o", "json"))
    assert "stringData" not in doc, doc
    return {k: base64.b64decode(v).decode() for k, v in doc["data"].items()}


def test_string_data_lands_in_data_on_create_patch_and_apply(rest: REST) -> None:
    assert "created" in rest.kubectl("apply", "-f", "-", stdin=SECRET)
    assert _data(rest) == {"user": "admin", "password": "first"}
    rest.kubectl("patch", "secret", "kc-secret", "-p", '{"stringData":{"password":"second"}}')
    assert _data(rest)["password"] == "second"
    rest.kubectl(
        "patch", "secret", "kc-secret", "--type=merge", "-p", '{"stringData":{"extra":"x"}}'
    )
    assert _data(rest)["extra"] == "x"
    # The second apply patches from last-applied-configuration: stringData again.
    out = rest.kubectl("apply", "-f", "-", stdin=SECRET.replace("first", "third"))
    assert "configured" in out, out
    assert _data(rest) == {"user": "admin", "password": "third", "extra": "x"}
    changed = SECRET.replace("first", "fourth")
    rest.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", stdin=changed)
    assert _data(rest)["password"] == "fourth"
    rest.kubectl("delete", "secret", "kc-secret")


IMMUTABLE = """
apiVersion: v1
kind: ConfigMap
metadata: {name: kc-frozen}
immutable: true
data: {TIER: gold}
"""


def test_an_immutable_config_map_refuses_changes_until_re_created(rest: REST) -> None:
    assert "created" in rest.kubectl("apply", "-f", "-", stdin=IMMUTABLE)
    out = rest.kubectl("apply", "-f", "-", stdin=IMMUTABLE.replace("gold", "platinum"), check=False)
    assert (
        'The ConfigMap "kc-frozen" is invalid: data: Forbidden: field is immutable when '
        "`immutable` is set" in out
    ), out
    out = rest.kubectl(
        "patch", "configmap", "kc-frozen", "--type=merge", "-p", '{"immutable":false}', check=False
    )
    assert "immutable: Forbidden: field is immutable when `immutable` is set" in out, out
    doc = json.loads(rest.kubectl("get", "configmap", "kc-frozen", "-o", "json"))
    assert (doc["data"], doc["immutable"]) == ({"TIER": "gold"}, True)
    # Labels are metadata: an immutable ConfigMap still takes them.
    rest.kubectl("label", "configmap", "kc-frozen", "tier=gold")
    # The way to change it: delete and create again.
    rest.kubectl("delete", "configmap", "kc-frozen")
    rest.kubectl("apply", "-f", "-", stdin=IMMUTABLE.replace("gold", "platinum"))
    doc = json.loads(rest.kubectl("get", "configmap", "kc-frozen", "-o", "json"))
    assert doc["data"] == {"TIER": "platinum"}
    rest.kubectl("delete", "configmap", "kc-frozen")


def test_secret_keys_and_types_are_checked_as_kubernetes_does(rest: REST) -> None:
    bad = "apiVersion: v1\nkind: Secret\nmetadata: {name: kc-bad-key}\nstringData: {a b: '1'}\n"
    out = rest.kubectl("apply", "-f", "-", stdin=bad, check=False)
    assert 'data[a b]: Invalid value: "a b": a valid config key must consist of' in out, out
    tls = "apiVersion: v1\nkind: Secret\nmetadata: {name: kc-tls}\ntype: kubernetes.io/tls\n"
    out = rest.kubectl("apply", "-f", "-", stdin=tls + "stringData: {tls.crt: x}\n", check=False)
    assert 'The Secret "kc-tls" is invalid: data[tls.key]: Required value' in out, out
    rest.kubectl("create", "secret", "generic", "kc-typed", "--from-literal=k=v")
    doc = json.loads(rest.kubectl("get", "secret", "kc-typed", "-o", "json"))
    assert doc["type"] == "Opaque", doc
    out = rest.kubectl(
        "patch",
        "secret",
        "kc-typed",
        "--type=merge",
        "-p",
        '{"type":"kubernetes.io/basic-auth"}',
        check=False,
    )
    assert 'type: Invalid value: "kubernetes.io/basic-auth": field is immutable' in out, out
    rest.kubectl("delete", "secret", "kc-typed")

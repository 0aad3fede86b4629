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

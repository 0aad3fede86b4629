"""kubectl against the REST API with a ResourceQuota: the refusal kubectl prints is
Kubernetes' (403 Forbidden, `exceeded quota: ...`), and `get quota` its columns."""

from __future__ import annotations

import uuid

from .conftest import REST


def _pod(name: str) -> str:
    return (
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\n"
        "spec: {containers: [{name: c, image: nginx}]}\n"
    )


def test_kubectl_create_over_the_quota_is_forbidden(rest: REST) -> None:
    ns = f"kq-{uuid.uuid4().hex[:6]}"
    # From manifests: `kubectl create namespace|quota` send protobuf, which the REST face
    # does not read.
    rest.kubectl(
        "create", "-f", "-", stdin=f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"
    )
    quota = (
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: q}\n"
        "spec: {hard: {pods: '1', configmaps: '5'}}\n"
    )
    rest.kubectl("create", "-n", ns, "-f", "-", stdin=quota)
    rest.kubectl("create", "-n", ns, "-f", "-", stdin=_pod("a"))
    out = rest.kubectl("create", "-n", ns, "-f", "-", stdin=_pod("b"), check=False)
    assert "Error from server (Forbidden)" in out, out
    assert (
        'pods "b" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1'
        in out
    ), out
    table = rest.kubectl("get", "quota", "-n", ns).splitlines()
    assert table[0].split() == ["NAME", "AGE", "REQUEST", "LIMIT"], table
    assert "configmaps: 0/5, pods: 1/1" in table[1], table

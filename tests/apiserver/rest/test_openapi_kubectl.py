"""kubectl reading the real server's OpenAPI: explain on every stored kind (with required
fields and enums), and validation of manifests before anything is written."""

from __future__ import annotations

from k8semu.api import kinds

from .. import test_openapi
from .conftest import REST

# test_openapi's manifest under a name of its own (this package shares one server).
WEB = test_openapi.WEB.replace(": web}", ": oa-web}")


def test_kubectl_explains_every_kind_and_validates(rest: REST) -> None:
    out = rest.kubectl("explain", "deployment.spec.template.spec.containers")
    assert "KIND:       Deployment" in out and "FIELD: containers <[]Container>" in out
    assert "name\t<string> -required-" in out
    assert "enum: Always, IfNotPresent, Never" in out
    for kind in kinds.all_kinds():
        if not kind.stored or kind.list_message is None:
            continue
        out = rest.kubectl("explain", f"{kind.resource}.metadata.name", check=False)
        assert "FIELD: name <string>" in out, (kind.resource, out)
    out = rest.kubectl("apply", "--dry-run=client", "--validate=strict", "-f", "-", stdin=WEB)
    assert "deployment.apps/oa-web created (dry run)" in out, out
    out = rest.kubectl("explain", "--output=plaintext-openapiv2", "deployment.spec")
    assert "template" in out, out
    bad = WEB.replace("replicas: 2", "replicas: two")
    out = rest.kubectl("apply", "--validate=strict", "-f", "-", stdin=bad, check=False)
    assert "replicas" in out and "oa-web" not in rest.kubectl("get", "deploy"), out

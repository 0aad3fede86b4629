"""The proxy subresources' paths (pure): `name[:port]` and `scheme:name:port`, the proxied
path kept raw after `proxy`, which kinds have one, how they are authorized (the method's
verb on `pods/proxy`, `services/proxy`) and which default roles grant them."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from k8semu.apiserver.auth import policy, rbac, restside
from k8semu.apiserver.auth.attributes import Attributes
from k8semu.apiserver.auth.user import UserInfo
from k8semu.apiserver.rest import paths
from k8semu.apiserver.rest.proxy import split_name, tail_of
from k8semu.apiserver.rest.status import HTTPError


def test_a_pod_proxy_path_with_a_port_and_a_rest() -> None:
    path = "/api/v1/namespaces/default/pods/web-1:8080/proxy/a/b/"
    target = paths.target(path)
    assert (target.kind.plural, target.namespace, target.name) == ("pods", "default", "web-1:8080")
    assert target.subresource == "proxy"
    assert tail_of(path, target) == "/a/b/"
    assert tail_of(path + "?x=1", target) == "/a/b/"
    bare = "/api/v1/namespaces/default/services/http:web:http/proxy"
    assert tail_of(bare, paths.target(bare)) == ""
    # The rest stays escaped as the client sent it.
    escaped = "/api/v1/namespaces/default/pods/web/proxy/a%2Fb"
    assert tail_of(escaped, paths.target("/api/v1/namespaces/default/pods/web/proxy/a/b")) == (
        "/a%2Fb"
    )


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/namespaces/default/configmaps/web/proxy",  # no proxy of configmaps
        "/api/v1/namespaces/default/pods/web/status/extra",  # only proxy takes a rest
        "/apis/apps/v1/namespaces/default/deployments/web/proxy/x",
    ],
)
def test_no_proxy_elsewhere(path: str) -> None:
    with pytest.raises(HTTPError) as caught:
        paths.target(path)
    assert caught.value.code == 404


def test_split_name() -> None:
    assert split_name("web") == ("", "web", "")
    assert split_name("web:8080") == ("", "web", "8080")
    assert split_name("https:web:443") == ("https", "web", "443")
    assert split_name("http:web:") == ("http", "web", "")
    with pytest.raises(HTTPError) as caught:
        split_name("ftp:web:21")
    assert caught.value.code == 400 and "[scheme:]name[:port]" in str(caught.value)


@pytest.mark.parametrize(
    ("method", "verb"),
    [("GET", "get"), ("POST", "create"), ("PUT", "update"), ("PATCH", "patch"),
     ("DELETE", "delete")],
)  # fmt: skip
# restside keeps the Target under a str key (the server's own code); aiohttp warns about it.
@pytest.mark.filterwarnings("ignore::aiohttp.web_exceptions.NotAppKeyWarning")
def test_authorized_as_the_proxy_subresource_with_the_methods_verb(method: str, verb: str) -> None:
    path = "/api/v1/namespaces/web/services/http:front:80/proxy/a/b"
    request = make_mocked_request(method, path)
    attrs = restside.attributes(UserInfo("u"), request)
    assert (attrs.verb, attrs.full_resource, attrs.namespace, attrs.name) == (
        verb, "services/proxy", "web", "http:front:80",
    )  # fmt: skip


def test_edit_role_may_proxy_and_view_may_not() -> None:
    roles = rbac.aggregate(policy.cluster_roles())
    for name, allowed in (("edit", True), ("admin", True), ("view", False)):
        for verb in ("get", "create", "delete"):
            for resource in ("pods", "services"):
                attrs = Attributes(UserInfo("u"), verb, resource, "", "proxy", "ns", "web:8080")
                assert any(rbac.allows(r, attrs) for r in roles[name]) is allowed, (name, verb)

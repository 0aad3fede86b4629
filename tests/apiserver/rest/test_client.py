"""Kubernetes' own Python client (PyPI `kubernetes`) against the REST API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import REST

kubernetes = pytest.importorskip("kubernetes")
client: Any = kubernetes.client
watch: Any = kubernetes.watch
ApiException: Any = kubernetes.client.exceptions.ApiException
MERGE = "application/merge-patch+json"


@pytest.fixture
def core(rest: REST) -> Iterator[Any]:
    config = client.Configuration()
    config.host = rest.url
    with client.ApiClient(config) as api:
        yield client.CoreV1Api(api)


def _cm(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"k": "v"},
    }


def test_create_list_patch_delete(core: Any) -> None:
    created = core.create_namespaced_config_map("default", _cm("py-a", app="py"))
    assert created.metadata.resource_version and created.metadata.uid
    core.create_namespaced_config_map("default", _cm("py-b", app="other"))
    found = core.list_namespaced_config_map("default", label_selector="app=py")
    assert [cm.metadata.name for cm in found.items] == ["py-a"]
    patched = core.patch_namespaced_config_map(
        "py-a", "default", {"data": {"k": "v2"}}, _content_type=MERGE
    )
    assert patched.data == {"k": "v2"}
    assert core.read_namespaced_config_map("py-a", "default").data == {"k": "v2"}
    core.delete_namespaced_config_map("py-a", "default")
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("py-a", "default")
    assert err.value.status == 404
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("default", _cm("py-b"))
    assert err.value.status == 409 and "AlreadyExists" in err.value.body


def test_paged_list(core: Any) -> None:
    for i in range(5):
        core.create_namespaced_config_map("default", _cm(f"py-page-{i}", page="yes"))
    names: list[str] = []
    token = None
    for _ in range(10):
        page = core.list_namespaced_config_map(
            "default", label_selector="page=yes", limit=2, _continue=token
        )
        names += [cm.metadata.name for cm in page.items]
        token = page.metadata._continue
        if not token:
            break
    assert names == [f"py-page-{i}" for i in range(5)]


def test_watch_resumes_from_a_resource_version(core: Any) -> None:
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    core.create_namespaced_config_map("default", _cm("py-w1", w="yes"))
    core.patch_namespaced_config_map("py-w1", "default", {"data": {"k": "2"}}, _content_type=MERGE)
    core.delete_namespaced_config_map("py-w1", "default")
    seen = []
    w = watch.Watch()
    for event in w.stream(
        core.list_namespaced_config_map,
        "default",
        label_selector="w=yes",
        resource_version=rv,
        timeout_seconds=10,
    ):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 3:
            w.stop()
    assert seen == [("ADDED", "py-w1"), ("MODIFIED", "py-w1"), ("DELETED", "py-w1")]

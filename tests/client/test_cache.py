"""The informer's indexed cache, without any server."""

from __future__ import annotations

import pytest

from k8semu.client import (
    NAMESPACE_INDEX,
    NODE_NAME_INDEX,
    OWNER_UID_INDEX,
    Indexer,
    index_by_namespace,
    index_by_node_name,
    index_by_owner_uid,
    object_key,
    split_key,
)
from k8semu.pb.api.v1 import core_pb2


def pod(name: str, namespace: str = "default", node: str = "", owner: str = "") -> core_pb2.Pod:
    p = core_pb2.Pod()
    p.metadata.name = name
    p.metadata.namespace = namespace
    p.spec.node_name = node
    if owner:
        p.metadata.owner_references.add(uid=owner, kind="ReplicaSet", name="rs")
    return p


def test_keys() -> None:
    assert object_key(pod("a", "ns")) == "ns/a"
    node = core_pb2.Node()
    node.metadata.name = "n1"
    assert object_key(node) == "n1"
    assert split_key("ns/a") == ("ns", "a") and split_key("n1") == ("", "n1")


def test_indices_follow_updates_and_deletes() -> None:
    cache: Indexer[core_pb2.Pod] = Indexer(
        {NODE_NAME_INDEX: index_by_node_name, OWNER_UID_INDEX: index_by_owner_uid}
    )
    cache.put(pod("a", node="", owner="u1"))
    cache.put(pod("b", node="n1", owner="u1"))
    assert [p.metadata.name for p in cache.by_index(NODE_NAME_INDEX, "")] == ["a"]
    assert cache.index_keys(OWNER_UID_INDEX, "u1") == ["default/a", "default/b"]
    old = cache.put(pod("a", node="n1", owner="u2"))  # scheduled and re-owned
    assert old is not None and old.spec.node_name == ""
    assert cache.by_index(NODE_NAME_INDEX, "") == []
    assert cache.index_keys(NODE_NAME_INDEX, "n1") == ["default/a", "default/b"]
    assert cache.index_keys(OWNER_UID_INDEX, "u1") == ["default/b"]
    assert cache.remove("default/b") is not None
    assert cache.index_values(OWNER_UID_INDEX) == ["u2"]
    assert cache.remove("default/b") is None
    cache.add_indexers({NAMESPACE_INDEX: index_by_namespace})
    assert cache.index_keys(NAMESPACE_INDEX, "default") == ["default/a"]
    with pytest.raises(ValueError):
        cache.add_indexers({NAMESPACE_INDEX: index_by_namespace})
    with pytest.raises(KeyError, match="no index"):
        cache.by_index("nope", "x")
    assert len(cache) == 1 and "default/a" in cache

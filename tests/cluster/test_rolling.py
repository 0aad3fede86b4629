"""The pure parts of `k8semu restart`: which components a selector names, and the safe order
(store followers, the store leader, API servers, schedulers and controller managers with their
Lease holders last, then nodes)."""

from __future__ import annotations

import pytest

from k8semu.cluster.errors import ClusterError
from k8semu.cluster.plan import API, CONTROL, NODES, STORE
from k8semu.cluster.rolling import rolling_order, select
from k8semu.cluster.state import ClusterState, ComponentRecord


def _rec(name: str, kind: str, stage: int, pid: int) -> ComponentRecord:
    return ComponentRecord(name=name, kind=kind, host="local", stage=stage, command=[], pid=pid)


STATE = ClusterState(
    cluster="ha",
    host="",
    mode="detached",
    state_dir="/nowhere",
    components=[
        _rec("store-s1", "store", STORE, 11),
        _rec("store-s2", "store", STORE, 12),
        _rec("store-s3", "store", STORE, 13),
        _rec("apiserver-1", "apiserver", API, 21),
        _rec("apiserver-2", "apiserver", API, 22),
        _rec("scheduler-1", "scheduler", CONTROL, 31),
        _rec("scheduler-2", "scheduler", CONTROL, 32),
        _rec("controller-manager-1", "controller-manager", CONTROL, 41),
        _rec("controller-manager-2", "controller-manager", CONTROL, 42),
        _rec("kubelet-node-1", "kubelet", NODES, 51),
        _rec("proxy-node-1", "proxy", NODES, 52),
    ],
)


def _names(records: list[ComponentRecord]) -> list[str]:
    return [c.name for c in records]


def test_no_selector_means_the_control_plane_and_nodes_only_when_asked() -> None:
    assert len(select(STATE, [], nodes=False)) == 9
    assert _names(select(STATE, [], nodes=True))[-2:] == ["kubelet-node-1", "proxy-node-1"]


def test_selectors_are_names_kinds_or_patterns_without_duplicates() -> None:
    got = select(STATE, ["scheduler", "store-s2", "store-*", "apiserver-1"], nodes=False)
    assert _names(got) == [
        "scheduler-1", "scheduler-2", "store-s2", "store-s1", "store-s3", "apiserver-1",
    ]  # fmt: skip


def test_a_selector_that_matches_nothing_is_an_error_naming_it() -> None:
    with pytest.raises(ClusterError, match="'etcd-9' matches no component"):
        select(STATE, ["etcd-9"], nodes=False)


def test_order_is_by_kind_with_leaders_last() -> None:
    order = rolling_order(
        select(STATE, [], nodes=True),
        store_leader="s1",
        lease_holders=["vm_31_abcd", "vm_42_ef01", "127.0.0.1:6443"],
    )
    assert _names(order) == [
        "store-s2", "store-s3", "store-s1",
        "apiserver-1", "apiserver-2",
        "scheduler-2", "scheduler-1",
        "controller-manager-1", "controller-manager-2",
        "kubelet-node-1", "proxy-node-1",
    ]  # fmt: skip

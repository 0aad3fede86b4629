"""Patch, Bind and Kubernetes deletion semantics, end to end (real store, real API server)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from k8semu import transport
from k8semu.api import kinds, manifest
from k8semu.apiserver import deletion, patch, registry
from k8semu.apiserver.allocation import DEFAULT_RANGES
from k8semu.apiserver.errors import Invalid
from k8semu.apiserver.objects import encode, key
from k8semu.cluster.processes import K8semuStoreCluster
from k8semu.pb.api.v1 import apiserver_pb2 as api
from k8semu.pb.api.v1 import apps_pb2, core_pb2
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc
from tests.support.apiserver import DEADLINE

from .conftest import NGINX_APP, APIServerProcess, Client, unpack


def _deployment(name: str) -> apps_pb2.Deployment:
    deploy = manifest.load_all(NGINX_APP, source="app.yaml")[0]
    assert isinstance(deploy, apps_pb2.Deployment)
    deploy.metadata.name = name
    return deploy


def _pod(name: str, node: str = "", grace: int | None = None) -> core_pb2.Pod:
    pod = core_pb2.Pod()
    pod.metadata.name = name
    pod.spec.containers.add(name="c", image="busybox")
    pod.spec.node_name = node
    if grace is not None:
        pod.spec.termination_grace_period_seconds = grace
    return pod


def _configmap(name: str, finalizers: tuple[str, ...] = ()) -> core_pb2.ConfigMap:
    cm = core_pb2.ConfigMap()
    cm.metadata.name = name
    cm.metadata.finalizers.extend(finalizers)
    cm.data["k"] = "v"
    return cm


async def _patch(
    client: Client,
    resource: str,
    name: str,
    doc: object,
    *,
    namespace: str = "",
    status: bool = False,
    patch_type: str = "merge",
) -> api.ObjectResponse:
    req = api.PatchRequest(
        resource=resource,
        namespace=namespace,
        name=name,
        patch_type=patch_type,
        patch=json.dumps(doc).encode(),
        status=status,
    )
    resp: api.ObjectResponse = await client.stub.Patch(req, timeout=10)
    return resp


async def _delete(
    client: Client, resource: str, name: str, namespace: str = "", **options: Any
) -> api.ObjectResponse:
    req = api.DeleteRequest(resource=resource, namespace=namespace, name=name, **options)
    resp: api.ObjectResponse = await client.stub.Delete(req, timeout=10)
    return resp


async def _bind(client: Client, name: str, node: str, **kw: str) -> core_pb2.Pod:
    resp = await client.stub.Bind(api.BindRequest(name=name, node_name=node, **kw), timeout=10)
    pod: core_pb2.Pod = unpack(resp.object, core_pb2.Pod)
    return pod


async def _error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


async def _gone(client: Client, resource: str, name: str, namespace: str = "") -> bool:
    try:
        await client.get(resource, name, namespace)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND, exc
        return True
    return False


# ---- the pure parts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "doc", "result"),
    [  # RFC 7386, Appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_rfc7386_examples(target: object, doc: object, result: object) -> None:
    assert patch.merge(target, doc) == result


def test_deletion_plan() -> None:
    table = registry.build(DEFAULT_RANGES)
    pods = table.strategy(kinds.for_resource("pods")).deletion
    pod = _pod("p", node="n1", grace=20)
    pod.metadata.generation = 1
    plan = deletion.plan(pods, pod, grace_period_seconds=None, propagation_policy="", now=100.0)
    assert plan.action is deletion.Action.MARK
    marked = plan.obj
    assert isinstance(marked, core_pb2.Pod)
    m = marked.metadata
    assert (m.deletion_timestamp.seconds, m.deletion_grace_period_seconds) == (120, 20)
    assert m.generation == 2 and pod.metadata.generation == 1  # the input is not mutated
    again = deletion.plan(pods, marked, grace_period_seconds=None, propagation_policy="", now=105)
    assert again.action is deletion.Action.UNCHANGED
    shorter = deletion.plan(pods, marked, grace_period_seconds=5, propagation_policy="", now=105)
    assert shorter.action is deletion.Action.MARK
    assert shorter.obj.metadata.deletion_timestamp.seconds == 105  # type: ignore[attr-defined]
    zero = deletion.plan(pods, marked, grace_period_seconds=0, propagation_policy="", now=105)
    assert zero.action is deletion.Action.DELETE
    unbound = deletion.plan(pods, _pod("u"), grace_period_seconds=9, propagation_policy="", now=1)
    assert unbound.action is deletion.Action.DELETE
    cms = table.strategy(kinds.for_resource("cm")).deletion
    orphan = deletion.plan(
        cms, _configmap("c", ("foregroundDeletion",)), grace_period_seconds=None,
        propagation_policy="Orphan", now=1,
    )  # fmt: skip
    assert orphan.action is deletion.Action.MARK
    assert list(orphan.obj.metadata.finalizers) == ["orphan"]  # type: ignore[attr-defined]
    assert not deletion.deleted_by_update(orphan.obj)
    orphan.obj.metadata.ClearField("finalizers")  # type: ignore[attr-defined]
    assert deletion.deleted_by_update(orphan.obj)
    with pytest.raises(Invalid, match="gracePeriodSeconds"):
        deletion.check_options(-1, "")
    assert deletion.check_options(None, "") == "Background"


# ---- Patch --------------------------------------------------------------------------------


async def test_merge_patch_labels_replicas_and_image(client: Client) -> None:
    created = unpack(
        (await client.create("deploy", _deployment("patched"))).object, apps_pb2.Deployment
    )
    doc = {
        "metadata": {"labels": {"tier": "front"}},
        "spec": {
            "replicas": 5,
            "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}]}},
        },
    }
    new = unpack((await _patch(client, "deployments", "patched", doc)).object, apps_pb2.Deployment)
    assert dict(new.metadata.labels) == {"app": "nginx", "tier": "front"}  # objects merge
    assert new.spec.replicas == 5 and new.metadata.generation == 2
    # Lists replace: the container is exactly what the patch says (ports gone).
    [container] = new.spec.template.spec.containers
    assert (container.image, len(container.ports)) == ("nginx:1.25", 0)
    assert new.metadata.uid == created.metadata.uid
    assert int(new.metadata.resource_version) > int(created.metadata.resource_version)

    # null deletes a key; status in a main-resource patch is ignored.
    doc = {"metadata": {"labels": {"tier": None}}, "status": {"replicas": 7}}
    new = unpack((await _patch(client, "deploy", "patched", doc)).object, apps_pb2.Deployment)
    assert dict(new.metadata.labels) == {"app": "nginx"}
    assert new.status.replicas == 0 and new.metadata.generation == 2

    # A patch that changes nothing writes nothing.
    same = unpack(
        (await _patch(client, "deploy", "patched", {"spec": {"replicas": 5}})).object,
        apps_pb2.Deployment,
    )
    assert same.metadata.resource_version == new.metadata.resource_version

    # The status subresource: only status changes, generation does not.
    doc = {"status": {"replicas": 3}, "spec": {"replicas": 9}}
    status = unpack(
        (await _patch(client, "deploy", "patched", doc, status=True)).object, apps_pb2.Deployment
    )
    assert status.status.replicas == 3 and status.spec.replicas == 5
    assert status.metadata.generation == 2

    # metadata.resourceVersion in a patch is a precondition.
    stale = {"metadata": {"resourceVersion": created.metadata.resource_version}, "spec": {}}
    err = await _error(_patch(client, "deploy", "patched", stale))
    assert err.code() == grpc.StatusCode.ABORTED
    fresh = {"metadata": {"resourceVersion": status.metadata.resource_version}}
    fresh["spec"] = {"replicas": 1}
    new = unpack((await _patch(client, "deploy", "patched", fresh)).object, apps_pb2.Deployment)
    assert new.spec.replicas == 1
    await client.delete("deploy", "patched")


@pytest.mark.parametrize(
    ("doc", "patch_type", "needle"),
    [
        ({"spec": {"replicass": 3}}, "merge", 'deployments "bad-patch": spec.replicass: unknown'),
        (
            {"spec": {"template": {"spec": {"containers": [{"name": "x", "imagee": "y"}]}}}},
            "merge",
            "spec.template.spec.containers[0].imagee: unknown field",
        ),
        ({"spec": {"replicas": "three"}}, "merge", "spec.replicas: expected integer"),
        ({"spec": {"replicas": -1}}, "merge", "spec.replicas: must be >= 0"),
        ({"spec": {"selector": {"matchLabels": {"app": "x"}}}}, "merge", "spec.selector"),
        ({"metadata": {"name": "other"}}, "merge", "metadata.name"),
        ({"kind": "Pod"}, "merge", "kind: Invalid value"),
        ({"spec": {"replicas": 3}}, "yaml", "patchType: Unsupported value: 'yaml'"),
        ({"spec": {"replicas": 3}}, "apply", "fieldManager: Required value"),
        ([1, 2], "merge", "patch: must be a JSON object"),
    ],
)
async def test_bad_patch_is_refused_and_writes_nothing(
    client: Client, doc: object, patch_type: str, needle: str
) -> None:
    try:
        await client.create("deploy", _deployment("bad-patch"))
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.ALREADY_EXISTS
    before = (await client.get("deploy", "bad-patch")).object
    err = await _error(_patch(client, "deploy", "bad-patch", doc, patch_type=patch_type))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert needle in (err.details() or "")
    assert (await client.get("deploy", "bad-patch")).object == before


async def test_concurrent_patches_all_apply(client: Client) -> None:
    """No resourceVersion in the patch: the server re-reads and re-applies on conflicts."""
    await client.create("cm", _configmap("many"))
    docs = [{"metadata": {"labels": {f"l{i}": "x"}}} for i in range(6)]
    await asyncio.gather(*(_patch(client, "cm", "many", doc) for doc in docs))
    cm = unpack((await client.get("cm", "many")).object, core_pb2.ConfigMap)
    assert set(cm.metadata.labels) == {f"l{i}" for i in range(6)}
    await client.delete("cm", "many")


# ---- Bind ---------------------------------------------------------------------------------


async def test_bind_sets_node_once(client: Client) -> None:
    await client.create("pods", _pod("bindme"))
    # A nomination (the scheduler's, after preemption) is cleared by the binding.
    doc = {"status": {"nominatedNodeName": "node-1"}}
    nominated = unpack((await _patch(client, "pods", "bindme", doc, status=True)).object,
                       core_pb2.Pod)  # fmt: skip
    assert nominated.status.nominated_node_name == "node-1"
    stale = nominated.metadata.resource_version
    bound = await _bind(client, "bindme", "node-1", resource_version=stale)
    assert bound.spec.node_name == "node-1"
    assert bound.status.nominated_node_name == ""
    assert [(c.type, c.status) for c in bound.status.conditions] == [("PodScheduled", "True")]
    got = unpack((await client.get("pods", "bindme")).object, core_pb2.Pod)
    assert got == bound
    err = await _error(_bind(client, "bindme", "node-2"))
    assert err.code() == grpc.StatusCode.ABORTED
    assert err.details() == "pod bindme is already assigned to node 'node-1'"
    err = await _error(_bind(client, "nosuchpod", "node-1"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    await client.create("pods", _pod("bind-stale"))
    err = await _error(_bind(client, "bind-stale", "node-1", resource_version=stale))
    assert err.code() == grpc.StatusCode.ABORTED
    for name in ("bindme", "bind-stale"):
        await _delete(client, "pods", name, grace_period_seconds=0)


# ---- Delete -------------------------------------------------------------------------------


async def test_pod_graceful_delete_then_grace_zero(client: Client) -> None:
    await client.create("pods", _pod("graceful", node="node-1", grace=10))
    before = time.time()
    marked = unpack((await _delete(client, "pods", "graceful")).object, core_pb2.Pod)
    m = marked.metadata
    assert m.deletion_grace_period_seconds == 10 and m.generation == 2
    assert before + 9 <= m.deletion_timestamp.ToSeconds() <= time.time() + 11
    got = unpack((await client.get("pods", "graceful")).object, core_pb2.Pod)
    assert got == marked
    # Deleting again is idempotent; a shorter grace period moves the deadline earlier.
    again = unpack((await _delete(client, "pods", "graceful")).object, core_pb2.Pod)
    assert again == marked
    shorter = unpack(
        (await _delete(client, "pods", "graceful", grace_period_seconds=5)).object, core_pb2.Pod
    )
    assert shorter.metadata.deletion_grace_period_seconds == 5
    assert shorter.metadata.deletion_timestamp.ToSeconds() == m.deletion_timestamp.ToSeconds() - 5
    # The kubelet's final grace-0 delete removes it.
    await _delete(client, "pods", "graceful", grace_period_seconds=0)
    assert await _gone(client, "pods", "graceful")
    # Not bound to a node: no kubelet will finish it, so it goes at once.
    await client.create("pods", _pod("unbound", grace=30))
    await _delete(client, "pods", "unbound")
    assert await _gone(client, "pods", "unbound")


async def test_finalizer_blocks_deletion_until_removed(client: Client) -> None:
    await client.create("cm", _configmap("held", ("example.com/hold", "example.com/two")))
    marked = unpack((await _delete(client, "cm", "held")).object, core_pb2.ConfigMap)
    assert marked.metadata.HasField("deletion_timestamp")
    assert marked.metadata.deletion_grace_period_seconds == 0
    assert not await _gone(client, "cm", "held")
    err = await _error(_patch(client, "cm", "held", {"metadata": {"finalizers": ["new"]}}))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no new finalizers can be added" in (err.details() or "")
    doc = {"metadata": {"finalizers": ["example.com/two"]}, "data": {"k": "w"}}
    kept = unpack((await _patch(client, "cm", "held", doc)).object, core_pb2.ConfigMap)
    assert kept.data["k"] == "w"
    assert kept.metadata.deletion_timestamp == marked.metadata.deletion_timestamp  # server-owned
    await _patch(client, "cm", "held", {"metadata": {"finalizers": None}})
    assert await _gone(client, "cm", "held")


async def test_propagation_policies(client: Client) -> None:
    for name, policy, finalizer in [
        ("orphaned", "Orphan", "orphan"),
        ("foreground", "Foreground", "foregroundDeletion"),
    ]:
        await client.create("deploy", _deployment(name))
        marked = unpack(
            (await _delete(client, "deploy", name, propagation_policy=policy)).object,
            apps_pb2.Deployment,
        )
        assert list(marked.metadata.finalizers) == [finalizer]
        assert marked.metadata.HasField("deletion_timestamp")
        # The garbage collector's part (issue 4): remove the finalizer, the object goes.
        await _patch(client, "deploy", name, {"metadata": {"finalizers": []}})
        assert await _gone(client, "deploy", name)
    await client.create("deploy", _deployment("background"))
    await _delete(client, "deploy", "background", propagation_policy="Background")
    assert await _gone(client, "deploy", "background")
    err = await _error(_delete(client, "deploy", "x", propagation_policy="Sideways"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "propagationPolicy: Unsupported value: 'Sideways'" in (err.details() or "")


# ---- Namespaces ---------------------------------------------------------------------------


async def test_namespace_termination(client: Client) -> None:
    ns = core_pb2.Namespace()
    ns.metadata.name = "ending"
    ns.metadata.finalizers.append("example.com/hold")  # keeps it Terminating for the test
    await client.create("ns", ns)
    await client.create("pods", _pod("inside", node="node-1"), "ending")
    await client.create("cm", _configmap("held-inside", ("example.com/hold",)), "ending")
    marked = unpack((await _delete(client, "ns", "ending")).object, core_pb2.Namespace)
    assert marked.status.phase == "Terminating"
    assert marked.metadata.HasField("deletion_timestamp")
    # Contents go (graceful pods and finalizers included); the namespace waits for its own.
    assert (await client.list("pods", "ending")).items == []
    assert (await client.list("cm", "ending")).items == []
    err = await _error(client.create("cm", _configmap("late"), "ending"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "namespace ending is being terminated" in (err.details() or "")
    assert (await client.list("cm", "ending")).items == []
    again = unpack((await _delete(client, "ns", "ending")).object, core_pb2.Namespace)
    assert again == marked
    await _patch(client, "ns", "ending", {"metadata": {"finalizers": None}})
    assert await _gone(client, "ns", "ending")
    err = await _error(client.create("cm", _configmap("later"), "ending"))
    assert err.code() == grpc.StatusCode.NOT_FOUND


async def test_stuck_terminating_namespace_is_finished_at_start(
    client: Client, store: K8semuStoreCluster, tmp_path: Path
) -> None:
    """A namespace marked Terminating whose contents were never deleted (an API server that
    died half way) is finished by the next API server to start."""
    ns = core_pb2.Namespace()
    ns.metadata.name = "stuck"
    created = unpack((await client.create("ns", ns)).object, core_pb2.Namespace)
    await client.create("cm", _configmap("leftover"), "stuck")
    created.metadata.deletion_timestamp.FromSeconds(int(time.time()))
    created.metadata.deletion_grace_period_seconds = 0
    created.status.phase = "Terminating"
    async with transport.channel(store.endpoints) as channel:
        await rpc_pb2_grpc.KVStub(channel).Put(
            rpc_pb2.PutRequest(
                key=key(kinds.for_resource("namespaces"), "", "stuck"), value=encode(created)
            ),
            timeout=10,
        )
    assert not await _gone(client, "cm", "leftover", "stuck")
    second = APIServerProcess(store, tmp_path / "apiserver2.log")
    try:
        second.wait_serving()
        end = time.monotonic() + DEADLINE
        while not await _gone(client, "ns", "stuck"):
            assert time.monotonic() < end, "the namespace was not finished"
            await asyncio.sleep(0.05)
    finally:
        second.close()
    assert await _gone(client, "cm", "leftover", "stuck")

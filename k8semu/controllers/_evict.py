"""Deleting a pod on a controller's behalf (an eviction by taint, a drain by the cluster
autoscaler): only the very pod decided about, by its uid, so a pod created since under the
same name is never touched."""

from __future__ import annotations

from k8semu.client import Client, Conflict, NotFound, Preconditions
from k8semu.pb.api.v1 import core_pb2


async def delete_pod(client: Client, pod: core_pb2.Pod) -> bool:
    """Delete ``pod`` (gracefully); False when it is gone already or its name is another
    pod's now."""
    try:
        await client.delete(
            core_pb2.Pod,
            pod.metadata.name,
            namespace=pod.metadata.namespace,
            preconditions=Preconditions(uid=pod.metadata.uid),
        )
    except (NotFound, Conflict):
        return False
    return True

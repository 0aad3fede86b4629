"""PodControl: how a workload controller creates and deletes the pods it owns, with the Events
Kubernetes records for each (its controller.PodControlInterface): SuccessfulCreate /
FailedCreate and SuccessfulDelete / FailedDelete on the owner. A pod already gone counts as
deleted (its delete event is on its way to the informer)."""

from __future__ import annotations

from typing import cast

from google.protobuf.message import Message

from k8semu.client import Client, ClientError, NotFound
from k8semu.client.events import NORMAL, WARNING, EventRecorder
from k8semu.pb.api.v1 import core_pb2


class PodControl:
    def __init__(self, client: Client, recorder: EventRecorder) -> None:
        self.client = client
        self.recorder = recorder

    async def create(self, owner: Message, pod: core_pb2.Pod) -> core_pb2.Pod:
        try:
            created = cast(core_pb2.Pod, await self.client.create(pod))
        except ClientError as exc:
            self.recorder.event(owner, WARNING, "FailedCreate", f"Error creating: {exc}")
            raise
        self.recorder.event(
            owner, NORMAL, "SuccessfulCreate", f"Created pod: {created.metadata.name}"
        )
        return created

    async def delete(self, owner: Message, pod: core_pb2.Pod) -> None:
        name = pod.metadata.name
        try:
            await self.client.delete(core_pb2.Pod, name, namespace=pod.metadata.namespace)
        except NotFound:
            return
        except ClientError as exc:
            self.recorder.event(owner, WARNING, "FailedDelete", f"Error deleting pod {name}: {exc}")
            raise
        self.recorder.event(owner, NORMAL, "SuccessfulDelete", f"Deleted pod: {name}")

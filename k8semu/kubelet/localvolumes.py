"""Removes the directories of this node's local volumes once their PersistentVolume is being
deleted (reclaimPolicy Delete), then the volume's `k8semu.io/local-volume` finalizer.

The persistentvolume controller provisions a volume as a directory under the node's
`k8semu.io/local-storage-dir` and deletes the object when its claim is gone; only the
kubelet of that node may remove the data (another machine could not reach it), so the
finalizer holds the object until it has. A path outside this kubelet's storage directory is
never removed (a hand-made volume's data is not ours): only the finalizer goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from typing import Any

from k8semu.client import Conflict, Informer, NotFound
from k8semu.client._client import Client
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2

log = get_logger(__name__)

CLEANUP_FINALIZER = "k8semu.io/local-volume"  # as k8semu/controllers/persistentvolume.py
HOSTNAME_LABEL = "kubernetes.io/hostname"


def volume_node(pv: core_pb2.PersistentVolume) -> str:
    for term in pv.spec.node_affinity.required.node_selector_terms:
        for req in term.match_expressions:
            if req.key == HOSTNAME_LABEL and len(req.values) == 1:
                return str(req.values[0])
    return ""


class LocalVolumeCleaner:
    def __init__(self, client: Client, node_name: str, storage_dir: str, **kw: Any) -> None:
        self.client = client
        self.node_name = node_name
        self.storage_dir = os.path.abspath(storage_dir)
        self.volumes: Informer[core_pb2.PersistentVolume] = Informer(
            client, core_pb2.PersistentVolume, **kw
        )
        self.volumes.add_event_handler(
            on_add=self._changed, on_update=lambda old, new: self._changed(new)
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy: set[str] = set()

    def start(self) -> None:
        self.volumes.start()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.volumes.stop()

    def _changed(self, pv: core_pb2.PersistentVolume) -> None:
        name = pv.metadata.name
        if (
            pv.metadata.HasField("deletion_timestamp")
            and CLEANUP_FINALIZER in pv.metadata.finalizers
            and volume_node(pv) == self.node_name
            and name not in self._busy
        ):
            self._busy.add(name)
            task = asyncio.get_running_loop().create_task(self._clean(name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _clean(self, name: str) -> None:
        try:
            for _ in range(5):  # a Conflict is another writer: read again
                try:
                    pv = await self.client.get(core_pb2.PersistentVolume, name)
                except NotFound:
                    return
                path = os.path.abspath(pv.spec.local.path or pv.spec.host_path.path)
                if path.startswith(self.storage_dir + os.sep):
                    await asyncio.to_thread(shutil.rmtree, path, True)
                    log.info("local volume removed", volume=name, path=path)
                kept = [f for f in pv.metadata.finalizers if f != CLEANUP_FINALIZER]
                del pv.metadata.finalizers[:]
                pv.metadata.finalizers.extend(kept)
                with contextlib.suppress(NotFound):
                    try:
                        await self.client.update(pv)
                    except Conflict:
                        continue
                return
        except Exception as exc:  # the next change of the volume tries again
            log.warning("local volume cleanup failed", volume=name, error=str(exc))
        finally:
            self._busy.discard(name)

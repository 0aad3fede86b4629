"""The `simulated` runtime (KWOK-style): no process, no files.

A container "runs" `start_delay` seconds after it is started and until it is stopped; it
never fails, has no logs, and its probes are treated as passing. Nothing survives a kubelet
restart (the next kubelet starts the pods' containers again). Hundreds of hollow nodes share
one instance.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from pathlib import Path

from k8semu.kubelet.runtime import (
    ContainerHandle,
    ExitInfo,
    Launch,
    RecoveredPod,
    VolumeFile,
)

_ids = itertools.count(1)


class SimulatedRuntime:
    name = "simulated"
    runs_probes = False

    def __init__(self, *, start_delay: float = 0.0) -> None:
        self.start_delay = start_delay

    async def prepare_pod(
        self, uid: str, *, namespace: str, name: str, pod_ip: str, files: Sequence[VolumeFile]
    ) -> None:
        return None

    async def start(self, launch: Launch) -> ContainerHandle:
        if self.start_delay > 0:
            await asyncio.sleep(self.start_delay)
        return ContainerHandle(
            pod_uid=launch.pod_uid,
            name=launch.container,
            restart=launch.restart,
            container_id=f"simulated://{next(_ids)}",
            started_at=time.time(),
            exited=asyncio.get_running_loop().create_future(),
        )

    async def stop(self, handle: ContainerHandle, grace: float) -> ExitInfo:
        if not handle.exited.done():
            handle.exited.set_result(
                ExitInfo(exit_code=0, reason="Completed", finished_at=time.time())
            )
        return handle.exited.result()

    async def exec(self, launch: Launch, stdin: bytes, timeout: float) -> tuple[int, bytes, bytes]:
        return 126, b"", b"exec: the simulated runtime runs no processes\n"

    def log_path(self, uid: str, container: str, restart: int) -> Path | None:
        return None

    def recover(self) -> dict[str, RecoveredPod]:
        return {}

    async def remove_pod(self, uid: str) -> None:
        return None

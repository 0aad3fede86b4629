"""Chaos runs recorded as Kubernetes Events, so the dashboard (and `kubectl get events`)
see faults and recoveries through the API like everything else.

Each fault is one `ChaosFault` Event when it is injected and one `ChaosRecovered` (or
`ChaosNotRecovered`, a Warning) when the run saw the target healthy again, both from source
component `k8semu-chaos`, about the Node for a kubelet's fault and about the component
(kind `Component`, no such API kind: a name for the process) otherwise. The annotations
carry what the dashboard's timeline needs at better than Events' whole seconds:
`k8semu.io/chaos-fault` (run/index, pairing the two), `k8semu.io/chaos-at` (RFC 3339 with
milliseconds) and `k8semu.io/recovered-after` (seconds). Best effort: a failed write is
logged, never fails the run, and is written in the background (retried for up to 30 s: the
fault may be the API server's) so a slow API server never delays an injection; `flush()`
waits up to 15 s for what is still in flight at the end of the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
from typing import Any

from k8semu.api import timestamps
from k8semu.client import Client, ClientError
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2, meta_pb2

log = get_logger(__name__)

SOURCE = "k8semu-chaos"
NAMESPACE = "default"
FAULT = "ChaosFault"
RECOVERED = "ChaosRecovered"
NOT_RECOVERED = "ChaosNotRecovered"
FAULT_ANNOTATION = "k8semu.io/chaos-fault"
AT_ANNOTATION = "k8semu.io/chaos-at"
AFTER_ANNOTATION = "k8semu.io/recovered-after"
# A write is tried this many times, this long apart (an API server comes back in seconds).
_ATTEMPTS = 30
_RETRY_DELAY = 1.0


def _rfc3339_ms(at: float) -> str:
    when = datetime.datetime.fromtimestamp(at, datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


class ChaosEvents:
    """Writes the Events of one chaos run (`run` names it: unique per run)."""

    def __init__(self, client: Client, run: str) -> None:
        self.client = client
        self.run = run
        self._tasks: set[asyncio.Task[None]] = set()
        # index -> the object its fault's Event was about (the outcome is about the same).
        self._about: dict[int, tuple[str, str]] = {}

    def _event(
        self, index: int, fault: dict[str, Any], reason: str, message: str, at: float
    ) -> core_pb2.Event:
        nodes = fault.get("nodes") or []
        if index not in self._about:
            kubelet = fault.get("kind") == "kubelet" and nodes
            self._about[index] = ("Node", nodes[0]) if kubelet else ("Component", fault["target"])
        kind, name = self._about[index]
        stamp = timestamps.now()
        event = core_pb2.Event(
            metadata=meta_pb2.ObjectMeta(
                namespace=NAMESPACE,
                generate_name=f"chaos-{self.run}-{index}-",
                annotations={
                    FAULT_ANNOTATION: f"{self.run}/{index}",
                    AT_ANNOTATION: _rfc3339_ms(at),
                },
            ),
            involved_object=meta_pb2.ObjectReference(kind=kind, name=name),
            reason=reason,
            message=message,
            type="Warning" if reason != RECOVERED else "Normal",
            source=core_pb2.EventSource(component=SOURCE, host=os.uname().nodename),
            first_timestamp=stamp,
            last_timestamp=stamp,
            count=1,
            reporting_component=SOURCE,
        )
        return event

    async def _write(self, event: core_pb2.Event) -> None:
        # The fault may be the API server's own (killed, paused, cut off): keep trying for a
        # while; the Event keeps its time in its annotations, whenever it gets written.
        for attempt in range(_ATTEMPTS):
            try:
                await self.client.create(event)
                return
            except ClientError as exc:
                if attempt == _ATTEMPTS - 1:
                    log.warning("chaos event not written", reason=event.reason, error=str(exc))
                    return
            await asyncio.sleep(_RETRY_DELAY)

    def _spawn(self, event: core_pb2.Event) -> None:
        task = asyncio.get_running_loop().create_task(self._write(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self, timeout: float = 15.0) -> None:
        """Wait up to `timeout` s for the Events still being written; drop the rest."""
        tasks = list(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def fault(self, index: int, fault: dict[str, Any], at: float) -> None:
        """`fault` (a plan Fault's dict) was injected at `at` (time.time())."""
        what = f"{fault['fault']} {fault['target']}"
        if fault.get("duration"):
            what += f" for {fault['duration']:.1f} s"
        self._spawn(self._event(index, fault, FAULT, f"chaos: {what}", at))

    def outcome(
        self, index: int, fault: dict[str, Any], at: float, recovered_after: float | None
    ) -> None:
        """The run's verdict on fault `index`: healthy again `recovered_after` s after it."""
        what = f"{fault['fault']} {fault['target']}"
        if recovered_after is None:
            event = self._event(index, fault, NOT_RECOVERED, f"chaos: {what}: not recovered", at)
        else:
            event = self._event(
                index,
                fault,
                RECOVERED,
                f"chaos: {what}: recovered after {recovered_after:.2f} s",
                at,
            )
            event.metadata.annotations[AFTER_ANNOTATION] = f"{recovered_after:.3f}"
        self._spawn(event)

"""A container's termination message, as the kubelet reports it in
status.containerStatuses[].state.terminated.message.

The file is the container's terminationMessagePath (default /dev/termination-log), which
the process runtime maps into the pod's root (`<pod dir>/dev/termination-log`, the
`$K8SEMU_ROOT/dev/termination-log` a program writes); it is emptied when each run starts,
so a message is always the last run's. At most 4096 bytes are read, as Kubernetes. Under
FallbackToLogsOnError a run that failed (exit code not 0) and left the file empty reports
the end of its log instead: the last 80 lines, at most 2048 bytes. A run with neither keeps
the runtime's own message (a start error's). Containers of one pod share the pod's root, so
two containers that keep the default path share one file: give each its own path.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from k8semu.kubelet import containerlog
from k8semu.kubelet.runtime import ExitInfo, Runtime
from k8semu.pb.api.v1 import core_pb2

MAX_BYTES = 4096
FALLBACK_LINES = 80
FALLBACK_BYTES = 2048


def _read_head(path: Path | None, limit: int) -> str:
    if path is None:
        return ""
    try:
        with path.open("rb") as f:
            return f.read(limit).decode(errors="replace")
    except OSError:
        return ""


def _read_tail(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            # Records carry a time and a stream each: read enough of them for the text.
            start = max(size - containerlog.CHUNK, 0)
            f.seek(start)
            raw = f.read(containerlog.CHUNK)
    except OSError:
        return ""
    if start > 0:  # the first record is cut
        raw = raw[raw.find(b"\n") + 1 :]
    data = containerlog.plain(raw)[-FALLBACK_BYTES:]
    lines = data.decode(errors="replace").splitlines(keepends=True)
    return "".join(lines[-FALLBACK_LINES:])


def with_message(
    info: ExitInfo, container: core_pb2.Container, message_file: Path | None, log: Path | None
) -> ExitInfo:
    """`info` with the run's termination message, when it has one."""
    message = _read_head(message_file, MAX_BYTES)
    if (
        not message
        and container.termination_message_policy == "FallbackToLogsOnError"
        and info.exit_code != 0
    ):
        message = _read_tail(log)
    return dataclasses.replace(info, message=message) if message else info


def of_run(
    runtime: Runtime, uid: str, container: core_pb2.Container, restart: int, info: ExitInfo
) -> ExitInfo:
    """`info` of run `restart` of `container` (pod `uid`) with its termination message."""
    path = container.termination_message_path
    message_file = runtime.termination_file(uid, path) if path else None
    return with_message(
        info, container, message_file, runtime.log_path(uid, container.name, restart)
    )

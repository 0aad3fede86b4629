"""Take one consistent backup of a live store, over the etcd v3 API.

The backup comes from the leader: ``Maintenance.Status`` on every endpoint finds it, a
linearizable ``Range`` on it waits until it has applied every write acknowledged before the
backup began, then ``Maintenance.Snapshot`` streams its state. So the backup holds every
write acknowledged before ``take`` was called; its revision (the snapshot's) is that point.
The stream is written to a temporary file beside the destination, verified (the snapshot's
own framing and SHA-256), its objects counted from the image, and framed into a backup file
(``archive``) under the final name only when all of that passed.

``member`` (``k8semu backup --from-member``) is for a store that lost its quorum: the backup is
taken from that one member as it stands, with no leader and no barrier. It holds what that
member had applied, which may miss the last writes the lost majority acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from k8semu import transport
from k8semu.backup import archive
from k8semu.backup.archive import BackupError, Metadata
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc
from k8semu.store import snapshot
from k8semu.store.errors import StoreError

if TYPE_CHECKING:
    from k8semu.pb.etcd.rpc_pb2_grpc import MaintenanceAsyncStub

__all__ = ["find_leader", "take"]

STATUS_TIMEOUT_S = 2.0
#: Any key: the read is only a barrier (a linearizable read applies everything before it).
_BARRIER_KEY = b"/registry/"


async def find_leader(
    endpoints: Sequence[str], tls: transport.ClientTLS | None = None
) -> tuple[str, rpc_pb2.StatusResponse]:
    """The endpoint of the store's leader and its Status; BackupError when none answers as
    the leader. `tls`: a TLS store's CA and a client certificate it admits."""
    answers: list[str] = []
    for endpoint in endpoints:
        async with transport.channel(endpoint, tls) as ch:
            try:
                status = await rpc_pb2_grpc.MaintenanceStub(ch).Status(
                    rpc_pb2.StatusRequest(), timeout=STATUS_TIMEOUT_S
                )
            except grpc.aio.AioRpcError as exc:
                answers.append(f"{endpoint}: {exc.code().name}")
                continue
        if status.leader and status.leader == status.header.member_id:
            return endpoint, status
        answers.append(f"{endpoint}: follower")
    raise BackupError(
        f"no store leader answers among {', '.join(endpoints)} ({'; '.join(answers)}): a backup"
        " needs a store with quorum"
    )


async def member_status(
    endpoint: str, tls: transport.ClientTLS | None = None
) -> rpc_pb2.StatusResponse:
    """The Status of the one member at ``endpoint``; BackupError when it does not answer."""
    async with transport.channel(endpoint, tls) as ch:
        try:
            return await rpc_pb2_grpc.MaintenanceStub(ch).Status(
                rpc_pb2.StatusRequest(), timeout=STATUS_TIMEOUT_S
            )
        except grpc.aio.AioRpcError as exc:
            raise BackupError(f"store member {endpoint}: {exc.code().name}") from None


async def take(
    endpoints: Sequence[str],
    dest: Path,
    *,
    cluster: str,
    timeout: float = 120.0,
    member: str = "",
    tls: transport.ClientTLS | None = None,
) -> Metadata:
    """Write a backup of the store at ``endpoints`` (or of the one ``member``, leader or
    not) to ``dest`` and return its metadata. `tls`: a TLS store's CA and client certificate."""
    if member:
        endpoint, status = member, await member_status(member, tls)
    else:
        endpoint, status = await find_leader(endpoints, tls)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".backup-", dir=dest.parent) as tmp:
        snap = Path(tmp) / archive.PAYLOAD
        async with transport.channel(endpoint, tls) as ch:
            try:
                if not member:  # without a quorum there is no linearizable point to wait for
                    await rpc_pb2_grpc.KVStub(ch).Range(
                        rpc_pb2.RangeRequest(key=_BARRIER_KEY, count_only=True), timeout=timeout
                    )
                await _stream_when_free(rpc_pb2_grpc.MaintenanceStub(ch), snap, timeout)
            except grpc.aio.AioRpcError as exc:
                # A leader that loses its quorum steps down under the barrier read: say what
                # the store lacks, as when no leader answered at all.
                lost = not member and exc.code() == grpc.StatusCode.UNAVAILABLE
                raise BackupError(
                    f"snapshot from the store {'member' if member else 'leader'} {endpoint}:"
                    f" {exc.code().name}: {exc.details()}"
                    + (": a backup needs a store with quorum" if lost else "")
                ) from exc
        return await asyncio.to_thread(_frame, snap, dest, cluster, endpoint, status)


async def _stream_when_free(stub: MaintenanceAsyncStub, path: Path, timeout: float) -> None:
    """A member sends one snapshot at a time and refuses another with RESOURCE_EXHAUSTED
    ("try again later"): a scheduled backup or another `k8semu backup` may be streaming one.
    Wait for it (backing off to 2 s), within `timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.2
    while True:
        try:
            await _stream_snapshot(stub, path, max(deadline - loop.time(), 1.0))
            return
        except grpc.aio.AioRpcError as exc:
            busy = exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            if not busy or loop.time() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def _stream_snapshot(stub: MaintenanceAsyncStub, path: Path, timeout: float) -> None:
    with path.open("wb") as out:
        async for chunk in stub.Snapshot(rpc_pb2.SnapshotRequest(), timeout=timeout):
            await asyncio.to_thread(out.write, chunk.blob)
        out.flush()
        os.fsync(out.fileno())


def _frame(
    snap: Path, dest: Path, cluster: str, endpoint: str, status: rpc_pb2.StatusResponse
) -> Metadata:
    kv = snap.with_name("kv.db")
    try:
        header = snapshot.restore(snap, kv)
        objects = archive.count_objects(kv)
    except StoreError as exc:
        raise BackupError(f"the snapshot streamed from {endpoint} is bad: {exc.message}") from exc
    finally:
        with contextlib.suppress(OSError):
            kv.unlink()
    meta = Metadata(
        cluster=cluster,
        store_cluster_id=f"{status.header.cluster_id:x}",
        revision=header.revision,
        compact_revision=header.compact_revision,
        taken_at=archive.utc_now(),
        source=endpoint,
        payload_bytes=snap.stat().st_size,
        payload_sha256=archive.sha256_of(snap),
        objects=objects,
    )
    archive.write(dest, meta, snap)
    return meta

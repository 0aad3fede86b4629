"""Export and import a store's keyspace as JSON lines, so data moves between our store and a
real etcd (whose snapshot files are bbolt, which ours are not) in either direction.

The format, ``k8semu-keyspace/1``: one JSON object per line, in this order::

    {"type": "header", "format": "k8semu-keyspace/1", "revision": R, "clusterId": "<hex>",
     "exportedAt": "<RFC 3339>", "k8semuVersion": "..."}
    {"type": "lease", "id": 7587..., "ttl": 42, "grantedTtl": 60}          one per lease in use
    {"type": "kv", "key": "<base64>", "value": "<base64>", "createRevision": 5,
     "modRevision": 9, "version": 3, "lease": 0}                           one per key, by key
    {"type": "footer", "keys": N, "leases": M}

Every key is read at the single revision R (the first page's), so the export is one
consistent view. Import writes into an *empty* target (it refuses a target holding any key):
leases first (same ids, their remaining TTL), then the keys in transactions of at most
``MAX_TXN_OPS`` puts and about ``MAX_TXN_BYTES``. The target assigns its own revisions: the
exported ones are a record, not restored (etcd has no way to set them). So an API server on
the target must start after the import; its clients relist, since every resourceVersion
changed. A file without its footer, or whose counts disagree, is refused before any write.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import grpc

from k8semu import __version__, transport
from k8semu.backup.archive import BackupError, utc_now
from k8semu.pb.etcd import kv_pb2, rpc_pb2, rpc_pb2_grpc

if TYPE_CHECKING:
    pass

if TYPE_CHECKING:
    from k8semu.pb.etcd.rpc_pb2_grpc import KVAsyncStub, LeaseAsyncStub

__all__ = ["FORMAT", "ImportReport", "export_keyspace", "import_keyspace", "read_records"]

FORMAT = "k8semu-keyspace/1"
PAGE = 500
MAX_TXN_OPS = 128  # etcd's default --max-txn-ops
MAX_TXN_BYTES = 1 << 20  # under etcd's default 1.5 MiB request limit
RPC_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class ImportReport:
    keys: int
    leases: int
    revision: int  # the target's revision after the import


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def export_keyspace(
    endpoints: Sequence[str], out: TextIO, tls: transport.ClientTLS | None = None
) -> tuple[int, int]:
    """Write every key of the store at ``endpoints`` to ``out``; (keys, leases) written."""
    async with transport.channel(list(endpoints), tls) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        lease = rpc_pb2_grpc.LeaseStub(ch)
        try:
            return await _export(kv, lease, out)
        except grpc.aio.AioRpcError as exc:
            raise BackupError(f"export from {','.join(endpoints)}: {_why(exc)}") from exc


async def _export(kv: KVAsyncStub, lease: LeaseAsyncStub, out: TextIO) -> tuple[int, int]:
    start, revision = b"\x00", 0
    rows: list[kv_pb2.KeyValue] = []
    while True:
        resp = await kv.Range(
            rpc_pb2.RangeRequest(key=start, range_end=b"\x00", limit=PAGE, revision=revision),
            timeout=RPC_TIMEOUT_S,
        )
        revision = revision or resp.header.revision
        rows.extend(resp.kvs)
        if not resp.more or not resp.kvs:
            break
        start = resp.kvs[-1].key + b"\x00"
    lease_ids = sorted({r.lease for r in rows if r.lease})
    leases = []
    for lease_id in lease_ids:
        ttl = await lease.LeaseTimeToLive(
            rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id), timeout=RPC_TIMEOUT_S
        )
        if ttl.TTL > 0:
            leases.append(
                {"type": "lease", "id": lease_id, "ttl": ttl.TTL, "grantedTtl": ttl.grantedTTL}
            )
    live = {entry["id"] for entry in leases}
    header = {
        "type": "header", "format": FORMAT, "revision": revision, "exportedAt": utc_now(),
        "clusterId": f"{resp.header.cluster_id:x}", "k8semuVersion": __version__,
    }  # fmt: skip
    _line(out, header)
    for entry in leases:
        _line(out, entry)
    for r in rows:
        _line(out, {
            "type": "kv", "key": _b64(r.key), "value": _b64(r.value),
            "createRevision": r.create_revision, "modRevision": r.mod_revision,
            "version": r.version, "lease": r.lease if r.lease in live else 0,
        })  # fmt: skip
    _line(out, {"type": "footer", "keys": len(rows), "leases": len(leases)})
    return len(rows), len(leases)


def _line(out: TextIO, record: dict[str, Any]) -> None:
    out.write(json.dumps(record, separators=(",", ":")) + "\n")


def read_records(path: Path) -> tuple[list[dict[str, Any]], list[tuple[bytes, bytes, int]]]:
    """(leases, [(key, value, lease)]) of an export file; BackupError naming the line that is
    wrong, or a missing header/footer (a truncated file)."""
    leases: list[dict[str, Any]] = []
    keys: list[tuple[bytes, bytes, int]] = []
    footer: dict[str, Any] | None = None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BackupError(f"{path}: cannot read: {exc}") from exc
    for n, line in enumerate(lines, 1):
        where = f"{path}:{n}"
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise BackupError(f"{where}: not JSON ({exc})") from exc
        kind = record.get("type") if isinstance(record, dict) else None
        if n == 1:
            if kind != "header" or record.get("format") != FORMAT:
                raise BackupError(f"{where}: not a {FORMAT} export (no header line)")
            continue
        if footer is not None:
            raise BackupError(f"{where}: data after the footer")
        if kind == "lease":
            leases.append(_lease(record, where))
        elif kind == "kv":
            keys.append(_kv(record, where))
        elif kind == "footer":
            footer = record
        else:
            raise BackupError(f"{where}: unknown record type {kind!r}")
    if not lines:
        raise BackupError(f"{path}: empty file")
    if footer is None:
        raise BackupError(f"{path}: truncated: no footer line")
    if footer.get("keys") != len(keys) or footer.get("leases") != len(leases):
        raise BackupError(
            f"{path}: footer counts {footer.get('keys')} keys and {footer.get('leases')} leases,"
            f" the file holds {len(keys)} and {len(leases)}"
        )
    return leases, keys


def _lease(record: dict[str, Any], where: str) -> dict[str, Any]:
    for field in ("id", "ttl"):
        value = record.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise BackupError(f"{where}: lease {field}: missing or not a number > 0")
    return record


def _kv(record: dict[str, Any], where: str) -> tuple[bytes, bytes, int]:
    try:
        key = base64.b64decode(record["key"], validate=True)
        value = base64.b64decode(record["value"], validate=True)
    except (KeyError, TypeError, ValueError) as exc:
        raise BackupError(f"{where}: key/value: missing or not base64 ({exc})") from exc
    lease = record.get("lease", 0)
    if not key or not isinstance(lease, int) or isinstance(lease, bool) or lease < 0:
        raise BackupError(f"{where}: an empty key or a bad lease")
    return key, value, lease


async def import_keyspace(
    endpoints: Sequence[str], path: Path, tls: transport.ClientTLS | None = None
) -> ImportReport:
    """Load the export ``path`` into the empty store at ``endpoints``."""
    leases, keys = read_records(path)
    known = {entry["id"] for entry in leases}
    for key, _, lease in keys:
        if lease and lease not in known:
            raise BackupError(f"{path}: key {key!r} names lease {lease}, which has no lease line")
    async with transport.channel(list(endpoints), tls) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        try:
            have = await kv.Range(
                rpc_pb2.RangeRequest(key=b"\x00", range_end=b"\x00", count_only=True),
                timeout=RPC_TIMEOUT_S,
            )
            if have.count:
                raise BackupError(
                    f"the target store {','.join(endpoints)} holds {have.count} keys: import"
                    " writes only into an empty store (nothing was written)"
                )
            stub = rpc_pb2_grpc.LeaseStub(ch)
            for entry in leases:
                await stub.LeaseGrant(
                    rpc_pb2.LeaseGrantRequest(ID=entry["id"], TTL=entry["ttl"]),
                    timeout=RPC_TIMEOUT_S,
                )
            revision = have.header.revision
            for batch in _batches(keys):
                resp = await kv.Txn(rpc_pb2.TxnRequest(success=batch), timeout=RPC_TIMEOUT_S)
                revision = resp.header.revision
        except grpc.aio.AioRpcError as exc:
            raise BackupError(f"import into {','.join(endpoints)}: {_why(exc)}") from exc
    return ImportReport(keys=len(keys), leases=len(leases), revision=revision)


def _batches(keys: Iterable[tuple[bytes, bytes, int]]) -> Iterable[list[rpc_pb2.RequestOp]]:
    batch: list[rpc_pb2.RequestOp] = []
    size = 0
    for key, value, lease in keys:
        if batch and (len(batch) >= MAX_TXN_OPS or size + len(key) + len(value) > MAX_TXN_BYTES):
            yield batch
            batch, size = [], 0
        put = rpc_pb2.PutRequest(key=key, value=value, lease=lease)
        batch.append(rpc_pb2.RequestOp(request_put=put))
        size += len(key) + len(value)
    if batch:
        yield batch


def _why(exc: grpc.aio.AioRpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"

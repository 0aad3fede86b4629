"""`k8semu store snapshot save|restore`: backups of a live store and new clusters from them."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc

from k8semu import durations, transport
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc
from k8semu.store import config as cfg
from k8semu.store import snapshot
from k8semu.store.errors import StoreError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="k8semu store snapshot")
    sub = p.add_subparsers(dest="action", required=True)
    save = sub.add_parser("save", help="save a consistent snapshot of a live store to FILE")
    save.add_argument("file")
    save.add_argument("--endpoints", default="127.0.0.1:2379", help="HOST:PORT[,HOST:PORT...]")
    save.add_argument("--timeout", type=durations.seconds_flag, default=120.0)
    restore = sub.add_parser("restore", help="make a new member's data dir from FILE")
    restore.add_argument("file")
    restore.add_argument("--data-dir", required=True)
    restore.add_argument("--name", default="default")
    restore.add_argument("--initial-cluster", default="")
    restore.add_argument("--initial-cluster-token", default=cfg.DEFAULT_CLUSTER_TOKEN)
    restore.add_argument("--initial-advertise-peer-urls", default="http://127.0.0.1:2380")
    restore.add_argument(
        "--bump-revision",
        type=int,
        default=0,
        help="raise the store revision by this much (etcdutl's flag; Kubernetes uses 1000000000)",
    )
    restore.add_argument(
        "--mark-compacted",
        action="store_true",
        help="make the bumped revision the compact revision (required with --bump-revision)",
    )
    return p


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    try:
        if ns.action == "save":
            asyncio.run(save(Path(ns.file), ns.endpoints.split(","), ns.timeout))
            print(f"Snapshot saved at {ns.file}")
        else:
            from k8semu.store import restore as restore_mod

            initial = ns.initial_cluster or f"{ns.name}={ns.initial_advertise_peer_urls}"
            header = restore_mod.restore_member(
                Path(ns.file),
                Path(ns.data_dir),
                name=ns.name,
                members=cfg.parse_initial_cluster(initial),
                token=ns.initial_cluster_token,
                bump_revision=ns.bump_revision,
                mark_compacted=ns.mark_compacted,
            )
            print(f"Restored revision {header.revision} into {ns.data_dir}")
    except (StoreError, cfg.ConfigError, OSError) as exc:
        print(f"k8semu store snapshot {ns.action}: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    except grpc.aio.AioRpcError as exc:
        print(f"k8semu store snapshot save: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    return 0


async def save(path: Path, endpoints: Sequence[str], timeout: float) -> None:
    """Stream a snapshot from the first endpoint that answers; verify before keeping it."""
    partial = path.with_name(path.name + ".part")
    last: Exception | None = None
    for endpoint in endpoints:
        async with transport.channel(endpoint.strip()) as channel:
            stub = rpc_pb2_grpc.MaintenanceStub(channel)
            try:
                with partial.open("wb") as out:
                    async for chunk in stub.Snapshot(rpc_pb2.SnapshotRequest(), timeout=timeout):
                        out.write(chunk.blob)
                    out.flush()
                    os.fsync(out.fileno())
            except grpc.aio.AioRpcError as exc:
                last = exc
                continue
        snapshot.verify(partial)
        partial.replace(path)
        return
    partial.unlink(missing_ok=True)
    assert last is not None
    raise last

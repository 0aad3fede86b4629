"""`k8semu backup`: cluster backups, and moving a keyspace between stores.

    k8semu backup [-o FILE] [--state-dir DIR | --name CLUSTER] [--endpoints E,...]
                  [--from-member HOST:PORT]   (a store without quorum: that member's state)
    k8semu backup list [--dir DIR] [--state-dir DIR | --name CLUSTER] [-o json]
    k8semu backup verify FILE
    k8semu backup export [--endpoints E,...] [-o FILE]    (JSON lines; - is stdout)
    k8semu backup import --endpoints E,... FILE

A backup is taken from the store leader of the cluster in the state dir (or of --endpoints),
into FILE or, by default, the cluster's backups directory (see k8semu.backup.archive for the
file). Exit status 0 on success, 1 when the work failed (the message says why), 2 for bad
flags or no cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from k8semu import durations, transport
from k8semu.backup import archive, keyspace, take
from k8semu.backup.archive import BackupError, Metadata
from k8semu.backup.schedule import backup_name, list_backups
from k8semu.cli._cluster import add_cluster_args
from k8semu.cluster import certs
from k8semu.cluster.backups import backups_dir
from k8semu.cluster.errors import ClusterError
from k8semu.cluster.state import ClusterState, find_state_dir, read_state

ACTIONS = ("list", "verify", "export", "import")
_TAKE_HELP = (
    "Back up a cluster's store (one consistent snapshot from its leader), or:"
    " k8semu backup list|verify|export|import ..."
)


def _take_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="k8semu backup", description=_TAKE_HELP)
    add_cluster_args(p)
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="where to write it")
    p.add_argument("--endpoints", help="store endpoints HOST:PORT,... (default: the cluster's)")
    p.add_argument(
        "--from-member",
        metavar="HOST:PORT",
        default="",
        help="a store that lost its quorum: take the backup from this one member as it stands"
        " (no leader; it may miss the last writes the lost members acknowledged)",
    )
    p.add_argument("--timeout", type=durations.seconds_flag, default=300.0)
    return p


def _action_parser(action: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"k8semu backup {action}")
    if action == "list":
        add_cluster_args(p)
        p.add_argument("--dir", type=Path, help="the directory (default: the cluster's)")
        p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    elif action == "verify":
        p.add_argument("file", type=Path)
    elif action == "export":
        add_cluster_args(p)
        p.add_argument("--endpoints", help="HOST:PORT,... (default: the cluster's store)")
        p.add_argument("-o", "--output", default="-", help="FILE, or - for stdout")
    else:
        p.add_argument("--endpoints", required=True, help="HOST:PORT,... of an empty store")
        p.add_argument("file", type=Path)
    return p


def main(argv: Sequence[str]) -> int:
    args = list(argv)
    action = args[0] if args and args[0] in ACTIONS else ""
    ns = (_action_parser(action) if action else _take_parser()).parse_args(
        args[1:] if action else args
    )
    try:
        if action == "list":
            return _list(ns)
        if action == "verify":
            return _verify(ns.file)
        if action == "export":
            return _export(ns)
        if action == "import":
            report = asyncio.run(
                keyspace.import_keyspace(_split(ns.endpoints), ns.file, _store_tls(ns))
            )
            print(
                f"imported {report.keys} keys and {report.leases} leases; the target is at"
                f" revision {report.revision}"
            )
            return 0
        return _take(ns)
    except (ClusterError, BackupError, OSError) as exc:
        print(f"k8semu backup{f' {action}' if action else ''}: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ClusterError) else 1


def _split(text: str) -> list[str]:
    endpoints = [e.strip().removeprefix("http://") for e in text.split(",") if e.strip()]
    if not endpoints:
        raise ClusterError("--endpoints: no endpoint given")
    return endpoints


def _cluster(ns: argparse.Namespace) -> tuple[Path, ClusterState]:
    state_dir = find_state_dir(ns.state_dir, ns.name, os.environ)
    return state_dir, read_state(state_dir)


def _endpoints(ns: argparse.Namespace) -> tuple[list[str], ClusterState | None, Path | None]:
    if ns.endpoints:
        endpoints = _split(ns.endpoints)
        with contextlib.suppress(ClusterError):
            state_dir, state = _cluster(ns)
            # A cluster named by --state-dir/--name, or found by default and recording these
            # endpoints: its credentials apply. Not the default cluster's for another store's.
            if ns.state_dir or ns.name or set(endpoints) & set(state.store_endpoints):
                return endpoints, state, state_dir
        return endpoints, None, None
    state_dir, state = _cluster(ns)
    if not state.store_endpoints:
        raise ClusterError(f"the cluster in {state_dir} records no store endpoints")
    return list(state.store_endpoints), state, state_dir


def _take(ns: argparse.Namespace) -> int:
    endpoints, state, state_dir = _endpoints(ns)
    cluster = state.cluster if state is not None else "unknown"
    if ns.output is not None:
        dest = ns.output
    elif state is not None and state_dir is not None:
        directory = backups_dir(state_dir, str(state.backups.get("directory", "")))
        dest = directory / backup_name(cluster)
    else:
        raise ClusterError("-o: required when no cluster state dir is found")
    t0 = time.monotonic()
    member = _split(ns.from_member)[0] if ns.from_member else ""
    if member:
        print(f"taking the backup from {member} alone, without a leader", file=sys.stderr)
    tls = _tls_of(state, state_dir)
    meta = asyncio.run(
        take.take(endpoints, dest, cluster=cluster, timeout=ns.timeout, member=member, tls=tls)
    )
    print(
        f"backup of cluster {cluster!r} at store revision {meta.revision} written to {dest}"
        f" ({dest.stat().st_size} bytes, {sum(meta.objects.values())} objects,"
        f" {time.monotonic() - t0:.2f}s)"
    )
    return 0


def _describe(meta: Metadata) -> str:
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(meta.objects.items()))
    return f"revision {meta.revision}, {sum(meta.objects.values())} objects" + (
        f" ({kinds})" if kinds else ""
    )


def _list(ns: argparse.Namespace) -> int:
    if ns.dir is not None:
        directory, cluster = ns.dir, None
    else:
        state_dir, state = _cluster(ns)
        directory = backups_dir(state_dir, str(state.backups.get("directory", "")))
        cluster = state.cluster
    found = list_backups(directory, cluster)
    if ns.output == "json":
        rows = [
            {
                "file": str(b.path),
                "bytes": b.size,
                "metadata": b.metadata.to_json() if b.metadata else None,
                "problem": b.problem,
            }
            for b in found
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not found:
        print(f"no backups in {directory}")
        return 0
    print(f"{'FILE':<52} {'TAKEN':<28} {'REVISION':>10} {'OBJECTS':>8} {'BYTES':>10}")
    for b in found:
        if b.metadata is None:
            print(f"{b.path.name:<52} unreadable: {b.problem}")
            continue
        m = b.metadata
        objects = sum(m.objects.values())
        print(f"{b.path.name:<52} {m.taken_at:<28} {m.revision:>10} {objects:>8} {b.size:>10}")
    return 0


def _verify(file: Path) -> int:
    meta = archive.verify(file)
    print(
        f"{file}: OK: backup of cluster {meta.cluster!r} (store cluster"
        f" {meta.store_cluster_id}) taken {meta.taken_at} by k8semu {meta.k8semu_version},"
        f" format {meta.format_version}; {_describe(meta)}; SHA-256 {meta.payload_sha256[:16]}..."
    )
    return 0


def _tls_of(state: ClusterState | None, state_dir: Path | None) -> transport.ClientTLS | None:
    """A TLS cluster's store is asked with its health-check client certificate."""
    if state is None or state_dir is None or not state.tls:
        return None
    return certs.PKIPaths(state_dir).store_client()


def _store_tls(ns: argparse.Namespace) -> transport.ClientTLS | None:
    _, state, state_dir = _endpoints(ns)
    return _tls_of(state, state_dir)


def _export(ns: argparse.Namespace) -> int:
    endpoints, state, state_dir = _endpoints(ns)
    tls = _tls_of(state, state_dir)
    if ns.output == "-":
        keys, leases = asyncio.run(keyspace.export_keyspace(endpoints, sys.stdout, tls))
    else:
        out = Path(ns.output)
        tmp = out.with_name(f".{out.name}.part")
        with tmp.open("w", encoding="utf-8") as f:
            keys, leases = asyncio.run(keyspace.export_keyspace(endpoints, f, tls))
        tmp.replace(out)
        print(f"exported {keys} keys and {leases} leases to {out}")
    return 0

#!/usr/bin/env python3
"""How long membership changes take on a 3-member store (figures for docs/store.md).

Starts 3 members (``k8semu store``, or etcd 3.4 with ``--etcd``) with --snapshot-count 1000,
writes KEYS keys of 1 KiB, then times: MemberAdd (once the cluster accepts changes), starting
the added member with --initial-cluster-state existing until a linearizable read on it sees the
last key (the join and the catch-up, by snapshot when the log does not reach back), and
MemberRemove of it.

Usage: scripts/measure_members.py [--keys 2000] [--etcd] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import grpc

from k8semu.cluster.processes import EtcdCluster, K8semuStoreCluster, ProcessCluster
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc

VALUE = b"x" * 1024


def _add(cluster: rpc_pb2_grpc.ClusterStub, peer_url: str) -> tuple[int, float]:
    """MemberAdd, asked again while the cluster is "unhealthy" (members connected < 5 s):
    the new id and how long the accepted call took."""
    while True:
        began = time.monotonic()
        try:
            added = cluster.MemberAdd(rpc_pb2.MemberAddRequest(peerURLs=[peer_url]), timeout=10)
        except grpc.RpcError as exc:
            if "unhealthy" not in (exc.details() or ""):  # type: ignore[attr-defined]
                raise
            time.sleep(0.1)
            continue
        return int(added.member.ID), time.monotonic() - began


def _until_read(endpoint: str, key: bytes) -> None:
    with grpc.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        while True:
            try:
                if kv.Range(rpc_pb2.RangeRequest(key=key), timeout=2).kvs:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)


def measure(cluster: ProcessCluster, keys: int) -> dict[str, object]:
    cluster.start()
    cluster.wait_ready(timeout=60)
    with grpc.insecure_channel(cluster.member(cluster.leader()).endpoint) as ch:
        kv, members = rpc_pb2_grpc.KVStub(ch), rpc_pb2_grpc.ClusterStub(ch)
        for i in range(keys):
            kv.Put(rpc_pb2.PutRequest(key=b"k%06d" % i, value=VALUE), timeout=10)
        new = cluster.add_member("s4")
        new_id, add_s = _add(members, new.peer_url)
        began = time.monotonic()
        cluster.start_member("s4")
        _until_read(new.endpoint, b"k%06d" % (keys - 1))
        join_s = time.monotonic() - began
        began = time.monotonic()
        members.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=new_id), timeout=10)
        remove_s = time.monotonic() - began
    cluster.forget_member("s4")
    return {
        "store": cluster.kind,
        "keys": keys,
        "member_add_ms": round(add_s * 1e3, 1),
        "join_until_caught_up_s": round(join_s, 2),
        "member_remove_ms": round(remove_s * 1e3, 1),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--keys", type=int, default=2000)
    p.add_argument("--etcd", action="store_true", help="a real etcd 3.4 instead")
    p.add_argument("--dir", type=Path, help="where the members keep data (default: a temp dir)")
    ns = p.parse_args()
    base = ns.dir or Path(tempfile.mkdtemp(prefix="measure-members-"))
    kind = EtcdCluster if ns.etcd else K8semuStoreCluster
    with kind(base, 3, extra_args=("--snapshot-count", "1000")) as cluster:
        print(json.dumps(measure(cluster, ns.keys)))


if __name__ == "__main__":
    main()

"""`k8semu bench dr`: the disaster-recovery drills of issue 13 (docs/disaster-recovery.md).

    k8semu bench dr [--objects 200] [--nodes 3] [--drill replica|all|both]
                    [--backup-interval 3s] [--workdir DIR] [--keep] [--json FILE]

On a cluster started with `k8semu up --detach` (the default layout: 3 store replicas, one API
server, scheduler and controller manager, ``--nodes`` process-runtime workers, the DNS add-on;
scheduled backups every ``--backup-interval``) holding ``--objects`` objects (one Deployment
of one echo pod with a NodePort Service per 20, the rest ConfigMaps, Secrets and ClusterIP
Services in thirds):

(a) **one replica lost**: while a writer puts one new key after another straight into the
    store, the *leader's* data dir is removed (``rm -rf``) and ``k8semu store replace`` runs.
    Reported: writes acknowledged, acknowledged writes lost (every member is read; target 0),
    the longest time between two acknowledged writes from the loss on (target: at most one
    election, 2 x ``store.electionTimeout``: Raft's randomized timeout is in [T, 2T)) beside
    the longest before the loss (the writes' own latency on a busy machine), the replace
    command's time.
(b) **every replica lost**: after a scheduled backup holding every object, a writer creates
    ConfigMaps through the API; then every replica's data dir is removed and the cluster is
    restored from the latest scheduled backup (``k8semu restore FILE --yes``). Reported: the
    RPO, exactly: the writes acknowledged after the backup's revision, each listed as lost,
    and checked to be exactly the ones missing (and none of what the backup holds missing);
    the RTO: from the restore command until every Deployment is available (as listed by the
    restored store: a resourceVersion above the 10^9 bump) and every Service answers an HTTP
    GET through the proxy on its NodePort (target 30 s), polled while the command runs (it
    returns only once the new supervisor runs, which may be after the workloads serve).

Exit status 0 when every target is met, 1 when one is not (the figures say which).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from k8semu import log as logging_setup
from k8semu.api import manifest
from k8semu.backup.schedule import list_backups
from k8semu.bench._clusterrun import BenchCluster, ClusterLayout
from k8semu.bench._common import BenchError, argument_parser, say, write_json
from k8semu.client import Client, ClientError
from k8semu.cluster.backups import DEFAULT_BUMP, backups_dir
from k8semu.cluster.probes import Probes, agreed_leader
from k8semu.cluster.state import ClusterState, read_state
from k8semu.durations import parse_ms
from k8semu.pb.api.v1 import apps_pb2, core_pb2, meta_pb2
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc

NAMESPACE = "dr"
RTO_TARGET_S = 30.0
WRITE_TIMEOUT_S = 1.0
REPLICA_PREFIX = b"/dr-drill/"
DEFAULT_ELECTION_MS = 1000


@dataclass
class Options:
    objects: int = 200
    nodes: int = 3
    drill: str = "both"
    backup_interval: str = "3s"
    writes_after: float = 2.0
    workdir: Path | None = None
    keep: bool = False
    json: Path | None = None
    timeout: float = 300.0

    @property
    def deployments(self) -> int:
        return max(1, self.objects // 20)


# -- the objects ----------------------------------------------------------------------------


def objects_yaml(deployments: int, total: int) -> str:
    """``deployments`` Deployments of one echo pod with a NodePort Service each, and the rest
    of ``total`` as ConfigMaps, Secrets and ClusterIP Services (in thirds)."""
    docs = [f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NAMESPACE}}}\n"]
    for i in range(deployments):
        docs.append(
            f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web{i}, namespace:"
            f" {NAMESPACE}}}\nspec: {{replicas: 1, selector: {{matchLabels: {{app: web{i}}}}},"
            f" template: {{metadata: {{labels: {{app: web{i}}}}}, spec: {{containers: [{{name:"
            " echo, image: k8semu/echo, ports: [{containerPort: 8080}]}]}}}\n"
        )
        docs.append(
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: web{i}, namespace: {NAMESPACE}}}\n"
            f"spec: {{type: NodePort, selector: {{app: web{i}}}, ports: [{{port: 80,"
            " targetPort: 8080}]}\n"
        )
    rest = max(0, total - 2 * deployments)
    for i in range(rest):
        kind = ("ConfigMap", "Secret", "Service")[i % 3]
        body = {
            "ConfigMap": f"data: {{k: v{i}}}\n",
            "Secret": "data: {k: czNjcmV0}\n",
            "Service": f"spec: {{selector: {{app: none{i}}}, ports: [{{port: 80}}]}}\n",
        }[kind]
        docs.append(
            f"apiVersion: v1\nkind: {kind}\nmetadata: {{name: o{i}, namespace: {NAMESPACE}}}\n"
            + body
        )
    return "---\n".join(docs)


async def create_objects(api: list[str], text: str) -> None:
    async with Client(api) as client:
        for obj in manifest.load_all(text, source="dr objects"):
            await client.create(obj)


async def _serving(client: Client, node_ip: str, deployments: int, min_revision: int) -> bool:
    """Every Deployment available, read at ``min_revision`` or later (from the restored
    store, not the old one), and every web Service answering on its NodePort (a restored
    Deployment's status says available at once: the pods must really serve)."""
    try:
        listed = await client.list(apps_pb2.Deployment, namespace=NAMESPACE)
        items = listed.items
        services = (await client.list(core_pb2.Service, namespace=NAMESPACE)).items
    except ClientError:
        return False
    if int(listed.resource_version or 0) < min_revision:
        return False
    if len(items) != deployments or not all(
        d.status.available_replicas == 1 and d.status.observed_generation == d.metadata.generation
        for d in items
    ):
        return False
    ports = [s.spec.ports[0].node_port for s in services if s.metadata.name.startswith("web")]
    if len(ports) != deployments:
        return False
    answers = [await asyncio.to_thread(_http_ok, f"http://{node_ip}:{p}/") for p in ports]
    return all(answers)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


async def wait_serving(
    api: list[str], node_ip: str, deployments: int, timeout: float, min_revision: int = 0
) -> float:
    """Until every Deployment is available and every Service answers; the time then."""
    t0 = time.monotonic()
    async with Client(api) as client:
        while not await _serving(client, node_ip, deployments, min_revision):
            if time.monotonic() - t0 > timeout:
                raise BenchError(f"Deployments not available and answering within {timeout:g}s")
            await asyncio.sleep(0.2)
    return time.monotonic()


# -- drill (a): one replica lost ------------------------------------------------------------


class StoreWriter:
    """Puts ``/dr-drill/<n>`` = ``<n>`` one after another, each through the next endpoint
    after a failure, in a thread; records what was acknowledged and when."""

    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = endpoints
        self.acked: dict[bytes, bytes] = {}
        self.ack_times: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dr-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        channels = [grpc.insecure_channel(e) for e in self.endpoints]
        try:
            n, at = 0, 0
            while not self._stop.is_set():
                key, value = REPLICA_PREFIX + b"%08d" % n, b"%d" % n
                stub = rpc_pb2_grpc.KVStub(channels[at % len(channels)])
                try:
                    stub.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=WRITE_TIMEOUT_S)
                except grpc.RpcError:
                    self.failures += 1
                    at += 1
                    continue
                self.acked[key] = value
                self.ack_times.append(time.monotonic())
                n += 1
        finally:
            for ch in channels:
                ch.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def longest_gap(self, since: float, until: float = float("inf")) -> float:
        """The longest time from ``since`` or an acknowledgement to the next one (those
        before ``until``)."""
        times = [since, *(t for t in self.ack_times if since <= t < until)]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def _leader(state: ClusterState) -> str:
    members = [(n, a) for n, a in state.store_members]
    probes = Probes()
    try:
        leader = agreed_leader(probes.store_statuses(members, 2.0), len(members))
    finally:
        probes.close()
    if leader is None:
        raise BenchError("the store has no agreed leader")
    return leader


def _held_by_every_member(state: ClusterState, acked: dict[bytes, bytes]) -> dict[str, int]:
    """name -> how many acknowledged writes that member does not hold (its own copy: a
    serializable read)."""
    missing = {}
    for name, address in state.store_members:
        with grpc.insecure_channel(address) as ch:
            got = rpc_pb2_grpc.KVStub(ch).Range(
                rpc_pb2.RangeRequest(
                    key=REPLICA_PREFIX, range_end=REPLICA_PREFIX[:-1] + b"0", serializable=True
                ),
                timeout=10,
            )
        have = {kv.key: kv.value for kv in got.kvs}
        missing[name] = sum(1 for k, v in acked.items() if have.get(k) != v)
    return missing


def _election_ms(state: ClusterState) -> int:
    record = next(c for c in state.components if c.kind == "store")
    if "--election-timeout" in record.command:
        return int(record.command[record.command.index("--election-timeout") + 1])
    return DEFAULT_ELECTION_MS


def drill_replica(cluster: BenchCluster, opts: Options) -> dict[str, Any]:
    state = read_state(cluster.state_dir)
    leader = _leader(state)
    record = state.component(f"store-{leader}")
    assert record is not None
    say(f"(a) one replica lost: removing the data dir of the leader, {leader}, under a writer")
    writer = StoreWriter(list(state.store_endpoints))
    started = time.monotonic()
    time.sleep(1.0)  # writes before the loss
    destroyed = time.monotonic()
    shutil.rmtree(record.data_dir)
    t0 = time.monotonic()
    run = _k8semu(cluster, "store", "replace", leader, "--state-dir", cluster.state_dir)
    replaced = time.monotonic() - t0
    time.sleep(1.0)  # writes after it is back
    writer.stop()
    state = read_state(cluster.state_dir)
    missing = _until_caught_up(state, writer.acked)
    gap = writer.longest_gap(destroyed)
    before = writer.longest_gap(started, until=destroyed)
    # One election: Raft's randomized election timeout is in [T, 2T), then one vote round.
    election = 2 * _election_ms(state) / 1000
    return {
        "replica": leader,
        "replaceSeconds": round(replaced, 2),
        "replaceOutput": run.stdout.strip().splitlines()[-2:],
        "writesAcknowledged": len(writer.acked),
        "writesFailedAndRetried": writer.failures,
        "acknowledgedWritesLost": max(missing.values()),
        "missingPerMember": missing,
        "longestUnavailabilitySeconds": round(gap, 3),
        "longestGapBeforeSeconds": round(before, 3),
        "oneElectionSeconds": election,
        "ok": max(missing.values()) == 0 and gap <= election,
    }


def _until_caught_up(state: ClusterState, acked: dict[bytes, bytes]) -> dict[str, int]:
    """Every member's count of missing writes, once none misses any (or after 30 s: the
    replaced member may still be applying the last entries)."""
    deadline = time.monotonic() + 30
    while True:
        missing = _held_by_every_member(state, acked)
        if not any(missing.values()) or time.monotonic() > deadline:
            return missing
        time.sleep(0.2)


# -- drill (b): every replica lost -----------------------------------------------------------


@dataclass
class ApiWrites:
    """ConfigMaps ``late-<n>`` created through the API: name -> resourceVersion."""

    acked: dict[str, int] = field(default_factory=dict)


async def write_configmaps(api: list[str], seconds: float, out: ApiWrites) -> None:
    async with Client(api) as client:
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            name = f"late-{n}"
            n += 1
            cm = core_pb2.ConfigMap(
                metadata=meta_pb2.ObjectMeta(name=name, namespace=NAMESPACE), data={"n": str(n)}
            )
            try:
                made = await client.create(cm)
            except ClientError:
                continue
            out.acked[name] = int(made.metadata.resource_version)
            await asyncio.sleep(0.05)


def _latest_backup(state: ClusterState, state_dir: Path, after_revision: int) -> tuple[Path, int]:
    """The newest scheduled backup whose revision is at least ``after_revision``."""
    directory = backups_dir(state_dir, str(state.backups.get("directory", "")))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [b for b in list_backups(directory, state.cluster) if b.metadata is not None]
        if found and found[-1].metadata and found[-1].metadata.revision >= after_revision:
            return found[-1].path, found[-1].metadata.revision
        time.sleep(0.2)
    raise BenchError(f"no scheduled backup at revision >= {after_revision} in {directory}")


async def _revision(api: list[str]) -> int:
    async with Client(api) as client:
        listed = await client.list(core_pb2.ConfigMap, namespace=NAMESPACE)
    return int(listed.resource_version)


async def _present(api: list[str]) -> set[str]:
    async with Client(api) as client:
        listed = await client.list(core_pb2.ConfigMap, namespace=NAMESPACE)
    return {c.metadata.name for c in listed.items}


def drill_all(cluster: BenchCluster, opts: Options, node_ip: str) -> dict[str, Any]:
    api = cluster.api_servers
    state = read_state(cluster.state_dir)
    held = asyncio.run(_revision(api))
    _latest_backup(state, cluster.state_dir, held)  # a backup holding every object
    say(f"(b) every replica lost: writing ConfigMaps through the API for {opts.writes_after:g}s")
    writes = ApiWrites()
    asyncio.run(write_configmaps(api, opts.writes_after, writes))
    newest = max(writes.acked.values(), default=held)
    # The disaster strikes now: the latest scheduled backup is the one to restore.
    backup, revision = _latest_backup(state, cluster.state_dir, 0)
    for name, _ in state.store_members:
        record = state.component(f"store-{name}")
        if record is not None:
            shutil.rmtree(record.data_dir, ignore_errors=True)
    say(f"every store data dir removed; restoring {backup.name} (revision {revision})")
    t0 = time.monotonic()
    command = _Background(
        cluster, "restore", backup, "-f", cluster.config_path, "--state-dir", cluster.state_dir,
        "--yes",
    )  # fmt: skip
    # Polled while the command runs: the restored cluster may serve before `up` returns
    # (it waits for its supervisor); a revision above the bump says it is the restored one.
    served = asyncio.run(
        wait_serving(api, node_ip, opts.deployments, opts.timeout, min_revision=DEFAULT_BUMP)
    )
    run = command.wait()
    restored = command.ended - t0
    rto = served - t0
    present = asyncio.run(_present(api))
    lost = [n for n in writes.acked if n not in present]  # in the order they were written
    expected = [n for n, rv in writes.acked.items() if rv > revision]
    return {
        "backup": backup.name,
        "backupRevision": revision,
        "lastAcknowledgedRevision": newest,
        "writesAfterObjects": len(writes.acked),
        "lost": lost,
        "rpoExact": lost == expected,
        "heldByBackupButLost": sorted(set(lost) - set(expected)),
        "restoreCommandSeconds": round(restored, 2),
        "restoreOutput": (run.stdout + run.stderr).splitlines(),
        "rtoSeconds": round(rto, 2),
        "ok": lost == expected and rto <= RTO_TARGET_S,
    }


# -- running ---------------------------------------------------------------------------------


class _Background:
    """``k8semu ARGS`` running while the caller does something else; ``wait`` for its end."""

    def __init__(self, cluster: BenchCluster, *args: str | Path) -> None:
        self.ended = 0.0
        self._args = args
        self._run: subprocess.CompletedProcess[str] | None = None
        self._error: BenchError | None = None
        self._thread = threading.Thread(target=self._go, args=(cluster,), daemon=True)
        self._thread.start()

    def _go(self, cluster: BenchCluster) -> None:
        try:
            self._run = _k8semu(cluster, *self._args)
        except BenchError as exc:
            self._error = exc
        self.ended = time.monotonic()

    def wait(self) -> subprocess.CompletedProcess[str]:
        self._thread.join(timeout=600)
        if self._run is None:
            raise self._error or BenchError(f"k8semu {self._args[0]} did not end")
        return self._run


def _k8semu(cluster: BenchCluster, *args: str | Path) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(
        [sys.executable, "-m", "k8semu", *map(str, args)],
        capture_output=True,
        text=True,
        env=cluster.env,
        timeout=600,
        check=False,
    )
    if run.returncode != 0:
        raise BenchError(f"k8semu {' '.join(map(str, args))} failed:\n{run.stdout}{run.stderr}")
    return run


def run(opts: Options) -> dict[str, Any]:
    layout = ClusterLayout(
        name="dr",
        real_nodes=opts.nodes,
        addons=("dns",),
        timings={},
        overrides={"backups": {"interval": opts.backup_interval, "keep": 3}},
    )
    out: dict[str, Any] = {"objects": opts.objects, "nodes": opts.nodes}
    with BenchCluster(layout, workdir=opts.workdir, keep=opts.keep, say=say) as cluster:
        cluster.start()
        node_ip = _node_ip(cluster)
        asyncio.run(
            create_objects(cluster.api_servers, objects_yaml(opts.deployments, opts.objects))
        )
        asyncio.run(wait_serving(cluster.api_servers, node_ip, opts.deployments, opts.timeout))
        say(f"{opts.objects} objects created; every Deployment available")
        if opts.drill in ("replica", "both"):
            out["replica"] = drill_replica(cluster, opts)
        if opts.drill in ("all", "both"):
            out["all"] = drill_all(cluster, opts, node_ip)
    out["loadAverage"] = [round(x, 2) for x in _loadavg()]
    return out


def _node_ip(cluster: BenchCluster) -> str:
    doc = yaml.safe_load(cluster.config_path.read_text())
    return str(doc["nodes"][0]["nodeIP"])


def _loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


def report(out: dict[str, Any]) -> list[str]:
    lines = [f"disaster drills: {out['objects']} objects, {out['nodes']} nodes, load average"
             f" {' '.join(map(str, out['loadAverage']))}"]  # fmt: skip
    if "replica" in out:
        r = out["replica"]
        lines += [
            f"(a) one replica lost ({r['replica']}, the leader): `k8semu store replace`"
            f" {r['replaceSeconds']}s; {r['writesAcknowledged']} writes acknowledged,"
            f" {r['acknowledgedWritesLost']} lost (target 0); longest unavailability"
            f" {r['longestUnavailabilitySeconds']}s (before the loss:"
            f" {r['longestGapBeforeSeconds']}s; target <= one election, 2 x electionTimeout ="
            f" {r['oneElectionSeconds']}s): {'met' if r['ok'] else 'NOT MET'}",
        ]
    if "all" in out:
        a = out["all"]
        lines += [
            f"(b) every replica lost: restored {a['backup']} (revision {a['backupRevision']};"
            f" last acknowledged write at {a['lastAcknowledgedRevision']})",
            f"    RPO: {len(a['lost'])} acknowledged writes lost, exactly those after the backup:"
            f" {a['rpoExact']}; of what the backup holds lost: {len(a['heldByBackupButLost'])}",
            f"    lost: {', '.join(a['lost']) or 'none'}",
            f"    RTO: {a['rtoSeconds']}s from `k8semu restore` until every Deployment is"
            f" available and every Service answers (command {a['restoreCommandSeconds']}s;"
            f" target {RTO_TARGET_S:g}s): {'met' if a['ok'] else 'NOT MET'}",
        ]
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argument_parser("k8semu bench dr", "disaster drills: one replica lost, every replica lost")
    p.add_argument("--objects", type=int, default=200, help="objects to create (default 200)")
    p.add_argument("--nodes", type=int, default=3, help="process-runtime workers (default 3)")
    p.add_argument("--drill", choices=("replica", "all", "both"), default="both")
    p.add_argument("--backup-interval", default="3s", help="the scheduled backups' interval")
    p.add_argument("--writes-after", type=float, default=2.0,
                   help="seconds of API writes after the backup (lost by design)")  # fmt: skip
    p.add_argument("--workdir", type=Path, help="put the cluster dir under this dir")
    p.add_argument("--keep", action="store_true", help="keep the cluster's logs and data")
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    return p


def main(argv: list[str]) -> int:
    ns = build_parser().parse_args(argv)
    if ns.objects < 2 or ns.nodes < 1:
        print("k8semu bench dr: --objects must be >= 2 and --nodes >= 1", file=sys.stderr)
        return 2
    try:
        parse_ms(ns.backup_interval)
    except ValueError as exc:
        print(f"k8semu bench dr: --backup-interval: {exc}", file=sys.stderr)
        return 2
    opts = Options(**{k: v for k, v in vars(ns).items()})
    logging_setup.configure("bench", level="warning")  # not the client's retries while down
    try:
        out = run(opts)
    except BenchError as exc:
        print(f"k8semu bench dr: {exc}", file=sys.stderr)
        return 1
    for line in report(out):
        print(line)
    write_json(opts.json, out)
    return 0 if all(out[k]["ok"] for k in ("replica", "all") if k in out) else 1

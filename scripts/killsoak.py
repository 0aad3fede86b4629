#!/usr/bin/env python3
"""Random SIGKILLs on a running cluster for a long time: does everything come back, and does
anything grow or stay behind? (issue 10: "a cluster that runs for days", checked from outside).

Starts the default cluster's shape with `k8semu up --detach` (TLS and RBAC on, 3 store
replicas, one API server (it also serves the dashboard), scheduler and controller manager, 3
process-runtime nodes with proxies, the dns/storage/ingress add-ons, the default timings) on
free ports and node IPs of its own (`k8semu.bench._clusterrun`), deploys examples/echo.yaml,
then for `--duration`:

- a writer creates and deletes ConfigMaps through `k8semu.client` (its default retries, as
  every component uses it) at `--write-rate`; failures are counted with their messages;
- a prober GETs the echo NodePort on the node IPs in turn, a new connection each, 5/s;
  failures counted at the first try and after one retry 0.5 s later;
- every 20-60 s (`--min-gap`/`--max-gap`, after the previous one recovered) a component
  process - store replica, API server, scheduler, controller manager, kubelet, proxy, or the
  supervisor itself, each once per round in a shuffled order (`--seed`) - is SIGKILLed by
  pid (checked by start time); a killed supervisor is started again as a user
  would (`k8semu up --detach` on the running cluster); the time until the component runs
  again under a new pid and `k8semu status` is all healthy is its recovery;
- every `--sample` (1m): RSS and open fds per component and of the supervisor, store data
  files, the logs directory, the pods / echo endpoints / node Leases the API holds.

Then `k8semu status`, `k8semu down`, and a look for what is left: processes naming the state
dir, kubelet cgroups, pod-user claims, users, nftables tables, files in /tmp.

Usage: scripts/killsoak.py [--duration 30m] [--seed N] [--workdir DIR] [--json FILE]
The cluster dir (logs, data) is kept and printed. Signals only the pids this cluster recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k8semu.bench._clusterrun import BenchCluster, ClusterLayout
from k8semu.bench._common import fd_count, rss_bytes
from k8semu.client import Client, ClientError
from k8semu.cluster.certs import PKIPaths
from k8semu.cluster.state import ClusterState, is_same_process, read_state
from k8semu.durations import parse_ms
from k8semu.pb.api.v1 import coordination_pb2, core_pb2

ROOT = Path(__file__).resolve().parent.parent
ECHO = ROOT / "examples" / "echo.yaml"
NODE_PORT = 30080
CGROUP_TOP = Path("/sys/fs/cgroup/k8semu")
POD_USER_CLAIMS = Path("/run/k8semu/pod-users")


@dataclass
class Kill:
    at: float
    target: str
    pid: int
    recovered_s: float | None = None
    healthy_s: float | None = None


@dataclass
class Run:
    started: float = field(default_factory=time.time)
    kills: list[Kill] = field(default_factory=list)
    writes: int = 0
    write_failures: dict[str, int] = field(default_factory=dict)
    probes: int = 0
    probe_first_failures: int = 0
    probe_failures: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)
    status_end: dict[str, Any] = field(default_factory=dict)
    left_behind: dict[str, Any] = field(default_factory=dict)
    load: list[tuple[float, float, float]] = field(default_factory=list)


def _k8semu(c: BenchCluster, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "k8semu", *args]
    return subprocess.run(
        argv, env=c.env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _status(c: BenchCluster) -> tuple[int, dict[str, Any]]:
    out = _k8semu(c, "status", "--state-dir", str(c.state_dir), "-o", "json", timeout=60)
    try:
        return out.returncode, json.loads(out.stdout)
    except json.JSONDecodeError:
        return out.returncode, {"raw": out.stdout[-2000:], "stderr": out.stderr[-2000:]}


def _all_healthy(doc: dict[str, Any]) -> bool:
    comps = doc.get("components", [])
    sup = doc.get("supervisor", {})
    up = all(x.get("alive") and x.get("health") in ("SERVING", "n/a") for x in comps)
    return bool(comps) and up and bool(sup.get("alive")) and not doc.get("apiError")


async def writer(client: Client, rate: float, until: float, run: Run) -> None:
    n = 0
    while time.monotonic() < until:
        t0 = time.monotonic()
        n += 1
        cm = core_pb2.ConfigMap()
        cm.metadata.name, cm.metadata.namespace = f"ks-{n}", "default"
        cm.data["n"] = str(n)
        try:
            await client.create(cm)
            if n > 20:
                await client.delete(core_pb2.ConfigMap, f"ks-{n - 20}", namespace="default")
            run.writes += 1
        except (ClientError, OSError) as exc:
            key = str(exc).splitlines()[0][:120]
            run.write_failures[key] = run.write_failures.get(key, 0) + 1
        await asyncio.sleep(max(0.0, 1 / rate - (time.monotonic() - t0)))


def _get(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


async def prober(node_ips: list[str], until: float, run: Run) -> None:
    i = 0
    while time.monotonic() < until:
        i += 1
        url = f"http://{node_ips[i % len(node_ips)]}:{NODE_PORT}/"
        run.probes += 1
        if not await asyncio.to_thread(_get, url):
            run.probe_first_failures += 1
            await asyncio.sleep(0.5)
            if not await asyncio.to_thread(_get, url):
                run.probe_failures += 1
        await asyncio.sleep(0.2)


async def _recover(c: BenchCluster, kill: Kill, t0: float, deadline: float) -> None:
    while time.monotonic() < deadline:
        st = read_state(c.state_dir)
        if kill.target == "supervisor":
            alive = st.supervisor_alive()
        else:
            rec = st.component(kill.target)
            alive = (
                rec is not None and rec.pid != kill.pid and is_same_process(rec.pid, rec.start_time)
            )
        if alive and kill.recovered_s is None:
            kill.recovered_s = time.monotonic() - t0
        if kill.recovered_s is not None:
            _, doc = await asyncio.to_thread(_status, c)
            if _all_healthy(doc):
                kill.healthy_s = time.monotonic() - t0
                return
        await asyncio.sleep(1)


async def killer(c: BenchCluster, args: argparse.Namespace, until: float, run: Run) -> None:
    rng = random.Random(args.seed)
    order: list[str] = []  # a shuffled round of every target: each is killed once per round
    while True:
        await asyncio.sleep(rng.uniform(args.min_gap, args.max_gap))
        if time.monotonic() >= until:
            return
        st = read_state(c.state_dir)
        targets = {r.name: (r.pid, r.start_time) for r in st.components}
        targets["supervisor"] = (st.supervisor_pid, st.supervisor_start_time)
        if not order:
            order = sorted(targets)
            rng.shuffle(order)
        name = order.pop()
        pid, start = targets[name]
        if not is_same_process(pid, start):
            print(f"skip {name}: pid {pid} not running", file=sys.stderr)
            continue
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        kill = Kill(at=time.time() - run.started, target=name, pid=pid)
        run.kills.append(kill)
        print(f"{time.strftime('%H:%M:%S')} SIGKILL {name} pid {pid}", file=sys.stderr)
        if name == "supervisor":
            await asyncio.sleep(2)
            cmd = ("up", "-f", str(c.config_path), "--state-dir", str(c.state_dir), "--detach")
            out = await asyncio.to_thread(_k8semu, c, *cmd)
            if out.returncode != 0:
                print(f"supervisor restart failed: {out.stderr[-500:]}", file=sys.stderr)
        await _recover(c, kill, t0, t0 + 120)
        print(
            f"  {name}: running {kill.recovered_s}, all healthy {kill.healthy_s}", file=sys.stderr
        )


def _tree(path: Path) -> tuple[int, int]:
    """Total bytes and the largest file under path."""
    sizes = [p.stat().st_size for p in path.rglob("*") if p.is_file()] if path.exists() else []
    return sum(sizes), max(sizes, default=0)


async def _api_counts(client: Client) -> dict[str, int]:
    pods = (await client.list(core_pb2.Pod)).items
    eps = (await client.list(core_pb2.Endpoints, namespace="default")).items
    leases = (await client.list(coordination_pb2.Lease, namespace="kube-node-lease")).items
    echo = [e for e in eps if e.metadata.name == "echo"]
    addrs = sum(len(s.addresses) for e in echo for s in e.subsets)
    ready = sum(
        1
        for p in pods
        if p.metadata.labels.get("app") == "echo"
        and any(cd.type == "Ready" and cd.status == "True" for cd in p.status.conditions)
    )
    return {
        "pods": len(pods),
        "echo_ready_pods": ready,
        "echo_endpoints": addrs,
        "node_leases": len(leases),
    }


async def sampler(c: BenchCluster, client: Client, every: float, until: float, run: Run) -> None:
    while True:
        st: ClusterState = read_state(c.state_dir)
        row: dict[str, Any] = {"t": round(time.time() - run.started), "load": os.getloadavg()}
        procs = {r.name: r.pid for r in st.components}
        procs["supervisor"] = st.supervisor_pid
        row["rss_mb"] = {n: round((rss_bytes(p) or 0) / 2**20, 1) for n, p in procs.items()}
        row["fds"] = {n: fd_count(p) for n, p in procs.items()}
        row["restarts"] = {r.name: r.restarts for r in st.components}
        row["logs_bytes"], row["largest_log"] = _tree(c.state_dir / "logs")
        row["store_bytes"] = {
            r.name: _tree(Path(r.data_dir))[0] for r in st.components if r.kind == "store"
        }
        with contextlib.suppress(ClientError, OSError):
            row["api"] = await _api_counts(client)
        run.samples.append(row)
        print(json.dumps(row), file=sys.stderr)
        if time.monotonic() >= until:
            return
        await asyncio.sleep(every)


def _snapshot_host() -> dict[str, Any]:
    nft = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False)
    return {
        "tmp": sorted(os.listdir("/tmp")),
        "cgroups": sorted(p.name for p in CGROUP_TOP.glob("kubelet_*")),
        "claims": sorted(os.listdir(POD_USER_CLAIMS)) if POD_USER_CLAIMS.exists() else [],
        "users": sorted(
            line.split(":")[0] for line in Path("/etc/passwd").read_text().splitlines()
        ),
        "nft": nft.stdout.split("\n"),
    }


def _left_behind(c: BenchCluster, before: dict[str, Any]) -> dict[str, Any]:
    after = _snapshot_host()
    out = {k: sorted(set(after[k]) - set(before[k])) for k in before}
    procs = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if str(c.dir) in cmd:
                    procs.append(f"{entry.name} {cmd[:160]}")
    out["processes"] = procs
    return out


async def soak(c: BenchCluster, args: argparse.Namespace, run: Run) -> None:
    st = read_state(c.state_dir)
    tls = PKIPaths(c.state_dir).api_client()
    node_ips = [r.address.rpartition(":")[0] for r in st.components if r.kind == "kubelet"]
    until = time.monotonic() + args.duration
    async with Client(st.api_servers, tls=tls) as client:
        tasks = [
            asyncio.create_task(writer(client, args.write_rate, until, run)),
            asyncio.create_task(prober(node_ips, until, run)),
            asyncio.create_task(killer(c, args, until, run)),
            asyncio.create_task(sampler(c, client, args.sample, until, run)),
        ]
        await asyncio.gather(*tasks)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", default="30m")
    p.add_argument("--min-gap", type=float, default=20.0)
    p.add_argument("--max-gap", type=float, default=60.0)
    p.add_argument("--write-rate", type=float, default=5.0)
    p.add_argument("--sample", default="1m")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--workdir", type=Path)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    args.duration = parse_ms(args.duration) / 1000
    args.sample = parse_ms(args.sample) / 1000
    layout = ClusterLayout(
        name="killsoak", real_nodes=3, tls=True, addons=("dns", "storage", "ingress"), timings={}
    )
    run = Run()
    before = _snapshot_host()
    with BenchCluster(layout, workdir=args.workdir, keep=True) as c:
        c.start()
        out = _k8semu(c, "apply", "-f", str(ECHO))
        if out.returncode != 0:
            print(out.stdout, out.stderr, file=sys.stderr)
            return 1
        run.load.append(os.getloadavg())
        asyncio.run(soak(c, args, run))
        run.load.append(os.getloadavg())
        rc, run.status_end = _status(c)
        run.status_end["exit"] = rc
    run.left_behind = _left_behind(c, before)
    doc = {k: v for k, v in run.__dict__.items() if k != "kills"}
    doc["kills"] = [k.__dict__ for k in run.kills]
    text = json.dumps(doc, indent=1, default=str)
    if args.json:
        args.json.write_text(text)
    print(
        json.dumps({k: v for k, v in doc.items() if k not in ("samples", "status_end")}, indent=1)
    )
    print(f"cluster dir: {c.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

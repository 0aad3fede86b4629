"""`k8semu bench tls`: the cost of mutual TLS, side by side with plain text in one run.

Two identical stacks on this machine, one plain and one with the flags `k8semu up` passes
(certificates from `k8semu.pki`, ECDSA P-256): a store of `--replicas` replicas and an API
server on it. Each round measures, on one stack then the other (alternating, so a load
spike on the shared machine hits both alike):

- store puts/s: `--clients` concurrent clients, each on a channel of its own, putting
  `--puts` values in all (etcd's `benchmark put`, shortened);
- API call latency: `--calls` sequential gRPC Gets of a ConfigMap (p50, p99);
- the kubelet path: `--calls` sequential `Summary` calls to a kubelet (simulated runtime) of
  the stack, as the API server makes them (with TLS: its kubelet-client certificate, checked
  by the kubelet's `PeerAllowList`).

It prints both figures and the TLS/plain ratios (issue 16's target: within 1.3x). Connections
are made once before measuring: a handshake is paid per connection, not per call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from k8semu import pki, transport
from k8semu.cluster import clientconfig
from k8semu.cluster.component import APIServerProcess, ComponentProcess
from k8semu.cluster.processes import K8semuStoreCluster, MemberTLS
from k8semu.pb.api.v1 import core_pb2
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc
from k8semu.pb.kubelet.v1 import kubelet_pb2, kubelet_pb2_grpc

_LOCAL = ("127.0.0.1", "localhost")


@dataclass
class _Stack:
    name: str
    store: K8semuStoreCluster
    api: APIServerProcess
    store_tls: transport.ClientTLS | None
    api_tls: transport.ClientTLS | None
    kubelet: ComponentProcess
    kubelet_tls: transport.ClientTLS | None  # the API server's kubelet-client certificate


def _pki(root: Path) -> dict[str, pki.CertFiles]:
    return pki.ensure_all(
        root,
        [
            pki.CertSpec("server", "k8semu-bench", hosts=_LOCAL),
            pki.CertSpec("admin", "kubernetes-admin", ("system:masters",), server=False),
            pki.CertSpec("kubelet", "system:node:bench-tls", ("system:nodes",), hosts=_LOCAL),
            pki.CertSpec(
                "kubelet-client",
                "kube-apiserver-kubelet-client",
                ("system:masters",),
                server=False,
            ),
        ],
    )


def _start(name: str, base: Path, replicas: int, certs: dict[str, pki.CertFiles] | None) -> _Stack:
    tls = None
    if certs is not None:
        s, a = certs["server"], certs["admin"]
        tls = MemberTLS(s.ca, s.cert, s.key, a.cert, a.key)
    store = K8semuStoreCluster(base / name, replicas, tls=tls)
    store.start()
    store.wait_ready(timeout=60)
    flags: list[str] = ["--log-level", "warning"]
    client = None if tls is None else tls.client()
    if certs is not None:
        s, a = certs["server"], certs["admin"]
        flags += [
            "--tls-cert-file", str(s.cert), "--tls-private-key-file", str(s.key),
            "--client-ca-file", str(s.ca), "--etcd-cafile", str(s.ca),
            "--etcd-certfile", str(a.cert), "--etcd-keyfile", str(a.key),
        ]  # fmt: skip
    api = APIServerProcess(store.endpoints, base / f"{name}-apiserver.log", flags, start=False)
    api.probe_tls = client
    api.start()
    api.wait_serving(60)
    kubelet, kubelet_tls = _kubelet(name, base, api.address, certs)
    return _Stack(name, store, api, client, client, kubelet, kubelet_tls)


def _kubelet(
    name: str, base: Path, api: str, certs: dict[str, pki.CertFiles] | None
) -> tuple[ComponentProcess, transport.ClientTLS | None]:
    """A simulated kubelet on the stack's API server: with `certs`, the flags `up` gives it
    (its serving certificate, the cluster CA for callers, a kubeconfig with its own)."""
    args = ["--node-name", "bench-tls", "--runtime", "simulated", "--cgroups", "off",
            "--root-dir", str(base / f"{name}-kubelet"), "--log-level", "warning"]  # fmt: skip
    if certs is None:
        kubelet = ComponentProcess("kubelet", [*args, "--server", api], base / f"{name}-kl.log")
        return kubelet.start(), None
    own, admin, caller = certs["kubelet"], certs["admin"], certs["kubelet-client"]
    conf = base / f"{name}-kubelet.conf"
    creds = clientconfig.Credentials(*(pki.pem_bytes(f) for f in (own.ca, own.cert, own.key)))
    clientconfig.write_kubeconfig(conf, "kubelet", (api,), creds=creds)
    args += ["--kubeconfig", str(conf), "--tls-cert-file", str(own.cert),
             "--tls-private-key-file", str(own.key), "--client-ca-file", str(own.ca)]  # fmt: skip
    kubelet = ComponentProcess("kubelet", args, base / f"{name}-kl.log")
    kubelet.probe_tls = transport.ClientTLS(
        ca_file=own.ca, cert_file=admin.cert, key_file=admin.key
    )
    tls = transport.ClientTLS(ca_file=own.ca, cert_file=caller.cert, key_file=caller.key)
    return kubelet.start(), tls


async def _summaries(stack: _Stack, calls: int) -> list[float]:
    """Latencies (s) of `calls` sequential kubelet Summary calls, on one connection."""
    async with transport.channel(stack.kubelet.address, stack.kubelet_tls) as channel:
        stub = kubelet_pb2_grpc.KubeletStub(channel)
        request = kubelet_pb2.SummaryRequest(node="bench-tls")
        deadline = time.monotonic() + 60
        while True:  # the kubelet serves its node's summary once started
            try:
                await stub.Summary(request, timeout=5)
                break
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        out = []
        for _ in range(calls):
            t0 = time.perf_counter()
            await stub.Summary(request, timeout=10)
            out.append(time.perf_counter() - t0)
        return out


async def _puts(stack: _Stack, puts: int, clients: int) -> float:
    """Puts per second with `clients` concurrent channels round-robin over the replicas."""
    endpoints = stack.store.endpoints
    channels = [
        transport.channel(endpoints[i % len(endpoints)], stack.store_tls) for i in range(clients)
    ]
    stubs = [rpc_pb2_grpc.KVStub(ch) for ch in channels]
    value = b"x" * 256
    for stub in stubs:  # connect (and handshake) before the clock starts
        await stub.Put(rpc_pb2.PutRequest(key=b"/bench/warm", value=value), timeout=10)
    per_client = max(1, puts // clients)

    async def run(i: int) -> None:
        for n in range(per_client):
            key = f"/bench/{i}/{n % 1000}".encode()
            await stubs[i].Put(rpc_pb2.PutRequest(key=key, value=value), timeout=10)

    start = time.perf_counter()
    await asyncio.gather(*(run(i) for i in range(clients)))
    elapsed = time.perf_counter() - start
    for ch in channels:
        await ch.close()
    return per_client * clients / elapsed


async def _gets(stack: _Stack, calls: int) -> list[float]:
    """Latencies (s) of `calls` sequential Gets through k8semu.client."""
    from k8semu.client import AlreadyExists, Client

    async with Client([stack.api.address], tls=stack.api_tls) as client:
        cm = core_pb2.ConfigMap()
        cm.metadata.name, cm.metadata.namespace = "bench-tls", "default"
        cm.data["k"] = "v"
        with contextlib.suppress(AlreadyExists):  # made by an earlier round
            await client.create(cm)
        await client.get(core_pb2.ConfigMap, "bench-tls", namespace="default")
        out = []
        for _ in range(calls):
            t0 = time.perf_counter()
            await client.get(core_pb2.ConfigMap, "bench-tls", namespace="default")
            out.append(time.perf_counter() - t0)
        return out


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="k8semu bench tls", description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, default=1, help="store replicas per stack")
    p.add_argument("--puts", type=int, default=4000, help="store puts per round and stack")
    p.add_argument("--clients", type=int, default=8, help="concurrent store clients")
    p.add_argument("--calls", type=int, default=1000, help="API Gets per round and stack")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    ns = _parser().parse_args(argv)
    if min(ns.replicas, ns.puts, ns.clients, ns.calls, ns.rounds) < 1:
        print("k8semu bench tls: every number must be >= 1")
        return 2
    with tempfile.TemporaryDirectory(prefix="k8semu-bench-tls-") as tmp:
        base = Path(tmp)
        stacks: list[_Stack] = []
        try:
            stacks.append(_start("plain", base, ns.replicas, None))
            stacks.append(_start("tls", base, ns.replicas, _pki(base / "pki")))
            rates: dict[str, list[float]] = {s.name: [] for s in stacks}
            latencies: dict[str, list[float]] = {s.name: [] for s in stacks}
            kubelet: dict[str, list[float]] = {s.name: [] for s in stacks}
            for _ in range(ns.rounds):
                for stack in stacks:
                    rates[stack.name].append(asyncio.run(_puts(stack, ns.puts, ns.clients)))
                    latencies[stack.name] += asyncio.run(_gets(stack, ns.calls))
                    kubelet[stack.name] += asyncio.run(_summaries(stack, ns.calls))
        finally:
            for stack in stacks:
                stack.kubelet.close()
                stack.api.close()
                stack.store.close()
    _report(rates, latencies, kubelet)
    return 0


def _report(
    rates: dict[str, list[float]],
    latencies: dict[str, list[float]],
    kubelet: dict[str, list[float]],
) -> None:
    print(
        f"{'':8}{'puts/s':>10}{'Get p50 ms':>12}{'Get p99 ms':>12}"
        f"{'kubelet p50 ms':>16}{'kubelet p99 ms':>16}"
    )
    figures = {}
    for name in ("plain", "tls"):
        rate = statistics.median(rates[name])
        p50, p99 = _p(latencies[name], 0.5) * 1000, _p(latencies[name], 0.99) * 1000
        k50, k99 = _p(kubelet[name], 0.5) * 1000, _p(kubelet[name], 0.99) * 1000
        figures[name] = (rate, p50, p99, k50, k99)
        print(f"{name:8}{rate:>10.0f}{p50:>12.2f}{p99:>12.2f}{k50:>16.2f}{k99:>16.2f}")
    (rate0, p50_0, p99_0, k50_0, k99_0) = figures["plain"]
    (rate1, p50_1, p99_1, k50_1, k99_1) = figures["tls"]
    print(
        f"TLS cost (target <= 1.3x): puts/s plain/TLS {rate0 / rate1:.2f}x, "
        f"Get p50 TLS/plain {p50_1 / p50_0:.2f}x, Get p99 TLS/plain {p99_1 / p99_0:.2f}x, "
        f"kubelet p50 {k50_1 / k50_0:.2f}x, p99 {k99_1 / k99_0:.2f}x"
    )

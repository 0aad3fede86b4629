"""Run inside one of the test's network namespaces (`ip netns exec NS python _inside.py ...`):
the client side of tests/multihost/test_netns.py, one process per step so the test itself
stays in the root namespace and never sends a packet there.

    _inside.py deploy SERVER MANIFEST TIMEOUT    create the objects, wait for 2 Ready pods on
                                                 2 nodes, their 2 endpoints and both Nodes'
                                                 tunnel annotations; print JSON
    _inside.py get URL TIMEOUT                   one HTTP GET; print the body (exit 1 on error)
    _inside.py udp IP PORT TEXT TIMEOUT          send TEXT until a datagram answers; print it

Plain stdlib for HTTP: the request goes out of this namespace's own sockets, exactly as a
process on that host would send it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
import urllib.request
from pathlib import Path

from k8semu.api import manifest
from k8semu.cli import _kubeconfig
from k8semu.client import AlreadyExists, Client
from k8semu.pb.api.v1 import core_pb2

TUNNEL_ANNOTATION = "k8semu.io/tunnel-endpoint"


def _ready(pod: core_pb2.Pod) -> bool:
    return pod.status.phase == "Running" and any(
        c.type == "Ready" and c.status == "True" for c in pod.status.conditions
    )


async def deploy(
    server: str, path: Path, timeout: float, kubeconfig: str = ""
) -> dict[str, object]:
    """`kubeconfig`: the credentials (a TLS cluster's, e.g. <state-dir>/kubeconfig)."""
    end = time.monotonic() + timeout
    target = _kubeconfig.resolve(server=server, kubeconfig=kubeconfig or None, environ={})
    async with Client([server], tls=target.tls()) as client:
        for obj in manifest.load_all(path.read_text(), source=str(path)):
            with contextlib.suppress(AlreadyExists):
                await client.create(obj, namespace="default")
        while True:
            listed = await client.list(core_pb2.Pod, namespace="default", label_selector="app=echo")
            pods = [p for p in listed.items if not p.metadata.HasField("deletion_timestamp")]
            ready = [p for p in pods if _ready(p) and p.status.pod_ip]
            svc = await client.get(core_pb2.Service, "echo", namespace="default")
            try:
                eps = await client.get(core_pb2.Endpoints, "echo", namespace="default")
                addresses = [a.ip for s in eps.subsets for a in s.addresses]
            except Exception:
                addresses = []
            nodes = {p.spec.node_name for p in ready}
            tunnels = {
                n.metadata.name: n.metadata.annotations.get(TUNNEL_ANNOTATION, "")
                for n in (await client.list(core_pb2.Node)).items
            }
            udp = await client.get(core_pb2.Pod, "udp", namespace="default")
            udp_ip = udp.status.pod_ip if udp.status.phase == "Running" else ""
            if (
                len(ready) == 2
                and len(nodes) == 2
                and len(addresses) == 2
                and all(tunnels.values())
                and udp_ip
            ):
                return {
                    "udpIP": udp_ip,
                    "tunnels": tunnels,
                    "pods": [
                        {"name": p.metadata.name, "node": p.spec.node_name, "ip": p.status.pod_ip}
                        for p in ready
                    ],
                    "clusterIP": svc.spec.cluster_ip,
                }
            if time.monotonic() > end:
                states = [(p.metadata.name, p.spec.node_name, p.status.phase) for p in pods]
                raise SystemExit(
                    f"not ready within {timeout} s: pods {states}, endpoints {addresses},"
                    f" tunnels {tunnels}, udp pod {udp.status.phase} {udp_ip}"
                )
            await asyncio.sleep(0.5)


def get(url: str, timeout: float) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            sys.stdout.write(resp.read().decode(errors="replace"))
    except OSError as exc:
        print(f"GET {url}: {exc}", file=sys.stderr)
        return 1
    return 0


def udp(ip: str, port: int, text: str, timeout: float) -> int:
    """Send `text` once a second until an answer comes (the first datagrams may meet a
    listener not bound yet), print the answer."""
    end = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        while time.monotonic() < end:
            s.sendto(text.encode(), (ip, port))
            try:
                data, _ = s.recvfrom(65535)
            except OSError:  # a timeout, or ICMP unreachable on a connected path
                continue
            sys.stdout.write(data.decode(errors="replace"))
            return 0
    print(f"no answer from {ip}:{port} within {timeout} s", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    if argv[0] == "deploy":
        result = asyncio.run(deploy(argv[1], Path(argv[2]), float(argv[3]), *argv[4:5]))
        print(json.dumps(result))
        return 0
    if argv[0] == "get":
        return get(argv[1], float(argv[2]))
    if argv[0] == "udp":
        return udp(argv[1], int(argv[2]), argv[3], float(argv[4]))
    raise SystemExit(f"unknown step {argv[0]!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

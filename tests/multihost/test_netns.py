"""A cluster over three real hosts made of network namespaces: pod traffic crosses hosts
through the proxies' tunnels (docs/multihost.md).

Hosts `cp`, `w1`, `w2` are namespaces of their own (each its own loopback, so a pod IP of w2
is *not* reachable in w1 except through the overlay), joined by veth pairs to a bridge in a
fourth namespace, addresses 10.213.X.1-3/24; the root namespace's addresses and routes are
not touched (the veth pairs are created there and moved at once). Each host's share of one
cluster config is started with `ip netns exec <ns> python -m k8semu up --host <name>`:
store, API server, scheduler and controller manager on cp; node w1 (kubelet + proxy with its
tunnel) on w1, node w2 on w2. From inside w1: the pod IP of the echo pod on w2 answers, the
Service's ClusterIP reaches both pods, and a UDP pod on w2 answers a datagram; from w2, the
echo pod on w1. Everything is stopped with `k8semu down` in each
namespace, any process left in them is killed by pid, and the namespaces are deleted, also
on failure.

Needs root and `ip` (iproute2); skipped otherwise, or when the kernel refuses namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from k8semu import pki
from tests.support.cluster import user_env

IP = shutil.which("ip")
INSIDE = Path(__file__).with_name("_inside.py")
START_TIMEOUT_S = 60.0
POD_TIMEOUT_S = 40.0
HOSTS = ("cp", "w1", "w2")

MANIFEST = Path(__file__).with_name("spread.yaml")

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="network namespaces are Linux's"),
    pytest.mark.skipif(IP is None, reason="no `ip` command (iproute2) to make network namespaces"),
    pytest.mark.skipif(
        hasattr(os, "geteuid") and os.geteuid() != 0, reason="network namespaces need root"
    ),
]


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert IP is not None
    return subprocess.run([IP, *args], capture_output=True, text=True, timeout=30, check=check)


@dataclass
class Hosts:
    """The test's namespaces: `ns[host]` for cp/w1/w2, `bridge` holding the bridge."""

    tag: str
    subnet: int
    ns: dict[str, str] = field(default_factory=dict)
    bridge: str = ""
    #: veth pairs made in the root namespace (normally moved out at once).
    links: list[str] = field(default_factory=list)

    def address(self, host: str) -> str:
        return f"10.213.{self.subnet}.{HOSTS.index(host) + 1}"

    def exec(self, host: str, *argv: str) -> list[str]:
        assert IP is not None
        return [IP, "netns", "exec", self.ns[host], *argv]

    def all(self) -> list[str]:
        return [*self.ns.values(), *([self.bridge] if self.bridge else [])]


def _kill_left(namespace: str) -> None:
    """SIGKILL, by pid, whatever still runs in one of *our* namespaces (after `down`, normally
    nothing)."""
    listed = _ip("netns", "pids", namespace, check=False)
    for pid in (int(p) for p in listed.stdout.split() if p.isdigit()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _make_hosts(hosts: Hosts) -> None:
    tag = hosts.tag
    hosts.bridge = f"k8semu-t-{tag}-br"
    _ip("netns", "add", hosts.bridge)
    _ip("-n", hosts.bridge, "link", "set", "lo", "up")
    _ip("-n", hosts.bridge, "link", "add", "br0", "type", "bridge")
    _ip("-n", hosts.bridge, "link", "set", "br0", "up")
    for host in HOSTS:
        ns = hosts.ns[host] = f"k8semu-t-{tag}-{host}"
        _ip("netns", "add", ns)
        inner, outer = f"k8t{tag}{host}", f"k8t{tag}{host}b"  # <= 15 characters
        hosts.links.append(inner)
        _ip("link", "add", inner, "type", "veth", "peer", "name", outer)
        _ip("link", "set", inner, "netns", ns)
        _ip("link", "set", outer, "netns", hosts.bridge)
        _ip("-n", hosts.bridge, "link", "set", outer, "master", "br0")
        _ip("-n", hosts.bridge, "link", "set", outer, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "addr", "add", f"{hosts.address(host)}/24", "dev", inner)
        _ip("-n", ns, "link", "set", inner, "up")


def _wait_connected(hosts: Hosts, timeout: float = 20.0) -> None:
    """Every host reaches every other's address (a TCP connect that is refused proves the
    packet got there and back) before anything is started."""
    probe = (
        "import socket,sys\n"
        "for a in sys.argv[1:]:\n"
        "    s=socket.socket(); s.settimeout(1)\n"
        "    try: s.connect((a, 9))\n"
        "    except ConnectionRefusedError: pass\n"
        "    finally: s.close()\n"
    )
    end = time.monotonic() + timeout
    for host in HOSTS:
        others = [hosts.address(h) for h in HOSTS if h != host]
        while True:
            run = subprocess.run(
                hosts.exec(host, sys.executable, "-c", probe, *others),
                capture_output=True,
                text=True,
                timeout=30,
            )
            if run.returncode == 0:
                break
            assert time.monotonic() < end, f"{host} cannot reach {others}: {run.stderr[-500:]}"
            time.sleep(0.2)


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    made = Hosts(tag=secrets.token_hex(3), subnet=secrets.randbelow(250) + 2)
    try:
        try:
            _make_hosts(made)
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot make network namespaces here: {exc.stderr.strip()}")
        _wait_connected(made)
        yield made
    finally:
        for ns in made.all():
            _kill_left(ns)
            _ip("netns", "del", ns, check=False)
        for link in made.links:  # only if making the hosts failed before it was moved
            if _ip("link", "show", link, check=False).returncode == 0:
                _ip("link", "del", link, check=False)


def _config(hosts: Hosts, path: Path) -> Path:
    a = hosts.address
    path.write_text(
        "kind: ClusterConfig\nversion: v1alpha1\n"
        f"name: mh{hosts.tag}\n"
        "hosts:\n"
        + "".join(f"  - {{name: {h}, address: {a(h)}}}\n" for h in HOSTS)
        + "store:\n  members:\n"
        f"    - {{name: s1, clientURL: 'http://{a('cp')}:2379', peerURL: 'http://{a('cp')}:2380'}}\n"
        "apiServer: {instances: [{host: cp, port: 6443}]}\n"
        "scheduler: {instances: [{host: cp}]}\n"
        "controllerManager: {instances: [{host: cp}]}\n"
        "nodes:\n"
        f"  - {{name: w1, host: w1, nodeIP: {a('w1')}}}\n"
        f"  - {{name: w2, host: w2, nodeIP: {a('w2')}}}\n"
        "launcher: {readyTimeout: 60s, stopGracePeriod: 3s}\n"
    )
    return path


def _inside(hosts: Hosts, host: str, env: dict[str, str], *args: str, timeout: float) -> str:
    run = subprocess.run(
        hosts.exec(host, sys.executable, str(INSIDE), *args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert run.returncode == 0, f"{args[0]} in {host}: {run.stdout[-1000:]}{run.stderr[-2000:]}"
    return run.stdout


def _get_until(
    hosts: Hosts, host: str, env: dict[str, str], url: str, want: set[str], timeout: float
) -> set[str]:
    """GET `url` from `host` until the bodies named every pod of `want` (or time runs out);
    returns the pods seen."""
    seen: set[str] = set()
    end = time.monotonic() + timeout
    last = ""
    while not want <= seen and time.monotonic() < end:
        run = subprocess.run(
            hosts.exec(host, sys.executable, str(INSIDE), "get", url, "5"),
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        last = run.stdout + run.stderr
        seen |= {name for name in want if name in run.stdout}
    assert want <= seen, f"{url} from {host}: saw {sorted(seen)} of {sorted(want)}; last: {last}"
    return seen


def test_pods_reach_each_other_across_hosts(hosts: Hosts, tmp_path: Path) -> None:
    env = user_env(tmp_path)
    config = _config(hosts, tmp_path / "cluster.yaml")
    state = {h: tmp_path / f"state-{h}" for h in HOSTS}
    # One cluster CA, one store CA and one ServiceAccount key pair for every host, as a user
    # copies pki/ to each host before its first `up` (docs/security.md): each `up` reuses
    # them (a token one API server signs is valid at every other).
    cas = tmp_path / "pki"
    pki.CertificateAuthority.load_or_create(cas)
    pki.CertificateAuthority.load_or_create(cas / "etcd")
    pki.ensure_signing_key(cas / "sa.key", cas / "sa.pub")
    for h in HOSTS:
        shutil.copytree(cas, state[h] / "pki")
    started: list[str] = []

    def up(host: str) -> subprocess.Popen[str]:
        started.append(host)
        return subprocess.Popen(
            hosts.exec(host, sys.executable, "-m", "k8semu", "up", "-f", str(config),
                       "--host", host, "--state-dir", str(state[host]), "--detach"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip

    try:
        procs = {"cp": up("cp")}
        # The workers wait for the API server themselves (up to readyTimeout): start all three.
        procs |= {h: up(h) for h in ("w1", "w2")}
        for host, proc in procs.items():
            out, _ = proc.communicate(timeout=START_TIMEOUT_S + 30)
            assert proc.returncode == 0, f"up --host {host}:\n{out[-3000:]}"
            if host != "cp":
                assert f"node {host}" in out and "Ready" in out, out

        server = f"{hosts.address('cp')}:6443"
        deployed = json.loads(
            _inside(
                hosts,
                "w1",
                env,
                "deploy",
                server,
                str(MANIFEST),
                str(POD_TIMEOUT_S),
                str(state["cp"] / "kubeconfig"),
                timeout=POD_TIMEOUT_S + 30,
            )
        )
        # Each proxy published where its tunnel is on its own Node.
        assert deployed["tunnels"] == {h: f"{hosts.address(h)}:10262" for h in ("w1", "w2")}
        pods = {p["node"]: p for p in deployed["pods"]}
        assert set(pods) == {"w1", "w2"}, deployed
        far = pods["w2"]

        # The pod on w2, by its pod IP, from w1: only the overlay listener of w1's proxy (and
        # w2's tunnel behind it) can answer there.
        body = _get_until(hosts, "w1", env, f"http://{far['ip']}:8080/", {far["name"]}, timeout=60)
        assert body == {far["name"]}
        # The ClusterIP from w1 reaches both pods: w1's directly, w2's through the tunnel.
        names = {p["name"] for p in deployed["pods"]}
        _get_until(hosts, "w1", env, f"http://{deployed['clusterIP']}/", names, timeout=60)
        # And the other way round: w2 reaches w1's pod by its IP.
        near = pods["w1"]
        _get_until(hosts, "w2", env, f"http://{near['ip']}:8080/", {near["name"]}, timeout=60)
        # UDP too: a datagram from w1 to the UDP port of a pod on w2, and its answer.
        answer = _inside(hosts, "w1", env, "udp", deployed["udpIP"], "8081", "echo across", "20",
                         timeout=40)  # fmt: skip
        assert answer == "across"
    finally:
        for host in reversed(started):
            subprocess.run(
                hosts.exec(host, sys.executable, "-m", "k8semu", "down", "--state-dir",
                           str(state[host])),
                capture_output=True, text=True, timeout=60, env=env,
            )  # fmt: skip

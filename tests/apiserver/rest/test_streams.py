"""Pods' streams through the API server: `kubectl logs/exec/port-forward` and the Python client
against the REST API of a real store, API server and `k8semu kubelet` running real pods.

Every stream goes client -> API server -> kubelet; the pods are created with spec.nodeName
set (no scheduler). One kubelet and three pods serve the whole module.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from k8semu.cluster.component import ComponentProcess
from k8semu.cluster.processes import free_loopback_ports
from k8semu.pb.api.v1 import podstreams_pb2_grpc
from k8semu.pb.kubelet.v1 import kubelet_pb2
from tests.kubelet.conftest import end_pods

from .conftest import KUBECTL, REST, TIMEOUT

pytestmark = pytest.mark.slow
kubernetes = pytest.importorskip("kubernetes")
if KUBECTL is None:
    pytest.skip("no kubectl on PATH", allow_module_level=True)

PY = sys.executable
TICKER = "i=0; while :; do i=$((i+1)); echo tick-$i; sleep 0.2; done"
TALK = "for i in 1 2 3 4 5; do echo line-$i; done; echo run-done; exec sleep 300"


@dataclass(frozen=True)
class Cluster:
    rest: REST
    node: str
    namespace: str

    def kubectl(self, *args: str, stdin: str = "", check: bool = True) -> str:
        return self.rest.kubectl("-n", self.namespace, *args, stdin=stdin, check=check)

    def run(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """kubectl's whole result (exit code, stdout, stderr)."""
        assert KUBECTL is not None
        return subprocess.run(
            [KUBECTL, f"--server={self.rest.url}", "-n", self.namespace, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env={"KUBECONFIG": "/dev/null", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin"},
        )

    def pod_path(self, name: str, sub: str = "") -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{name}" + (f"/{sub}" if sub else "")


def poll(check: Callable[[], Any], what: str, timeout: float = 40.0) -> Any:
    end = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"not true within {timeout}s: {what}")
        time.sleep(0.1)


def _pod(name: str, node: str, *containers: tuple[str, list[str]]) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {"name": c, "image": "k8semu-test/python", "command": cmd} for c, cmd in containers
        ],
        "terminationGracePeriodSeconds": 1,
    }
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


@pytest.fixture(scope="module")
def cluster(rest: REST, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base: Path = tmp_path_factory.mktemp("streams")
    node = f"node-{uuid.uuid4().hex[:6]}"
    kubelet = ComponentProcess(
        "kubelet",
        [
            "--server", rest.grpc_address,
            "--node-name", node,
            "--root-dir", str(base / node),
            "--pod-cidr", "127.244.78.0/24",
            "--pod-cidr-wait", "0",
            "--max-container-backoff", "2",
        ],
        base / "kubelet.log",
    ).start()  # fmt: skip
    namespace = f"s-{uuid.uuid4().hex[:6]}"
    c = Cluster(rest, node, namespace)
    try:
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        rest.kubectl("create", "-f", "-", stdin=json.dumps(ns))
        pods = [
            _pod("talker", node, ("main", ["sh", "-c", TALK]), ("side", ["sleep", "300"])),
            _pod("web", node, ("web", [PY, "-m", "http.server", "--bind", "$(POD_IP)", "8080"])),
            _pod("idle", "", ("main", ["sleep", "300"])),
            _pod("ticker", node, ("main", ["sh", "-c", TICKER])),
        ]
        for doc in pods:
            c.kubectl("create", "-f", "-", stdin=json.dumps(doc))
        for name in ("talker", "web"):
            poll(lambda n=name: _phase(c, n) == "Running", f"{name} running")  # type: ignore[misc]
        yield c
    finally:
        kubelet.close()
        end_pods(node, base / node)  # its containers and their cgroups
        print(kubelet.output()[-4000:])


def _phase(c: Cluster, pod: str) -> str:
    return c.kubectl("get", "pod", pod, "-o", "jsonpath={.status.phase}", check=False)


def _pid(c: Cluster, pod: str, index: int = 0) -> int:
    cid = c.kubectl(
        "get", "pod", pod, "-o", f"jsonpath={{.status.containerStatuses[{index}].containerID}}"
    )
    return int(cid.removeprefix("process://") or 0)


LINES = [f"line-{i}" for i in range(1, 6)] + ["run-done"]
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z")


def _stamped(text: str) -> list[tuple[str, str]]:
    """(time, line) of `--timestamps` output."""
    return [tuple(line.split(" ", 1)) for line in text.splitlines()]  # type: ignore[misc]


def test_log_times_since_and_follow(cluster: Cluster) -> None:
    """Each line carries the time the kubelet read it: --since/--since-time pick by it, and
    -f goes on with what comes (the ticker prints a line every 0.2 s)."""
    clock = "%Y-%m-%dT%H:%M:%S"

    def old_enough() -> list[tuple[str, str]]:
        got = _stamped(cluster.kubectl("logs", "ticker", "--timestamps"))
        edge = time.strftime(clock, time.gmtime(time.time() - 8))
        return got if got and got[0][0] < edge else []

    every = poll(old_enough, "the ticker has run 8 s")
    assert [t for _, t in every] == [f"tick-{i}" for i in range(1, len(every) + 1)]
    assert [s for s, _ in every] == sorted(s for s, _ in every)
    asked = time.strftime(clock, time.gmtime(time.time() - 5))
    recent = _stamped(cluster.kubectl("logs", "ticker", "--since=5s", "--timestamps"))
    assert recent and recent[0][0] >= asked and recent[0][1] != "tick-1"
    # --since-time: from the first line of a second on (kubectl sends whole seconds).
    pick = every[len(every) // 2][0][:19]
    picked = _stamped(cluster.kubectl("logs", "ticker", f"--since-time={pick}Z", "--timestamps"))
    first = next(i for i, (s, _) in enumerate(every) if s[:19] >= pick)
    assert picked[: len(every) - first] == every[first:]
    tail = _stamped(cluster.kubectl("logs", "ticker", "--tail=2", "--timestamps"))
    assert len(tail) == 2 and int(tail[1][1][5:]) == int(tail[0][1][5:]) + 1
    # -f: the last line, then new ones as they come.
    assert KUBECTL is not None
    follow = subprocess.Popen(
        [KUBECTL, f"--server={cluster.rest.url}", "-n", cluster.namespace, "logs", "-f",
         "ticker", "--tail=1"],
        stdout=subprocess.PIPE, text=True, env={"KUBECONFIG": "/dev/null", "HOME": "/"},
    )  # fmt: skip
    try:
        assert follow.stdout is not None
        got = [follow.stdout.readline().strip() for _ in range(4)]
    finally:
        follow.kill()
        follow.communicate()
    numbers = [int(line[5:]) for line in got]
    assert numbers == list(range(numbers[0], numbers[0] + 4)), got
    # The Python client: the same options by name.
    config = kubernetes.client.Configuration()
    config.host = cluster.rest.url
    with kubernetes.client.ApiClient(config) as api:
        core = kubernetes.client.CoreV1Api(api)
        text = core.read_namespaced_pod_log(
            "ticker", cluster.namespace, since_seconds=5, timestamps=True, limit_bytes=200
        )
        assert len(text) == 200 and STAMP.match(text) and text[:19] >= asked
    query = "log?sinceSeconds=5&sinceTime=2024-01-01T00:00:00Z"
    code, _, body = cluster.rest.request("GET", cluster.pod_path("ticker", query))
    assert code == 422, body
    assert "at most one of `sinceTime` or `sinceSeconds` may be specified" in body.decode()


def test_logs_tail_limit_and_python_client(cluster: Cluster) -> None:
    out = poll(
        lambda: "run-done" in (o := cluster.kubectl("logs", "talker", "-c", "main")) and o,
        "the log has the output",
    )
    assert out.splitlines() == LINES
    assert cluster.kubectl("logs", "pod/talker", "-c", "main", "--tail=2").splitlines() == [
        "line-5",
        "run-done",
    ]
    assert cluster.kubectl("logs", "talker", "-c", "main", "--limit-bytes=9") == "line-1\nli"
    # kubectl's default container is the first; it says so on stderr.
    assert cluster.kubectl("logs", "talker").splitlines() == LINES
    timed = cluster.run("logs", "talker", "-c", "main", "--timestamps", "--since=1h")
    assert timed.returncode == 0 and not timed.stderr, timed
    assert [line.split(" ", 1)[1] for line in timed.stdout.splitlines()] == LINES
    assert all(STAMP.fullmatch(line.split(" ", 1)[0]) for line in timed.stdout.splitlines())
    future = cluster.run("logs", "talker", "-c", "main", "--since-time=2999-01-01T00:00:00Z")
    assert (future.returncode, future.stdout) == (0, ""), future

    config = kubernetes.client.Configuration()
    config.host = cluster.rest.url
    with kubernetes.client.ApiClient(config) as api:
        core = kubernetes.client.CoreV1Api(api)
        text = core.read_namespaced_pod_log("talker", cluster.namespace, container="main")
        assert text.splitlines() == LINES
        text = core.read_namespaced_pod_log(
            "talker", cluster.namespace, container="main", tail_lines=1
        )
        assert text == "run-done\n"


def test_logs_refused_with_kubernetes_wording(cluster: Cluster) -> None:
    def status(path: str) -> tuple[int, dict[str, Any]]:
        code, _, body = cluster.rest.request("GET", path)
        doc = json.loads(body)
        assert doc["kind"] == "Status", doc
        return code, doc

    code, doc = status(cluster.pod_path("talker", "log"))
    assert code == 400 and doc["message"] == (
        "a container name must be specified for pod talker, choose one of: [main side]"
    )
    code, doc = status(cluster.pod_path("talker", "log?container=nope"))
    assert (code, doc["message"]) == (400, "container nope is not valid for pod talker")
    code, doc = status(cluster.pod_path("ghost", "log"))
    assert (code, doc["reason"], doc["message"]) == (404, "NotFound", 'pods "ghost" not found')
    code, doc = status(cluster.pod_path("idle", "log"))
    assert code == 400 and doc["message"] == (
        'container "main" in pod "idle" is waiting to start: ContainerCreating'
    )
    code, doc = status(cluster.pod_path("talker", "log?container=main&tailLines=-1"))
    assert code == 422 and "tailLines: Invalid value: -1" in doc["message"], doc
    code, doc = status(cluster.pod_path("talker", "log?container=main&tailLines=x"))
    assert code == 400 and "tailLines" in doc["message"], doc
    code, doc = status(cluster.pod_path("talker", "log?container=main&follow=maybe"))
    assert code == 400 and "follow" in doc["message"], doc
    code, doc = status(cluster.pod_path("talker", "log?container=main&sinceSeconds=5&sinceTime=x"))
    assert code == 400 and "sinceTime" in doc["message"], doc
    out = cluster.run("logs", "idle")
    assert out.returncode == 1 and "is waiting to start: ContainerCreating" in out.stderr


def test_exec_exit_code_stdin_and_python_stream(cluster: Cluster) -> None:
    out = cluster.run("exec", "talker", "-c", "main", "--", "sh", "-c", "echo out; echo err >&2")
    assert (out.returncode, out.stdout, out.stderr) == (0, "out\n", "err\n"), out
    out = cluster.run("exec", "talker", "-c", "main", "--", "sh", "-c", "exit 3")
    assert out.returncode == 3 and "command terminated with exit code 3" in out.stderr, out
    data = "".join(f"row {i}\n" for i in range(2000))
    out = cluster.run("exec", "-i", "talker", "-c", "main", "--", "wc", "-l", stdin=data)
    assert (out.returncode, out.stdout.strip()) == (0, "2000"), out
    # `kubectl cp` is tar over exec.
    src = Path(os.environ.get("TMPDIR", "/tmp")) / f"cp-{uuid.uuid4().hex[:6]}.txt"
    src.write_text("copied through exec\n")
    try:
        cp = cluster.run("cp", str(src), "talker:copied.txt", "-c", "main")
        assert cp.returncode == 0, cp
        got = cluster.run("exec", "talker", "-c", "main", "--", "cat", "copied.txt")
        assert got.stdout == "copied through exec\n", got
    finally:
        src.unlink()

    config = kubernetes.client.Configuration()
    config.host = cluster.rest.url
    with kubernetes.client.ApiClient(config) as api:
        core = kubernetes.client.CoreV1Api(api)
        ws = _exec(core, cluster, ["sh", "-c", "read x; echo got-$x; exit 4"], tty=False)
        try:
            ws.write_stdin("hello\n")
            ws.run_forever(timeout=TIMEOUT)
            assert ws.read_stdout() == "got-hello\n"
            assert ws.returncode == 4
        finally:
            ws.close()
            ws.sock.shutdown()  # websocket-client leaves the socket open once the server closed
    # v4.channel.k8s.io, that clients fall back to: the end is a Status on channel 3.
    url = cluster.rest.url + cluster.pod_path("talker", "exec")
    query = "?container=main&command=sh&command=-c&command=echo+$POD_NAME;+exit+5&stdout=1"
    channels = asyncio.run(_websocket(url + query, "v4.channel.k8s.io"))
    assert channels[1] == b"talker\n"
    status = json.loads(channels[3])
    assert status["reason"] == "NonZeroExitCode", status
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "5"}]


async def _websocket(url: str, protocol: str) -> dict[int, bytes]:
    """What each channel carried until the server closed the WebSocket."""
    got: dict[int, bytes] = {}
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            url, protocols=(protocol,), timeout=aiohttp.ClientWSTimeout(ws_close=TIMEOUT)
        ) as ws,
    ):
        assert ws.protocol == protocol
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY and msg.data:
                got[msg.data[0]] = got.get(msg.data[0], b"") + msg.data[1:]
    return got


def test_exec_tty_and_client_going_away(cluster: Cluster) -> None:
    config = kubernetes.client.Configuration()
    config.host = cluster.rest.url
    with kubernetes.client.ApiClient(config) as api:
        core = kubernetes.client.CoreV1Api(api)
        script = "test -t 0 && echo tty; stty size; echo $$; exec sleep 300"
        ws = _exec(core, cluster, ["sh", "-c", script], tty=True)
        ws.write_channel(4, json.dumps({"Width": 100, "Height": 40}))
        seen = ""

        def output() -> bool:
            nonlocal seen
            ws.update(timeout=1)
            seen += ws.read_stdout(timeout=0) or ""
            return len(seen.split()) >= 4

        poll(output, "the tty exec's output")
        lines = seen.split()
        assert lines[0] == "tty", seen
        pid = int(lines[3])
        ws.close()  # the client goes away: the exec'd process is killed
        poll(lambda: not _alive(pid), "the exec'd process ended")


# The size arrives on the resize channel after the command started: wait for it (bounded).
_SIZE = (
    'for i in $(seq 50); do s=$(stty size); [ "$s" != "0 0" ] && break; sleep 0.1; done; echo $s'
)


@pytest.mark.skipif(shutil.which("script") is None, reason="no script(1) to give kubectl a tty")
def test_kubectl_exec_it_on_a_terminal(cluster: Cluster) -> None:
    """`kubectl exec -it` from a terminal (script(1) gives kubectl one): the command sees a
    tty of kubectl's terminal size, and its exit code comes back."""
    assert KUBECTL is not None
    inner = (
        f"{KUBECTL} --server={cluster.rest.url} -n {cluster.namespace} exec -it talker"
        " -c main -- sh -c 'test -t 0 && echo on-a-tty; " + _SIZE + "; exit 6'"
    )
    out = subprocess.run(
        ["script", "-qec", f"stty cols 91 rows 33; {inner}", "/dev/null"],
        capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
        env={"KUBECONFIG": "/dev/null", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert "on-a-tty" in out.stdout, out
    assert "33 91" in out.stdout, out
    assert out.returncode == 6, out


def _exec(core: Any, cluster: Cluster, command: list[str], *, tty: bool) -> Any:
    """The Python client's exec WebSocket (WSClient), stdin open."""
    from kubernetes.stream import stream

    return stream(
        core.connect_get_namespaced_pod_exec,
        "talker",
        cluster.namespace,
        container="main",
        command=command,
        stderr=True,
        stdin=True,
        stdout=True,
        tty=tty,
        _preload_content=False,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_attach_streams_the_running_output(cluster: Cluster) -> None:
    url = cluster.rest.url + cluster.pod_path("web", "attach?container=web&stdout=1&stderr=1")
    fetch = "import os, urllib.request as u; u.urlopen(f'http://{os.environ[\"POD_IP\"]}:8080/')"

    async def attached() -> bytes:
        seen = b""
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, protocols=("v5.channel.k8s.io",)) as ws,
        ):
            # The server's log line for this request is new output: attach shows it.
            done = await asyncio.to_thread(cluster.run, "exec", "web", "--", PY, "-c", fetch)
            assert done.returncode == 0, done
            async with asyncio.timeout(TIMEOUT):
                async for msg in ws:
                    seen += msg.data[1:] if msg.type == aiohttp.WSMsgType.BINARY else b""
                    if b"GET / " in seen:
                        break
        return seen

    assert b'"GET / HTTP/1.1" 200' in asyncio.run(attached())


def test_portforward_python_client(cluster: Cluster) -> None:
    from kubernetes.stream import portforward

    config = kubernetes.client.Configuration()
    config.host = cluster.rest.url
    with kubernetes.client.ApiClient(config) as api:
        core = kubernetes.client.CoreV1Api(api)
        pf = portforward(core.connect_get_namespaced_pod_portforward, "web", cluster.namespace,
                         ports="8080")  # fmt: skip
        sock = pf.socket(8080)
        sock.setblocking(True)
        sock.sendall(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        sock.close()
        assert reply.startswith(b"HTTP/1.0 200"), reply[:200]
        _close(pf)
        # Nothing listens on port 9: the port's error channel says so.
        pf = portforward(core.connect_get_namespaced_pod_portforward, "web", cluster.namespace,
                         ports="9")  # fmt: skip
        try:
            sock = pf.socket(9)
            sock.setblocking(True)
            assert sock.recv(10) == b""
            assert "failed to connect" in (pf.error(9) or ""), pf.error(9)
        finally:
            _close(pf)


def _close(pf: Any) -> None:
    """Close a Python client port-forward, its proxy thread and its WebSocket (the client
    leaves the socket open when the server closed the WebSocket first)."""
    pf.close()
    for thread in threading.enumerate():
        if thread.name.startswith("Kubernetes port forward proxy"):
            thread.join(TIMEOUT)
    pf.websocket.shutdown()


def test_portforward_kubectl(cluster: Cluster) -> None:
    """kubectl 1.32 forwards over a WebSocket that tunnels SPDY (its default)."""
    local = free_loopback_ports(1)[0]
    assert KUBECTL is not None
    proc = subprocess.Popen(
        [KUBECTL, f"--server={cluster.rest.url}", "-n", cluster.namespace, "port-forward",
         "pod/web", f"{local}:8080"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"KUBECONFIG": "/dev/null", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert "Forwarding from" in proc.stdout.readline()
        for _ in range(2):  # each connection its own pair of streams
            url = f"http://127.0.0.1:{local}/"
            with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
                assert resp.status == 200 and b"Directory listing" in resp.read()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(TIMEOUT)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


SPDY_ONLY = {
    "KUBECONFIG": "/dev/null", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin",
    "KUBECTL_REMOTE_COMMAND_WEBSOCKETS": "false", "KUBECTL_PORT_FORWARD_WEBSOCKETS": "false",
}  # fmt: skip


def _kubectl_spdy(cluster: Cluster, *args: str, stdin: str = "") -> Any:
    assert KUBECTL is not None
    return subprocess.run(
        [KUBECTL, f"--server={cluster.rest.url}", "-n", cluster.namespace, *args],
        input=stdin, capture_output=True, text=True, timeout=TIMEOUT, env=SPDY_ONLY,
    )  # fmt: skip


def _listening(address: tuple[str, int]) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(address, timeout=5):
        return True
    return False


def test_exec_and_portforward_over_plain_spdy(cluster: Cluster) -> None:
    """kubectl with WebSockets off upgrades to SPDY/3.1 itself: exec (streams, stdin, exit
    code) and port-forward work the same."""
    out = _kubectl_spdy(cluster, "exec", "talker", "-c", "main", "--", "sh", "-c",
                        "echo out; echo err >&2; exit 3")  # fmt: skip
    assert (out.returncode, out.stdout) == (3, "out\n"), out
    assert "err\n" in out.stderr and "command terminated with exit code 3" in out.stderr
    data = "".join(f"row {i}\n" for i in range(2000))
    out = _kubectl_spdy(cluster, "exec", "-i", "talker", "-c", "main", "--", "wc", "-l",
                        stdin=data)  # fmt: skip
    assert (out.returncode, out.stdout.strip()) == (0, "2000"), out
    ip = cluster.kubectl("get", "pod", "web", "-o", "jsonpath={.status.podIP}")
    poll(lambda: _listening((ip, 8080)), "the web pod serves")
    local = free_loopback_ports(1)[0]
    assert KUBECTL is not None
    proc = subprocess.Popen(
        [KUBECTL, f"--server={cluster.rest.url}", "-n", cluster.namespace, "port-forward",
         "pod/web", f"{local}:8080"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=SPDY_ONLY,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert "Forwarding from" in proc.stdout.readline()
        for _ in range(2):
            with urllib.request.urlopen(f"http://127.0.0.1:{local}/", timeout=TIMEOUT) as resp:
                assert resp.status == 200 and b"Directory listing" in resp.read()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=TIMEOUT)
    spdy = {"Connection": "Upgrade", "Upgrade": "SPDY/3.1",
            "X-Stream-Protocol-Version": "v9.channel.k8s.io"}  # fmt: skip
    code, _, body = cluster.rest.request(
        "POST", cluster.pod_path("talker", "exec?command=true&container=main"), headers=spdy
    )
    assert code == 400 and "unable to negotiate protocol" in json.loads(body)["message"], body


def test_bad_stream_requests_answer_status(cluster: Cluster) -> None:
    code, _, body = cluster.rest.request(
        "GET", cluster.pod_path("talker", "exec?command=true&container=main")
    )
    assert code == 400 and json.loads(body)["message"] == "Upgrade request required"
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}  # fmt: skip
    code, _, body = cluster.rest.request(
        "GET", cluster.pod_path("talker", "exec?command=true&container=main"), headers=upgrade
    )
    assert code == 400 and "subprotocol" in json.loads(body)["message"], body
    code, _, body = cluster.rest.request(
        "GET", cluster.pod_path("talker", "exec?container=main"), headers=upgrade
    )
    assert code == 400 and "command" in json.loads(body)["message"], body
    v4 = {**upgrade, "Sec-WebSocket-Protocol": "v4.channel.k8s.io"}
    code, _, body = cluster.rest.request(
        "GET", cluster.pod_path("web", "portforward?ports=99999"), headers=v4
    )
    assert code == 400 and "ports" in json.loads(body)["message"], body
    code, _, body = cluster.rest.request("POST", cluster.pod_path("talker", "log"))
    assert code == 405, body
    out = cluster.run("exec", "idle", "--", "true")
    assert out.returncode == 1 and "is waiting to start: ContainerCreating" in out.stderr, out
    out = cluster.run("exec", "talker", "-c", "nope", "--", "true")
    assert out.returncode == 1 and "container nope is not valid for pod talker" in out.stderr
    assert cluster.rest.request("GET", "/healthz")[0] == 200


def test_grpc_face_refuses_bad_requests(cluster: Cluster) -> None:
    """PodStreams (k8semu logs/exec) on the gRPC port: the same checks, gRPC codes."""
    with grpc.insecure_channel(cluster.rest.grpc_address) as channel:
        stub = podstreams_pb2_grpc.PodStreamsStub(channel)
        cases = [
            (kubelet_pb2.LogsRequest(namespace=cluster.namespace), "pod: Required value"),
            (kubelet_pb2.LogsRequest(namespace=cluster.namespace, pod="ghost"), "not found"),
            (
                kubelet_pb2.LogsRequest(namespace=cluster.namespace, pod="talker"),
                "a container name must be specified",
            ),
        ]
        for request, message in cases:
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Logs(request, timeout=TIMEOUT))
            assert message in (err.value.details() or ""), err.value
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Interact(iter([kubelet_pb2.InteractInput(stdin=b"x")]), timeout=TIMEOUT))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_logs_previous_and_follow_after_restart(cluster: Cluster) -> None:
    poll(lambda: "run-done" in cluster.kubectl("logs", "talker", "-c", "main"), "output")
    out = cluster.run("logs", "talker", "-c", "main", "--previous")
    assert out.returncode == 1 and "previous terminated container" in out.stderr, out
    pid = _pid(cluster, "talker")
    os.kill(pid, signal.SIGKILL)
    poll(lambda: _pid(cluster, "talker") not in (0, pid), "restarted")
    prev = cluster.kubectl("logs", "talker", "-c", "main", "--previous")
    assert prev.splitlines() == LINES
    assert KUBECTL is not None
    follow = subprocess.Popen(
        [KUBECTL, f"--server={cluster.rest.url}", "-n", cluster.namespace, "logs", "-f",
         "talker", "-c", "main"],
        stdout=subprocess.PIPE, text=True,
        env={"KUBECONFIG": "/dev/null", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    try:
        assert follow.stdout is not None
        got = [follow.stdout.readline().strip() for _ in LINES]
        assert got == LINES
    finally:
        follow.kill()
        follow.wait(TIMEOUT)
        if follow.stdout is not None:
            follow.stdout.close()


def _on_node(cluster: Cluster) -> str:
    """kubectl run's --overrides placing the pod on the module's node (no scheduler here)."""
    return json.dumps({"apiVersion": "v1", "spec": {"nodeName": cluster.node}})


@pytest.mark.parametrize("spdy", [False, True], ids=["websocket", "spdy"])
def test_kubectl_run_i_rm_echoes_through_sh(cluster: Cluster, spdy: bool) -> None:
    """`kubectl run -i --rm --restart=Never` (stdin, stdinOnce): the piped input reaches the
    container's sh through attach (WebSocket, or SPDY as older kubectls), the client's EOF
    closes its stdin so sh exits, and kubectl deletes the pod."""
    name = "sh-once-spdy" if spdy else "sh-once"
    args = ("run", name, "-i", "--rm", "--restart=Never", "--image=busybox",
            f"--overrides={_on_node(cluster)}", "--", "sh")  # fmt: skip
    stdin = "echo hello-$((6*7))\necho to-stderr >&2\n"
    done = _kubectl_spdy(cluster, *args, stdin=stdin) if spdy else cluster.run(*args, stdin=stdin)
    assert done.returncode == 0, done
    assert "hello-42" in done.stdout, done
    assert "to-stderr" in done.stderr, done
    gone = lambda: "NotFound" in cluster.run("get", "pod", name).stderr  # noqa: E731
    poll(gone, "the pod deleted by --rm")


def test_kubectl_run_it_runs_the_container_on_a_terminal(cluster: Cluster) -> None:
    """`kubectl run -it` (spec.tty; kubectl's own input piped, so its side is not raw): the
    container's sh is on a pseudo-terminal, which echoes the input as a tty container's log
    does, and the input's end is the terminal's EOF: sh exits with the last code."""
    done = cluster.run(
        "run", "tty-once", "-i", "-t", "--rm", "--restart=Never", "--image=busybox:1.28",
        f"--overrides={_on_node(cluster)}",  # the image's own command: sh
        stdin="test -t 0 && echo on-a-$((1))-tty\n",
    )  # fmt: skip
    assert "on-a-1-tty" in done.stdout, done
    assert "test -t 0" in done.stdout, done  # the terminal's echo
    gone = lambda: "NotFound" in cluster.run("get", "pod", "tty-once").stderr  # noqa: E731
    poll(gone, "the pod deleted by --rm")


@pytest.mark.skipif(shutil.which("script") is None, reason="no script(1) to give kubectl a tty")
def test_kubectl_run_it_from_a_terminal(cluster: Cluster) -> None:
    """`kubectl run -it --rm` from a terminal (script(1) gives kubectl one, kubectl makes it
    raw): what is typed reaches the container's sh on its own terminal, and its output comes
    back."""
    assert KUBECTL is not None
    inner = (
        f"{KUBECTL} --server={cluster.rest.url} -n {cluster.namespace} run -it --rm"
        f" --restart=Never --image=busybox:1.28 --overrides='{_on_node(cluster)}' tty-term"
    )
    out = subprocess.run(
        ["script", "-qec", inner, "/dev/null"],
        input="test -t 0 && echo typed-$((2*21))\nexit\n", capture_output=True, text=True,
        timeout=TIMEOUT,
        env={"KUBECONFIG": "/dev/null", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert "typed-42" in out.stdout, out
    gone = lambda: "NotFound" in cluster.run("get", "pod", "tty-term").stderr  # noqa: E731
    poll(gone, "the pod deleted by --rm")


def test_kubectl_attach_i_and_a_new_pipe_per_restart(cluster: Cluster) -> None:
    """`kubectl attach -i` to a `stdin: true` container: its input goes to the running sh;
    without stdinOnce the pipe outlives a session, and a restarted run gets a pipe of its
    own (the second attach talks to the new sh). A container without stdin refuses -i."""
    doc = _pod("reader", cluster.node, ("main", ["sh"]))
    doc["spec"]["containers"][0]["stdin"] = True
    cluster.kubectl("create", "-f", "-", stdin=json.dumps(doc))
    poll(lambda: _phase(cluster, "reader") == "Running", "reader running")
    first = _pid(cluster, "reader")
    out = cluster.run("attach", "-i", "reader", stdin="echo first-$((2+3))\nexit 4\n")
    assert "first-5" in out.stdout, out
    poll(lambda: _pid(cluster, "reader") not in (0, first), "the container restarted")
    out = cluster.run("attach", "-i", "reader", stdin="echo second-$((3+4))\nexit 0\n")
    assert "second-7" in out.stdout, out
    refused = cluster.run("attach", "-i", "talker", "-c", "main", stdin="x\n")
    assert "was not started with stdin" in refused.stderr, refused
    cluster.kubectl("delete", "pod", "reader", "--wait=false")


def _queued(pid: int) -> int:
    """Bytes waiting in the stdin pipe of process `pid` (FIONREAD on another read end of it)."""
    fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
    finally:
        os.close(fd)


def test_attach_stdin_to_a_container_that_never_reads(cluster: Cluster) -> None:
    """A container that never reads its stdin fills the pipe; the attach session's writes
    wait, the kubelet does not: the client vanishing mid-write ends the session, exec into the
    container still works, and the pod is deleted promptly."""
    doc = _pod("deaf", cluster.node, ("main", ["sleep", "300"]))
    doc["spec"]["containers"][0]["stdin"] = True
    cluster.kubectl("create", "-f", "-", stdin=json.dumps(doc))
    poll(lambda: _phase(cluster, "deaf") == "Running", "deaf running")
    pid = _pid(cluster, "deaf")
    assert KUBECTL is not None
    client = subprocess.Popen(
        [KUBECTL, f"--server={cluster.rest.url}", "-n", cluster.namespace, "attach", "-i", "deaf"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={"KUBECONFIG": "/dev/null", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert client.stdin is not None
    writer = threading.Thread(target=_write_quietly, args=(client.stdin, b"y" * (4 << 20)))
    writer.start()
    try:
        poll(lambda: _queued(pid) >= 4096, "the container's stdin pipe filling")
    finally:
        client.kill()
        client.wait(TIMEOUT)
        writer.join(TIMEOUT)
    assert cluster.kubectl("exec", "deaf", "--", "echo", "alive").strip() == "alive"
    # The run ends with its pipe full (and closed under any write still waiting).
    cluster.kubectl("delete", "pod", "deaf", "--timeout=20s")


def _write_quietly(pipe: Any, data: bytes) -> None:
    """Writes `data` to the client's stdin, which breaks when the client is killed."""
    try:
        with contextlib.suppress(OSError):
            pipe.write(data)
    finally:
        with contextlib.suppress(OSError):
            pipe.close()

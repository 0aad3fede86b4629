"""End to end: a real store, API server and `k8semu kubelet` (process runtime); pods are
created with spec.nodeName set (no scheduler)."""

from __future__ import annotations

import asyncio
import os
import sys
import urllib.request
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from k8semu import transport
from k8semu.client import Client, NotFound
from k8semu.kubelet.containerlog import read_plain
from k8semu.kubelet.node import ENDPOINT_ANNOTATION
from k8semu.pb.api.v1 import coordination_pb2, core_pb2
from k8semu.pb.kubelet.v1 import kubelet_pb2, kubelet_pb2_grpc
from tests.kubelet.conftest import KubeletProcess, eventually
from tests.support.apiserver import APIServerProcess

pytestmark = pytest.mark.slow

PY = sys.executable


def make_pod(namespace: str, name: str, node: str, command: list[str], **spec: Any) -> core_pb2.Pod:
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name = name
    pod.metadata.namespace = namespace
    pod.spec.node_name = node
    c = pod.spec.containers.add(name="main", image="k8semu-test/python", command=command)
    for key, value in spec.items():
        if key == "container":
            value(c)
        elif key == "grace":
            pod.spec.termination_grace_period_seconds = value
        else:
            setattr(pod.spec, key, value)
    return pod


def status_of(pod: core_pb2.Pod, container: str = "main") -> core_pb2.ContainerStatus | None:
    for s in pod.status.container_statuses:
        if s.name == container:
            return s
    return None


def running_pid(pod: core_pb2.Pod) -> int:
    s = status_of(pod)
    if s is None or not s.state.HasField("running"):
        return 0
    return int(s.container_id.removeprefix("process://"))


def is_ready(pod: core_pb2.Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


async def get_pod(client: Client, ns: str, name: str) -> core_pb2.Pod:
    return await client.get(core_pb2.Pod, name, namespace=ns)


HTTP_SERVER = [PY, "-m", "http.server", "--bind", "$(POD_IP)", "8080"]


async def test_node_registers_with_lease_and_ready_condition(
    client: Client, kubelets: Callable[..., KubeletProcess]
) -> None:
    k = kubelets(
        "--node-labels",
        "zone=a,tier=web",
        "--register-with-taints",
        "dedicated=x:NoSchedule",
        "--capacity",
        "cpu=8,memory=16Gi,pods=50",
        "--reserved",
        "cpu=500m,memory=1Gi",
    )
    node = await eventually(lambda: client.get(core_pb2.Node, k.name), what="node registered")
    assert node.metadata.labels["kubernetes.io/hostname"] == k.name
    assert node.metadata.labels["kubernetes.io/os"] == "linux"
    assert node.metadata.labels["zone"] == "a"
    assert [(t.key, t.value, t.effect) for t in node.spec.taints] == [
        ("dedicated", "x", "NoSchedule")
    ]
    assert node.status.capacity["cpu"] == "8"
    assert node.status.allocatable["cpu"] == "7500m"
    assert node.status.allocatable["memory"] == "15Gi"
    assert node.status.addresses[0].type == "InternalIP"
    assert node.status.node_info.kubelet_version
    assert node.metadata.annotations[ENDPOINT_ANNOTATION] == f"127.0.0.1:{k.port}"
    conds = {c.type: c for c in node.status.conditions}
    assert conds["Ready"].status == "True" and conds["Ready"].reason == "KubeletReady"
    for t in ("MemoryPressure", "DiskPressure", "PIDPressure"):
        assert conds[t].status == "False"
    lease = await eventually(
        lambda: client.get(coordination_pb2.Lease, k.name, namespace="kube-node-lease"),
        what="lease",
    )
    first = lease.spec.renew_time.ToNanoseconds()

    async def renewed() -> bool:
        again = await client.get(coordination_pb2.Lease, k.name, namespace="kube-node-lease")
        return again.spec.renew_time.ToNanoseconds() > first

    await eventually(renewed, what="lease renewed")
    beat = conds["Ready"].last_heartbeat_time.ToSeconds()

    async def heartbeat() -> bool:
        n = await client.get(core_pb2.Node, k.name)
        c = {c.type: c for c in n.status.conditions}["Ready"]
        return c.last_heartbeat_time.ToSeconds() > beat and (
            c.last_transition_time == conds["Ready"].last_transition_time
        )

    await eventually(heartbeat, what="status heartbeat, transition time unchanged")
    # A deleted Node is registered again.
    await client.delete(core_pb2.Node, k.name)

    async def recreated() -> bool:
        n = await client.get(core_pb2.Node, k.name)
        return n.metadata.uid != node.metadata.uid

    await eventually(recreated, what="node registered again after deletion")


async def test_http_pod_runs_ready_and_serves_on_pod_ip(
    client: Client, namespace: str, kubelets: Callable[..., KubeletProcess]
) -> None:
    k = kubelets()
    await eventually(lambda: client.get(core_pb2.Node, k.name), what="node")

    def probe(c: core_pb2.Container) -> None:
        c.ports.add(container_port=8080)
        c.readiness_probe.http_get.path = "/"
        c.readiness_probe.http_get.port.int_val = 8080
        c.readiness_probe.period_seconds = 1

    await client.create(make_pod(namespace, "web", k.name, HTTP_SERVER, container=probe))

    async def ready() -> core_pb2.Pod | None:
        pod = await get_pod(client, namespace, "web")
        return pod if pod.status.phase == "Running" and is_ready(pod) else None

    pod = await eventually(ready, what="pod Running and Ready")
    ip = pod.status.pod_ip
    assert ip.startswith("127.244.77.") and ip not in ("127.244.77.0", "127.244.77.1")
    assert pod.status.host_ip == "127.0.0.1"
    assert [p.ip for p in pod.status.pod_ips] == [ip]
    types = {c.type: c.status for c in pod.status.conditions}
    assert types == {"Initialized": "True", "Ready": "True", "ContainersReady": "True",
                     "PodScheduled": "True"}  # fmt: skip
    s = status_of(pod)
    assert s is not None and s.ready and s.started and s.restart_count == 0
    assert s.container_id.startswith("process://")

    def fetch() -> int:
        with urllib.request.urlopen(f"http://{ip}:8080/", timeout=5) as resp:
            return int(resp.status)

    assert await asyncio.to_thread(fetch) == 200


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


async def test_killed_container_restarts_and_failing_command_crash_loops(
    client: Client, namespace: str, kubelets: Callable[..., KubeletProcess]
) -> None:
    k = kubelets()
    await client.create(make_pod(namespace, "sleeper", k.name, ["sh", "-c", "exec sleep 300"]))
    await client.create(make_pod(namespace, "crasher", k.name, ["sh", "-c", "echo boom; exit 3"]))
    pod = await eventually(
        lambda: _with(get_pod(client, namespace, "sleeper"), running_pid), what="running"
    )
    pid = running_pid(pod)
    before = status_of(pod).restart_count  # type: ignore[union-attr]
    os.kill(pid, 9)

    async def restarted() -> core_pb2.Pod | None:
        p = await get_pod(client, namespace, "sleeper")
        s = status_of(p)
        ok = s is not None and s.restart_count == before + 1 and running_pid(p) not in (0, pid)
        return p if ok else None

    pod = await eventually(restarted, what="restarted: restartCount + 1")
    assert before == 0, "the first run started at once"
    s = status_of(pod)
    assert s is not None
    assert s.last_state.terminated.exit_code == 137 and s.last_state.terminated.signal == 9

    async def crash_looping() -> core_pb2.ContainerStatus | None:
        s = status_of(await get_pod(client, namespace, "crasher"))
        if s is not None and s.state.waiting.reason == "CrashLoopBackOff" and s.restart_count >= 1:
            return s
        return None

    s = await eventually(crash_looping, what="CrashLoopBackOff")
    assert s.last_state.terminated.exit_code == 3
    assert s.last_state.terminated.reason == "Error"
    assert "back-off" in s.state.waiting.message
    crasher = await get_pod(client, namespace, "crasher")
    assert crasher.status.phase == "Running"  # restarting under restartPolicy Always
    assert not is_ready(crasher)


async def test_liveness_failure_restarts_and_unknown_image_without_command(
    client: Client, namespace: str, kubelets: Callable[..., KubeletProcess]
) -> None:
    k = kubelets()

    def live(c: core_pb2.Container) -> None:
        # Healthy while the file exists; the container removes it after a moment.
        c.liveness_probe.exec.command.extend(["cat", "healthy"])
        c.liveness_probe.period_seconds = 1
        c.liveness_probe.failure_threshold = 2

    cmd = ["sh", "-c", "touch healthy; sleep 1; rm healthy; exec sleep 300"]
    await client.create(make_pod(namespace, "live", k.name, cmd, container=live))
    nocmd = make_pod(namespace, "nocmd", k.name, [])
    nocmd.spec.containers[0].image = "example.com/not-built-in:1"
    await client.create(nocmd)

    async def restarted() -> core_pb2.ContainerStatus | None:
        s = status_of(await get_pod(client, namespace, "live"))
        return s if s is not None and s.restart_count >= 1 else None

    s = await eventually(restarted, what="liveness restart")
    assert s.last_state.terminated.exit_code in (143, 137)

    async def pull_error() -> core_pb2.ContainerStatus | None:
        s = status_of(await get_pod(client, namespace, "nocmd"))
        ok = s is not None and s.state.waiting.reason in ("ErrImagePull", "ImagePullBackOff")
        return s if ok else None

    s = await eventually(pull_error, what="ErrImagePull")
    assert "not a built-in image and the container has no command" in s.state.waiting.message


async def test_post_start_hook_runs_and_a_failing_one_restarts_the_container(
    client: Client, namespace: str, kubelets: Callable[..., KubeletProcess]
) -> None:
    k = kubelets()

    def hook(command: str) -> Callable[[core_pb2.Container], None]:
        def add(c: core_pb2.Container) -> None:
            c.lifecycle.post_start.exec.command.extend(["sh", "-c", command])

        return add

    good = make_pod(namespace, "hooked", k.name, ["sleep", "300"], container=hook("echo hi > hi"))
    bad = make_pod(namespace, "badhook", k.name, ["sleep", "300"], container=hook("exit 3"))
    await client.create(good)
    await client.create(bad)
    hooked = await eventually(
        lambda: _with(get_pod(client, namespace, "hooked"), running_pid), what="running"
    )
    hi = k.root / "pods" / hooked.metadata.uid / "hi"
    await eventually(hi.exists, what="the postStart hook ran in the container")
    assert hi.read_text() == "hi\n"

    async def restarted() -> core_pb2.ContainerStatus | None:
        s = status_of(await get_pod(client, namespace, "badhook"))
        return s if s is not None and s.restart_count >= 1 else None

    s = await eventually(restarted, what="a failed postStart kills the container")
    assert s.last_state.terminated.exit_code in (143, 137)
    events = await client.list(core_pb2.Event, namespace=namespace)
    failed = [e for e in events.items if e.reason == "FailedPostStartHook"]
    assert failed and failed[0].involved_object.name == "badhook", failed
    assert failed[0].message.endswith("main: command exited with 3"), failed[0].message
    still = status_of(await get_pod(client, namespace, "hooked"))
    assert still is not None and still.restart_count == 0


async def test_deletion_sigterm_then_sigkill_and_pod_removed(
    client: Client, namespace: str, kubelets: Callable[..., KubeletProcess]
) -> None:
    k = kubelets()
    # The shell ignores SIGTERM (records that it got it, then that it runs on) so SIGKILL must
    # follow after the grace. Its record is kept outside the pod's directory, which goes with
    # the pod: a test that polled for it there after the grace (a busy host) found it gone.
    # The directory above the kubelet's root is one its pod users may traverse.
    signals = k.root.parent / f"signals-{k.name}"
    signals.mkdir()
    signals.chmod(0o1777)
    record = signals / "stubborn.txt"
    script = (
        f"trap 'echo got-term >> {record}; termed=1' TERM;"
        f' while true; do sleep 0.1; if [ -n "$termed" ]; then echo alive >> {record}; fi; done'
    )
    await client.create(make_pod(namespace, "stubborn", k.name, ["sh", "-c", script], grace=3))
    await client.create(make_pod(namespace, "polite", k.name, ["sleep", "300"], grace=30))
    stubborn = await eventually(
        lambda: _with(get_pod(client, namespace, "stubborn"), running_pid), what="running"
    )
    polite = await eventually(
        lambda: _with(get_pod(client, namespace, "polite"), running_pid), what="running"
    )
    spid, ppid = running_pid(stubborn), running_pid(polite)
    await client.delete(core_pb2.Pod, "stubborn", namespace=namespace)
    await client.delete(core_pb2.Pod, "polite", namespace=namespace)

    async def gone(name: str) -> bool:
        try:
            await get_pod(client, namespace, name)
        except NotFound:
            return True
        return False

    await eventually(lambda: gone("polite"), what="polite pod deleted (SIGTERM suffices)")
    assert not pid_alive(ppid)
    await eventually(lambda: gone("stubborn"), what="stubborn pod deleted")
    assert not pid_alive(spid), "SIGKILL after the grace period"
    said = record.read_text().splitlines()
    assert said[:1] == ["got-term"], said  # SIGTERM to the process group first
    assert "alive" in said[1:], said  # still running: it ignores SIGTERM, until the SIGKILL
    assert not (k.root / "pods" / stubborn.metadata.uid).exists()


async def _with(pod_coro: Any, check: Callable[[core_pb2.Pod], Any]) -> core_pb2.Pod | None:
    pod = await pod_coro
    return pod if check(pod) else None


async def test_kubelet_sigkill_restart_adopts_containers(
    client: Client, namespace: str, kubelets: Callable[..., KubeletProcess]
) -> None:
    k = kubelets()

    def ready_probe(c: core_pb2.Container) -> None:
        c.readiness_probe.exec.command.append("true")
        c.readiness_probe.period_seconds = 1

    await client.create(
        make_pod(namespace, "keep", k.name, ["sleep", "300"], container=ready_probe)
    )
    await client.create(make_pod(namespace, "orphan", k.name, ["sleep", "300"]))
    await client.create(make_pod(namespace, "chatty", k.name, [sys.executable, "-uc", CHATTY]))
    keep = await eventually(
        lambda: _with(get_pod(client, namespace, "keep"), running_pid), what="running"
    )
    orphan = await eventually(
        lambda: _with(get_pod(client, namespace, "orphan"), running_pid), what="running"
    )
    pid, orphan_pid = running_pid(keep), running_pid(orphan)
    await eventually(lambda: _log_of(k, namespace, "chatty"), what="chatty logs")
    k.kill()  # SIGKILL: the containers stay, in their own sessions
    assert pid_alive(pid) and pid_alive(orphan_pid)
    # While the kubelet is away, the orphan's pod goes away for good.
    await client.delete(core_pb2.Pod, "orphan", namespace=namespace, grace_period_seconds=0)
    k.start()

    await eventually(lambda: not pid_alive(orphan_pid), what="orphan container killed")
    # The directory goes right after the kill (removed in a thread): poll, do not race it.
    orphan_dir = k.root / "pods" / orphan.metadata.uid
    await eventually(lambda: not orphan_dir.exists(), what="orphan pod directory removed")
    # Adopted, not duplicated: the same process, one per container, restart count unchanged.
    pod = await eventually(
        lambda: _with(get_pod(client, namespace, "keep"), lambda p: running_pid(p) == pid),
        what="still the same pid",
    )
    # Its readiness probe runs again: Ready after the restart.
    pod = await eventually(
        lambda: _with(get_pod(client, namespace, "keep"), is_ready), what="Ready again"
    )
    s = status_of(pod)
    assert s is not None and s.restart_count == 0
    assert pid_alive(pid)
    assert _children_of_session(pid) == [pid]
    assert "container adopted" in k.output()
    # exec in an adopted container has the container's environment again
    async with transport.channel(f"127.0.0.1:{k.port}") as channel:
        stub = kubelet_pb2_grpc.KubeletStub(channel)
        req = kubelet_pb2.ExecRequest(
            namespace=namespace, pod="keep", command=["sh", "-c", "echo $POD_NAME $POD_IP"]
        )
        resp = await stub.Exec(req, timeout=30)
    assert resp.exit_code == 0
    assert resp.stdout.decode().split() == ["keep", pod.status.pod_ip]
    # The chatty container wrote on while no kubelet read (its output waited in its pipe):
    # its log goes on with nothing lost or doubled.
    before = len(await _log_of(k, namespace, "chatty"))

    async def grown() -> list[str]:
        got = await _log_of(k, namespace, "chatty")
        return got if len(got) > before + 5 else []

    lines = await eventually(grown, what="the log goes on")
    assert lines == [str(i) for i in range(len(lines))]


CHATTY = "import itertools, time\nfor i in itertools.count(): print(i); time.sleep(0.05)"


async def _log_of(k: KubeletProcess, namespace: str, pod: str) -> list[str]:
    """The pod's log lines from the kubelet (whole lines only; none while it cannot answer)."""
    request = kubelet_pb2.LogsRequest(namespace=namespace, pod=pod)
    data = b""
    async with transport.channel(f"127.0.0.1:{k.port}") as channel:
        stub = kubelet_pb2_grpc.KubeletStub(channel)
        try:
            async for chunk in stub.Logs(request, timeout=30):
                data += chunk.data
        except grpc.aio.AioRpcError:
            return []
    return data.decode().split("\n")[:-1]


def _children_of_session(sid: int) -> list[int]:
    """Pids whose session id is `sid`."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            out.append(int(entry))
    return out


async def test_init_containers_volumes_env_and_terminal_phases(
    client: Client, namespace: str, kubelets: Callable[..., KubeletProcess]
) -> None:
    cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap", data={"greeting": "hi"})
    cm.metadata.name, cm.metadata.namespace = "settings", namespace
    await client.create(cm)
    svc = core_pb2.Service(api_version="v1", kind="Service")
    svc.metadata.name, svc.metadata.namespace = "backend-db", namespace
    svc.spec.ports.add(port=5432)
    svc.spec.selector["app"] = "db"
    svc = await client.create(svc)
    k = kubelets()
    # Init containers run in order, each to completion, before the main container.
    pod = make_pod(
        namespace, "ordered", k.name,
        ["sh", "-c", "cat order.txt; cat etc/app/greeting; echo; env; exec sleep 300"],
    )  # fmt: skip
    pod.spec.restart_policy = "Never"
    for i in (1, 2):
        pod.spec.init_containers.add(
            name=f"init-{i}", image="k8semu-test/sh", command=["sh", "-c", f"echo {i} >> order.txt"]
        )
    vol = pod.spec.volumes.add(name="cfg")
    vol.config_map.name = "settings"
    pod.spec.containers[0].volume_mounts.add(name="cfg", mount_path="/etc/app")
    ref = pod.spec.containers[0].env.add(name="GREETING").value_from.config_map_key_ref
    ref.name, ref.key = "settings", "greeting"
    await client.create(pod)
    done = make_pod(namespace, "done", k.name, ["sh", "-c", "exit 0"], restart_policy="Never")
    failed = make_pod(namespace, "failed", k.name, ["sh", "-c", "exit 4"], restart_policy="Never")
    retried = make_pod(
        namespace, "retried", k.name, ["sh", "-c", "test -e once || { touch once; exit 1; }"],
        restart_policy="OnFailure",
    )  # fmt: skip
    for p in (done, failed, retried):
        await client.create(p)

    async def phase(name: str, want: str) -> core_pb2.Pod | None:
        p = await get_pod(client, namespace, name)
        return p if p.status.phase == want else None

    running = await eventually(lambda: phase("ordered", "Running"), what="ordered Running")
    inits = running.status.init_container_statuses
    assert [s.state.terminated.exit_code for s in inits] == [0, 0]
    assert all(s.state.terminated.reason == "Completed" for s in inits)
    log_file = k.root / "pods" / running.metadata.uid / "main" / "0.log"

    def output() -> str:
        text = read_plain(log_file).decode() if log_file.exists() else ""
        return text if "BACKEND_DB_SERVICE_HOST" in text else ""

    text = await eventually(output, what="main container output")
    lines = text.splitlines()
    assert lines[:3] == ["1", "2", "hi"]
    env = dict(line.split("=", 1) for line in lines[3:] if "=" in line)
    assert env["GREETING"] == "hi"
    assert env["BACKEND_DB_SERVICE_HOST"] == svc.spec.cluster_ip
    assert env["BACKEND_DB_SERVICE_PORT"] == "5432"
    assert env["POD_IP"] == running.status.pod_ip and env["NODE_NAME"] == k.name

    p = await eventually(lambda: phase("done", "Succeeded"), what="Succeeded")
    assert status_of(p).state.terminated.reason == "Completed"  # type: ignore[union-attr]
    assert not is_ready(p)
    p = await eventually(lambda: phase("failed", "Failed"), what="Failed")
    assert status_of(p).state.terminated.exit_code == 4  # type: ignore[union-attr]
    p = await eventually(lambda: phase("retried", "Succeeded"), what="OnFailure retried once")
    s = status_of(p)
    assert s is not None and s.restart_count == 1 and s.state.terminated.exit_code == 0
    assert s.last_state.terminated.exit_code == 1


async def test_api_server_restart_kubelet_carries_on(
    client: Client,
    namespace: str,
    apiserver: APIServerProcess,
    kubelets: Callable[..., KubeletProcess],
) -> None:
    k = kubelets()
    await client.create(make_pod(namespace, "steady", k.name, ["sleep", "300"]))
    pod = await eventually(
        lambda: _with(get_pod(client, namespace, "steady"), running_pid), what="running"
    )
    pid = running_pid(pod)
    await eventually(
        lambda: client.get(coordination_pb2.Lease, k.name, namespace="kube-node-lease"),
        what="lease",
    )
    apiserver.kill()
    os.kill(pid, 9)  # the restart happens while the API server is away ...
    apiserver.start()
    apiserver.wait_serving()

    async def restarted() -> bool:  # ... and is reported once it is back
        s = status_of(await get_pod(client, namespace, "steady"))
        return s is not None and s.restart_count == 1 and s.state.HasField("running")

    await eventually(restarted, what="restart reported after the API came back")
    lease = await client.get(coordination_pb2.Lease, k.name, namespace="kube-node-lease")
    before = lease.spec.renew_time.ToNanoseconds()

    async def renewing() -> bool:
        again = await client.get(coordination_pb2.Lease, k.name, namespace="kube-node-lease")
        return again.spec.renew_time.ToNanoseconds() > before

    await eventually(renewing, what="lease renewals resumed")

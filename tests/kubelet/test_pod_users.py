"""Each pod its own unprivileged user (k8semu/kubelet/podusers.py), with a real kubelet: two
pods get different non-root uids; one cannot read the other's secret volume (EACCES) nor
signal the kubelet or the other pod's processes (EPERM); secret files are 0400 and
configMap files 0644, owned by their pod's user; exec runs as the pod's user; a port below
1024 binds (CAP_NET_BIND_SERVICE kept). Plus the uid claims and ACL grants, without a kubelet."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from k8semu.client import Client
from k8semu.kubelet import containerlog, podusers
from k8semu.kubelet.podusers import PodUser, PodUsers
from k8semu.pb.api.v1 import core_pb2
from tests.kubelet.conftest import KubeletProcess, eventually
from tests.kubelet.test_e2e_process import get_pod, make_pod, running_pid
from tests.kubelet.test_logs_exec import k8semu
from tests.support.apiserver import APIServerProcess

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="pod users need a root kubelet")


def test_claims_are_unique_reused_and_released(tmp_path: Path) -> None:
    users = PodUsers(300000, 300002, "setpriv", claims_dir=tmp_path / "claims")
    a_dir, b_dir, c_dir = (tmp_path / n for n in "abc")
    for d in (a_dir, b_dir, c_dir):
        d.mkdir()
    a = users.claim(a_dir, "pod-a")
    b = users.claim(b_dir, "pod-b")
    c = users.claim(c_dir, "pod-c")
    assert len({a.uid, b.uid, c.uid}) == 3 and a.groups == (299999,)
    assert users.claim(a_dir, "pod-a", prefer=a.uid) == a  # the same owner: the same uid
    with pytest.raises(OSError, match="no free uid"):
        users.claim(tmp_path, "pod-d")
    users.release(b.uid, b_dir)
    d_dir = tmp_path / "d"
    d_dir.mkdir()
    assert users.claim(d_dir, "pod-d").uid == b.uid
    c_dir.rmdir()  # a pod directory gone without a release (a crash): its uid is free again
    assert users.claim(tmp_path / "a", "pod-a2").uid in (a.uid, c.uid)


def test_range_flag() -> None:
    assert podusers.parse_range("200000-299999") == (200000, 299999)
    assert podusers.parse_range("") is None
    for bad in ("1-5", "5", "9-3", "a-b"):
        with pytest.raises(ValueError, match="--pod-user-range"):
            podusers.parse_range(bad)


def test_wrap_drops_to_the_user_with_one_capability() -> None:
    argv = PodUser(200001, 200001, (199999,)).wrap(["id", "-u"], "/usr/bin/setpriv")
    assert argv[:5] == ["/usr/bin/setpriv", "--reuid", "200001", "--regid", "200001"]
    assert argv[argv.index("--ambient-caps") + 1] == "+net_bind_service"
    assert argv[-3:] == ["--", "id", "-u"]


@needs_root
def test_acl_grants_traverse_only(tmp_path: Path) -> None:
    top = tmp_path / "acl"
    (top / "inner").mkdir(parents=True)
    top.chmod(0o700)
    (top / "inner").chmod(0o755)
    (top / "inner" / "f").write_text("hi")
    users = PodUsers(300000, 300010, "setpriv")
    as_pod = ["setpriv", "--reuid", "300001", "--regid", "300001", "--groups", "299999", "--"]
    before = subprocess.run([*as_pod, "cat", str(top / "inner" / "f")], capture_output=True)
    assert before.returncode != 0
    users.grant_traverse([top / "inner"])
    assert stat.S_IMODE(top.stat().st_mode) & 0o007 == 0  # nothing for others
    ok = subprocess.run([*as_pod, "cat", str(top / "inner" / "f")], capture_output=True)
    assert ok.stdout == b"hi", ok.stderr
    listing = subprocess.run([*as_pod, "ls", str(top)], capture_output=True)
    assert listing.returncode != 0  # traverse, not read
    others = ["setpriv", "--reuid", "300001", "--regid", "300001", "--clear-groups", "--"]
    assert subprocess.run([*others, "cat", str(top / "inner" / "f")]).returncode != 0
    top.chmod(0o700)  # a chmod rewrites the ACL's mask: the grant is masked out, then again
    assert subprocess.run([*as_pod, "cat", str(top / "inner" / "f")]).returncode != 0
    users.grant_traverse([top / "inner"])
    again = subprocess.run([*as_pod, "cat", str(top / "inner" / "f")], capture_output=True)
    assert again.stdout == b"hi", again.stderr


def _pod_with_volumes(namespace: str, name: str, node: str, script: str) -> core_pb2.Pod:
    pod = make_pod(namespace, name, node, ["sh", "-c", script])
    sec = pod.spec.volumes.add(name="creds")
    sec.secret.secret_name = f"{name}-creds"
    cm = pod.spec.volumes.add(name="conf")
    cm.config_map.name = f"{name}-conf"
    pod.spec.containers[0].volume_mounts.add(name="creds", mount_path="/etc/creds")
    pod.spec.containers[0].volume_mounts.add(name="conf", mount_path="/etc/conf")
    return pod


async def _with_objects(client: Client, namespace: str, name: str) -> None:
    secret = core_pb2.Secret(api_version="v1", kind="Secret")
    secret.metadata.name, secret.metadata.namespace = f"{name}-creds", namespace
    secret.data["password"] = f"{name}-password".encode()
    await client.create(secret)
    cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap")
    cm.metadata.name, cm.metadata.namespace = f"{name}-conf", namespace
    cm.data["setting"] = "on"
    await client.create(cm)


async def _running(client: Client, namespace: str, name: str) -> core_pb2.Pod | None:
    pod = await get_pod(client, namespace, name)
    return pod if running_pid(pod) > 0 else None


def _log(k: KubeletProcess, pod: core_pb2.Pod) -> str:
    path = k.root / "pods" / pod.metadata.uid / "main" / "0.log"
    return containerlog.read_plain(path).decode() if path.exists() else ""


@needs_root
async def test_pods_are_isolated_from_each_other_and_the_kubelet(
    client: Client,
    namespace: str,
    apiserver: APIServerProcess,
    kubelets: Callable[..., KubeletProcess],
) -> None:
    k = kubelets()
    await _with_objects(client, namespace, "bee")
    await _with_objects(client, namespace, "ant")
    bee = await client.create(_pod_with_volumes(namespace, "bee", k.name, "exec sleep 300"))
    bee = await eventually(lambda: _running(client, namespace, "bee"), what="bee running")
    bee_dir = k.root / "pods" / bee.metadata.uid
    secret_file = bee_dir / "etc" / "creds" / "password"
    st = secret_file.stat()
    bee_uid = st.st_uid
    assert stat.S_IMODE(st.st_mode) == 0o400 and bee_uid >= 200000
    conf = (bee_dir / "etc" / "conf" / "setting").stat()
    assert stat.S_IMODE(conf.st_mode) == 0o644 and conf.st_uid == bee_uid
    # Once the cgroup join (as root) has exec'd setpriv and setpriv the program:
    proc = Path(f"/proc/{running_pid(bee)}")
    await eventually(lambda: proc.stat().st_uid == bee_uid, what="bee runs as its user")
    # The other pod tries the first one's secret and signals, and binds a low port.
    script = (
        f"id -u; cat {secret_file} 2>&1; cat {bee_dir}/pod.json 2>&1;"
        f" kill -0 {k.pid} 2>&1 || echo kubelet-refused;"
        f" kill -0 {running_pid(bee)} 2>&1 || echo bee-refused;"
        " cat etc/creds/password; echo;"
        " python3 -c \"import socket; socket.socket().bind(('127.255.7.9', 443))\""
        " && echo low-port-bound; echo checks-done; exec sleep 300"
    )
    await client.create(_pod_with_volumes(namespace, "ant", k.name, script))
    ant = await eventually(lambda: _running(client, namespace, "ant"), what="ant running")
    out = await eventually(lambda: "checks-done" in _log(k, ant) and _log(k, ant), what="ant's log")
    lines = out.splitlines()
    ant_uid = int(lines[0])
    assert ant_uid not in (0, bee_uid) and ant_uid >= 200000, out
    assert out.count("Permission denied") >= 2, out  # bee's secret and bee's directory
    assert "bee-password" not in out and "ant-password" in out, out
    assert "kubelet-refused" in out and "bee-refused" in out, out
    assert "Operation not permitted" in out and "low-port-bound" in out, out
    # exec (through the API server) runs as the pod's user too.
    done = await asyncio.to_thread(k8semu, apiserver, "exec", "ant", "-n", namespace, "--",
                                   "id", "-u")  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == str(ant_uid), done
    # The kubelet's own directories of a pod are closed to it.
    assert stat.S_IMODE((bee_dir / "main").stat().st_mode) == 0o700
    assert stat.S_IMODE(bee_dir.stat().st_mode) == 0o1770 and bee_dir.stat().st_uid == 0


def _status_reason(pod: core_pb2.Pod) -> str:
    for s in pod.status.container_statuses:
        if s.state.HasField("waiting"):
            return s.state.waiting.reason + ": " + s.state.waiting.message
    return ""


@needs_root
async def test_security_context_is_honoured(
    client: Client, namespace: str, kubelets: Callable[..., KubeletProcess]
) -> None:
    k = kubelets()
    await _with_objects(client, namespace, "owl")
    owl = _pod_with_volumes(
        namespace, "owl", k.name, "id -u; id -g; id -G; echo done; exec sleep 300"
    )
    owl.spec.security_context.run_as_user = 4321
    owl.spec.security_context.fs_group = 5555
    owl.spec.containers[0].security_context.run_as_group = 4322
    await client.create(owl)
    owl = await eventually(lambda: _running(client, namespace, "owl"), what="owl running")
    out = await eventually(lambda: "done" in _log(k, owl) and _log(k, owl), what="owl's log")
    uid, gid, groups = out.splitlines()[:3]
    assert (uid, gid) == ("4321", "4322") and "5555" in groups.split(), out
    secret = (k.root / "pods" / owl.metadata.uid / "etc" / "creds" / "password").stat()
    assert (secret.st_uid, secret.st_gid, stat.S_IMODE(secret.st_mode)) == (4321, 5555, 0o440)
    # Root only when asked for; runAsNonRoot refuses it.
    root = make_pod(namespace, "root", k.name, ["sh", "-c", "id -u; echo done; exec sleep 300"])
    root.spec.security_context.run_as_user = 0
    await client.create(root)
    root = await eventually(lambda: _running(client, namespace, "root"), what="root running")
    assert (await eventually(lambda: "done" in _log(k, root) and _log(k, root))).startswith("0\n")
    refused = make_pod(namespace, "refused", k.name, ["sleep", "300"])
    refused.spec.security_context.run_as_user = 0
    refused.spec.containers[0].security_context.run_as_non_root = True
    await client.create(refused)

    async def reason() -> str:
        return _status_reason(await get_pod(client, namespace, "refused"))

    why = await eventually(reason, what="refused pod waiting")
    assert why.startswith("CreateContainerConfigError") and "runAsNonRoot" in why, why


@needs_root
def test_a_volume_is_handed_over_from_another_pod_user_only(tmp_path: Path) -> None:
    data = tmp_path / "pv"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "f").write_text("x")
    for p in (data, data / "sub", data / "sub" / "f"):
        os.chown(p, 200005, 200005)
    new = PodUser(200006, 200006)
    podusers.hand_over(data, new, (200000, 299999))  # a StatefulSet's pod made again
    assert {p.stat().st_uid for p in (data, data / "sub", data / "sub" / "f")} == {200006}
    host = tmp_path / "host"
    host.mkdir()
    podusers.hand_over(host, new, (200000, 299999))  # the host's own: left alone
    assert host.stat().st_uid == 0
    made = tmp_path / "made" / "deep"
    podusers.make_dirs(made, new)
    assert made.stat().st_uid == 200006 and made.parent.stat().st_uid == 200006


@needs_root
async def test_a_running_pod_keeps_its_files_after_a_chmod_above(
    client: Client,
    namespace: str,
    apiserver: APIServerProcess,
    kubelets: Callable[..., KubeletProcess],
    tmp_path: Path,
) -> None:
    """A chmod of a directory above the pods (what pytest does to /tmp/pytest-of-root at a
    session's start) rewrites its ACL mask and masks the traverse grant out; the kubelet's
    housekeeping renews it, so the running pod reads its own file again without any pod
    starting (which used to be the only renewal)."""
    k = kubelets()
    await _with_objects(client, namespace, "elk")
    await client.create(_pod_with_volumes(namespace, "elk", k.name, "exec sleep 300"))
    await eventually(lambda: _running(client, namespace, "elk"), what="elk running")

    async def reads() -> bool:
        done = await asyncio.to_thread(
            k8semu, apiserver, "exec", "elk", "-n", namespace, "--", "cat", "etc/conf/setting"
        )
        return done.returncode == 0 and done.stdout == "on"

    def grants() -> int:
        """How often the kubelet granted traverse on tmp_path (logged only when it changes)."""
        return sum(
            "pod users may traverse" in line and f"path={tmp_path}" in line.split()
            for line in k.output().splitlines()
        )

    await eventually(reads, what="elk reads its file")
    before = grants()
    assert before, k.output()  # tmp_path (0700) is one of the granted directories
    tmp_path.chmod(0o700)
    await eventually(lambda: grants() > before, what="the kubelet renews the grant")
    await eventually(reads, what="elk reads its file again")

"""terminationMessagePath and terminationMessagePolicy: what a container leaves in its
termination file (or, under FallbackToLogsOnError, its log's end) becomes
state.terminated.message; the rules of `k8semu.kubelet.termination` on their own, and end
to end with the process runtime."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from k8semu.apiserver import registry
from k8semu.apiserver.allocation import DEFAULT_RANGES
from k8semu.apiserver.errors import Invalid
from k8semu.client import Client
from k8semu.kubelet import termination
from k8semu.kubelet.containerlog import encode, stamp
from k8semu.kubelet.runtime import ExitInfo
from k8semu.pb.api.v1 import core_pb2
from tests.kubelet.conftest import KubeletProcess, eventually
from tests.kubelet.test_e2e_process import get_pod, make_pod, status_of

PODS = registry.build(DEFAULT_RANGES).resolve("pods")


def container(policy: str = "File") -> core_pb2.Container:
    return core_pb2.Container(name="c", termination_message_policy=policy)


def test_the_file_then_the_log_under_fallback(tmp_path: Path) -> None:
    message, log = tmp_path / "msg", tmp_path / "0.log"
    log.write_bytes(b"".join(encode(b"stdout", b"line %d\n" % i, stamp(i)) for i in range(200)))
    failed = ExitInfo(exit_code=2, finished_at=0.0, message="runtime's")
    assert termination.with_message(failed, container(), message, log).message == "runtime's"
    tail = termination.with_message(failed, container("FallbackToLogsOnError"), message, log)
    assert tail.message.splitlines() == [f"line {i}" for i in range(120, 200)]
    ok = ExitInfo(exit_code=0, finished_at=0.0)
    assert termination.with_message(ok, container("FallbackToLogsOnError"), message, log) == ok
    message.write_bytes(b"x" * 10_000)
    assert len(termination.with_message(failed, container(), message, log).message) == 4096


def test_defaults_and_a_bad_policy() -> None:
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    pod.metadata.name = "p"
    pod.spec.containers.add(name="c", image="busybox")
    PODS.prepare_for_create(pod, namespace="default", uid="")
    c = pod.spec.containers[0]
    assert (c.termination_message_path, c.termination_message_policy) == (
        "/dev/termination-log",
        "File",
    )
    c.termination_message_policy = "Always"
    with pytest.raises(Invalid, match='terminationMessagePolicy: Unsupported value: "Always"'):
        PODS.validate_create(pod)


@pytest.mark.slow
async def test_messages_reach_the_container_status(
    client: Client, namespace: str, kubelets: Callable[..., KubeletProcess]
) -> None:
    k = kubelets()
    written = make_pod(
        namespace, "written", k.name,
        ["sh", "-c", 'printf "disk full" > "$K8SEMU_ROOT/dev/termination-log"; exit 3'],
        restart_policy="Never",
    )  # fmt: skip
    custom = make_pod(
        namespace, "custom", k.name, ["sh", "-c", "echo done > tmp/why; exit 0"],
        restart_policy="Never",
        container=lambda c: setattr(c, "termination_message_path", "/tmp/why"),
    )  # fmt: skip
    fallback = make_pod(
        namespace, "fallback", k.name, ["sh", "-c", "echo starting; echo cannot bind; exit 1"],
        restart_policy="Never",
        container=lambda c: setattr(c, "termination_message_policy", "FallbackToLogsOnError"),
    )  # fmt: skip
    for p in (written, custom, fallback):
        await client.create(p)

    async def message(name: str) -> str | None:
        s = status_of(await get_pod(client, namespace, name))
        if s is None or not s.state.HasField("terminated"):
            return None
        return s.state.terminated.message

    assert await eventually(lambda: message("written"), what="written") == "disk full"
    assert await eventually(lambda: message("custom"), what="custom") == "done\n"
    assert await eventually(lambda: message("fallback"), what="fallback") == (
        "starting\ncannot bind\n"
    )

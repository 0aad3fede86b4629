"""Fail-over of every call between two real API server processes (SIGKILL, SIGTERM, SIGSTOP),
and how writes that broke off after they were sent are resolved or reported.

A lost answer (the write applied, the reply never back) cannot be produced on demand with
real processes, so those tests put a gRPC client interceptor in front of the real server: it
sends the call on, lets the server apply it, and then reports the connection dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from k8semu.cli.verbs._shared import format_error
from k8semu.client import (
    Client,
    ClientError,
    ConnectFailed,
    Informer,
    NotFound,
    OutcomeUnknown,
    Preconditions,
    Timeouts,
)
from k8semu.cluster.processes import K8semuStoreCluster, free_loopback_ports
from k8semu.pb.api.v1 import apps_pb2, core_pb2

from .conftest import TEST_RETRIES, APIServerProcess, eventually
from .test_client import config_map, pod


def deployment(name: str, namespace: str) -> apps_pb2.Deployment:
    d = apps_pb2.Deployment()
    d.metadata.name = name
    d.metadata.namespace = namespace
    d.spec.replicas = 1
    d.spec.selector.match_labels["app"] = name
    d.spec.template.metadata.labels["app"] = name
    c = d.spec.template.spec.containers.add()
    c.name = "app"
    c.image = "nginx"
    return d


async def make_namespace(client: Client, name: str) -> str:
    ns = core_pb2.Namespace()
    ns.metadata.name = name
    with contextlib.suppress(ClientError):
        await client.create(ns)
    return name


# ---- SIGKILL: nothing can be sent to the dead server; every write goes to the other --------


async def test_every_write_fails_over_from_a_killed_api_server(
    live_apiservers: list[APIServerProcess],
) -> None:
    dead, live = live_apiservers
    async with Client([live.address], retries=TEST_RETRIES) as setup:
        ns = await make_namespace(setup, "killed")
    dead.kill()

    def fresh() -> Client:
        # A new client per call, the dead server first: what every CLI command meets.
        return Client([dead.address, live.address], retries=TEST_RETRIES)

    async with fresh() as c:
        created = await c.create(config_map("cm", ns, k="1"))
    async with fresh() as c:
        generated = config_map("", ns)
        generated.metadata.generate_name = "gen-"
        assert (await c.create(generated)).metadata.name.startswith("gen-")
    async with fresh() as c:
        created.data["k"] = "2"
        updated = await c.update(created)
        assert updated.data["k"] == "2"
    async with fresh() as c:
        patched = await c.patch(core_pb2.ConfigMap, "cm", {"data": {"k": "3"}}, namespace=ns)
        assert patched.data["k"] == "3"
    async with fresh() as c:
        await c.create(pod("p", ns))
    async with fresh() as c:
        bound = await c.bind("p", "node-1", namespace=ns)
        assert bound.spec.node_name == "node-1"
    async with fresh() as c:
        bound.status.phase = "Running"
        assert (await c.update_status(bound)).status.phase == "Running"
    async with fresh() as c:
        await c.create(deployment("web", ns))
        scaled = await c.patch(apps_pb2.Deployment, "web", {"spec": {"replicas": 5}}, namespace=ns)
        assert scaled.spec.replicas == 5
    async with fresh() as c:
        await c.delete(core_pb2.ConfigMap, "cm", namespace=ns)
        await c.delete(core_pb2.Pod, "p", namespace=ns, grace_period_seconds=0)
    async with fresh() as c:
        with pytest.raises(NotFound):
            await c.get(core_pb2.ConfigMap, "cm", namespace=ns)


async def test_a_server_back_from_a_stop_is_used_while_its_channel_still_backs_off(
    live_apiservers: list[APIServerProcess],
) -> None:
    """The client's channel to a stopped server backs off (gRPC: up to 1 s between connection
    attempts, calls failing at once meanwhile). The server comes back, the other one stops
    at once: a write must wait for the channel's next attempt, not give up after the
    client's first short pauses (0.15 s in all with two endpoints)."""
    first, second = live_apiservers
    async with Client([first.address, second.address], retries=TEST_RETRIES) as c:
        ns = await make_namespace(c, "backoff")
        first.kill()
        # Calls on its channel while it is down: refusals, so the back-off grows to its cap.
        for i in range(12):
            await c.create(config_map(f"down-{i}", ns))
            await asyncio.sleep(0.1)
        first.start()
        await asyncio.to_thread(first.wait_serving)  # serving, to a new connection
        second.kill()
        try:
            created = await c.create(config_map("after", ns))
            assert created.metadata.name == "after"
        finally:
            second.start()
            await asyncio.to_thread(second.wait_serving)


# ---- SIGTERM: a graceful stop costs clients nothing ---------------------------------------


async def test_sigterm_costs_clients_nothing(
    live_apiservers: list[APIServerProcess],
) -> None:
    """Writers and an informer keep going through a graceful stop of either API server: no
    call fails, and the informer's cache ends equal to a fresh list."""
    first, second = live_apiservers
    async with Client([first.address, second.address], retries=TEST_RETRIES) as c:
        ns = await make_namespace(c, "graceful")
        informer: Informer[core_pb2.ConfigMap] = Informer(c, core_pb2.ConfigMap, namespace=ns)
        informer.start()
        await informer.wait_synced(10)
        failures: list[BaseException] = []
        done = asyncio.Event()
        writes = 0

        async def writer(w: int) -> None:
            nonlocal writes
            i = 0
            while not done.is_set():
                name = f"w{w}-{i % 5}"
                try:
                    with contextlib.suppress(NotFound):
                        await c.delete(core_pb2.ConfigMap, name, namespace=ns)
                    cm = await c.create(config_map(name, ns, n=str(i)))
                    cm.data["n"] = f"{i}+"
                    await c.update(cm)
                    await c.patch(core_pb2.ConfigMap, name, {"data": {"p": str(i)}}, namespace=ns)
                    writes += 4
                except ClientError as exc:
                    failures.append(exc)
                i += 1

        tasks = [asyncio.create_task(writer(w)) for w in range(3)]
        try:
            for server in (first, second):
                before = writes
                await eventually(lambda b=before: writes >= b + 20, what="20 writes")
                assert server.proc is not None
                server.proc.terminate()
                await asyncio.to_thread(server.proc.wait, 60)
                assert server.proc.returncode == 0, server.output()
                mark = writes
                await eventually(lambda m=mark: writes >= m + 20, what="20 writes, one server down")
                server.start()
                await asyncio.to_thread(server.wait_serving)
        finally:
            done.set()
            await asyncio.gather(*tasks)
        assert failures == []

        async def cache_matches() -> bool:
            fresh = await c.list(core_pb2.ConfigMap, namespace=ns)
            want = {i.metadata.name: i.metadata.resource_version for i in fresh.items}
            got = {o.metadata.name: o.metadata.resource_version for o in informer.cache.list()}
            return want == got

        await eventually(cache_matches)
        await informer.stop()


async def test_sigterm_lets_a_call_in_flight_finish(
    store: K8semuStoreCluster, live_apiservers: list[APIServerProcess], tmp_path: Any
) -> None:
    """A create waiting on a paused store when its API server gets SIGTERM is answered: the
    server stops taking calls (health NOT_SERVING) but finishes the one in flight."""
    _, second = live_apiservers
    member = next(iter(store.pids))
    for attempt in range(3):
        server = APIServerProcess(
            store, tmp_path / f"in-flight-{attempt}.log", ["--log-level", "info"]
        )
        try:
            server.wait_serving()
            async with Client([server.address, second.address], retries=TEST_RETRIES) as c:
                ns = await make_namespace(c, "inflight")
                await c.get(core_pb2.Namespace, ns)  # connected to `server`
                store.pause(member)
                try:
                    call = asyncio.create_task(c.create(config_map(f"slow-{attempt}", ns)))
                    # Time for the request to reach `server`; if it did not (in_flight=0
                    # below), it went to `second` and the attempt is made again.
                    await asyncio.sleep(0.3)
                    assert server.proc is not None
                    server.proc.terminate()
                    await eventually(
                        lambda s=server: asyncio.to_thread(not_serving, s.address),
                        what="the server answers NOT_SERVING",
                    )
                finally:
                    store.resume(member)
                created = await asyncio.wait_for(call, 60)
                assert created.metadata.name == f"slow-{attempt}"
            await asyncio.to_thread(server.proc.wait, 60)
            assert server.proc.returncode == 0
            log = server.output()
            assert "cancelled=0" in log, log
            if "in_flight=1" in log:
                return
        finally:
            server.close()
    raise AssertionError("the create never reached the API server before its SIGTERM")


def not_serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            resp = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return True
        return bool(resp.status != health_pb2.HealthCheckResponse.SERVING)


# ---- SIGSTOP: a write whose outcome is unknown is reported so ------------------------------


async def test_write_to_a_stopped_server_reports_outcome_unknown(
    live_apiservers: list[APIServerProcess],
) -> None:
    first, _ = live_apiservers
    async with Client([first.address], retries=TEST_RETRIES) as setup:
        ns = await make_namespace(setup, "stopped")
        await setup.create(config_map("cm", ns, k="1"))
    async with Client([first.address], retries=TEST_RETRIES, timeouts=Timeouts(call=1.0)) as c:
        await c.get(core_pb2.ConfigMap, "cm", namespace=ns)  # the connection is up
        os.kill(first.pid, signal.SIGSTOP)
        try:
            generated = config_map("", ns)
            generated.metadata.generate_name = "gen-"
            with pytest.raises(OutcomeUnknown, match="may or may not have been applied"):
                await c.create(generated)
            with pytest.raises(OutcomeUnknown):
                await c.patch(core_pb2.ConfigMap, "cm", {"data": {"k": "2"}}, namespace=ns)
        finally:
            os.kill(first.pid, signal.SIGCONT)


async def test_cli_writes_fail_over_and_report_unknown_outcomes(
    live_apiservers: list[APIServerProcess], tmp_path: Any
) -> None:
    first, second = live_apiservers
    servers = f"{first.address},{second.address}"
    manifest = tmp_path / "web.yaml"
    manifest.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: cli}\n"
        "spec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n"
        "  template:\n    metadata: {labels: {app: web}}\n"
        "    spec: {containers: [{name: app, image: nginx}]}\n"
    )
    env = dict(os.environ)  # with tests/conftest.py's empty K8SEMU_CONFIG
    env["HOME"] = str(tmp_path)

    async def k8semu(*args: str, server: str = servers) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "k8semu", *args, "--server", server,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async with Client([second.address], retries=TEST_RETRIES) as c:
        await make_namespace(c, "cli")
    first.kill()
    assert await k8semu("apply", "-f", str(manifest)) == (0, "deployment.apps/web created\n", "")
    code, out, err = await k8semu("scale", "deployment", "web", "--replicas=5", "-n", "cli")
    assert (code, out, err) == (0, "deployment.apps/web scaled\n", "")
    code, out, err = await k8semu("get", "deployment", "web", "-n", "cli", "-o", "yaml")
    assert code == 0 and "replicas: 5" in out, err
    code, out, err = await k8semu("delete", "-f", str(manifest))
    assert (code, err) == (0, ""), err
    first.start()
    first.wait_serving()
    # A server that stops answering: a new process cannot even finish connecting (HTTP/2
    # SETTINGS never come), so nothing was sent: one line saying so. The connection attempt
    # gives up after 5 s (k8semu.transport), within the request's timeout.
    os.kill(second.pid, signal.SIGSTOP)
    try:
        code, out, err = await k8semu(
            "patch", "configmap", "x", "-n", "cli", "-p", '{"data": {"a": "b"}}',
            "--request-timeout", "20", server=second.address,
        )  # fmt: skip
    finally:
        os.kill(second.pid, signal.SIGCONT)
    assert code == 1
    assert err.startswith("Unable to connect to the server: "), err
    assert err.count("\n") == 1, err


def test_cli_line_for_an_unknown_outcome() -> None:
    exc = OutcomeUnknown(
        "patch configmaps/cli/x via 127.0.0.1:1: Socket closed; the request was sent, so it"
        " may or may not have been applied: read the object again before retrying",
        code=grpc.StatusCode.UNAVAILABLE,
    )
    line = format_error(exc)
    assert line.startswith("error: outcome unknown: patch configmaps/cli/x via 127.0.0.1:1")
    assert "\n" not in line


# ---- lost answers: the write was applied, the reply never came back -------------------------


LOST = "Stream removed (Socket closed)"


class LoseAnswers(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """For the next `count` calls of `method`: send it on (`apply`) or not, then answer
    UNAVAILABLE as if the connection dropped before the reply."""

    def __init__(self) -> None:
        self.rules: dict[str, list[bool]] = {}

    def lose(self, method: str, *, apply: bool = True, count: int = 1) -> None:
        self.rules.setdefault(method, []).extend([apply] * count)

    async def intercept_unary_unary(
        self,
        continuation: Callable[[Any, Any], Awaitable[Any]],
        details: Any,
        request: Any,
    ) -> Any:
        name = details.method.decode() if isinstance(details.method, bytes) else details.method
        rules = self.rules.get(name.rsplit("/", 1)[-1])
        if not rules:
            return await continuation(details, request)
        apply = rules.pop(0)
        if apply:
            await (await continuation(details, request))
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), LOST
        )


@pytest.fixture
async def lossy(
    live_apiservers: list[APIServerProcess],
) -> AsyncIterator[tuple[Client, LoseAnswers, str]]:
    faults = LoseAnswers()

    def channel(address: str) -> grpc.aio.Channel:
        return grpc.aio.insecure_channel(address, interceptors=[faults])

    addresses = [s.address for s in live_apiservers]
    async with Client(addresses, retries=TEST_RETRIES, channel_factory=channel) as c:
        ns = await make_namespace(c, "lossy")
        yield c, faults, ns


async def test_lost_answers_of_safe_writes_are_resolved(
    lossy: tuple[Client, LoseAnswers, str],
) -> None:
    c, faults, ns = lossy
    # A named create applied, then sent again: ALREADY_EXISTS, recognised by its uid.
    faults.lose("Create")
    created = await c.create(config_map("a", ns, k="1"))
    assert created.data["k"] == "1" and created.metadata.uid
    # ... not applied the first time: the resend creates it.
    faults.lose("Create", apply=False)
    assert (await c.create(config_map("b", ns))).metadata.name == "b"
    # An update with a resourceVersion: the resend's Conflict is judged by reading back.
    created.data["k"] = "2"
    faults.lose("Update")
    updated = await c.update(created)
    assert updated.data["k"] == "2"
    assert updated.metadata.resource_version != created.metadata.resource_version
    # A patch with a resourceVersion precondition, likewise.
    faults.lose("Patch")
    rv = updated.metadata.resource_version
    patch = {"metadata": {"resourceVersion": rv}, "data": {"k": "3"}}
    assert (await c.patch(core_pb2.ConfigMap, "a", patch, namespace=ns)).data["k"] == "3"
    # A bind: the resend finds the pod bound to the same node.
    await c.create(pod("p", ns))
    faults.lose("Bind")
    assert (await c.bind("p", "node-1", namespace=ns)).spec.node_name == "node-1"
    # UpdateStatus with a resourceVersion.
    bound = await c.get(core_pb2.Pod, "p", namespace=ns)
    bound.status.phase = "Running"
    faults.lose("UpdateStatus")
    assert (await c.update_status(bound)).status.phase == "Running"
    # A graceful delete with a resourceVersion precondition marks the pod; the resend's
    # Conflict finds it being deleted.
    running = await c.get(core_pb2.Pod, "p", namespace=ns)
    pre = Preconditions(
        uid=running.metadata.uid, resource_version=running.metadata.resource_version
    )
    faults.lose("Delete")
    marked = await c.delete(core_pb2.Pod, "p", namespace=ns, preconditions=pre)
    assert marked.metadata.HasField("deletion_timestamp")
    # A delete with preconditions that went through: the resend's NotFound says so honestly.
    b = await c.get(core_pb2.ConfigMap, "b", namespace=ns)
    faults.lose("Delete")
    with pytest.raises(NotFound, match=r"earlier try.*may have been applied"):
        await c.delete(
            core_pb2.ConfigMap, "b", namespace=ns, preconditions=Preconditions(uid=b.metadata.uid)
        )


async def test_lost_answers_of_unsafe_writes(lossy: tuple[Client, LoseAnswers, str]) -> None:
    c, faults, ns = lossy
    await c.create(config_map("u", ns, k="1"))
    # A patch without precondition: applied, and the object shows it on reading back.
    faults.lose("Patch")
    assert (await c.patch(core_pb2.ConfigMap, "u", {"data": {"k": "2"}}, namespace=ns)).data[
        "k"
    ] == "2"
    # ... not applied: not sent again (it could undo someone else's later write).
    faults.lose("Patch", apply=False)
    with pytest.raises(OutcomeUnknown, match="may or may not have been applied"):
        await c.patch(core_pb2.ConfigMap, "u", {"data": {"k": "3"}}, namespace=ns)
    assert (await c.get(core_pb2.ConfigMap, "u", namespace=ns)).data["k"] == "2"
    # A generateName create cannot be recognised: never sent twice.
    generated = config_map("", ns)
    generated.metadata.generate_name = "gen-"
    faults.lose("Create")
    with pytest.raises(OutcomeUnknown):
        await c.create(generated)
    names = [i.metadata.name for i in (await c.list(core_pb2.ConfigMap, namespace=ns)).items]
    assert len([n for n in names if n.startswith("gen-")]) == 1
    # A delete without preconditions could delete a namesake made meanwhile: not resent.
    faults.lose("Delete")
    with pytest.raises(OutcomeUnknown):
        await c.delete(core_pb2.ConfigMap, "u", namespace=ns)


async def test_connect_failures_move_writes_and_say_so(
    live_apiservers: list[APIServerProcess],
) -> None:
    nobody = f"127.0.0.1:{free_loopback_ports(1)[0]}"
    async with Client([nobody, live_apiservers[0].address], retries=TEST_RETRIES) as c:
        ns = await make_namespace(c, "refused")
        generated = config_map("", ns)
        generated.metadata.generate_name = "gen-"
        # Never sent to the refusing address, so even this write moves on.
        assert (await c.create(generated)).metadata.name.startswith("gen-")
    async with Client([nobody], retries=TEST_RETRIES) as c:
        with pytest.raises(ConnectFailed, match="Connection refused"):
            await c.create(config_map("never", ns))

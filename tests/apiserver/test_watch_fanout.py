"""The watch cache end to end: many client watches on one etcd watch; slow watchers cut off.

The API server process talks to the store through `CountingProxy`, a pass-through gRPC proxy
in this test process that counts every etcd watch created through it: the number of store
watches is measured from the store's side of the API server, not reported by the server.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent import futures
from types import SimpleNamespace
from typing import Any, cast

import grpc
import pytest

from k8semu import transport
from k8semu.cluster.processes import K8semuStoreCluster, ProcessCluster
from k8semu.pb.api.v1 import apiserver_pb2 as api
from k8semu.pb.api.v1 import core_pb2
from k8semu.pb.etcd import rpc_pb2

from .conftest import APIServerProcess, Client

WATCHERS = 200
MAX_PENDING = 50


class CountingProxy(grpc.GenericRpcHandler):
    """Forwards every unary call and the Watch stream to one store endpoint, as raw bytes."""

    def __init__(self, upstream: str) -> None:
        # Any: the stubs are typed for messages; this proxy moves raw bytes.
        self.channel: Any = grpc.insecure_channel(upstream)
        self.lock = threading.Lock()
        self.watch_keys: list[bytes] = []
        self.unary_calls: list[str] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self.server.add_generic_rpc_handlers([self])
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.server.start()

    def close(self) -> None:
        self.server.stop(0).wait()
        self.channel.close()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        method = details.method
        if method == "/etcdserverpb.Watch/Watch":
            return grpc.stream_stream_rpc_method_handler(
                lambda requests, context: self._watch(method, requests, context)
            )
        return grpc.unary_unary_rpc_method_handler(
            lambda request, context: self._unary(method, request, context)
        )

    def _unary(self, method: str, request: bytes, context: Any) -> bytes:
        with self.lock:
            self.unary_calls.append(method)
        try:
            return cast(
                bytes,
                self.channel.unary_unary(method)(request, timeout=context.time_remaining()),
            )
        except grpc.RpcError as exc:
            error: Any = exc
            context.abort(error.code(), error.details())
            raise

    def _watch(self, method: str, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        def counted() -> Iterator[bytes]:
            for raw in requests:
                req = rpc_pb2.WatchRequest.FromString(raw)
                if req.HasField("create_request"):
                    with self.lock:
                        self.watch_keys.append(req.create_request.key)
                yield raw

        call: Any = self.channel.stream_stream(method)(counted())
        context.add_callback(call.cancel)
        try:
            yield from cast(Iterator[bytes], call)
        except grpc.RpcError as exc:
            error: Any = exc
            if error.code() != grpc.StatusCode.CANCELLED:
                context.abort(error.code(), error.details())


@pytest.fixture(scope="module")
def proxy(store: K8semuStoreCluster) -> Iterator[CountingProxy]:
    p = CountingProxy(store.endpoints[0])
    try:
        yield p
    finally:
        p.close()


@pytest.fixture(scope="module")
def fanout_apiserver(
    proxy: CountingProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[APIServerProcess]:
    via_proxy = cast(ProcessCluster, SimpleNamespace(endpoints=[proxy.address]))
    server = APIServerProcess(
        via_proxy,
        tmp_path_factory.mktemp("fanout") / "apiserver.log",
        # A long lease: the kubernetes Endpoints loop stays quiet while calls are counted.
        ["--watch-max-pending", str(MAX_PENDING), "--endpoint-lease-seconds", "3600"],
    )
    try:
        server.wait_serving()
        yield server
    finally:
        server.close()


def _pod(name: str, note: str = "") -> core_pb2.Pod:
    pod = core_pb2.Pod()
    pod.metadata.name = name
    if note:
        pod.metadata.annotations["note"] = note
    pod.spec.containers.add(name="c", image="busybox")
    return pod


def _summary(ev: api.WatchEvent) -> tuple[str, str, str]:
    pod = core_pb2.Pod()
    assert ev.object.Unpack(pod)
    return ev.type, pod.metadata.name, pod.metadata.resource_version


async def _established(call: Any) -> None:
    """The first BOOKMARK proves the watch is registered (it starts "now")."""
    ev = await asyncio.wait_for(call.read(), 60)
    assert ev.type == "BOOKMARK", ev


async def _events(call: Any, count: int) -> list[tuple[str, str, str]]:
    got: list[tuple[str, str, str]] = []
    while len(got) < count:
        ev = await call.read()
        assert ev is not grpc.aio.EOF
        if ev.type != "BOOKMARK":
            got.append(_summary(ev))
    return got


def _watch(stub: Any) -> Any:
    return stub.Watch(api.WatchRequest(resource="pods", namespace="default", allow_bookmarks=True))


async def test_many_watchers_share_one_store_watch(
    fanout_apiserver: APIServerProcess, proxy: CountingProxy
) -> None:
    channels = [transport.channel(fanout_apiserver.address) for _ in range(4)]
    try:
        client = Client(channels[0])
        stubs = [Client(ch).stub for ch in channels]
        calls = [_watch(stubs[i % len(stubs)]) for i in range(WATCHERS)]
        await asyncio.gather(*(_established(c) for c in calls))
        expected: list[tuple[str, str, str]] = []
        for i in range(10):
            resp = await client.create("pods", _pod(f"fan{i}"), "default")
            expected.append(_summary(api.WatchEvent(type="ADDED", object=resp.object)))
        for i in range(10):
            resp = await client.delete("pods", f"fan{i}", "default")
            expected.append(_summary(api.WatchEvent(type="DELETED", object=resp.object)))
        results = await asyncio.wait_for(
            asyncio.gather(*(_events(c, len(expected)) for c in calls)), 60
        )
        assert all(r == expected for r in results)
        for c in calls:
            c.cancel()
        with proxy.lock:
            keys = list(proxy.watch_keys)
        # One store watch for 200 client watches (and the ones every server keeps for its
        # admission: namespaces for creates, PriorityClasses for pods' priority, LimitRanges
        # and ResourceQuotas).
        assert sorted(keys) == [
            b"/registry/limitranges/",
            b"/registry/namespaces/",
            b"/registry/pods/",
            b"/registry/priorityclasses/",
            b"/registry/resourcequotas/",
        ]
    finally:
        for ch in channels:
            await ch.close()


async def test_slow_watcher_is_cut_off_while_others_continue(
    fanout_apiserver: APIServerProcess,
) -> None:
    # No BDP probing and a small read-ahead: a client that stops reading stops the server's
    # stream within a few messages, so the API server's queue for it grows.
    slow_options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)]
    async with (
        transport.channel(fanout_apiserver.address) as channel,
        grpc.aio.insecure_channel(fanout_apiserver.address, options=slow_options) as slow_channel,
    ):
        client = Client(channel)
        fast = _watch(client.stub)
        slow = _watch(Client(slow_channel).stub)
        await asyncio.gather(_established(fast), _established(slow))
        note = "x" * 20_000
        writes = 4 * MAX_PENDING
        fast_events = asyncio.ensure_future(_events(fast, writes))
        for i in range(writes):
            await client.create("pods", _pod(f"slow{i}", note), "default")
        got = await asyncio.wait_for(fast_events, 60)
        assert [name for _, name, _ in got] == [f"slow{i}" for i in range(writes)]
        # The slow reader gets what was already in flight, then the cut-off.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(_events(slow, writes), 60)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert (err.value.details() or "").startswith(
            "watch of pods was too slow to keep up; restart it from resourceVersion "
        )
        # The fast watcher is still served after the cut.
        resp = await client.delete("pods", "slow0", "default")
        after = await asyncio.wait_for(_events(fast, 1), 60)
        assert after == [_summary(api.WatchEvent(type="DELETED", object=resp.object))]
        fast.cancel()


async def test_writes_cost_one_store_call_each_with_a_warm_watch_cache(
    fanout_apiserver: APIServerProcess, proxy: CountingProxy
) -> None:
    """Create checks its namespace, update and delete read the object from the watch cache:
    each is one Txn (Kubernetes' own create path is one etcd Txn too)."""
    txn = ["/etcdserverpb.KV/Txn"]
    async with transport.channel(fanout_apiserver.address) as channel:
        client = Client(channel)
        call = _watch(client.stub)
        await _established(call)

        async def store_calls(write: Any) -> tuple[Any, list[str]]:
            with proxy.lock:
                before = len(proxy.unary_calls)
            result = await write
            with proxy.lock:
                return result, proxy.unary_calls[before:]

        created, calls = await store_calls(client.create("pods", _pod("one-trip"), "default"))
        assert calls == txn
        await asyncio.wait_for(_events(call, 1), 60)  # this server's cache has it now
        pod = core_pb2.Pod()
        assert created.object.Unpack(pod)
        pod.metadata.labels["x"] = "y"
        _, calls = await store_calls(client.update("pods", pod))
        assert calls == txn
        await asyncio.wait_for(_events(call, 1), 60)
        _, calls = await store_calls(client.delete("pods", "one-trip", "default"))
        assert calls == txn
        call.cancel()

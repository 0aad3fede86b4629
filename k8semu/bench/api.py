"""API server benchmark: per-verb latency at a steady write rate with many watchers attached.

This module owns ``k8semu bench api``. Unless ``--server`` names a running API server, it
starts a 3-replica ``k8semu store`` and one ``k8semu apiserver`` on this machine, then, from one
Python grpc.aio client process (uvloop when installed):

watchers
    ``--watchers`` watches of pods in the benchmark namespace, each its own gRPC stream on its
    own connection, attached before the first write and kept for the whole run. A sentinel pod
    seen by every watcher marks them all ready.
phases
    create, get, list (``--list-limit``), update, delete, one after the other, each ``--rate``
    calls per second for ``--seconds`` (so ``rate * seconds`` calls), paced on an absolute
    schedule (call i is due at start + i / rate) by ``--writers`` concurrent tasks. Each phase
    touches the pods the create phase made, in order: small, real-looking Pods (one container,
    ports, resources, labels) with unique names in one namespace.
latency
    Per call, from its send to its acknowledgement (the schedule's slip is reported apart).
    Watch delivery: from the *send* of the write (create, update, delete) to each watcher
    receiving its ADDED, MODIFIED or DELETED event, over every watcher x event pair; "to all
    watchers" is, per write, the time until the last watcher had it. Delivery from the write's
    acknowledgement is reported as well; it can be negative (an event may beat the reply).

``--protocol rest`` runs the same over Kubernetes' REST API (``api_rest.py``: JSON over
HTTP/1.1, JSON-line watch streams); ``both`` runs gRPC then REST against the same servers and
prints REST p99 / gRPC p99 per verb.

It must not run without a count and a wall-clock bound, or send traffic beyond 127.0.0.0/8
unless told (``--allow-remote``). The client shares the CPUs with the servers, so requests are
serialized up front where possible and responses are parsed only where a figure needs them.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import dataclasses
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import grpc
import grpc.aio
from google.protobuf import any_pb2
from google.protobuf.message import Message

from k8semu.bench import _auth, api_rest
from k8semu.bench._apireport import (
    EVENT_OF_PHASE,
    PHASES,
    PROTOCOLS,
    APIBenchOptions,
    APIBenchResult,
    VerbResult,
    WatchResult,
    compare,
    describe,
    ratio_table,
    render,
)
from k8semu.bench._common import (
    BenchError,
    CpuMeter,
    Stopwatch,
    argument_parser,
    check_endpoints,
    environment,
    options_from_args,
    percentile,
    positive_float,
    positive_int,
    run_dir,
    run_loop,
    say,
    summarize,
    write_json,
)
from k8semu.bench.api_rest import RESTCalls, RESTError, phase_op
from k8semu.cluster.component import APIServerProcess
from k8semu.cluster.errors import ClusterError, ComponentStartError
from k8semu.cluster.processes import K8semuStoreCluster, free_loopback_ports
from k8semu.pb.api.v1 import apiserver_pb2 as api
from k8semu.pb.api.v1 import core_pb2

__all__ = ["APIBenchOptions", "APIBenchResult", "VerbResult", "WatchResult", "main", "run"]

API = "/k8semu.api.v1.API/"

_WATCH_CHANNEL_OPTIONS = (
    ("grpc.enable_http_proxy", 0),
    # One connection per watcher, as separate informers in separate processes would have.
    ("grpc.use_local_subchannel_pool", 1),
)
_UNARY_CHANNEL_OPTIONS = (("grpc.enable_http_proxy", 0),)
_POLL_S = 0.02


# -- the servers -------------------------------------------------------------------------------


class _APIServerProcess(APIServerProcess):
    """One `k8semu apiserver` subprocess on a free loopback port, started at once and ended by
    its pid; failing to come up is a BenchError pointing at its log."""

    def __init__(
        self, store_endpoints: Sequence[str], log_path: Path, extra: Sequence[str] = ()
    ) -> None:
        self.rest_url = f"http://127.0.0.1:{free_loopback_ports(1)[0]}"
        rest = ["--rest-address", self.rest_url]
        super().__init__(store_endpoints, log_path, ["--log-level", "warning", *rest, *extra])

    def wait_serving(self, timeout: float | None = None) -> None:
        timeout = self.serving_timeout if timeout is None else timeout
        try:
            super().wait_serving(timeout)
        except ComponentStartError as exc:  # its message carries the whole log
            what = "exited" if exc.exited else f"not serving within {timeout} s"
            raise BenchError(f"apiserver {what}; log in {self.log_path}") from exc


# -- the workload ------------------------------------------------------------------------------


def _pod(name: str, namespace: str, run_id: str) -> core_pb2.Pod:
    """A small pod as a Deployment would make it."""
    pod = core_pb2.Pod(api_version="v1", kind="Pod")
    m = pod.metadata
    m.name, m.namespace = name, namespace
    m.labels.update({"app": "bench", "run": run_id, "tier": "web"})
    m.annotations["k8semu.io/bench"] = "api"
    c = pod.spec.containers.add(name="web", image="nginx:1.25")
    c.ports.add(name="http", container_port=80, protocol="TCP")
    c.resources.requests.update({"cpu": "100m", "memory": "64Mi"})
    c.resources.limits.update({"cpu": "500m", "memory": "128Mi"})
    c.env.add(name="MODE", value="bench")
    pod.spec.restart_policy = "Always"
    pod.spec.termination_grace_period_seconds = 0
    return pod


def _packed(pod: Message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(pod)
    return out


@dataclass
class _Paced:
    latencies: array.array[float]
    errors: int
    last_error: str
    seconds: float
    max_slip: float
    capped: bool


async def _paced(
    count: int,
    opts: APIBenchOptions,
    op: Callable[[int], Awaitable[None]],
    before: Callable[[int], None] | None = None,
) -> _Paced:
    """Call ``op(i)`` for i in 0..count-1, call i due at start + i / rate, ``writers`` at once.

    ``before(i)`` runs just before the send (it stamps send times for the watch figures).
    """
    latencies: array.array[float] = array.array("d")
    state = {"next": 0, "errors": 0, "slip": 0.0}
    last_error = [""]
    perf = time.perf_counter
    start = perf() + 0.01

    async def writer() -> None:
        while True:
            i = int(state["next"])
            if i >= count:
                return
            state["next"] = i + 1
            due = start + i / opts.rate
            delay = due - perf()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = perf()
            state["slip"] = max(state["slip"], sent - due)
            if before is not None:
                before(i)
            try:
                await op(i)
            except grpc.aio.AioRpcError as exc:
                state["errors"] += 1
                last_error[0] = f"{exc.code().name}: {exc.details()}"
                continue
            except RESTError as exc:
                state["errors"] += 1
                last_error[0] = str(exc)
                continue
            latencies.append(perf() - sent)

    capped = False
    try:
        async with asyncio.timeout(opts.max_seconds):
            await asyncio.gather(*(writer() for _ in range(opts.writers)))
    except TimeoutError:
        capped = True
    return _Paced(
        latencies, int(state["errors"]), last_error[0], perf() - start, state["slip"], capped
    )


def _split_batch(message: bytes) -> list[bytes]:
    """The serialized WatchEvents in one stream message: itself, or the elements of a batch
    (field 3, `events`: tag 0x1a, a varint length, the event) without decoding them."""
    if not message or message[0] != 0x1A:
        return [message]
    out = []
    i, n = 0, len(message)
    while i < n and message[i] == 0x1A:
        i += 1
        length = shift = 0
        while True:
            b = message[i]
            i += 1
            length |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        out.append(message[i : i + length])
        i += length
    return out


class _Watchers:
    """The watch streams and what they received: (event code, pod index, time) per delivery."""

    CODES = {"ADDED": 0, "MODIFIED": 1, "DELETED": 2}

    def __init__(
        self, address: str, opts: APIBenchOptions, prefix: str, rest_url: str = ""
    ) -> None:
        """`rest_url`: watch over the REST API there instead of gRPC at `address`."""
        self.opts = opts
        self.rest_url = rest_url
        self.channels = [
            _auth.channel(address, _WATCH_CHANNEL_OPTIONS, opts.token)
            for _ in range(0 if rest_url else opts.watchers)
        ]
        self.sessions = [api_rest.session(1) for _ in range(opts.watchers if rest_url else 0)]
        self.request = api.WatchRequest(
            resource="pods", namespace=opts.namespace, allow_batching=opts.batching
        )
        self.pattern = re.compile(re.escape(prefix.encode()) + rb"-(\d{6})")
        self.ready_marker = f"{prefix}-ready".encode()
        self.ready = [False] * opts.watchers
        self.codes = array.array("b")
        self.indexes = array.array("l")
        self.times = array.array("d")
        self.errors: list[str] = []
        self.cut_off = 0
        self.tasks: list[asyncio.Task[None]] = []
        # Per event code, per pod index: when the write was sent and acknowledged.
        self.sent = [array.array("d", [0.0]) * opts.calls for _ in self.CODES]
        self.acked = [array.array("d", [0.0]) * opts.calls for _ in self.CODES]

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._watch(k)) for k in range(self.opts.watchers)]

    def _record(self, k: int, code: int, event: bytes, now: float) -> None:
        """One delivery to watcher `k` of the event `event` (serialized, either protocol)."""
        found = self.pattern.search(event)
        if found is None:
            if self.ready_marker in event:
                self.ready[k] = True
            return
        self.codes.append(code)
        self.indexes.append(int(found.group(1)))
        self.times.append(now)

    async def _watch_rest(self, k: int) -> None:
        try:
            events = api_rest.watch_events(self.sessions[k], self.rest_url, self.opts.namespace)
            async for type_, line in events:
                code = self.CODES.get(type_)
                if code is not None:
                    self._record(k, code, line, time.perf_counter())
                elif type_ == "ERROR":  # the stream ends after it
                    self.cut_off += b'"code":429' in line
                    self.errors.append(f"watcher {k}: {line[:300].decode(errors='replace')}")
        except (RESTError, OSError, ValueError) as exc:
            self.errors.append(f"watcher {k}: {exc!r}")

    async def _watch(self, k: int) -> None:
        if self.rest_url:
            await self._watch_rest(k)
            return
        call: Any = self.channels[k].unary_stream(
            API + "Watch",
            request_serializer=api.WatchRequest.SerializeToString,
            response_deserializer=None,  # raw bytes: the type and the name are all we read
        )
        codes, indexes, times = self.codes, self.indexes, self.times
        search, perf = self.pattern.search, time.perf_counter
        try:
            async for message in call(self.request):
                now = perf()
                for raw in _split_batch(message):
                    # WatchEvent field 1 (type) comes first: tag 0x0a, length, the type.
                    code = self.CODES.get(raw[2 : 2 + raw[1]].decode())
                    if code is None:
                        continue
                    found = search(raw)
                    if found is None:
                        if self.ready_marker in raw:
                            self.ready[k] = True
                        continue
                    codes.append(code)
                    indexes.append(int(found.group(1)))
                    times.append(now)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                self.cut_off += 1
            self.errors.append(f"watcher {k}: {exc.code().name}: {exc.details()}")

    async def wait_ready(self, timeout: float, poke: Callable[[], Awaitable[None]]) -> None:
        """Until every watcher has seen a sentinel pod; ``poke`` creates another one.

        A watch from "now" misses writes made before its stream reached the server, and the
        client cannot tell when that happened: so sentinels are written until all have one.
        """
        deadline = time.monotonic() + timeout
        while not all(self.ready):
            if time.monotonic() >= deadline:
                raise BenchError(
                    f"{self.ready.count(False)} of {len(self.ready)} watchers did not see a"
                    f" sentinel pod within {timeout} s ({'; '.join(self.errors[:3])})"
                )
            await poke()
            for _ in range(25):
                if all(self.ready):
                    return
                await asyncio.sleep(_POLL_S)

    def delivered(self, code: int) -> int:
        return self.codes.count(code)

    async def drain(self, code: int, expected: int, within: float) -> None:
        """Wait until ``expected`` deliveries of ``code`` arrived, or ``within`` seconds."""
        deadline = time.monotonic() + within
        while True:
            if self.delivered(code) >= expected or time.monotonic() >= deadline:
                return
            await asyncio.sleep(0.05)

    def result(self, event: str, writes: int) -> WatchResult:
        code = self.CODES[event]
        sent, acked = self.sent[code], self.acked[code]
        from_send: list[float] = []
        from_ack: list[float] = []
        last: dict[int, float] = {}
        seen: dict[int, int] = {}
        for c, i, t in zip(self.codes, self.indexes, self.times, strict=True):
            if c != code or not sent[i]:
                continue
            from_send.append(t - sent[i])
            if acked[i]:
                from_ack.append(t - acked[i])
            last[i] = max(last.get(i, 0.0), t - sent[i])
            seen[i] = seen.get(i, 0) + 1
        from_send.sort()
        from_ack.sort()
        # A write that some watcher never got has no "all watchers" time: it counts as infinite.
        complete = [v for i, v in last.items() if seen[i] >= self.opts.watchers]
        all_times = sorted(complete) + [float("inf")] * max(0, writes - len(complete))
        return WatchResult(
            event=event,
            writes=writes,
            watchers=self.opts.watchers,
            deliveries=len(from_send),
            p50_ms=percentile(from_send, 50) * 1e3,
            p90_ms=percentile(from_send, 90) * 1e3,
            p99_ms=percentile(from_send, 99) * 1e3,
            max_ms=(from_send[-1] if from_send else 0.0) * 1e3,
            all_p50_ms=percentile(all_times, 50) * 1e3,
            all_p99_ms=percentile(all_times, 99) * 1e3,
            from_ack_p50_ms=percentile(from_ack, 50) * 1e3,
            from_ack_p99_ms=percentile(from_ack, 99) * 1e3,
        )

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for channel in self.channels:
            await channel.close()
        for client in self.sessions:
            await client.close()


class _Calls:
    """The calls of the phases over one channel, bytes in and bytes out: the namespace, the
    sentinel pods, and per phase call i on pod i. Requests are serialized up front
    (``prepare``); the mutating calls stamp their acknowledgement for the watch figures."""

    VERBS = ("Create", "Get", "List", "Update", "Delete")

    def __init__(self, address: str, opts: APIBenchOptions, prefix: str, watchers: _Watchers):
        self.opts = opts
        self.ns = opts.namespace
        self.run_id = prefix.removeprefix("bench-")
        self.prefix = prefix
        self.watchers = watchers
        self.timeout = opts.call_timeout
        self.channel = _auth.channel(address, _UNARY_CHANNEL_OPTIONS, opts.token)
        self.raw: dict[str, Any] = {
            verb: self.channel.unary_unary(API + verb) for verb in self.VERBS
        }
        self.names = [f"{prefix}-{i:06d}" for i in range(opts.calls)]
        self.versions = [""] * opts.calls
        self.sentinels: list[str] = []
        self.creates: list[bytes] = []
        self.gets: list[bytes] = []
        self.deletes: list[bytes] = []
        self.list_request = b""

    def _delete_request(self, name: str) -> bytes:
        return api.DeleteRequest(
            resource="pods", namespace=self.ns, name=name, grace_period_seconds=0
        ).SerializeToString()

    async def create_namespace(self) -> None:
        namespace = core_pb2.Namespace(api_version="v1", kind="Namespace")
        namespace.metadata.name = self.ns
        with contextlib.suppress(grpc.aio.AioRpcError):  # ALREADY_EXISTS on a reused server
            await self.raw["Create"](
                api.CreateRequest(
                    resource="namespaces", object=_packed(namespace)
                ).SerializeToString(),
                timeout=self.timeout,
            )

    async def poke(self) -> None:
        """Create one more sentinel pod (see ``_Watchers.wait_ready``)."""
        self.sentinels.append(f"{self.prefix}-ready-{len(self.sentinels)}")
        pod = _pod(self.sentinels[-1], self.ns, self.run_id)
        await self.raw["Create"](
            api.CreateRequest(resource="pods", object=_packed(pod)).SerializeToString(),
            timeout=self.timeout,
        )

    def prepare(self) -> None:
        ns, names = self.ns, self.names
        self.creates = [
            api.CreateRequest(
                resource="pods", object=_packed(_pod(name, ns, self.run_id))
            ).SerializeToString()
            for name in names
        ]
        self.gets = [
            api.GetRequest(resource="pods", namespace=ns, name=name).SerializeToString()
            for name in names
        ]
        self.list_request = api.ListRequest(
            resource="pods", namespace=ns, limit=self.opts.list_limit
        ).SerializeToString()
        self.deletes = [self._delete_request(name) for name in names]

    async def create(self, i: int) -> None:
        resp = await self.raw["Create"](self.creates[i], timeout=self.timeout)
        self.watchers.acked[0][i] = time.perf_counter()
        obj = core_pb2.Pod()
        api.ObjectResponse.FromString(resp).object.Unpack(obj)
        self.versions[i] = obj.metadata.resource_version

    async def get(self, i: int) -> None:
        await self.raw["Get"](self.gets[i], timeout=self.timeout)

    async def list_(self, i: int) -> None:
        await self.raw["List"](self.list_request, timeout=self.timeout)

    async def update(self, i: int) -> None:
        pod = _pod(self.names[i], self.ns, self.run_id)
        pod.metadata.resource_version = self.versions[i]
        pod.metadata.labels["updated"] = "true"
        req = api.UpdateRequest(resource="pods", object=_packed(pod)).SerializeToString()
        await self.raw["Update"](req, timeout=self.timeout)
        self.watchers.acked[1][i] = time.perf_counter()

    async def delete(self, i: int) -> None:
        await self.raw["Delete"](self.deletes[i], timeout=self.timeout)
        self.watchers.acked[2][i] = time.perf_counter()

    def op(self, phase: str) -> Callable[[int], Awaitable[None]]:
        return phase_op(self, phase)

    async def delete_sentinels(self) -> None:
        """Leave nothing behind on a shared server (the pods go with the delete phase)."""
        for name in self.sentinels:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self.raw["Delete"](self._delete_request(name), timeout=self.timeout)

    async def close(self) -> None:
        await self.channel.close()


def _rest_calls(url: str, opts: APIBenchOptions, prefix: str, watchers: _Watchers) -> RESTCalls:
    """The phases' calls over the REST API at `url` (the same pods as `_Calls`)."""
    run_id = prefix.removeprefix("bench-")

    def stamp(code: int, i: int) -> None:
        watchers.acked[code][i] = time.perf_counter()

    return RESTCalls(
        url=url,
        namespace=opts.namespace,
        names=[f"{prefix}-{i:06d}" for i in range(opts.calls)],
        prefix=prefix,
        pod=lambda name: _pod(name, opts.namespace, run_id),
        list_limit=opts.list_limit,
        timeout=aiohttp.ClientTimeout(total=opts.call_timeout),
        writers=opts.writers,
        stamp=stamp,
    )


async def _phase(
    phase: str,
    calls: _Calls | RESTCalls,
    watchers: _Watchers,
    opts: APIBenchOptions,
    server_pids: Sequence[int],
    apiserver_pid: int | None,
) -> VerbResult:
    """One phase of ``opts.calls`` paced calls, with the CPU the servers used meanwhile."""
    stamp: Callable[[int], None] | None = None
    event = EVENT_OF_PHASE.get(phase)
    if event is not None:
        sent = watchers.sent[_Watchers.CODES[event]]

        def stamp(i: int, sent: array.array[float] = sent) -> None:
            sent[i] = time.perf_counter()

    apiserver = CpuMeter([apiserver_pid] if apiserver_pid else [])
    watch = Stopwatch(server_pids)
    apiserver.start()
    watch.start()
    paced = await _paced(opts.calls, opts, calls.op(phase), stamp)
    watch.stop()
    s = summarize(paced.latencies)
    return VerbResult(
        verb=f"list (limit {opts.list_limit})" if phase == "list" else phase,
        calls=s.count,
        errors=paced.errors,
        seconds=paced.seconds,
        rate=s.count / paced.seconds if paced.seconds > 0 else 0.0,
        p50_ms=s.p50 * 1e3,
        p90_ms=s.p90 * 1e3,
        p99_ms=s.p99 * 1e3,
        max_ms=s.max * 1e3,
        max_slip_ms=paced.max_slip * 1e3,
        capped=paced.capped,
        last_error=paced.last_error,
        client_cpu_s=watch.client_cpu_s,
        server_cpu_s=watch.server_cpu_s,
        apiserver_cpu_s=apiserver.stop(),
    )


async def _deliveries(
    event: str, writes: int, watchers: _Watchers, opts: APIBenchOptions
) -> WatchResult:
    """The watchers' figures for the ``writes`` writes of one phase, once they arrived (or
    ``opts.drain_seconds`` passed)."""
    code = _Watchers.CODES[event]
    await watchers.drain(code, writes * opts.watchers, opts.drain_seconds)
    w = watchers.result(event, writes)
    say(
        f"watch {event}: {w.deliveries}/{w.expected} deliveries, p50"
        f" {w.p50_ms:.1f} ms, p99 {w.p99_ms:.1f} ms, to all watchers p99"
        f" {w.all_p99_ms:.1f} ms"
    )
    return w


async def run(
    address: str,
    opts: APIBenchOptions,
    *,
    server_pids: Sequence[int] = (),
    apiserver_pid: int | None = None,
    rest_url: str = "",
) -> APIBenchResult:
    """Run the phases against the API server at ``address`` (over its REST API at
    ``rest_url`` when given); see the module docstring. CPU is measured for ``server_pids``
    together and ``apiserver_pid`` alone, when given."""
    prefix = f"bench-{secrets.token_hex(3)}"
    protocol = "rest" if rest_url else "grpc"
    result = APIBenchResult(options=opts, server=rest_url or address, protocol=protocol)
    watchers = _Watchers(address, opts, prefix, rest_url)
    calls: _Calls | RESTCalls = (
        _rest_calls(rest_url, opts, prefix, watchers)
        if rest_url
        else _Calls(address, opts, prefix, watchers)
    )
    try:
        await calls.create_namespace()
        watchers.start()
        await watchers.wait_ready(opts.ready_timeout, calls.poke)
        say(f"{opts.watchers} watchers attached; {opts.calls} calls per phase at {opts.rate:g}/s")
        calls.prepare()
        for phase in opts.phases:
            r = await _phase(phase, calls, watchers, opts, server_pids, apiserver_pid)
            result.verbs.append(r)
            say(describe(r))
            event = EVENT_OF_PHASE.get(phase)
            if event is not None:
                result.watches.append(await _deliveries(event, r.calls, watchers, opts))
        await calls.delete_sentinels()
    finally:
        result.watchers_cut_off = watchers.cut_off
        result.watch_errors = watchers.errors[:10]
        await watchers.close()
        await calls.close()
    return result


# -- command line ------------------------------------------------------------------------------


def _phases(text: str) -> tuple[str, ...]:
    phases = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in phases if p not in PHASES]
    if bad or not phases:
        raise argparse.ArgumentTypeError(f"phases are a comma-separated subset of {PHASES}")
    if "create" not in phases:
        raise argparse.ArgumentTypeError("the other phases need the pods of the create phase")
    return phases


def build_parser() -> argparse.ArgumentParser:
    p = argument_parser(
        "k8semu bench api",
        (
            "Measure API call latency per verb while writing pods at a steady rate with many"
            " watchers attached. Without --server, start a 3-replica store and an API server"
            " here and print a Markdown table."
        ),
    )
    p.add_argument("--server", help="HOST:PORT of a running API server (default: start one)")
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="grpc",
        help="the API's gRPC face, its REST face, or both one after the other (then REST p99"
        " / gRPC p99 per verb)",
    )
    p.add_argument(
        "--rest-server",
        help="http://HOST:PORT of that API server's REST API (with --server and --protocol"
        " rest|both)",
    )
    p.add_argument(
        "--auth",
        action="store_true",
        help="also run the gRPC phases against a second API server with a token file and"
        " --authorization-mode Node,RBAC on the same store, and print the p99 ratio"
        " (authorization overhead; without --server)",
    )
    p.add_argument("--rate", type=positive_float, default=100.0, help="calls per second")
    p.add_argument("--seconds", type=positive_float, default=20.0, help="length of each phase")
    p.add_argument("--writers", type=positive_int, default=32, help="concurrent calling tasks")
    p.add_argument("--watchers", type=positive_int, default=100, help="pod watch streams")
    p.add_argument(
        "--no-batching",
        dest="batching",
        action="store_false",
        help="watchers take one event per stream message (the behaviour before batching)",
    )
    p.add_argument("--namespace", default="bench", help="where the pods go")
    p.add_argument(
        "--phases", type=_phases, default=",".join(PHASES), help="which phases, in order"
    )
    p.add_argument("--list-limit", type=positive_int, default=100, help="limit of each list")
    p.add_argument("--call-timeout", type=positive_float, default=5.0, help="deadline per call")
    p.add_argument(
        "--max-seconds", type=positive_float, default=120.0, help="wall-clock cap per phase"
    )
    p.add_argument(
        "--ready-timeout", type=positive_float, default=60.0, help="for the servers and watchers"
    )
    p.add_argument(
        "--workdir",
        type=Path,
        help="keep the store data and logs in a new dir under this one (default: a temp dir,"
        " removed on success)",
    )
    p.add_argument("--json", type=Path, help="also write the raw figures to this file")
    p.add_argument("--no-uvloop", action="store_true", help="use the plain asyncio loop")
    p.add_argument("--allow-remote", action="store_true", help="allow --server off 127.0.0.0/8")
    return p


def _options(args: argparse.Namespace) -> APIBenchOptions:
    phases = args.phases if isinstance(args.phases, tuple) else _phases(args.phases)
    return options_from_args(APIBenchOptions, args, phases=phases)


def _report(
    args: argparse.Namespace, env: dict[str, Any], results: Sequence[APIBenchResult]
) -> None:
    texts = [render(r, env) for r in results]
    if getattr(args, "auth", False) and len(results) == 2:
        texts = [f"### RBAC {s}\n\n{t}" for s, t in zip(("off", "on"), texts, strict=True)]
        off, on = results
        texts.append(ratio_table(off, on, ("off", "RBAC on"), _auth.TARGET_AUTH_RATIO))
    elif len(results) > 1:
        texts = [f"### {r.protocol}\n\n{t}" for r, t in zip(results, texts, strict=True)]
        texts.append(compare(results))
    print("\n\n".join(texts))
    raw = [dataclasses.asdict(r) for r in results]
    write_json(args.json, {"environment": env, "results": raw})


async def _both(
    args: argparse.Namespace,
    address: str,
    rest_url: str,
    opts: APIBenchOptions,
    pids: Sequence[int] = (),
    apiserver_pid: int | None = None,
) -> list[APIBenchResult]:
    """The protocols `args.protocol` names, one after the other, on the same servers."""
    urls = {"grpc": [""], "rest": [rest_url], "both": ["", rest_url]}[args.protocol]
    results = []
    for url in urls:
        say(f"protocol {'rest' if url else 'grpc'}")
        results.append(
            await run(address, opts, server_pids=pids, apiserver_pid=apiserver_pid, rest_url=url)
        )
    return results


def _main_server(args: argparse.Namespace, opts: APIBenchOptions) -> int:
    """The phases against the running API server at ``--server``."""
    try:
        address = check_endpoints(args.server, args.allow_remote)[0]
        rest_url = ""
        if args.protocol != "grpc":
            if not args.rest_server:
                raise BenchError("--protocol rest|both with --server needs --rest-server URL")
            host = check_endpoints(args.rest_server, args.allow_remote)[0]
            rest_url = f"http://{host}"
        result, uv = run_loop(_both(args, address, rest_url, opts), not args.no_uvloop)
    except (BenchError, grpc.aio.AioRpcError, RESTError) as exc:
        say(f"error: {exc}")
        return 1
    env = environment(None, uv)
    env["server"] = f"the API server at {address}"
    _report(args, env, result)
    return 0


def _main_started(args: argparse.Namespace, opts: APIBenchOptions) -> int:
    """Start a 3-replica store and an API server here, run the phases against them."""
    with run_dir(args.workdir, "k8semu-bench-api-", what="store data and logs") as rundir:
        workdir = rundir.path
        try:
            with K8semuStoreCluster(workdir / "store", 3) as store:
                say(f"starting a 3-replica store and an API server in {workdir}")
                store.start()
                store.wait_ready(timeout=opts.ready_timeout)
                server = _APIServerProcess(store.endpoints, workdir / "apiserver.log")
                try:
                    server.wait_serving(opts.ready_timeout)
                    pids = [*store.pids.values(), server.pid]
                    result, uv = run_loop(
                        _both(args, server.address, server.rest_url, opts, pids, server.pid),
                        not args.no_uvloop,
                    )
                    if args.auth:
                        result.append(_with_auth(args, store, workdir, opts, server.address))
                finally:
                    server.close()
            _report(args, environment(workdir, uv), result)
            rundir.failed = any(r.error for r in result)
        except (BenchError, ClusterError, OSError, grpc.aio.AioRpcError, RESTError) as exc:
            say(f"error: {exc}")
    return 1 if rundir.failed else 0


def _with_auth(
    args: argparse.Namespace,
    store: K8semuStoreCluster,
    workdir: Path,
    opts: APIBenchOptions,
    open_address: str,
) -> APIBenchResult:
    """The gRPC phases again, against a second API server with authentication and RBAC on
    (bench/_auth.py), as the bench user bound to `edit`."""
    say("RBAC on: a second API server with a token file and --authorization-mode Node,RBAC")
    secured = _APIServerProcess(
        store.endpoints, workdir / "apiserver-rbac.log", _auth.server_args(workdir)
    )
    try:
        secured.wait_serving(opts.ready_timeout)
        pids = [*store.pids.values(), secured.pid]
        with_token = dataclasses.replace(opts, token=_auth.TOKEN)
        result, _ = run_loop(
            _granted_run(open_address, secured.address, with_token, pids, secured.pid),
            not args.no_uvloop,
        )
        return cast(APIBenchResult, result)
    finally:
        secured.close()


async def _granted_run(
    open_address: str, address: str, opts: APIBenchOptions, pids: Sequence[int], pid: int
) -> APIBenchResult:
    await _auth.grant(open_address, opts.call_timeout)
    return await run(address, opts, server_pids=pids, apiserver_pid=pid)


def main(argv: Sequence[str] | None = None) -> int:
    """``k8semu bench api``: returns the exit status (1 when the servers or the run failed)."""
    args = build_parser().parse_args(argv)
    opts = _options(args)
    if args.server:
        return _main_server(args, opts)
    return _main_started(args, opts)

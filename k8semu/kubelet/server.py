"""The kubelet's gRPC service (k8semu.kubelet.v1.Kubelet): container logs, exec, attach,
port-forward and the usage summary.

Owns answering those calls from the node agent's pod workers, the runtime's log files and
the node's `Stats`; it changes nothing in the pods.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc

from k8semu import transport
from k8semu.kubelet import containerlog, streaming
from k8semu.kubelet.podstatus import ContainerRecord
from k8semu.kubelet.podworker import PodWorker, exec_launch
from k8semu.kubelet.stats import Stats
from k8semu.pb.kubelet.v1 import kubelet_pb2, kubelet_pb2_grpc
from k8semu.transport import abort

CHUNK = streaming.CHUNK
MAX_EXEC_TIMEOUT = 3600.0

SERVICE_NAME = kubelet_pb2.DESCRIPTOR.services_by_name["Kubelet"].full_name


class _RequestError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class KubeletServicer(kubelet_pb2_grpc.KubeletServicer):
    """`find_worker(namespace, name)` gives the pod's worker, or None; `stats(node)` the
    node's usage summary ("" = the kubelet's only node), or None (not a node of ours)."""

    def __init__(
        self,
        find_worker: Callable[[str, str], PodWorker | None],
        *,
        exec_timeout: float,
        stats: Callable[[str], Stats | None] = lambda node: None,
    ) -> None:
        self._find = find_worker
        self._exec_timeout = exec_timeout
        self._stats = stats

    def _container(self, namespace: str, pod: str, container: str) -> tuple[PodWorker, Any]:
        if not pod:
            raise _RequestError(grpc.StatusCode.INVALID_ARGUMENT, "pod: Required value")
        ns = namespace or "default"
        worker = self._find(ns, pod)
        if worker is None:
            raise _RequestError(
                grpc.StatusCode.NOT_FOUND, f'pod "{pod}" in namespace "{ns}" is not on this node'
            )
        if not container:
            names = worker.container_names()
            if len(names) != 1:
                raise _RequestError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"a container name must be specified for pod {pod}, choose one of:"
                    f" [{' '.join(names)}]",
                )
            container = names[0]
        rec = worker.container(container)
        if rec is None:
            raise _RequestError(
                grpc.StatusCode.NOT_FOUND,
                f"container {container} is not valid for pod {pod}",
            )
        return worker, rec

    async def Logs(
        self, request: kubelet_pb2.LogsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[kubelet_pb2.LogsChunk]:
        try:
            worker, rec = self._container(request.namespace, request.pod, request.container)
            path, restart = self._log_file(worker, rec, request.previous)
        except _RequestError as exc:
            await abort(context, exc.code, str(exc))
        if path is None or not path.exists():
            await abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"no log of container {rec.name} (run {restart}) in pod {request.pod}",
            )
        try:
            decoder = _decoder(request)
        except ValueError as exc:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        follow = request.follow and not request.previous
        offset, upto = 0, -1
        if request.HasField("tail_lines"):
            # The last lines as the file is now: without following, a line the container
            # prints while this answer is on its way is not one more of them.
            end = path.stat().st_size
            offset = await asyncio.to_thread(
                containerlog.tail_offset, path, request.tail_lines, end
            )
            upto = -1 if follow else end - offset
        # An empty first chunk says the request is accepted before any output exists (the API
        # server answers its headers then, not at the first line of a quiet followed log).
        yield kubelet_pb2.LogsChunk()
        left = request.limit_bytes if request.HasField("limit_bytes") else -1
        async with contextlib.aclosing(
            streaming.log_bytes(worker, rec, path, restart, offset, follow=follow)
        ) as chunks:
            async for chunk in chunks:
                raw = chunk if upto < 0 else chunk[:upto]
                if upto >= 0:
                    upto -= len(raw)
                data = decoder.feed(raw)
                if left >= 0:
                    data = data[:left]
                    left -= len(data)
                if data:
                    yield kubelet_pb2.LogsChunk(data=data)
                if left == 0 or upto == 0:
                    return

    def _log_file(
        self, worker: PodWorker, rec: ContainerRecord, previous: bool
    ) -> tuple[Path | None, int]:
        restart = rec.restart_count
        if rec.handle is None and rec.last is None:
            raise _RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f'container "{rec.name}" in pod "{worker.name}" is waiting to start:'
                f" {rec.waiting_reason}",
            )
        if previous:
            # The run before the current one (running, or the last that ended).
            restart -= 1
            if restart < 0:
                raise _RequestError(
                    grpc.StatusCode.NOT_FOUND,
                    f'previous terminated container "{rec.name}" in pod "{worker.name}" not found',
                )
        return worker.host.runtime.log_path(worker.uid, rec.name, restart), restart

    async def Exec(
        self, request: kubelet_pb2.ExecRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> kubelet_pb2.ExecResponse:
        try:
            worker, rec = self._container(request.namespace, request.pod, request.container)
        except _RequestError as exc:
            await abort(context, exc.code, str(exc))
        if not request.command:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "command: Required value")
        if rec.handle is None:
            await abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                f"container {rec.name} in pod {request.pod} is not running",
            )
        timeout = request.timeout_seconds or self._exec_timeout
        timeout = min(max(timeout, 0.1), MAX_EXEC_TIMEOUT)
        code, out, err = await worker.exec(rec, list(request.command), request.stdin, timeout)
        return kubelet_pb2.ExecResponse(stdout=out, stderr=err, exit_code=code)

    async def Interact(
        self,
        request_iterator: AsyncIterator[kubelet_pb2.InteractInput],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[kubelet_pb2.InteractOutput]:
        start = await _start_of(request_iterator, context)
        try:
            worker, rec = self._container(start.namespace, start.pod, start.container)
            self._check_interact(start, worker, rec)
        except _RequestError as exc:
            await abort(context, exc.code, str(exc))
        if start.attach:
            yield kubelet_pb2.InteractOutput()  # accepted (the caller answers its client now)
            async for out in self._attach_session(start, worker, rec, request_iterator):
                yield out
            return
        launch = await exec_launch(worker, rec, list(start.command))
        spawned = await worker.host.runtime.spawn(launch, stdin=start.stdin, tty=start.tty)
        yield kubelet_pb2.InteractOutput()  # started
        if spawned.proc is None:
            if start.stderr:
                yield kubelet_pb2.InteractOutput(stderr=spawned.error)
            yield kubelet_pb2.InteractOutput(exit_code=spawned.exit_code)
            return
        session = streaming.Session(spawned, start)
        try:
            session.run(request_iterator)
            async for out in session.outputs():
                yield out
        finally:
            await session.close()

    @staticmethod
    def _check_interact(
        start: kubelet_pb2.ExecStart, worker: PodWorker, rec: ContainerRecord
    ) -> None:
        if rec.handle is None:
            raise _RequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"container {rec.name} in pod {worker.name} is not running",
            )
        if start.attach and start.stdin and not rec.spec.stdin:
            raise _RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"container {rec.name} in pod {worker.name} was not started with stdin"
                " (spec.containers[].stdin is false); attach without -i",
            )
        if start.attach and start.stdin and rec.handle.stdin is None:
            # Adopted after a kubelet restart (the old kubelet's end of the pipe went with
            # it), or a runtime without pipes (simulated).
            raise _RequestError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"container {rec.name} in pod {worker.name}: this kubelet holds no stdin of"
                " its run (adopted after a kubelet restart, or simulated); attach without -i",
            )
        if not start.attach and not start.command:
            raise _RequestError(grpc.StatusCode.INVALID_ARGUMENT, "command: Required value")
        if not (start.stdin or start.stdout or start.stderr):
            raise _RequestError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "you must specify at least one of stdin, stdout, stderr",
            )

    async def _attach_session(
        self,
        start: kubelet_pb2.ExecStart,
        worker: PodWorker,
        rec: ContainerRecord,
        inputs: AsyncIterator[kubelet_pb2.InteractInput],
    ) -> AsyncIterator[kubelet_pb2.InteractOutput]:
        """An attach: with stdin, the caller's input into the run's stdin pipe meanwhile;
        a `stdinOnce` pipe is closed when this session ends, whatever ended it."""
        assert rec.handle is not None
        pipe = rec.handle.stdin if start.stdin else None
        feeder = asyncio.create_task(streaming.feed_stdin(pipe, inputs)) if pipe else None
        try:
            async for out in self._attach(worker, rec):
                if out.stderr and start.tty:  # a terminal has one output stream
                    out = kubelet_pb2.InteractOutput(stdout=out.stderr)
                if (out.stdout and not start.stdout) or (out.stderr and not start.stderr):
                    continue
                yield out
        finally:
            if feeder is not None:
                feeder.cancel()
                await asyncio.gather(feeder, return_exceptions=True)
            if pipe is not None and pipe.once:
                pipe.close()

    async def _attach(
        self, worker: PodWorker, rec: ContainerRecord
    ) -> AsyncIterator[kubelet_pb2.InteractOutput]:
        """The current run's output from now on, until the run ends (each record on its own
        stream)."""
        path, restart = self._log_file(worker, rec, previous=False)
        if path is None or not path.exists():
            return
        offset = path.stat().st_size
        decoder = containerlog.Decoder()
        async with contextlib.aclosing(
            streaming.log_bytes(worker, rec, path, restart, offset, follow=True)
        ) as chunks:
            async for raw in chunks:
                for stream, data in decoder.pieces(raw):
                    if stream == b"stderr":
                        yield kubelet_pb2.InteractOutput(stderr=data)
                    else:
                        yield kubelet_pb2.InteractOutput(stdout=data)
        yield kubelet_pb2.InteractOutput(exit_code=0)

    async def PortForward(
        self,
        request_iterator: AsyncIterator[kubelet_pb2.PortForwardData],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[kubelet_pb2.PortForwardData]:
        first = await anext(aiter(request_iterator), kubelet_pb2.PortForwardData())
        where = first.start
        if not 0 < where.port < 65536:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "start.port: must be 1-65535")
        worker = self._find(where.namespace or "default", where.pod)
        if worker is None or not worker.pod_ip:
            await abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f'pod "{where.pod}" in namespace "{where.namespace}" has no IP on this node',
            )
        try:
            async with contextlib.aclosing(
                streaming.forward(worker.pod_ip, where.port, first.data, request_iterator)
            ) as data:
                async for msg in data:
                    yield msg
        except (OSError, TimeoutError) as exc:
            await abort(
                context,
                grpc.StatusCode.UNAVAILABLE,
                f"failed to connect to {worker.pod_ip}:{where.port} in pod {where.pod}:"
                f" {getattr(exc, 'strerror', None) or exc!r}",
            )

    async def Summary(
        self, request: kubelet_pb2.SummaryRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> kubelet_pb2.Summary:
        stats = self._stats(request.node)
        if stats is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"node {request.node!r} is not here")
        return await stats.summary()


def _decoder(request: kubelet_pb2.LogsRequest) -> containerlog.Decoder:
    """The request's time options; ValueError naming the field that is wrong."""
    seconds = request.since_seconds if request.HasField("since_seconds") else None
    if seconds is not None and request.since_time:
        raise ValueError("at most one of `sinceTime` or `sinceSeconds` may be specified")
    since = containerlog.since_stamp(since_seconds=seconds, since_time=request.since_time)
    return containerlog.Decoder(timestamps=request.timestamps, since=since)


async def _start_of(
    inputs: AsyncIterator[kubelet_pb2.InteractInput], context: grpc.aio.ServicerContext[Any, Any]
) -> kubelet_pb2.ExecStart:
    first = await anext(aiter(inputs), None)
    if first is None or first.WhichOneof("input") != "start":
        await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "start: the first message")
    return first.start


def add_to_server(server: grpc.aio.Server, servicer: KubeletServicer) -> None:
    kubelet_pb2_grpc.add_KubeletServicer_to_server(servicer, server)


#: The API server's identity towards the kubelets (kube-apiserver's
#: --kubelet-client-certificate; kubeadm's `apiserver-kubelet-client`).
APISERVER_CLIENT = "kube-apiserver-kubelet-client"
#: The controller manager: its HPA reads the usage summaries, as metrics-server would.
CONTROLLER_MANAGER = "system:kube-controller-manager"


def authorized_callers() -> transport.PeerAllowList:
    """Who may call what on a kubelet serving TLS (issue 16 item 4: the kubelet trusts only
    the API server): a pod's logs, exec, attach and port-forward only the API server, which
    authorized the user first (pods/log, pods/exec, ...); the usage summary also the
    controller manager. Health and reflection: any certificate of the cluster CA (the
    launcher's probes). A kubelet cannot ask RBAC, so the rule is by certificate name."""
    return transport.PeerAllowList(
        {
            f"/{SERVICE_NAME}/": (APISERVER_CLIENT,),
            f"/{SERVICE_NAME}/Summary": (APISERVER_CLIENT, CONTROLLER_MANAGER),
        },
        component="kubelet",
    )

"""Publishes one host's component table through the API: a ConfigMap in kube-system,
``k8semu-components-<host>``, labelled ``k8semu.io/components=true``, one data key per component
(its name) whose value is a JSON object::

    {"kind": "scheduler", "host": "", "pid": 4242, "state": "running", "restarts": 2,
     "lastExitCode": -9, "lastExitAt": "2026-12-05T11:02:03Z",
     "started": "2026-12-05T11:02:04Z", "address": "127.0.0.1:40123", "nodes": []}

The annotation ``k8semu.io/published-at`` says when it was last written: on every change, and
every ``REFRESH_S`` (30 s) when nothing changed, so a table whose supervisor is gone (killed,
its machine down) shows its age. ``state`` is the supervisor's word (running, backoff,
failed, stopped); ``lastExitCode`` is negative for a signal, null when unknown (an adopted
process). The dashboard's Cluster view watches these ConfigMaps: the supervisor (foreground
``k8semu up`` or detached ``k8semu supervise``, one loop) is the only party that knows pids
and restarts, and the API is how the page, on any host, can see them.

Writes happen from one background thread, so supervision never waits for an API server (the
very thing that may be down): ``publish()`` only replaces the pending snapshot (the last state
wins) and wakes the thread, which writes at most once a second and, when no API server
answers, tries again later with whatever is pending then. Best effort: nothing here raises
into the supervisor; it must not start or signal processes.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence

import grpc  # type: ignore[import-untyped, unused-ignore]
from google.protobuf import any_pb2

from k8semu.cluster.probes import Probes
from k8semu.cluster.state import ComponentRecord
from k8semu.pb.api.v1 import apiserver_pb2, apiserver_pb2_grpc, core_pb2, meta_pb2

__all__ = ["COMPONENTS_LABEL", "PUBLISHED_AT", "ComponentPublisher", "configmap_name", "table"]

NAMESPACE = "kube-system"
COMPONENTS_LABEL = "k8semu.io/components"
HOST_LABEL = "k8semu.io/host"
MIN_INTERVAL_S = 1.0
#: Written again this often when nothing changed, so a reader can tell a table whose
#: supervisor is gone (its ``published-at`` grows old) from a quiet one.
REFRESH_S = 30.0
PUBLISHED_AT = "k8semu.io/published-at"
RETRY_S = (1.0, 2.0, 5.0)
RPC_TIMEOUT_S = 2.0
FIELD_MANAGER = "k8semu-supervisor"
CLOSE_WAIT_S = 1.0


def configmap_name(host: str) -> str:
    """``k8semu-components-<host>``: the host as a DNS label (a one-machine cluster's plan has
    no host name: the machine's, so two machines' clusters sharing a store never collide)."""
    raw = (host or os.uname().nodename).lower()
    label = re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")[:40] or "local"
    return f"k8semu-components-{label}"


def _boot_time() -> float:
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


_BOOT = _boot_time()
_TICKS = os.sysconf("SC_CLK_TCK")


def _started(record: ComponentRecord) -> str:
    """The process's wall-clock start (RFC 3339), from its recorded start time in ticks."""
    if record.pid <= 0 or record.start_time <= 0 or not _BOOT:
        return ""
    at = datetime.datetime.fromtimestamp(_BOOT + record.start_time / _TICKS, datetime.UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def table(records: Iterable[ComponentRecord]) -> dict[str, str]:
    """The ConfigMap's data: component name -> its row as JSON (sorted keys: a write that
    changes nothing writes the same bytes)."""
    return {
        r.name: json.dumps(
            {
                "kind": r.kind,
                "host": r.host,
                "pid": r.pid,
                "state": r.state,
                "restarts": r.restarts,
                "lastExitCode": r.last_exit_code,
                "lastExitAt": r.last_exit_at,
                "started": _started(r),
                "address": r.address,
                "nodes": r.nodes,
            },
            sort_keys=True,
        )
        for r in records
    }


class ComponentPublisher:
    """Keeps ``k8semu-components-<host>`` equal to the last table given to ``publish()``.

    Invariant: at most one write in flight (one thread), at most one write per
    ``MIN_INTERVAL_S``, and the table written is always the newest one published.
    """

    def __init__(
        self,
        api_servers: Sequence[str],
        host: str,
        make_probes: Callable[[], Probes],
        say: Callable[[str], None],
        refresh_s: float = REFRESH_S,
    ) -> None:
        self._servers = list(api_servers)
        self._refresh_s = refresh_s
        self.name = configmap_name(host)
        self._host = host
        self._make_probes = make_probes
        self._say = say
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending: dict[str, str] | None = None
        self._written: dict[str, str] | None = None
        self._closed = False
        self._thread: threading.Thread | None = None

    def publish(self, records: Iterable[ComponentRecord]) -> None:
        """Queue this table (replacing any not yet written); never blocks on the API."""
        if not self._servers:
            return
        data = table(records)
        with self._lock:
            if data == self._written and self._pending is None:
                return
            self._pending = data
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="components", daemon=True)
            self._thread.start()
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            # A write in flight to an API server that does not answer is not waited for to
            # its deadline: stopping a cluster must not wait on it (the thread is a daemon).
            self._thread.join(timeout=CLOSE_WAIT_S)

    def _run(self) -> None:
        probes = self._make_probes()
        failures = 0
        try:
            while not self._closed:
                woken = self._wake.wait(self._refresh_s)
                self._wake.clear()
                with self._lock:
                    data, self._pending = self._pending, None
                    if data is None and not woken:
                        data = self._written  # nothing changed for a while: say we are here
                if data is None or self._closed:
                    continue
                try:
                    self._write(probes, data)
                except grpc.RpcError as exc:
                    with self._lock:  # last state wins: keep the newer one if there is one
                        if self._pending is None:
                            self._pending = data
                    if failures == 0:
                        self._say(f"  (component table {self.name} not published: {exc!s:.200})")
                    delay = RETRY_S[min(failures, len(RETRY_S) - 1)]
                    failures += 1
                    self._nap(delay)
                    continue
                failures = 0
                with self._lock:
                    self._written = data
                self._nap(MIN_INTERVAL_S)
        finally:
            probes.close()

    def _nap(self, seconds: float) -> None:
        """Wait (a close cuts it short), then look at what is pending."""
        deadline = time.monotonic() + seconds
        while not self._closed and time.monotonic() < deadline:
            time.sleep(min(0.1, deadline - time.monotonic()))
        self._wake.set()

    def _write(self, probes: Probes, data: dict[str, str]) -> None:
        """Replace the ConfigMap's data (create it the first time), through the first API
        server that answers. Raises grpc.RpcError when none does."""
        last: grpc.RpcError | None = None
        for server in self._servers:
            stub = apiserver_pb2_grpc.APIStub(probes.channel(server))
            try:
                self._write_to(stub, data)
                return
            except grpc.RpcError as exc:
                last = exc
        assert last is not None
        raise last

    def _write_to(self, stub: apiserver_pb2_grpc.APIStub, data: dict[str, str]) -> None:
        labels = {COMPONENTS_LABEL: "true", HOST_LABEL: configmap_name(self._host)[18:]}
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        meta = meta_pb2.ObjectMeta(
            name=self.name, namespace=NAMESPACE, labels=labels, annotations={PUBLISHED_AT: now}
        )
        cm = core_pb2.ConfigMap(api_version="v1", kind="ConfigMap", metadata=meta, data=data)
        try:
            got = stub.Get(
                apiserver_pb2.GetRequest(
                    resource="configmaps", namespace=NAMESPACE, name=self.name
                ),
                timeout=RPC_TIMEOUT_S,
            )
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            packed = any_pb2.Any()
            packed.Pack(cm)
            stub.Create(
                apiserver_pb2.CreateRequest(
                    resource="configmaps",
                    namespace=NAMESPACE,
                    object=packed,
                    field_manager=FIELD_MANAGER,
                ),
                timeout=RPC_TIMEOUT_S,
            )
            return
        current = core_pb2.ConfigMap()
        got.object.Unpack(current)
        cm.metadata.resource_version = current.metadata.resource_version
        packed = any_pb2.Any()
        packed.Pack(cm)
        stub.Update(
            apiserver_pb2.UpdateRequest(
                resource="configmaps", object=packed, field_manager=FIELD_MANAGER
            ),
            timeout=RPC_TIMEOUT_S,
        )

"""The component table a supervisor publishes (k8semu.cluster.publish): its rows, its name, and
that publishing never waits for an API server that does not answer (the live path, through a
real API server, is tests/dashboard/test_views.py::test_a_killed_process_restarts_in_the_page)."""

from __future__ import annotations

import json
import time

from k8semu.cluster.probes import Probes
from k8semu.cluster.processes import free_loopback_ports
from k8semu.cluster.publish import ComponentPublisher, configmap_name, table
from k8semu.cluster.state import ComponentRecord


def _record(**kw: object) -> ComponentRecord:
    base: dict[str, object] = {"name": "scheduler-1", "kind": "scheduler", "host": "", "stage": 2}
    base["command"] = ["k8semu", "scheduler"]
    base.update(kw)
    return ComponentRecord(**base)  # type: ignore[arg-type]


def test_rows() -> None:
    rec = _record(pid=0, state="backoff", restarts=3, last_exit_code=-9, address="127.0.0.1:1")
    row = json.loads(table([rec])["scheduler-1"])
    assert row == {
        "kind": "scheduler", "host": "", "pid": 0, "state": "backoff", "restarts": 3,
        "lastExitCode": -9, "lastExitAt": "", "started": "", "address": "127.0.0.1:1",
        "nodes": [],
    }  # fmt: skip


def test_name_is_a_dns_label() -> None:
    assert configmap_name("Host_A.example") == "k8semu-components-host-a-example"
    assert configmap_name("").startswith("k8semu-components-")
    assert configmap_name("!!!") == "k8semu-components-local"


def test_publish_never_waits_for_a_dead_api_server() -> None:
    said: list[str] = []
    (dead,) = free_loopback_ports(1)
    pub = ComponentPublisher([f"127.0.0.1:{dead}"], "h1", Probes, said.append)
    for restarts in range(50):  # each only swaps the pending table, no RPC on this thread
        pub.publish([_record(restarts=restarts)])
    deadline = time.monotonic() + 20
    while not said and time.monotonic() < deadline:
        time.sleep(0.05)
    pub.close()
    assert said and "not published" in said[0], said
    assert len(said) == 1, said

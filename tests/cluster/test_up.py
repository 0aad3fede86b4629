"""`k8semu up` end to end, as a user runs it: a subprocess on free loopback ports, checked through
the etcd v3 API, one replica killed, then stopped with a signal; and its start-up errors."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from k8semu.cluster.processes import free_loopback_ports
from k8semu.pb.etcd import rpc_pb2, rpc_pb2_grpc

DEMO_KEY = b"/k8semu/hello"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
# A replica row of the summary: name, pid, client address.
_REPLICA_ROW = re.compile(r"^\s+(s\d+)\s+(\d+)\s+(127\.0\.0\.1:\d+)\s")


def _config(path: Path, ports: list[int]) -> Path:
    members = "".join(
        f"    - name: s{i + 1}\n"
        f"      clientURL: http://127.0.0.1:{ports[2 * i]}\n"
        f"      peerURL: http://127.0.0.1:{ports[2 * i + 1]}\n"
        for i in range(len(ports) // 2)
    )
    path.write_text(
        "kind: ClusterConfig\nversion: v1alpha1\nname: e2e\n"
        f"store:\n  members:\n{members}"
        "launcher:\n  readyTimeout: 30s\n  restartBackoff: 200ms\n  stopGracePeriod: 5s\n"
    )
    return path


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids: set[int], timeout: float = 10.0) -> list[int]:
    end = time.monotonic() + timeout
    while True:
        left = sorted(pid for pid in pids if _alive(pid))
        if not left or time.monotonic() >= end:
            return left
        time.sleep(0.05)


class Up:
    """One `k8semu up` subprocess whose output lines are collected as they come."""

    def __init__(self, *args: str | Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "k8semu", "up", *map(str, args)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first line from now on that matches ``pattern``; fails after ``timeout``."""
        end = time.monotonic() + timeout
        while True:
            try:
                line = self._new.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                if time.monotonic() < end:
                    continue
                raise AssertionError(
                    f"no line matching {pattern!r} within {timeout} s; output:\n"
                    + "\n".join(self.lines)
                ) from None
            if line is None:
                raise AssertionError(
                    f"k8semu up exited ({self.proc.wait()}) before printing {pattern!r}; output:\n"
                    + "\n".join(self.lines)
                )
            self.lines.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def replicas(self) -> dict[str, tuple[int, str]]:
        """name -> (pid, client address), from the summary printed so far."""
        rows = (_REPLICA_ROW.match(line) for line in self.lines)
        return {m.group(1): (int(m.group(2)), m.group(3)) for m in rows if m}

    def finish(self, timeout: float) -> int:
        """Wait for the launcher to exit; its exit code. Collects the rest of its output."""
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        while True:
            try:
                line = self._new.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return rc

    def stop(self, sig: signal.Signals) -> int:
        self.proc.send_signal(sig)
        return self.finish(STOP_TIMEOUT_S)

    def close(self) -> None:
        """Kill the launcher by pid if it still runs (its replicas die with it through
        PR_SET_PDEATHSIG) and release the pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def _run_up(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`k8semu up` run to its end (for the cases that fail before starting anything)."""
    return subprocess.run(
        [sys.executable, "-m", "k8semu", "up", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def ups() -> Iterator[list[Up]]:
    """Every launcher a test starts, closed at the end."""
    started: list[Up] = []
    yield started
    for up in started:
        up.close()


def _read_demo_key(endpoint: str, timeout: float = 10.0) -> bytes:
    """The demo key read linearizably through ``endpoint``, retried while it (re)joins."""
    end = time.monotonic() + timeout
    with grpc.insecure_channel(endpoint, options=[("grpc.enable_http_proxy", 0)]) as channel:
        kv = rpc_pb2_grpc.KVStub(channel)
        while True:
            try:
                got = kv.Range(rpc_pb2.RangeRequest(key=DEMO_KEY), timeout=2)
                if got.kvs:
                    return bytes(got.kvs[0].value)
                last: object = "key not found"
            except grpc.RpcError as exc:
                last = exc
            if time.monotonic() >= end:
                raise AssertionError(f"cannot read {DEMO_KEY!r} from {endpoint}: {last}")
            time.sleep(0.1)


@pytest.mark.slow
def test_up_serves_restarts_a_killed_replica_stops_cleanly_and_restarts_with_its_data(
    tmp_path: Path, ups: list[Up]
) -> None:
    config = _config(tmp_path / "cluster.yaml", free_loopback_ports(6))
    data = tmp_path / "data"
    seen: set[int] = set()

    up = Up("--config", config, "--data-dir", data)
    ups.append(up)
    up.wait_for(r"^Supervising\.", READY_TIMEOUT_S)
    replicas = up.replicas()
    assert sorted(replicas) == ["s1", "s2", "s3"]
    seen |= {pid for pid, _ in replicas.values()}
    assert all(_alive(pid) for pid in seen)
    assert any("the key is new" in line for line in up.lines)
    values = {name: _read_demo_key(endpoint) for name, (_, endpoint) in replicas.items()}
    assert len(set(values.values())) == 1
    assert values["s1"].startswith(b"hello from k8semu (cluster e2e")

    # One launcher per data dir.
    second = _run_up("--config", config, "--data-dir", data)
    assert second.returncode == 1
    assert f"another `k8semu up` (pid {up.proc.pid}) is running this cluster" in second.stderr

    # A replica killed behind the launcher's back is reported and started again.
    victim_pid, victim_endpoint = replicas["s2"]
    os.kill(victim_pid, signal.SIGKILL)
    up.wait_for(rf"store replica s2 \(pid {victim_pid}\) was killed by signal SIGKILL", 10)
    new_pid = int(up.wait_for(r"store replica s2 started again: pid (\d+)", 10).group(1))
    assert new_pid != victim_pid
    seen.add(new_pid)
    assert _read_demo_key(victim_endpoint) == values["s2"]

    assert up.stop(signal.SIGINT) == 0, "\n".join(up.lines)
    assert any(line.startswith("SIGINT: stopping 3 store replicas") for line in up.lines)
    assert _wait_gone(seen) == []

    # The data dir belongs to cluster e2e: a config for another cluster is refused.
    other = tmp_path / "other.yaml"
    other.write_text(config.read_text().replace("name: e2e", "name: other"))
    refused = _run_up("--config", other, "--data-dir", data)
    assert refused.returncode == 1
    assert f"data dir {data} holds cluster 'e2e'" in refused.stderr

    # The next run restarts the same cluster: the demo key written last time is still there.
    again = Up("--config", config, "--data-dir", data)
    ups.append(again)
    again.wait_for(r"^Supervising\.", READY_TIMEOUT_S)
    assert any(
        "from an earlier run" in line and values["s1"].decode() in line for line in again.lines
    ), "\n".join(again.lines)
    seen |= {pid for pid, _ in again.replicas().values()}
    assert again.stop(signal.SIGTERM) == 0, "\n".join(again.lines)
    assert _wait_gone(seen) == []


def test_bad_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("kind: ClusterConfig\nversion: v1alpha1\nstore: {replicas: 0}\n")
    run = _run_up("--config", config, "--data-dir", tmp_path / "data")
    assert run.returncode == 2
    assert "bad.yaml: store.replicas: must be >= 1" in run.stderr
    assert not (tmp_path / "data").exists()


def test_address_in_use_exits_1_naming_the_field(tmp_path: Path) -> None:
    ports = free_loopback_ports(6)
    config = _config(tmp_path / "cluster.yaml", ports)
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", ports[3]))
        taken.listen()
        run = _run_up("--config", config, "--data-dir", tmp_path / "data")
    assert run.returncode == 1
    assert f"store.members[1].peerURL: 127.0.0.1:{ports[3]} is already in use" in run.stderr
    assert not (tmp_path / "data" / "store").exists()  # nothing was started


def test_replica_that_exits_at_start_is_reported_with_its_log(
    tmp_path: Path, ups: list[Up]
) -> None:
    config = _config(tmp_path / "cluster.yaml", free_loopback_ports(6))
    data = tmp_path / "data"
    (data / "store").mkdir(parents=True)
    (data / "store" / "s1").write_text("not a directory")  # s1 cannot open its data dir
    up = Up("--config", config, "--data-dir", data)
    ups.append(up)
    rc = up.finish(READY_TIMEOUT_S)
    output = "\n".join(up.lines)
    assert rc == 1, output
    assert "the store did not start: store member s1" in output
    assert "exited with code" in output
    assert "k8semu store:" in output  # the replica's own complaint, from its log
    pids = {int(p) for p in re.findall(r"s\d pid (\d+)", output)}
    assert len(pids) == 2  # the two healthy replicas were stopped by pid
    assert _wait_gone(pids) == []

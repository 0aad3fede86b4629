"""Linearizability of a real 3-replica store while its leader is killed and frozen.

Eight concurrent clients put unique values, read linearizably, delete and compare-and-swap on
eight keys through the etcd v3 API, every call recorded (k8semu.chaos.workload). Meanwhile a
seeded chaos task SIGKILLs the leader three times, restarting it 0.2-1.5 s later, and SIGSTOPs
it twice for 1-2 s (longer than an election timeout) before SIGCONT. After healing, a final get
of every key joins the history, and the whole history must be linearizable
(k8semu.chaos.linearizability): every acknowledged write is then either the final value or
provably overwritten, and no read saw a value it could not have.

Re-run a fault plan with K8SEMU_CHAOS_SEED=<seed> (the seed is in every failure). Timing is
real, so a seed fixes the fault plan and each client's op sequence, not the interleaving.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest

from k8semu.chaos.linearizability import HistoryRecorder, Kind, Op, check
from k8semu.chaos.workload import (
    NO_LEADER,
    Tally,
    Workload,
    dump_history,
    outcome_of,
    read_all,
    run_workload,
)
from k8semu.cluster.processes import ClusterError, K8semuStoreCluster
from k8semu.pb.etcd import rpc_pb2

SEED_ENV = "K8SEMU_CHAOS_SEED"

WORKLOAD = Workload(clients=8, keys=8, max_seconds=22.0, max_ops=40_000, rpc_timeout=2.0)
KILLS = 3
PAUSES = 2
KILL_DOWN_S = (0.2, 1.5)
PAUSE_S = (1.0, 2.0)  # the election timeout is 500 ms, randomized up to 1 s
QUIET_S = (0.3, 0.8)  # healthy traffic before each fault
TAIL_S = 1.0  # healthy traffic after the last fault
START_WAIT_S = 60.0
LEADER_WAIT_S = 15.0
READY_WAIT_S = 20.0
FINAL_READ_S = 20.0
CHECK_TIMEOUT_S = 30.0
MIN_ACKNOWLEDGED = 500

_LOG_TROUBLE = re.compile(r"error|exception|traceback|critical", re.IGNORECASE)
_LOG_LINES_SHOWN = 20


def _seed() -> int:
    given = os.environ.get(SEED_ENV)
    return int(given) if given else random.SystemRandom().randrange(1 << 32)


def _max_term(cluster: K8semuStoreCluster) -> int:
    return max(
        (s.raftTerm for s in cluster.statuses().values() if isinstance(s, rpc_pb2.StatusResponse)),
        default=0,
    )


async def _chaos(cluster: K8semuStoreCluster, rng: random.Random, events: list[str]) -> list[str]:
    """Apply the fault plan; return the leaders seen before and after each fault.

    Blocking cluster calls (leader polls, SIGKILL and reaping) run in a worker thread, one at a
    time, so the clients' event loop keeps going; start_member stays on this (the main) thread,
    which lets the harness tie the replica's life to ours (PR_SET_PDEATHSIG).
    """

    def note(text: str) -> None:
        events.append(f"  t={time.monotonic():.6f} {text}")

    plan = ["kill"] * KILLS + ["pause"] * PAUSES
    rng.shuffle(plan)
    leaders: list[str] = []
    for fault in plan:
        await asyncio.sleep(rng.uniform(*QUIET_S))
        leader = await asyncio.to_thread(cluster.leader, LEADER_WAIT_S)
        leaders.append(leader)
        if fault == "kill":
            down = rng.uniform(*KILL_DOWN_S)
            note(f"SIGKILL leader {leader}, restart in {down:.2f} s")
            await asyncio.to_thread(cluster.kill, leader)
            await asyncio.sleep(down)
            cluster.start_member(leader)
            note(f"restarted {leader}")
        else:
            frozen = rng.uniform(*PAUSE_S)
            note(f"SIGSTOP leader {leader} for {frozen:.2f} s")
            cluster.pause(leader)
            await asyncio.sleep(frozen)
            cluster.resume(leader)
            note(f"SIGCONT {leader}")
        after = await asyncio.to_thread(cluster.wait_ready, READY_WAIT_S)
        note(f"all members agree, leader {after}")
        leaders.append(after)
    return leaders


def _unknown_writes_seen(history: Sequence[Op]) -> tuple[int, int]:
    """Puts and swaps with an unknown outcome, and how many a get later showed took effect."""
    read = {op.output for op in history if op.kind == "get" and op.status == "ok"}
    written = []
    for op in history:
        if op.status == "unknown" and op.kind == "put":
            written.append(op.value)
        elif op.status == "unknown" and op.kind == "cas" and isinstance(op.value, tuple):
            written.append(op.value[1])
    return len(written), sum(v in read for v in written)


def _heal(cluster: K8semuStoreCluster) -> None:
    for m in cluster.members.values():
        if m.paused:
            cluster.resume(m.name)
        if not m.running:
            cluster.start_member(m.name)


def _log_trouble(cluster: K8semuStoreCluster) -> str:
    """Lines of the replicas' logs that mention errors, for failure messages."""
    out = []
    for m in cluster.members.values():
        try:
            lines = m.log_path.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            continue
        bad = [line for line in lines if _LOG_TROUBLE.search(line)]
        if bad:
            out.append(f"--- {m.log_path}: {len(bad)} lines mention errors, the last:")
            out.extend(bad[-_LOG_LINES_SHOWN:])
    return "\n".join(out) if out else "(no replica log line mentions an error)"


async def test_history_under_leader_kills_and_pauses_is_linearizable(tmp_path: Path) -> None:
    seed = _seed()
    cluster = K8semuStoreCluster(tmp_path / "cluster", 3)
    with cluster:
        try:
            cluster.start()
        except ClusterError as exc:
            pytest.skip(f"cannot start store processes: {exc}")
        try:
            await _run(cluster, seed, tmp_path)
        except BaseException as exc:
            exc.add_note(
                f"chaos seed {seed} (re-run with {SEED_ENV}={seed}); replica logs in "
                f"{cluster.base_dir}"
            )
            raise


async def _run(cluster: K8semuStoreCluster, seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    began = time.monotonic()
    await asyncio.to_thread(cluster.wait_ready, START_WAIT_S)
    term_before = await asyncio.to_thread(_max_term, cluster)
    recorder = HistoryRecorder()
    stop = asyncio.Event()
    events: list[str] = []
    load_began = time.monotonic()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(run_workload(cluster.endpoints, recorder, WORKLOAD, seed=seed, stop=stop))
        leaders = await _chaos(cluster, rng, events)
        await asyncio.sleep(TAIL_S)
        stop.set()
    load_s = time.monotonic() - load_began

    _heal(cluster)
    await asyncio.to_thread(cluster.wait_ready, READY_WAIT_S)
    term_after = await asyncio.to_thread(_max_term, cluster)
    final = await read_all(
        cluster.endpoints,
        recorder,
        WORKLOAD.key_names(),
        client=WORKLOAD.clients,
        within=FINAL_READ_S,
        rpc_timeout=WORKLOAD.rpc_timeout,
    )
    history = recorder.history()
    tally = Tally.of(history)
    check_began = time.monotonic()
    result = await asyncio.to_thread(check, history, timeout=CHECK_TIMEOUT_S)
    check_s = time.monotonic() - check_began
    unknown_writes, took_effect = _unknown_writes_seen(history)
    summary = (
        f"seed {seed}: {tally}; {took_effect} of {unknown_writes} unknown puts/swaps were"
        f" later read; load {load_s:.1f} s, check {check_s:.1f} s, "
        f"total {time.monotonic() - began:.1f} s; terms {term_before} -> {term_after}; "
        f"leaders {' '.join(leaders)}; final values {sorted(final.items())}"
    )
    print(summary)
    print("chaos:\n" + "\n".join(events))

    if not result.ok:
        saved = tmp_path / "history.jsonl"
        dump_history(history, saved)
        pytest.fail(
            f"{summary}\nchecker: {result.detail}\nhistory saved to {saved}\nchaos (same clock"
            f" as the history):\n" + "\n".join(events) + "\n" + _log_trouble(cluster),
            pytrace=False,
        )
    # Not vacuous: the clients got plenty done, across real leader changes.
    assert tally.status("ok") > MIN_ACKNOWLEDGED, summary
    assert tally.kind("put") and tally.swapped and tally.kind("delete"), summary
    # Every kill forces an election; a pause usually does (it outlasts the election timeout),
    # but the old leader may resume before a successor wins, so only kills are counted.
    assert term_after >= term_before + KILLS, summary
    assert len(set(leaders)) >= 2, summary


@pytest.mark.parametrize(
    ("kind", "code", "details", "expected"),
    [
        ("put", grpc.StatusCode.UNAVAILABLE, NO_LEADER, "fail"),
        ("cas", grpc.StatusCode.UNAVAILABLE, NO_LEADER, "fail"),
        ("delete", grpc.StatusCode.UNAVAILABLE, "etcdserver: leader changed", "unknown"),
        ("put", grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out", "unknown"),
        ("put", grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", "unknown"),
        ("cas", grpc.StatusCode.UNAVAILABLE, "Connection reset by peer", "unknown"),
        ("put", grpc.StatusCode.UNAVAILABLE, NO_LEADER + " (retry)", "unknown"),
        ("get", grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", "fail"),
        ("get", grpc.StatusCode.UNAVAILABLE, "etcdserver: leader changed", "fail"),
    ],
)
def test_error_outcomes(kind: Kind, code: grpc.StatusCode, details: str, expected: str) -> None:
    exc = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)
    assert outcome_of(kind, exc) == expected

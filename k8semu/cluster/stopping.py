"""Stopping a cluster's processes by pid, safely and in order.

``terminate`` is SIGTERM, a grace period, SIGKILL to what is left. Every pid comes with the
start time recorded when it was started (``state.process_start_time``); a signal goes only to a
process that still has that start time, so a pid reused by some unrelated process is never
touched. ``stop_order`` is the order a whole cluster stops in: stage by stage, nodes first and
the store last, the store's leader after its followers. ``kubelet_pods`` finds the pod
processes of the kubelets, which run in sessions of their own and must be found before their
kubelets go. Used by the launcher (for the processes it started) and by ``k8semu down`` (for
the ones a state file records).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from k8semu.cluster.plan import STAGES, STORE
from k8semu.cluster.state import ComponentRecord, is_same_process, processes_of

__all__ = ["kubelet_pods", "stop_order", "terminate"]

POLL_S = 0.02
# After SIGKILL the kernel needs a moment; a process still there after this is reported.
KILL_WAIT_S = 5.0


def terminate(
    pids: Mapping[int, int],
    grace: float,
    *,
    reap: Callable[[], None] = lambda: None,
) -> tuple[list[int], list[int]]:
    """Stop every process of ``pids`` (pid -> start time): SIGTERM now, SIGKILL after ``grace``
    seconds to any still running. ``reap`` is called while waiting (a parent must reap its
    children for them to vanish). Returns (killed with SIGKILL, still alive after that)."""
    live = {pid: st for pid, st in pids.items() if is_same_process(pid, st)}
    for pid, st in live.items():
        _signal(pid, st, signal.SIGTERM)
        _signal(pid, st, signal.SIGCONT)  # a stopped (paused) process acts on SIGTERM only now
    left = _wait(live, grace, reap)
    for pid, st in left.items():
        _signal(pid, st, signal.SIGKILL)
    still = _wait(left, KILL_WAIT_S, reap)
    return sorted(left), sorted(still)


def _signal(pid: int, start_time: int, sig: signal.Signals) -> None:
    if is_same_process(pid, start_time):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait(live: Mapping[int, int], timeout: float, reap: Callable[[], None]) -> dict[int, int]:
    deadline = time.monotonic() + timeout
    while True:
        reap()
        left = {pid: st for pid, st in live.items() if is_same_process(pid, st)}
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(POLL_S)


def stop_order(
    components: Sequence[ComponentRecord], leader: Callable[[], str | None]
) -> Iterator[tuple[int, list[ComponentRecord]]]:
    """``components`` in the groups to stop one after the other, each with its stage: the
    stages in reverse start order (nodes, schedulers and controller managers, API servers,
    store), a stage at once - except the store's replicas, whose leader goes alone after its
    followers. A leader told to stop hands its leadership over first and waits for it, which
    cannot happen while its followers stop too (etcd then waits until its SIGKILL).
    ``leader()`` names the store's leader member; it is asked only when more than one replica
    is to stop. Every stage comes, with an empty group when none of its components is among
    ``components``, so that a caller can do what follows a stage (the nodes' pods, which may
    outlive their kubelets)."""
    for stage in reversed(range(len(STAGES))):
        group = [c for c in components if c.stage == stage]
        if stage == STORE and len(group) > 1 and (name := leader()):
            leads = [c for c in group if c.name == f"store-{name}"]
            if leads:
                yield stage, [c for c in group if c not in leads]
                group = leads
        yield stage, group


def kubelet_pods(records: Sequence[ComponentRecord], state_dir: Path) -> dict[int, int]:
    """pid -> start time of the pod processes of the kubelets among ``records`` (themselves
    and the other components left out)."""
    kubelets = [c.pid for c in records if c.kind == "kubelet"]
    ours = {c.pid for c in records}
    return {pid: st for pid, st in processes_of(kubelets, state_dir).items() if pid not in ours}

"""Linearizability checking for histories recorded against the key-value store.

This module owns the *checker*: given the operations clients issued against an etcd-like store
(each with the time it was invoked, the time it returned, and what it returned), decide whether
some total order of those operations (a) respects real time, i.e. an operation that returned
before another was invoked comes first, and (b) is a legal sequential execution of a map of
registers. It must not talk to a store, start processes or sleep: it is a pure function of the
history, so a failure can be replayed from a saved history. The search and its model are in
``linsearch``, with the names cited below; this module holds the entry points.

Algorithm
---------
The search is the one of Wing & Gong [1], with the improvements of Lowe [2]. The history of
one key becomes a doubly linked list of *call* and *return* entries sorted by time (at equal
times calls come first, so touching operations count as concurrent: the checker never invents
an order the clock could not prove). Walking the list from the head, a call entry is an
operation that may be linearized now, because no operation still in the list returned before
it was called. The walk tries it against the sequential model; if the model accepts it, the
operation is *lifted* out of the list (both entries), pushed on an explicit stack with the
state before it, and the walk restarts at the head. Reaching a return entry means that
operation should already have been linearized, so the last choice is undone (popped and put
back into the list) and the walk continues after its call entry. An empty stack at that point
means no linearization exists. The search is iterative, so long histories do not hit the
recursion limit.

Lowe's improvements [2], both used here:

* Memoization: a configuration is the set of linearized operations (a bitset held in Python
  ints) together with the model state. Two paths that reach the same configuration have the
  same future, so a configuration is explored at most once. This turns the exponential search
  into one that is usually linear in the history length.
* P-compositionality [3], which rests on the locality of linearizability [4]: a history of a
  map is linearizable iff the sub-history of every key is. Each key is checked on its own,
  with a small state (the value or ``None``).

Reductions of our own, each argued where it is implemented, keep the search small on the
histories a store under test produces (many overlapping reads, timeouts):

* Readers (a get, a failed cas, a delete of nothing) are committed to as soon as the model
  accepts them: no other order needs trying (see ``_reads_only``).
* The bitset of a configuration is a window that slides along the ops in call order, so its
  size follows the concurrency, not the history length (see ``_Place``).
* Uncertain outcomes: an operation whose client timed out (``status="unknown"``) may have taken
  effect at any time after its call, or never. It gets no return entry, so the search never has
  to linearize it, and its output is not checked; an unknown read constrains nothing and is
  dropped, as are operations that definitely did not happen (``status="fail"``). Unknown ops
  are tried last, only where they can make a difference, one per class of interchangeable
  ones, and a configuration is pruned when one with a subset of its unknown ops was reached
  (see ``search``, ``_Relevance`` and ``_Explored``). Without these, u timed-out writes on a
  key cost up to 2**u.

When a key fails, the checker binary-searches for the *smallest failing prefix*: the earliest
time T such that the operations invoked up to T (those still pending at T treated as unknown)
are not linearizable. Non-linearizability is closed under extension, so the search is sound; the
operation returning at T is the one reported, with the values the key could hold while it was
pending and the operations around it.

References
----------
[1] J. M. Wing and C. Gong, "Testing and verifying concurrent objects", Journal of Parallel and
    Distributed Computing 17(1-2), 1993.
[2] G. Lowe, "Testing for linearizability", Concurrency and Computation: Practice and
    Experience 29(4), 2017.
[3] A. Horn and D. Kroening, "Faster linearizability checking via P-compositionality",
    FORTE 2015.
[4] M. Herlihy and J. Wing, "Linearizability: a correctness condition for concurrent objects",
    ACM TOPLAS 12(3), 1990.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

from k8semu.chaos.linsearch import (
    Input,
    Kind,
    Op,
    Output,
    Status,
    Value,
    check_input,
    explain,
    partition,
    search,
)

__all__ = [
    "CheckResult",
    "HistoryRecorder",
    "Input",
    "Kind",
    "Op",
    "Output",
    "Status",
    "Value",
    "check",
]

DEFAULT_TIMEOUT = 60.0


@dataclass(slots=True)
class CheckResult:
    """The verdict of :func:`check`.

    ``ok`` is True only when every key was proved linearizable. ``timed_out`` True means the
    search budget ran out before a verdict: ``ok`` is then False but nothing was proved wrong.
    ``key`` is the first key that failed (or was being checked when the budget ran out).
    """

    ok: bool
    key: Hashable | None
    detail: str
    ops_checked: int
    timed_out: bool


def check(
    history: Sequence[Op],
    *,
    initial: Mapping[Hashable, Value] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> CheckResult:
    """Check that ``history`` is linearizable for a map of registers.

    ``initial`` gives the values present before the history started (absent keys are None).
    Keys are checked in order of first appearance and the check stops at the first key that
    fails. ``timeout`` bounds the whole call, diagnosis included.

    Raises ValueError if an operation is malformed.
    """
    deadline = time.monotonic() + timeout
    by_key = partition(history)
    checked = 0
    for key, ops in by_key.items():
        start = initial.get(key) if initial is not None else None
        outcome = search(ops, start, deadline)
        checked += len(ops)
        if outcome.verdict is None:
            detail = (
                f"inconclusive: the search budget ({timeout:g}s) ran out on key {key!r} "
                f"({len(ops)} ops, {len(outcome.explored)} configurations explored)"
            )
            return CheckResult(False, key, detail, checked, True)
        if not outcome.verdict:
            detail = explain(key, ops, start, outcome, deadline)
            return CheckResult(False, key, detail, checked, False)
    detail = f"linearizable: {checked} ops over {len(by_key)} keys"
    return CheckResult(True, None, detail, checked, False)


class HistoryRecorder:
    """Records a history while tests drive a real store, from any number of threads or tasks.

    Call :meth:`invoke` just before sending a request and exactly one of :meth:`complete`,
    :meth:`fail` (the request was certainly not applied, e.g. rejected before it was sent) or
    :meth:`unknown` (the outcome was lost) once the outcome is known. Operations still pending
    when :meth:`history` is called count as unknown.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._ops: list[Op] = []
        self._done: list[bool] = []

    def invoke(self, client: int, kind: Kind, key: Hashable, value: Input = None) -> int:
        """Record the invocation of an operation and return its handle."""
        check_input(kind, value)
        with self._lock:
            self._ops.append(Op(client, self._clock(), math.inf, kind, key, value, None, "unknown"))
            self._done.append(False)
            return len(self._ops) - 1

    def complete(self, handle: int, output: Output = None) -> None:
        """Record that the operation was acknowledged with ``output``."""
        self._finish(handle, "ok", output)

    def fail(self, handle: int) -> None:
        """Record that the operation certainly did not take effect."""
        self._finish(handle, "fail", None)

    def unknown(self, handle: int) -> None:
        """Record that the outcome was lost: the operation may or may not have taken effect."""
        self._finish(handle, "unknown", None)

    def history(self) -> list[Op]:
        """Return the recorded operations, in invocation order."""
        with self._lock:
            return list(self._ops)

    def _finish(self, handle: int, status: Status, output: Output) -> None:
        with self._lock:
            if not 0 <= handle < len(self._ops):
                raise ValueError(f"unknown operation handle {handle}")
            if self._done[handle]:
                raise ValueError(f"operation {handle} already finished")
            self._done[handle] = True
            op = self._ops[handle]
            ret = self._clock() if status == "ok" else math.inf
            self._ops[handle] = dataclasses.replace(op, ret=ret, output=output, status=status)

"""The search behind :mod:`k8semu.chaos.linearizability`: the operations of a history, the
sequential model of one register, the Wing-Gong-Lowe search over one key's operations and the
explanation of a failure (the algorithm and its reductions are described in that module).

It owns the search only; the public entry points (``check``, ``HistoryRecorder``) are in
``linearizability``, which re-exports ``Op`` and the type aliases. Pure: no I/O, no processes,
no sleeping.
"""

from __future__ import annotations

import enum
import itertools
import math
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

__all__ = [
    "Input",
    "Kind",
    "Op",
    "Output",
    "Status",
    "Value",
    "check_input",
    "explain",
    "partition",
    "search",
]

Value: TypeAlias = bytes | str
Kind: TypeAlias = Literal["put", "get", "delete", "cas"]
Status: TypeAlias = Literal["ok", "unknown", "fail"]
Input: TypeAlias = Value | tuple[Value | None, Value] | None
Output: TypeAlias = Value | bool | int | None

# The model state of one key: its value, or None while the key is absent.
_State: TypeAlias = Value | None

# How many search steps run between two looks at the clock: often enough to honour the budget
# within milliseconds, rarely enough that time.monotonic() does not show up in profiles.
_CLOCK_EVERY = 1024

# Operations listed around the failing one in a report.
_MAX_CONCURRENT_SHOWN = 10
_MAX_PRECEDING_SHOWN = 5
_MAX_STATES_SHOWN = 10


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a recorded history.

    Invariants (checked by :func:`check`): ``call <= ret`` for acknowledged operations, and
    ``ret`` is finite for them; ``ret`` is ignored (taken as infinite) for unknown ones.
    ``value`` is the written value for ``put`` and ``(expected, new)`` for ``cas``, where an
    ``expected`` of None means "must be absent". ``output`` is what an acknowledged operation
    returned: the value read by ``get`` (None if absent), whether a ``cas`` succeeded, and the
    number of keys a ``delete`` removed (0 or 1, or None if the store did not say).
    """

    client: int
    call: float
    ret: float
    kind: Kind
    key: Hashable
    value: Input = None
    output: Output = None
    status: Status = "ok"


# --- the sequential model -------------------------------------------------------------------


class _Verdict(enum.Enum):
    IMPOSSIBLE = enum.auto()


_IMPOSSIBLE: Final = _Verdict.IMPOSSIBLE

# Applies one operation to a key's state: the state after it, or _IMPOSSIBLE when the model
# refuses it there (a wrong output, or an unknown operation that would change nothing).
_Apply: TypeAlias = Callable[[_State], _State | Literal[_Verdict.IMPOSSIBLE]]


def _put(op: Op, known: bool) -> _Apply:
    value = op.value
    assert isinstance(value, bytes | str)
    if known:
        return lambda state: value
    return lambda state: _IMPOSSIBLE if state == value else value


def _get(op: Op, known: bool) -> _Apply:
    output = op.output
    return lambda state: state if state == output else _IMPOSSIBLE


def _delete(op: Op, known: bool) -> _Apply:
    if not known:
        return lambda state: _IMPOSSIBLE if state is None else None
    if op.output is None:
        return lambda state: None
    deleted = op.output

    def apply(state: _State) -> _State | Literal[_Verdict.IMPOSSIBLE]:
        return None if deleted == (0 if state is None else 1) else _IMPOSSIBLE

    return apply


def _cas(op: Op, known: bool) -> _Apply:
    assert isinstance(op.value, tuple)
    expected, new = op.value
    if not known:
        return lambda state: new if state == expected else _IMPOSSIBLE
    if op.output:
        return lambda state: new if state == expected else _IMPOSSIBLE
    return lambda state: _IMPOSSIBLE if state == expected else state


_MODEL: dict[str, Callable[[Op, bool], _Apply]] = {
    "put": _put,
    "get": _get,
    "delete": _delete,
    "cas": _cas,
}


def _reads_only(op: Op) -> bool:
    """Whether an acknowledged op leaves the state unchanged wherever the model accepts it.

    Such a reader R may be linearized as soon as it is accepted, without ever trying the other
    choices at that configuration C: take any linearization that completes C with R placed
    later. R is a candidate at C, so no pending op returned before R was called, and moving R
    to the front respects real time; R reads the current state and changes nothing, so every
    op after it sees the same states as before. Hence if C followed by R has no completion, C
    has none either. This partial-order reduction matters when many reads overlap: without it
    the search would try the reads in every order.
    """
    if op.kind == "get":
        return True
    if op.kind == "cas":
        return op.output is False
    return op.kind == "delete" and op.output == 0


# Unknown ops are the expensive part of a search: they never have to be linearized, so they
# stay candidates for the rest of the history. An unknown op is only worth trying where it can
# make a difference (see search for why the others may be skipped): where some pending op
# wants the value it writes, or where a candidate is blocked until the state changes.

_NOTHING: Final = object()  # "wants no particular value"


def _wants(op: Op, known: bool) -> object:
    """The value the state must hold for the model to accept ``op``, if one is needed."""
    if op.kind == "get":
        return op.output
    if op.kind == "cas" and (not known or op.output):
        assert isinstance(op.value, tuple)
        return op.value[0]
    if op.kind == "delete" and known and op.output == 0:
        return None
    return _NOTHING


def _writes(op: Op) -> _State:
    """The value a put, a delete or a successful cas leaves."""
    if op.kind == "put":
        assert isinstance(op.value, bytes | str)
        return op.value
    if op.kind == "cas":
        assert isinstance(op.value, tuple)
        return op.value[1]
    return None


def _may_write(op: Op, known: bool) -> bool:
    """Whether ``op`` may leave a value the state did not hold before it."""
    if op.kind == "put" or (op.kind == "delete" and op.output != 0):
        return True
    return op.kind == "cas" and (not known or op.output is True)


def _waits_for_change(op: Op, known: bool) -> bool:
    """Whether an acknowledged op can be refused until the state changes to any other value:
    a failed cas (while the value is the expected one) or a delete of one key (while absent)."""
    if not known:
        return False
    return (op.kind == "cas" and op.output is False) or (op.kind == "delete" and op.output == 1)


# --- preparing a history ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Prepared:
    """An operation as the search sees it; ``known`` means it must be linearized."""

    index: int  # position in the caller's history, for reports
    op: Op
    known: bool
    apply: _Apply

    @property
    def call(self) -> float:
        return self.op.call

    @property
    def ret(self) -> float:
        return self.op.ret if self.known else math.inf


def _prepare(index: int, op: Op, known: bool) -> _Prepared | None:
    """Return the operation to search, or None when it constrains nothing."""
    if not known and op.kind == "get":
        return None
    return _Prepared(index, op, known, _MODEL[op.kind](op, known))


def check_input(kind: str, value: object) -> None:
    if kind not in _MODEL:
        raise ValueError(f"unknown operation kind {kind!r}")
    if kind == "put" and not isinstance(value, bytes | str):
        raise ValueError(f"put needs a bytes or str value, got {value!r}")
    if kind == "cas" and not (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], bytes | str | None)
        and isinstance(value[1], bytes | str)
    ):
        raise ValueError(f"cas needs value=(expected, new), got {value!r}")


def _validate(index: int, op: Op) -> None:
    try:
        check_input(op.kind, op.value)
    except ValueError as exc:
        raise ValueError(f"op #{index}: {exc}") from None
    if op.status not in ("ok", "unknown", "fail"):
        raise ValueError(f"op #{index}: unknown status {op.status!r}")
    if not math.isfinite(op.call):
        raise ValueError(f"op #{index}: call time must be finite")
    if op.status != "ok":
        return
    if not (math.isfinite(op.ret) and op.call <= op.ret):
        raise ValueError(f"op #{index}: acknowledged op needs call <= ret < inf")
    if op.kind == "cas" and not isinstance(op.output, bool):
        raise ValueError(f"op #{index}: acknowledged cas needs a bool output")
    if op.kind == "delete" and op.output not in (None, 0, 1):
        raise ValueError(f"op #{index}: delete output must be 0, 1 or None")


def partition(history: Sequence[Op]) -> dict[Hashable, list[_Prepared]]:
    by_key: dict[Hashable, list[_Prepared]] = {}
    for index, op in enumerate(history):
        _validate(index, op)
        if op.status == "fail":
            continue
        prepared = _prepare(index, op, op.status == "ok")
        if prepared is not None:
            by_key.setdefault(op.key, []).append(prepared)
    return by_key


# --- the search -----------------------------------------------------------------------------


# A configuration of the search: which ops are linearized, and the state they leave. Known ops
# are ranked by call time; all those ranked below `low` are linearized, and bit r of `window`
# says whether the one ranked low + r is. Known ops are linearized roughly in call order, so the
# window stays as small as the concurrency however long the history is, and configurations
# stay cheap to build and hash. Unknown ops, which may never be linearized and would pin `low`,
# have their own bitset, kept apart from the rest of the configuration (see _Explored).
_Place: TypeAlias = tuple[int, int, _State]  # (low, window, state)

# Candidates are tried in phases (see search): readers, other known ops, then unknown ones.
_READER, _WRITER, _UNKNOWN = 0, 1, 2


class _Explored(dict[_Place, list[int]]):
    """The configurations reached so far: for each place, the unknown-op bitsets seen there.

    A configuration is pruned when one reached before has the same place and a *subset* of its
    unknown ops (Lowe's memoization, with subsumption). The smaller set dominates: the ops it
    lacks have no return entry, so they never block a candidate and may still be linearized
    later or never, so every completion of the larger configuration also completes the smaller
    one. Without subsumption, a failing history with u unknown writes takes 2**u steps to
    refute; with it, only the minimal sets are kept.
    """

    def reach(self, place: _Place, unknown_bits: int) -> bool:
        """Record the configuration; False if it is subsumed by one already reached."""
        seen = self.get(place)
        if seen is None:
            self[place] = [unknown_bits]
            return True
        for bits in seen:
            if bits & ~unknown_bits == 0:
                return False
        seen[:] = [bits for bits in seen if unknown_bits & ~bits]
        seen.append(unknown_bits)
        return True


@dataclass(slots=True)
class _Outcome:
    verdict: bool | None  # None: the budget ran out
    explored: _Explored
    # Where the search got furthest before backtracking: the op whose return stopped it.
    blocked_at: int | None


class _Supply:
    """Values that pending acknowledged ops still need, against pending ops that can write them.

    When the state is about to change away from a value that a pending acknowledged op needs
    (see _wants) and no pending op can write that value again, every completion is impossible:
    the search prunes the step at once instead of finding out later, which can take long when
    many ops overlap (a read of a value that was overwritten, or never written at all).
    """

    def __init__(self, ops: Sequence[_Prepared]):
        self._needs = [_wants(p.op, True) if p.known else _NOTHING for p in ops]
        self._supplies = [_writes(p.op) if _may_write(p.op, p.known) else _NOTHING for p in ops]
        self._needed: dict[object, int] = {}
        self._writers: dict[object, int] = {}
        for w in self._needs:
            if w is not _NOTHING:
                self._needed[w] = self._needed.get(w, 0) + 1
        for v in self._supplies:
            if v is not _NOTHING:
                self._writers[v] = self._writers.get(v, 0) + 1

    def unreachable(self, initial: _State) -> bool:
        """Whether some value is needed that is neither ``initial`` nor written by any op."""
        return any(w != initial and not self._writers.get(w) for w in self._needed)

    def loses(self, i: int, value: _State) -> bool:
        """Whether linearizing op ``i`` now, which changes the state from ``value``, makes the
        history impossible to complete."""
        needed = self._needed.get(value, 0)
        if needed and self._needs[i] is not _NOTHING and self._needs[i] == value:
            needed -= 1  # op i itself is the one that needs it
        return needed > 0 and not self._writers.get(value)

    def take(self, i: int) -> None:
        """Op ``i`` was linearized."""
        w = self._needs[i]
        if w is not _NOTHING:
            self._needed[w] -= 1
        v = self._supplies[i]
        if v is not _NOTHING:
            self._writers[v] -= 1

    def give_back(self, i: int) -> None:
        """The linearization of op ``i`` was undone."""
        w = self._needs[i]
        if w is not _NOTHING:
            self._needed[w] += 1
        v = self._supplies[i]
        if v is not _NOTHING:
            self._writers[v] += 1


class _Relevance:
    """Chooses the unknown ops worth trying at a configuration (see search for why).

    It follows the search through ``take`` and ``give_back``, called in stack order as ops are
    linearized and undone, to know which values pending ops still mention.
    """

    def __init__(self, ops: Sequence[_Prepared], call_entry: list[int], unknown: list[int]):
        self._ops = ops
        self._call_entry = call_entry
        self._unknown = unknown  # by call time
        self._unknown_cas = [u for u in unknown if ops[u].op.kind == "cas"]
        self._effects = [_writes(p.op) for p in ops]
        self._plain = [not p.known and p.op.kind == "put" for p in ops]
        self._classes = [(p.op.kind, p.op.value) for p in ops]
        self._wants = [_wants(p.op, p.known) for p in ops]
        self._waits = [_waits_for_change(p.op, p.known) for p in ops]
        # A failed cas that expected v can tell an unknown put of v from others.
        self._refuses = [
            p.op.value[0]
            if p.known
            and p.op.kind == "cas"
            and p.op.output is False
            and isinstance(p.op.value, tuple)
            else _NOTHING
            for p in ops
        ]
        # How many pending ops mention each value, by wanting or refusing it.
        self._wanted: dict[object, int] = {}
        self._refused: dict[object, int] = {}
        for w in self._wants:
            if w is not _NOTHING:
                self._wanted[w] = self._wanted.get(w, 0) + 1
        for v in self._refuses:
            if v is not _NOTHING:
                self._refused[v] = self._refused.get(v, 0) + 1
        self._writers: dict[object, list[int]] = {}
        for u in unknown:
            self._writers.setdefault(self._effects[u], []).append(u)
        self._used = [False] * len(ops)

    def tracks(self, i: int) -> bool:
        """Whether linearizing op ``i`` changes what is relevant."""
        return (
            not self._ops[i].known
            or self._wants[i] is not _NOTHING
            or self._refuses[i] is not _NOTHING
        )

    def take(self, i: int) -> None:
        """Op ``i`` was linearized."""
        self._used[i] = True
        w = self._wants[i]
        if w is not _NOTHING:
            self._wanted[w] -= 1
        v = self._refuses[i]
        if v is not _NOTHING:
            self._refused[v] -= 1

    def give_back(self, i: int) -> None:
        """The linearization of op ``i`` was undone."""
        self._used[i] = False
        w = self._wants[i]
        if w is not _NOTHING:
            self._wanted[w] += 1
        v = self._refuses[i]
        if v is not _NOTHING:
            self._refused[v] += 1

    def candidates(self, known: Sequence[int], first_return: int, state: _State) -> list[int]:
        """The unknown ops to try, in call order, at a configuration in state ``state`` whose
        known candidates are ``known`` and whose first return entry is ``first_return``.

        Returned are the unknown ops that are candidates and write a value some candidate
        wants, or all unknown candidates when a known candidate waits for any change of
        state; in both cases only the first op of each class of interchangeable ones.
        """
        call_entry = self._call_entry
        if any(self._waits[j] and self._ops[j].apply(state) is _IMPOSSIBLE for j in known):
            pool: Iterable[int] = itertools.takewhile(
                lambda u: call_entry[u] < first_return, self._unknown
            )
        else:
            wanted = {self._wants[j] for j in known}
            for u in self._unknown_cas:
                if call_entry[u] >= first_return:
                    break
                if not self._used[u]:
                    wanted.add(self._wants[u])
            pool = sorted(
                u for v in wanted for u in self._writers.get(v, ()) if call_entry[u] < first_return
            )
        # Two unknown ops that are candidates stay candidates for the rest of the search, so
        # if they are the same operation (kind and value) either can stand in for the other
        # anywhere in a completion: only the first is tried. Unknown puts of values no pending
        # op mentions form one such class, as no op can tell their values apart.
        seen: set[object] = set()
        chosen: list[int] = []
        for u in pool:
            if self._used[u]:
                continue
            cls: object = self._classes[u]
            v = self._effects[u]
            if self._plain[u] and not self._wanted.get(v) and not self._refused.get(v):
                if v == state:
                    continue  # would change nothing; another plain put may
                cls = _NOTHING
            if cls not in seen:
                seen.add(cls)
                chosen.append(u)
        return chosen


class _Entries:
    """The call and return entries of one key's operations in time order, numbered from 1,
    and the doubly linked list of those of the known ops (Lowe's "dancing links").

    Entry 0 is the head of the list and ``size + 1`` its tail. ``code[e]`` is the op index
    for a call entry and its complement (negative) for a return entry. Only known ops are
    linked; an unknown op is a candidate while its call entry precedes the list's first
    return entry. Known ops are ranked by call time (``ranks``), unknown ones apart
    (``unknown_order``, by call time, and their rank in it).
    """

    def __init__(self, ops: Sequence[_Prepared]) -> None:
        n = len(ops)
        events = sorted(
            [(p.call, 0, i) for i, p in enumerate(ops)]
            + [(p.ret, 1, i) for i, p in enumerate(ops) if p.known]
        )
        size = len(events)
        self.code = [0] * (size + 2)
        self.call_entry = [0] * n
        self.ret_entry = [0] * n
        self.ranks = [0] * n
        self.unknown_order: list[int] = []
        self.known = 0
        linked = [0]
        for e, (_, is_ret, i) in enumerate(events, start=1):
            if is_ret:
                self.code[e] = ~i
                self.ret_entry[i] = e
                linked.append(e)
                continue
            self.code[e] = i
            self.call_entry[i] = e
            if ops[i].known:
                self.ranks[i] = self.known
                self.known += 1
                linked.append(e)
            else:
                self.ranks[i] = len(self.unknown_order)
                self.unknown_order.append(i)
        linked.append(size + 1)
        self.nxt = [0] * (size + 2)
        self.prv = [0] * (size + 2)
        for a, b in itertools.pairwise(linked):
            self.nxt[a] = b
            self.prv[b] = a

    def unlink(self, i: int) -> None:
        """Take known op ``i``'s call and return entries out of the list."""
        nxt, prv = self.nxt, self.prv
        c = self.call_entry[i]
        a, b = prv[c], nxt[c]
        nxt[a] = b
        prv[b] = a
        r = self.ret_entry[i]
        a, b = prv[r], nxt[r]
        nxt[a] = b
        prv[b] = a

    def relink(self, i: int) -> None:
        """Put known op ``i``'s entries back, in the reverse order of their removal."""
        nxt, prv = self.nxt, self.prv
        r = self.ret_entry[i]
        nxt[prv[r]] = r
        prv[nxt[r]] = r
        c = self.call_entry[i]
        nxt[prv[c]] = c
        prv[nxt[c]] = c

    def before(self, e: int) -> list[int]:
        """The ops whose call entries are linked before entry ``e``."""
        out = []
        x = self.nxt[0]
        while x != e:
            out.append(self.code[x])
            x = self.nxt[x]
        return out


def _advance(low: int, window: int, rank: int) -> tuple[int, int]:
    """The (low, window) of a configuration after the known op ranked ``rank`` is linearized:
    its bit set, and the window slid past the run of linearized ops it then starts with."""
    if rank != low:
        return low, window | 1 << (rank - low)
    grown = window | 1
    run = ((grown + 1) & ~grown).bit_length() - 1
    return low + run, grown >> run


# One choice on the search's stack: the op linearized, and the configuration before it with
# the unknown candidates of that configuration and the next one to try (for unknown ops).
_Frame: TypeAlias = tuple[int, _State, int, int, int, list[int], int]
_NO_CANDIDATES: list[int] = []  # shared by the frames of known ops: never changed


class _Search:
    """The Wing-Gong-Lowe search over one key's operations (see ``search``): the current
    configuration, the stack of choices that led to it, and the cache of configurations
    already explored. Each step of ``run`` tries one thing; when it leads nowhere,
    ``backtrack`` undoes the last choice."""

    def __init__(self, ops: Sequence[_Prepared], initial: _State, supply: _Supply) -> None:
        self.entries = _Entries(ops)
        self.applies = [p.apply for p in ops]
        self.phase_of = [
            (_READER if _reads_only(p.op) else _WRITER) if p.known else _UNKNOWN for p in ops
        ]
        self.supply = supply
        self.relevance = _Relevance(ops, self.entries.call_entry, self.entries.unknown_order)
        # Without unknown ops there is nothing to track.
        unknown = bool(self.entries.unknown_order)
        self.tracked = [unknown and self.relevance.tracks(i) for i in range(len(ops))]
        self.explored = _Explored()
        self.stack: list[_Frame] = []
        self.best_depth = -1
        self.blocked_at: int | None = None
        # The current configuration, and where the walk over it stands.
        self.state = initial
        self.low = self.window = self.unknown_bits = 0
        self.remaining = self.entries.known
        self.e = self.entries.nxt[0]
        self.phase = _READER
        self.candidates = _NO_CANDIDATES
        self.next_candidate = 0

    def run(self, deadline: float) -> _Outcome:
        """Step until every known op is linearized (True), every choice failed (False) or
        the clock passes ``deadline`` (None)."""
        steps = 0
        clock = time.monotonic
        code, nxt, phase_of, applies = (
            self.entries.code,
            self.entries.nxt,
            self.phase_of,
            self.applies,
        )
        # While a known op is unlinearized its return entry is in the list, so the walk meets
        # a return entry before the tail: the tail is never visited.
        while self.remaining:
            steps += 1
            if steps % _CLOCK_EVERY == 0 and clock() > deadline:
                return _Outcome(None, self.explored, self.blocked_at)
            phase = self.phase
            if phase == _UNKNOWN:
                went_on = self._try_unknown()
            elif (i := code[self.e]) < 0:
                went_on = self._at_return(~i)
            else:
                # Most steps pass over a call entry that is no candidate of this phase or that
                # the model refuses here: that much is done in place, for speed.
                after = applies[i](self.state) if phase_of[i] == phase else _IMPOSSIBLE
                if after is _IMPOSSIBLE:
                    self.e = nxt[self.e]
                    continue
                went_on = self._try_known(i, after)
            if not went_on and not self.backtrack():
                return _Outcome(False, self.explored, self.blocked_at)
        return _Outcome(True, self.explored, None)

    def _at_return(self, i: int) -> bool:
        """The walk reached op ``i``'s return entry: no known op after it may go first."""
        if self.phase == _READER:
            # No reader to commit to: walk again for the other known ops.
            self.phase = _WRITER
            self.e = self.entries.nxt[0]
            return True
        return self._blocked(i)

    def _try_known(self, i: int, after: _State) -> bool:
        """Known op ``i``, a candidate of the current phase that the model accepts, leaving
        ``after``: linearize it unless that is pruned."""
        phase, state = self.phase, self.state
        if phase == _WRITER and after != state and self.supply.loses(i, state):
            self.e = self.entries.nxt[self.e]
            return True
        low, window = _advance(self.low, self.window, self.entries.ranks[i])
        if self.explored.reach((low, window, after), self.unknown_bits):
            frame = (i, state, self.low, self.window, self.unknown_bits, _NO_CANDIDATES, 0)
            self.stack.append(frame)
            self.low, self.window, self.state = low, window, after
            self.entries.unlink(i)
            self.remaining -= 1
            self.supply.take(i)
            if self.tracked[i]:
                self.relevance.take(i)
            self._restart()
            return True
        if phase == _WRITER:
            self.e = self.entries.nxt[self.e]
            return True
        # An accepted reader leads to a configuration already explored without success, so
        # this one is a dead end too.
        return False

    def _blocked(self, i: int) -> bool:
        """The walk of the writer phase reached op ``i``'s return entry: no known op after it
        may go first. What is left are the unknown ops relevant here (see ``search``)."""
        if len(self.stack) > self.best_depth:
            self.best_depth = len(self.stack)
            self.blocked_at = i
        if not self.entries.unknown_order:
            return False
        known = self.entries.before(self.e)
        self.candidates = self.relevance.candidates(known, self.e, self.state)
        if not self.candidates:
            return False
        self.next_candidate = 0
        self.phase = _UNKNOWN
        return True

    def _try_unknown(self) -> bool:
        """The next unknown candidate of the current configuration, if any is left."""
        if self.next_candidate >= len(self.candidates):
            return False
        i = self.candidates[self.next_candidate]
        self.next_candidate += 1
        state = self.state
        after = self.applies[i](state)
        bits = self.unknown_bits | 1 << self.entries.ranks[i]
        if (
            after is not _IMPOSSIBLE
            and not self.supply.loses(i, state)
            and self.explored.reach((self.low, self.window, after), bits)
        ):
            self.stack.append(
                (i, state, self.low, self.window, self.unknown_bits, self.candidates,
                 self.next_candidate)
            )  # fmt: skip
            self.unknown_bits = bits
            self.state = after
            self.relevance.take(i)
            self.supply.take(i)
            self._restart()
        return True

    def _restart(self) -> None:
        """Walk the new configuration from the head of the list, readers first."""
        self.e = self.entries.nxt[0]
        self.phase = _READER

    def backtrack(self) -> bool:
        """Undo the last choice and go on with the next candidate after it, in the same phase;
        False when there is no choice left to undo."""
        while self.stack:
            i, self.state, self.low, self.window, self.unknown_bits, cands, nc = self.stack.pop()
            self.candidates, self.next_candidate = cands, nc
            self.supply.give_back(i)
            if self.tracked[i]:
                self.relevance.give_back(i)
            self.phase = self.phase_of[i]
            if self.phase == _UNKNOWN:
                return True
            self.entries.relink(i)
            self.remaining += 1
            if self.phase == _WRITER:
                self.e = self.entries.nxt[self.entries.call_entry[i]]
                return True
            # Nothing after this reader succeeded, so the configuration before it is a dead
            # end as well: keep backtracking.
        return False


def search(ops: Sequence[_Prepared], initial: _State, deadline: float) -> _Outcome:
    """Search a linearization of one key's operations (see the module docstring).

    Known ops live in the linked list of call and return entries (``_Entries``). Each
    configuration is walked in up to three phases: first for a reader to commit to (see
    _reads_only), then for the other known ops, each a branch of the search, and last the
    unknown ops, tried from a list of candidates computed for the configuration (kept on the
    stack to resume after a backtrack). Unknown ops come last because they never have to be
    linearized and subsumption (see _Explored) prunes best when small sets of them are reached
    first.

    Only *relevant* unknown ops are tried at a configuration G (see _Relevance): those writing
    a value that some candidate wants (see _wants), unless some candidate waits for any change
    of state (see _waits_for_change). Why the others may be skipped: take a shortest completion
    of G that starts with an unknown op U writing v, and let F be the op right after U. U lifts
    no return entry, so F is a candidate at G, accepted in state v. F cannot want v (U would be
    relevant). If F is a failed cas or a delete of one key, it is either refused at G, so it
    waits for a change, or accepted at G: a failed cas would then be a reader accepted at G,
    which phase one commits to before any unknown op is tried, and a delete overwrites the key
    as below. Otherwise F overwrites the key whatever the state (a put, a delete, an unknown op
    that becomes a no-op), so dropping U (and F, if it then changes nothing) leaves every later
    op seeing the same states: a shorter completion, a contradiction.
    """
    supply = _Supply(ops)
    if supply.unreachable(initial):
        return _Outcome(False, _Explored(), None)
    return _Search(ops, initial, supply).run(deadline)


# --- explaining a failure -------------------------------------------------------------------


def _prefix(ops: Sequence[_Prepared], t: float) -> list[_Prepared]:
    """The operations invoked up to ``t``, those not returned by ``t`` turned into unknown."""
    out: list[_Prepared] = []
    for p in ops:
        if p.call > t:
            continue
        if p.known and p.ret <= t:
            out.append(p)
            continue
        pending = _prepare(p.index, p.op, False)
        if pending is not None:
            out.append(pending)
    return out


def explain(
    key: Hashable,
    ops: Sequence[_Prepared],
    initial: _State,
    full: _Outcome,
    deadline: float,
) -> str:
    times = sorted({p.ret for p in ops if p.known})
    outcomes: dict[int, tuple[list[_Prepared], _Outcome]] = {len(times) - 1: (list(ops), full)}
    lo, hi = 0, len(times) - 1
    exhausted = False
    while lo < hi:
        mid = (lo + hi) // 2
        prefix = _prefix(ops, times[mid])
        outcome = search(prefix, initial, deadline)
        if outcome.verdict is None:
            exhausted = True
            break
        if outcome.verdict:
            lo = mid + 1
        else:
            outcomes[mid] = (prefix, outcome)
            hi = mid
    prefix, outcome = outcomes[hi]
    t = times[hi]
    failing = [p for p in prefix if p.known and p.ret == t]

    lines = [f"key {key!r} is not linearizable."]
    if exhausted:
        lines.append("(the diagnosis budget ran out: this prefix may not be the smallest one)")
    lines.append(
        f"smallest failing prefix: the {len(prefix)} ops invoked up to t={t:.6f}, when "
        + ("this op" if len(failing) == 1 else "these ops")
        + " returned; no linearization of the prefix includes "
        + ("it:" if len(failing) == 1 else "them:")
    )
    lines.extend(f"  {_describe(p)}" for p in failing)

    first = failing[0]
    visible = _visible(prefix, first, initial)
    shown = ", ".join(repr(v) for v in visible[:_MAX_STATES_SHOWN])
    more = (
        f" (+{len(visible) - _MAX_STATES_SHOWN} more)" if len(visible) > _MAX_STATES_SHOWN else ""
    )
    lines.append(f"values not certainly overwritten before it was invoked: {shown}{more}")

    failing_ids = {p.index for p in failing}
    others = [p for p in prefix if p.index not in failing_ids]
    concurrent = [p for p in others if p.op.status == "ok" and p.op.ret >= first.call]
    if concurrent:
        lines.append("acknowledged ops concurrent with it:")
        lines.extend(f"  {_describe(p)}" for p in concurrent[:_MAX_CONCURRENT_SHOWN])
        if len(concurrent) > _MAX_CONCURRENT_SHOWN:
            lines.append(f"  ... and {len(concurrent) - _MAX_CONCURRENT_SHOWN} more")
    uncertain = [p for p in others if p.op.status == "unknown"]
    if uncertain:
        lines.append(
            f"ops with an unknown outcome invoked before it returned: {len(uncertain)}"
            + (", the latest:" if len(uncertain) > _MAX_CONCURRENT_SHOWN else ":")
        )
        lines.extend(f"  {_describe(p)}" for p in uncertain[-_MAX_CONCURRENT_SHOWN:])
    preceding = sorted((p for p in others if p.op.ret < first.call), key=lambda p: p.op.ret)
    if preceding:
        lines.append("last ops that returned before it was invoked:")
        lines.extend(f"  {_describe(p)}" for p in preceding[-_MAX_PRECEDING_SHOWN:])
    if full.blocked_at is not None and exhausted:
        lines.append(f"the full search got stuck at: {_describe(ops[full.blocked_at])}")
    return "\n".join(lines)


def _visible(prefix: Sequence[_Prepared], x: _Prepared, initial: _State) -> list[_State]:
    """Values the key may have held while ``x`` was pending, most recently written first: those
    written (or initially there) and not overwritten for sure before ``x`` was invoked, that
    is by an acknowledged write invoked after the first returned and returned before ``x``
    was invoked. A cheap explanation; the search itself is exact."""

    def overwrites(p: _Prepared) -> bool:
        return p.known and _may_write(p.op, True) and p.ret < x.call

    writes = [p for p in prefix if p is not x and _may_write(p.op, p.known)]
    overwriters = [p for p in writes if overwrites(p)]
    visible: list[_State] = []
    for p in sorted(writes, key=lambda p: p.call, reverse=True):
        if not any(p.ret < o.call for o in overwriters):
            value = _writes(p.op)
            if value not in visible:
                visible.append(value)
    if not overwriters and initial not in visible:
        visible.append(initial)
    return visible


def _describe(p: _Prepared) -> str:
    op = p.op
    if op.kind == "put":
        text = f"put({op.value!r})"
    elif op.kind == "cas":
        assert isinstance(op.value, tuple)
        text = f"cas(expected={op.value[0]!r}, new={op.value[1]!r})"
    else:
        text = f"{op.kind}()"
    if op.kind != "put":
        text += f" -> {op.output!r}" if op.status == "ok" else " -> ?"
    ret = f"{op.ret:.6f}" if op.status == "ok" else "?"
    status = "" if op.status == "ok" else f" {op.status}"
    return f"#{p.index} client {op.client}: {text} [{op.call:.6f}, {ret}]{status}"

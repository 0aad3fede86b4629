"""Tests for the linearizability checker: hand-written histories, a brute-force oracle on small
random histories, and simulated linearizable registers with one injected corruption."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Hashable, Mapping, Sequence

import pytest

from k8semu.chaos.linearizability import (
    HistoryRecorder,
    Input,
    Kind,
    Op,
    Output,
    Status,
    Value,
    check,
)

INF = math.inf
KINDS: list[Kind] = ["put", "get", "delete", "cas"]


# --- building histories by hand ---------------------------------------------------------------


def put(client: int, call: float, ret: float, value: Value, key: str = "k") -> Op:
    return Op(client, call, ret, "put", key, value, None)


def get(client: int, call: float, ret: float, output: Value | None, key: str = "k") -> Op:
    return Op(client, call, ret, "get", key, None, output)


def delete(client: int, call: float, ret: float, output: int | None, key: str = "k") -> Op:
    return Op(client, call, ret, "delete", key, None, output)


def cas(
    client: int,
    call: float,
    ret: float,
    expected: Value | None,
    new: Value,
    output: bool | None,
    key: str = "k",
) -> Op:
    return Op(client, call, ret, "cas", key, (expected, new), output)


def unknown(op: Op) -> Op:
    return Op(op.client, op.call, INF, op.kind, op.key, op.value, None, "unknown")


def failed(op: Op) -> Op:
    return Op(op.client, op.call, op.ret, op.kind, op.key, op.value, None, "fail")


def assert_linearizable(
    history: Sequence[Op], initial: Mapping[Hashable, Value] | None = None
) -> None:
    result = check(history, initial=initial)
    assert result.ok, result.detail
    assert not result.timed_out


def assert_violation(history: Sequence[Op], initial: Mapping[Hashable, Value] | None = None) -> str:
    result = check(history, initial=initial)
    assert not result.ok, "expected a violation"
    assert not result.timed_out, result.detail
    return result.detail


# --- linearizable histories ---------------------------------------------------------------------


def test_empty_history_is_linearizable() -> None:
    result = check([])
    assert result.ok
    assert result.ops_checked == 0
    assert result.key is None


def test_sequential_history() -> None:
    assert_linearizable(
        [
            get(0, 0, 1, None),
            put(0, 2, 3, b"a"),
            get(1, 4, 5, b"a"),
            cas(1, 6, 7, b"a", b"b", True),
            cas(0, 8, 9, b"a", b"c", False),
            get(0, 10, 11, b"b"),
            delete(1, 12, 13, 1),
            delete(1, 14, 15, 0),
            get(0, 16, 17, None),
            cas(0, 18, 19, None, b"d", True),
            get(1, 20, 21, b"d"),
        ]
    )


def test_str_values() -> None:
    assert_linearizable([put(0, 0, 1, "a"), get(1, 2, 3, "a")])
    assert_violation([put(0, 0, 1, "a"), get(1, 2, 3, b"a")])


def test_reads_overlapping_a_write_may_see_either_value() -> None:
    assert_linearizable(
        [
            put(0, 0, 10, b"a"),
            get(1, 1, 2, None),
            get(2, 1, 9, b"a"),
            get(3, 3, 4, None),
            get(1, 5, 6, b"a"),
            get(3, 7, 8, b"a"),
        ]
    )


def test_concurrent_writes_may_land_in_either_order() -> None:
    assert_linearizable([put(0, 0, 5, b"a"), put(1, 1, 4, b"b"), get(2, 6, 7, b"a")])
    assert_linearizable([put(0, 0, 5, b"a"), put(1, 1, 4, b"b"), get(2, 6, 7, b"b")])


def test_ops_touching_at_an_instant_count_as_concurrent() -> None:
    # The clock cannot prove the put returned before the get was invoked.
    assert_linearizable([put(0, 0, 1, b"a"), get(1, 1, 2, None)])


def test_later_call_in_list_is_linearized_first() -> None:
    # The get must go before the put although it was invoked after it.
    assert_linearizable([put(0, 0, 10, b"a"), get(1, 1, 2, None), get(1, 11, 12, b"a")])


def test_unknown_write_that_took_effect() -> None:
    assert_linearizable([unknown(put(0, 0, 1, b"a")), get(1, 2, 3, b"a")])


def test_unknown_write_that_did_not_take_effect() -> None:
    assert_linearizable([unknown(put(0, 0, 1, b"a")), get(1, 2, 3, None), get(1, 4, 5, None)])


def test_unknown_write_may_take_effect_long_after_its_call() -> None:
    assert_linearizable(
        [
            unknown(put(0, 0, 1, b"a")),
            get(1, 2, 3, None),
            put(1, 4, 5, b"b"),
            get(1, 6, 7, b"b"),
            get(1, 8, 9, b"a"),
        ]
    )


def test_unknown_delete_and_cas() -> None:
    assert_linearizable(
        [
            put(0, 0, 1, b"a"),
            unknown(delete(1, 2, 3, None)),
            get(0, 4, 5, None),
            unknown(cas(1, 6, 7, None, b"b", None)),
            get(0, 8, 9, b"b"),
            unknown(cas(1, 10, 11, b"zz", b"c", None)),
            get(0, 12, 13, b"b"),
        ]
    )


def test_unknown_write_explains_a_failed_cas_or_a_delete() -> None:
    assert_linearizable(
        [put(0, 0, 1, b"a"), unknown(put(1, 2, 3, b"b")), cas(0, 4, 5, b"a", b"c", False)]
    )
    assert_linearizable([unknown(put(1, 0, 1, b"b")), delete(0, 4, 5, 1)])
    assert_violation([put(1, 0, 1, b"b"), delete(0, 2, 3, 1), delete(0, 4, 5, 1)])


def test_unknown_reads_are_ignored() -> None:
    assert_linearizable([put(0, 0, 1, b"a"), Op(1, 2, INF, "get", "k", None, None, "unknown")])


def test_failed_ops_are_dropped() -> None:
    assert_linearizable([failed(put(0, 0, 1, b"a")), get(1, 2, 3, None)])
    assert_violation([failed(put(0, 0, 1, b"a")), get(1, 2, 3, b"a")])


def test_delete_without_reported_count() -> None:
    assert_linearizable([put(0, 0, 1, b"a"), delete(0, 2, 3, None), delete(0, 4, 5, None)])


def test_initial_values() -> None:
    history = [get(0, 0, 1, b"seed"), delete(0, 2, 3, 1)]
    assert_linearizable(history, initial={"k": b"seed"})
    assert_violation(history)


# --- violations ---------------------------------------------------------------------------------


def test_stale_read_after_acknowledged_write() -> None:
    assert_violation([put(0, 0, 1, b"a"), get(1, 2, 3, None)])


def test_lost_acknowledged_write() -> None:
    assert_violation([put(0, 0, 1, b"a"), put(1, 2, 3, b"b"), get(2, 4, 5, b"a")])


def test_read_of_a_value_never_written() -> None:
    assert_violation([put(0, 0, 1, b"a"), get(1, 2, 3, b"ghost")])


def test_non_monotonic_reads_across_clients() -> None:
    # Once client 1 saw the new value, client 2 reading strictly later cannot see the old one.
    assert_violation([put(0, 0, 10, b"a"), get(1, 1, 2, b"a"), get(2, 3, 4, None)])


def test_unknown_write_takes_effect_at_most_once() -> None:
    assert_violation(
        [
            unknown(put(0, 0, 1, b"a")),
            get(1, 2, 3, b"a"),
            put(1, 4, 5, b"b"),
            get(1, 6, 7, b"a"),
        ]
    )


def test_two_concurrent_creates_cannot_both_succeed() -> None:
    assert_violation([cas(0, 0, 2, None, b"a", True), cas(1, 1, 3, None, b"b", True)])
    assert_linearizable([cas(0, 0, 2, None, b"a", True), cas(1, 1, 3, None, b"b", False)])


def test_cas_succeeding_on_a_mismatch() -> None:
    assert_violation([put(0, 0, 1, b"a"), cas(1, 2, 3, b"b", b"c", True)])


def test_cas_failing_on_a_match() -> None:
    assert_violation([put(0, 0, 1, b"a"), cas(1, 2, 3, b"a", b"c", False)])


def test_cas_write_not_visible() -> None:
    assert_violation([cas(0, 0, 1, None, b"a", True), get(1, 2, 3, None)])


def test_wrong_delete_counts() -> None:
    assert_violation([put(0, 0, 1, b"a"), delete(1, 2, 3, 0)])
    assert_violation([delete(1, 0, 1, 1)])


# --- partitioning and reports -------------------------------------------------------------------


def test_keys_are_independent() -> None:
    assert_linearizable(
        [
            put(0, 0, 1, b"a", key="x"),
            get(1, 2, 3, None, key="y"),
            put(1, 4, 5, b"b", key="y"),
            get(0, 6, 7, b"a", key="x"),
        ]
    )


def test_first_failing_key_is_reported() -> None:
    history = [put(0, 0, 1, b"a", key="good"), get(0, 2, 3, b"a", key="good")]
    history += [put(0, 4, 5, b"a", key="bad"), get(1, 6, 7, None, key="bad")]
    history += [put(0, 8, 9, b"a", key="worse"), get(1, 10, 11, b"zz", key="worse")]
    result = check(history)
    assert not result.ok
    assert result.key == "bad"
    assert "'bad'" in result.detail


def test_report_names_the_smallest_failing_prefix() -> None:
    history: list[Op] = []
    t = 0.0
    for i in range(200):
        value = b"v%d" % i
        history.append(put(i % 3, t, t + 1, value))
        history.append(get((i + 1) % 3, t + 1.5, t + 2.5, value))
        t += 3
    bad = 101  # a get
    history[bad] = get(0, history[bad].call, history[bad].ret, b"v10")
    detail = assert_violation(history)
    lines = detail.splitlines()
    assert "smallest failing prefix" in lines[1]
    assert lines[2].lstrip().startswith(f"#{bad} ")
    assert lines[3] == "values not certainly overwritten before it was invoked: b'v50'"


def test_report_lists_concurrent_ops_and_possible_values() -> None:
    history = [put(0, 0, 10, b"a"), put(1, 0, 10, b"b"), get(2, 1, 2, b"c")]
    detail = assert_violation(history)
    assert "#2 " in detail.splitlines()[2]
    assert "before it was invoked: b'a', b'b', None\n" in detail
    assert "#0 " in detail and "#1 " in detail


def test_many_unknown_writes_are_refuted_quickly() -> None:
    # Forty writes that may or may not have happened, in any order, each read once, then a read
    # of the first value again: it can no longer be there. A search trying every subset of the
    # unknown writes would not finish.
    n = 40
    history = [unknown(put(i, 0, 1, b"v%d" % i)) for i in range(n)]
    history += [get(100 + i, 1.0 + i, 1.5 + i, b"v%d" % i) for i in range(n)]
    history.append(get(99, 2 * n, 2 * n + 1, b"v0"))
    result = check(history, timeout=10)
    assert not result.ok
    assert not result.timed_out
    assert f"#{2 * n} " in result.detail.splitlines()[2]


def test_impossible_read_among_many_concurrent_ones_is_refuted_quickly() -> None:
    n = 40
    history = [unknown(put(i, 0, 1, b"v%d" % i)) for i in range(n)]
    history += [get(100 + i, 1, 2, b"v%d" % i) for i in range(n)]
    history.append(get(99, 1, 2, b"ghost"))
    result = check(history, timeout=10)
    assert not result.ok
    assert not result.timed_out


def test_budget_exhaustion_is_inconclusive() -> None:
    history = simulate(random.Random(3), n_ops=3000, n_keys=1, n_clients=8)
    assert check(history).ok
    result = check(history, timeout=0.0)
    assert not result.ok
    assert result.timed_out
    assert result.key == "k0"
    assert "inconclusive" in result.detail


@pytest.mark.parametrize(
    "op",
    [
        Op(0, 0, 1, "cas", "k", b"a", True),
        Op(0, 0, 1, "cas", "k", (b"a", b"b"), None),
        Op(0, 0, 1, "put", "k", None),
        Op(0, 0, 1, "frob", "k", b"a"),  # type: ignore[arg-type]
        Op(0, 2, 1, "get", "k", None, None),
        Op(0, 0, INF, "get", "k", None, None),
        Op(0, math.nan, 1, "get", "k", None, None),
        Op(0, 0, 1, "delete", "k", None, 2),
        Op(0, 0, 1, "get", "k", None, None, "maybe"),  # type: ignore[arg-type]
    ],
)
def test_malformed_ops_are_rejected(op: Op) -> None:
    with pytest.raises(ValueError, match="op #0"):
        check([op])


def test_long_history_on_one_busy_key() -> None:
    rng = random.Random(8)
    history = simulate(rng, n_ops=5000, n_keys=1, n_clients=16, p_unknown=0.02)
    result = check(history)
    assert result.ok, result.detail


def test_large_history_over_many_keys() -> None:
    rng = random.Random(7)
    history = simulate(rng, n_ops=20_000, n_keys=50, n_clients=16, p_unknown=0.0025, p_fail=0.01)
    result = check(history)
    assert result.ok, result.detail
    assert result.ops_checked > 19_000


# --- the recorder -------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_recorder_records_outcomes() -> None:
    recorder = HistoryRecorder(clock=FakeClock())
    a = recorder.invoke(0, "put", "k", b"a")  # call 1
    b = recorder.invoke(1, "get", "k")  # call 2
    c = recorder.invoke(2, "cas", "k", (None, b"x"))  # call 3
    d = recorder.invoke(3, "delete", "k")  # call 4
    e = recorder.invoke(4, "put", "k", b"e")  # call 5, never finished
    recorder.complete(a)  # ret 6
    recorder.complete(b, b"a")  # ret 7
    recorder.fail(c)
    recorder.unknown(d)
    with pytest.raises(ValueError, match="already finished"):
        recorder.complete(a)
    assert recorder.history() == [
        Op(0, 1, 6, "put", "k", b"a", None, "ok"),
        Op(1, 2, 7, "get", "k", None, b"a", "ok"),
        Op(2, 3, INF, "cas", "k", (None, b"x"), None, "fail"),
        Op(3, 4, INF, "delete", "k", None, None, "unknown"),
        Op(4, 5, INF, "put", "k", b"e", None, "unknown"),
    ]
    assert e == 4
    assert check(recorder.history()).ok


def test_recorder_rejects_malformed_invocations() -> None:
    recorder = HistoryRecorder()
    with pytest.raises(ValueError):
        recorder.invoke(0, "cas", "k", b"a")
    with pytest.raises(ValueError):
        recorder.complete(3)


def test_recorder_with_threads_against_a_locked_dict() -> None:
    store: dict[Hashable, Value] = {}
    lock = threading.Lock()
    recorder = HistoryRecorder()

    def client(n: int) -> None:
        rng = random.Random(n)
        for i in range(200):
            key = rng.choice("ab")
            kind = rng.choice(KINDS)
            value: Input = None
            if kind == "put":
                value = b"%d-%d" % (n, i)
            elif kind == "cas":
                value = (rng.choice([None, *store.values()]), b"%d-%d" % (n, i))
            handle = recorder.invoke(n, kind, key, value)
            output: Output
            with lock:
                current = store.get(key)
                if kind == "put":
                    assert isinstance(value, bytes)
                    store[key] = value
                    output = None
                elif kind == "get":
                    output = current
                elif kind == "delete":
                    output = int(store.pop(key, None) is not None)
                else:
                    assert isinstance(value, tuple)
                    output = current == value[0]
                    if output:
                        store[key] = value[1]
            recorder.complete(handle, output)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result = check(recorder.history())
    assert result.ok, result.detail
    assert result.ops_checked == 800


# --- randomized: a simulated linearizable register, then one corruption -----------------------


def simulate(
    rng: random.Random,
    *,
    n_ops: int,
    n_keys: int,
    n_clients: int,
    p_unknown: float = 0.05,
    p_fail: float = 0.02,
) -> list[Op]:
    """A history of a linearizable store: every op takes effect at one instant between its call
    and return (unknown ops at any later instant, or never). Written values are unique."""
    keys = [f"k{i}" for i in range(n_keys)]
    clocks = [rng.uniform(0.0, 1.0) for _ in range(n_clients)]
    planned: list[tuple[float, int, int, Kind, Hashable, float, float, Status]] = []
    for n in range(n_ops):
        client = rng.randrange(n_clients)
        call = clocks[client] + rng.expovariate(4.0)
        kind = rng.choices(KINDS, weights=[4, 5, 1, 2])[0]
        roll = rng.random()
        status: Status
        if roll < p_fail:
            status, point, ret = "fail", INF, call + 0.01
            clocks[client] = ret
        elif roll < p_fail + p_unknown:
            # The client gives up; the request may still land, even much later.
            status, ret = "unknown", INF
            point = call + rng.uniform(0.0, 5.0) if rng.random() < 0.5 else INF
            clocks[client] = call + 1.0
        else:
            status = "ok"
            point = call + rng.uniform(0.0, 0.5)
            ret = point + rng.uniform(0.0, 0.5)
            clocks[client] = ret
        planned.append((point, n, client, kind, rng.choice(keys), call, ret, status))

    state: dict[Hashable, Value] = {}
    values_of: dict[Hashable, list[Value]] = {}
    ops: dict[int, Op] = {}
    for point, n, client, kind, key, call, ret, status in sorted(planned, key=lambda p: p[:2]):
        applied = point != INF
        current = state.get(key)
        value: Input = None
        output: Output = None
        fresh = b"v%d" % n
        if kind == "put":
            value = fresh
            if applied:
                state[key] = fresh
        elif kind == "get":
            output = current
        elif kind == "delete":
            output = int(current is not None) if rng.random() < 0.8 else None
            if applied:
                state.pop(key, None)
        else:
            options = [None, *values_of.get(key, [])]
            expected = current if rng.random() < 0.6 else rng.choice(options)
            value = (expected, fresh)
            output = current == expected
            if applied and output:
                state[key] = fresh
        if kind in ("put", "cas"):
            values_of.setdefault(key, []).append(fresh)
        if status != "ok":
            output = None
        ops[n] = Op(client, call, ret, kind, key, value, output, status)
    return sorted(ops.values(), key=lambda op: op.call)


def written(op: Op) -> Value:
    """The value a put or a cas writes if it takes effect."""
    if op.kind == "put":
        assert isinstance(op.value, bytes)
        return op.value
    assert isinstance(op.value, tuple)
    return op.value[1]


def writes(op: Op) -> Value | None:
    """The value an acknowledged op certainly wrote, if any."""
    if op.status != "ok":
        return None
    if op.kind == "put":
        assert isinstance(op.value, bytes)
        return op.value
    if op.kind == "cas" and op.output:
        assert isinstance(op.value, tuple)
        return op.value[1]
    return None


def overwrites(op: Op) -> bool:
    """Whether an acknowledged op certainly replaced the value."""
    if op.status != "ok":
        return False
    return op.kind in ("put", "delete") or (op.kind == "cas" and op.output is True)


def corrupt(rng: random.Random, history: list[Op]) -> tuple[str, list[Op]] | None:
    """Change one op so that the history is certainly not linearizable (values are unique)."""
    gets = [i for i, op in enumerate(history) if op.kind == "get" and op.status == "ok"]
    cases = [i for i, op in enumerate(history) if op.kind == "cas" and op.status == "ok"]
    rng.shuffle(gets)

    def read(i: int, output: Value | None) -> list[Op]:
        out = list(history)
        g = out[i]
        out[i] = Op(g.client, g.call, g.ret, "get", g.key, None, output)
        return out

    def never_written() -> list[Op] | None:
        return read(gets[0], b"never-written") if gets else None

    def from_the_future() -> list[Op] | None:
        for i in gets:
            for op in history:
                if op.kind in ("put", "cas") and op.call > history[i].ret and op.status != "fail":
                    return read(i, written(op))
        return None

    def stale() -> list[Op] | None:
        for i in gets:
            g = history[i]
            same = [op for op in history if op.key == g.key]
            for q in same:
                if overwrites(q) and q.ret < g.call:
                    for p in same:
                        v = writes(p)
                        if v is not None and p.ret < q.call:
                            return read(i, v)
        return None

    def lost_write() -> list[Op] | None:
        for i in gets:
            g = history[i]
            same = [op for op in history if op.key == g.key and op.status != "fail"]
            if any(op.kind == "delete" and op.call <= g.ret for op in same):
                continue
            if any(op.kind == "put" and op.status == "ok" and op.ret < g.call for op in same):
                return read(i, None)
        return None

    def impossible_cas() -> list[Op] | None:
        if not cases:
            return None
        i = rng.choice(cases)
        c = history[i]
        assert isinstance(c.value, tuple)
        out = list(history)
        out[i] = Op(c.client, c.call, c.ret, "cas", c.key, (b"never-written", c.value[1]), True)
        return out

    corruptions = [never_written, from_the_future, stale, lost_write, impossible_cas]
    rng.shuffle(corruptions)
    for corruption in corruptions:
        result = corruption()
        if result is not None:
            return corruption.__name__, result
    return None


@pytest.mark.parametrize("seed", range(300))
def test_simulated_histories_pass_and_corrupted_ones_fail(seed: int) -> None:
    rng = random.Random(seed)
    history = simulate(
        rng,
        n_ops=rng.randint(10, 150),
        n_keys=rng.randint(1, 3),
        n_clients=rng.randint(1, 8),
        p_unknown=rng.choice([0.0, 0.03, 0.1]),
    )
    assert_linearizable(history)
    corrupted = corrupt(rng, history)
    if corrupted is None:
        pytest.skip("nothing to corrupt")
    name, bad = corrupted
    result = check(bad)
    assert not result.ok, name
    assert not result.timed_out, name


# --- a brute-force oracle on small random histories ---------------------------------------------


def brute_force(history: Sequence[Op], initial: Value | None = None) -> bool:
    """Search every order, without memoization or any reduction; one key.

    An op may come next when no other op left returned before it was invoked; unknown ops may
    also be left out.
    """
    ops = [
        op for op in history if op.status == "ok" or (op.status == "unknown" and op.kind != "get")
    ]
    end = [op.ret if op.status == "ok" else INF for op in ops]

    def step(op: Op, state: Value | None) -> tuple[bool, Value | None]:
        checked = op.status == "ok"
        if op.kind == "put":
            assert isinstance(op.value, bytes | str)
            return True, op.value
        if op.kind == "get":
            return state == op.output, state
        if op.kind == "delete":
            count = int(state is not None)
            return not checked or op.output is None or op.output == count, None
        assert isinstance(op.value, tuple)
        expected, new = op.value
        matches = state == expected
        return not checked or op.output == matches, new if matches else state

    def complete(left: frozenset[int], state: Value | None) -> bool:
        if all(ops[i].status != "ok" for i in left):
            return True
        for i in left:
            if any(end[j] < ops[i].call for j in left if j != i):
                continue
            accepted, after = step(ops[i], state)
            if accepted and complete(left - {i}, after):
                return True
        return False

    return complete(frozenset(range(len(ops))), initial)


def random_small_history(rng: random.Random, p_unknown: float) -> list[Op]:
    values = [b"a", b"b", b"c"][: rng.randint(1, 3)]
    history = []
    for _ in range(rng.randint(1, 8)):
        call = rng.randint(0, 10)
        ret: float = call + rng.randint(0, 5)
        kind = rng.choice(KINDS)
        value: Input = None
        output: Output = None
        if kind == "put":
            value = rng.choice(values)
        elif kind == "get":
            output = rng.choice([None, *values])
        elif kind == "delete":
            output = rng.choice([None, 0, 1])
        else:
            value = (rng.choice([None, *values]), rng.choice(values))
            output = rng.random() < 0.5
        status: Status = "ok"
        if rng.random() < p_unknown:
            status, ret, output = "unknown", INF, None
        elif rng.random() < 0.05:
            status = "fail"
        history.append(Op(rng.randrange(3), call, ret, kind, "k", value, output, status))
    return history


@pytest.mark.parametrize("p_unknown", [0.0, 0.2, 0.5])
def test_agrees_with_brute_force_on_small_histories(p_unknown: float) -> None:
    rng = random.Random(int(p_unknown * 100))
    verdicts = {True: 0, False: 0}
    for n in range(1000):
        history = random_small_history(rng, p_unknown)
        initial = rng.choice([None, b"a"])
        expected = brute_force(history, initial)
        result = check(history, initial={"k": initial} if initial else None)
        assert not result.timed_out
        assert result.ok == expected, (n, history, initial)
        verdicts[expected] += 1
    # Both verdicts are well represented, so the comparison means something.
    assert min(verdicts.values()) > 200, verdicts

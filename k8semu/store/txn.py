"""etcd Txn rules that need no store: op counts, empty keys, keys written twice, compares.

Owns the checks etcd's API layer applies to a txn before it reaches the log, so a servicer can
refuse early and the apply path can re-check what arrived through the log with the same
errors, and how one Compare is decided on the rows it names. Pure functions: it must not read
the store (the MVCC store fetches the rows).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Sequence
from typing import Any, Final

from k8semu.pb.etcd import rpc_pb2
from k8semu.store import errors
from k8semu.store.schema import Row

MAX_TXN_OPS: Final = 128  # etcd's --max-txn-ops default
# Applying re-checks a txn against this fixed bound (not the configured --max-txn-ops, which
# may differ between replicas): whatever reaches the log can never cost more than this.
APPLY_MAX_TXN_OPS: Final = 1 << 14

_Cmp = rpc_pb2.Compare
# Compare target -> (index in a schema.Row, the Compare field holding the wanted value).
_TARGETS: Final = {
    _Cmp.VERSION: (3, "version"),
    _Cmp.CREATE: (1, "create_revision"),
    _Cmp.MOD: (2, "mod_revision"),
    _Cmp.VALUE: (4, "value"),
    _Cmp.LEASE: (5, "lease"),
}
_RESULTS: Final[dict[int, Callable[[Any, Any], bool]]] = {
    _Cmp.EQUAL: operator.eq,
    _Cmp.GREATER: operator.gt,
    _Cmp.LESS: operator.lt,
    _Cmp.NOT_EQUAL: operator.ne,
}
_ZERO_ROW: Final[Row] = (0, 0, 0, 0, b"", 0)


def validate_txn(txn: rpc_pb2.TxnRequest, *, max_ops: int = MAX_TXN_OPS) -> None:
    """Reject a txn etcd's API layer would reject: too many ops, empty keys, a key written
    twice. Pure and cheap: servicers call it before proposing; apply calls it again.

    A flat txn may have up to `max_ops` compares, success ops and failure ops, as in etcd.
    Nested txns count against the same budget: every nested txn adds the larger of its
    compare/success/failure counts (etcd gives each nesting level whatever its parent left,
    which lets a nested txn grow exponentially with depth)."""
    if txn_ops(txn) > max_ops:
        raise errors.ErrTooManyOps
    _check_keys(txn)
    _branch_writes(txn.success)
    _branch_writes(txn.failure)


def txn_ops(txn: rpc_pb2.TxnRequest) -> int:
    """The operation count of a txn and every txn nested in it (see validate_txn)."""
    total = max(len(txn.compare), len(txn.success), len(txn.failure))
    for op in itertools.chain(txn.success, txn.failure):
        if op.WhichOneof("request") == "request_txn":
            total += txn_ops(op.request_txn)
    return total


def txn_has_put(txn: rpc_pb2.TxnRequest) -> bool:
    """Whether a txn (nested ones included) may write a new value: what NOSPACE refuses."""
    for op in itertools.chain(txn.success, txn.failure):
        kind = op.WhichOneof("request")
        if kind == "request_put" or (kind == "request_txn" and txn_has_put(op.request_txn)):
            return True
    return False


def _check_keys(txn: rpc_pb2.TxnRequest) -> None:
    for op in itertools.chain(txn.success, txn.failure):
        kind = op.WhichOneof("request")
        if kind == "request_txn":
            _check_keys(op.request_txn)
        elif kind is not None and not getattr(op, kind).key:
            raise errors.ErrEmptyKey


def _branch_writes(
    ops: Sequence[rpc_pb2.RequestOp],
) -> tuple[set[bytes], list[tuple[bytes, bytes]]]:
    """Puts and delete ranges one branch may perform; ErrDuplicateKey if two of its writes
    could touch the same key. The two branches of a nested txn exclude each other, so
    they may write the same key; anything else may not (stricter than etcd, which misses a
    put in one nested txn under a delete in a later sibling)."""
    puts: set[bytes] = set()
    dels: list[tuple[bytes, bytes]] = []

    def merge(new_puts: set[bytes], new_dels: list[tuple[bytes, bytes]]) -> None:
        if puts & new_puts:
            raise errors.ErrDuplicateKey
        if any(_in_range(k, d) for k in new_puts for d in dels) or any(
            _in_range(k, d) for k in puts for d in new_dels
        ):
            raise errors.ErrDuplicateKey
        puts.update(new_puts)
        dels.extend(new_dels)

    for op in ops:
        kind = op.WhichOneof("request")
        if kind == "request_put":
            merge({op.request_put.key}, [])
        elif kind == "request_delete_range":
            d = op.request_delete_range
            merge(set(), [(d.key, d.range_end)])
        elif kind == "request_txn":
            then_puts, then_dels = _branch_writes(op.request_txn.success)
            else_puts, else_dels = _branch_writes(op.request_txn.failure)
            merge(then_puts | else_puts, then_dels + else_dels)
    return puts, dels


def _in_range(key: bytes, rng: tuple[bytes, bytes]) -> bool:
    start, end = rng
    if not end:
        return key == start
    if end == b"\x00":
        return key >= start
    return start <= key < end


def compare_holds(c: rpc_pb2.Compare, rows: Sequence[Row]) -> bool:
    """Whether `c` holds for every current row of the keys it names (`rows`, possibly none).

    As in etcd, a missing key compares as version, revisions and lease 0, and has no value
    (a VALUE compare on it fails); an unknown target or result never holds.
    """
    target = _TARGETS.get(c.target)
    result = _RESULTS.get(c.result)
    if target is None or result is None:
        return False
    if not rows:
        if c.target == _Cmp.VALUE:
            return False
        rows = [_ZERO_ROW]
    col, field = target
    want = getattr(c, field)
    return all(result(row[col], want) for row in rows)

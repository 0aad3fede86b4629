"""The etcd Txn pieces every API-server write is made of: puts, deletes, reads and compares.

Concurrency control is the store's: a write's Txn compares the key's create_revision (0: it
must not exist) or mod_revision (it must not have changed since it was read). The verbs
(`service.py`) and the repairs (`repair.py`) build their Txns from these. Pure: no I/O.
"""

from __future__ import annotations

from k8semu.pb.etcd import rpc_pb2

_C = rpc_pb2.Compare


def put(k: bytes, value: bytes, lease: int = 0) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=value, lease=lease))


def read(k: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=k))


def read_key(k: bytes) -> rpc_pb2.RequestOp:
    """Whether `k` exists, without its value (a failed Txn's answer on an allocation key)."""
    return rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=k, keys_only=True))


def delete(k: bytes) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=k))


def unchanged_since(k: bytes, mod_revision: int) -> list[rpc_pb2.Compare]:
    return [_C(key=k, target=_C.MOD, result=_C.EQUAL, mod_revision=mod_revision)]


def absent(k: bytes) -> rpc_pb2.Compare:
    return _C(key=k, target=_C.CREATE, result=_C.EQUAL, create_revision=0)


def if_unchanged(
    k: bytes, mod_revision: int, success: list[rpc_pb2.RequestOp]
) -> rpc_pb2.TxnRequest:
    """`success` when `k` is still at `mod_revision`; nothing otherwise."""
    return rpc_pb2.TxnRequest(compare=unchanged_since(k, mod_revision), success=success)

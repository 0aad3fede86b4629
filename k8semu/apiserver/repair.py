"""What the API server finishes and repairs in the background, beside the verbs.

- Namespace termination (`Namespaces`): a kind whose deletion rules say it owns contents (a
  Namespace) is deleted in two steps: the delete marks it, then everything in it goes and the
  namespace itself last. Delete runs `finalize` at once; every API server runs
  `finish_terminating` at start for namespaces left Terminating (a crash half way).
- Allocation repair (`repair_allocations`): the allocation keys of every kind with an
  allocation hook (Services) made to match what the objects hold, as Kubernetes' repair
  loops do, once at start before the server reports SERVING.

Both write only with compare-and-swap on what they read, so they never undo a concurrent
client's write, and both are idempotent (any number of API servers may run them at once).
"""

from __future__ import annotations

from k8semu.apiserver import allocation, deletion, txn
from k8semu.apiserver.errors import CONFLICT_MESSAGE, Conflict, FailedPrecondition, StatusError
from k8semu.apiserver.objects import decode, describe, key, meta, prefix, range_end
from k8semu.apiserver.registry import Registry
from k8semu.apiserver.registry.strategy import Allocation, Strategy
from k8semu.apiserver.store import Store
from k8semu.log import get_logger
from k8semu.pb.etcd import kv_pb2, rpc_pb2

log = get_logger(__name__)

# A namespace (or a Service in it) that changed between our read and our delete is read again.
_DELETE_ATTEMPTS = 5


class Namespaces:
    """The lifecycle of the kind whose deletion rules own contents (Namespace): no creates in
    one being terminated, and its termination."""

    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        owners = [s for s in registry if s.deletion.owns_contents]
        if len(owners) != 1 or owners[0].kind.namespaced:
            raise ValueError("registry: exactly one cluster-scoped kind owns contents")
        self.strategy: Strategy = owners[0]

    def terminating(self, kv: kv_pb2.KeyValue) -> bool:
        """Whether the stored namespace `kv` is being terminated."""
        ns = decode(self.strategy.kind, kv.value, kv.mod_revision)
        return meta(ns).HasField("deletion_timestamp")

    def check_active(self, kv: kv_pb2.KeyValue) -> None:
        """FAILED_PRECONDITION for a create in the stored namespace `kv` being terminated."""
        ns = meta(decode(self.strategy.kind, kv.value, kv.mod_revision))
        if ns.HasField("deletion_timestamp"):
            raise FailedPrecondition(
                f"unable to create new content: namespace {ns.name} is being terminated"
            )

    async def finalize(self, name: str) -> None:
        """Delete everything in namespace `name` (being terminated), then the namespace itself
        unless finalizers still hold it. Idempotent."""
        await self.delete_contents(name)
        kind = self.strategy.kind
        k = key(kind, "", name)
        for _ in range(_DELETE_ATTEMPTS):
            resp = await self.store.get(k)
            if not resp.kvs:
                return
            kv = resp.kvs[0]
            if not deletion.deleted_by_update(decode(kind, kv.value, kv.mod_revision)):
                return  # not terminating, or finalizers still hold it
            done = await self.store.txn(txn.if_unchanged(k, kv.mod_revision, [txn.delete(k)]))
            if done.succeeded:
                return
        raise Conflict(
            f"Operation cannot be fulfilled on {describe(kind, name)}: {CONFLICT_MESSAGE}"
        )

    async def finish_terminating(self) -> list[str]:
        """Finish every namespace left Terminating; returns their names."""
        kind = self.strategy.kind
        resp = await self.store.scan(prefix(kind, ""))
        names = []
        for kv in resp.kvs:
            ns = decode(kind, kv.value, kv.mod_revision)
            if meta(ns).HasField("deletion_timestamp"):
                names.append(meta(ns).name)
                await self.finalize(meta(ns).name)
        return names

    async def resume(self) -> None:
        """`finish_terminating`, logged; at start, after a crash half way."""
        try:
            names = await self.finish_terminating()
        except StatusError as exc:
            log.warning("could not finish terminating namespaces", error=exc.message)
            return
        if names:
            log.info("finished terminating namespaces", namespaces=names)

    async def delete_contents(self, namespace: str) -> None:
        """Everything namespaced in `namespace` goes at once, finalizers and grace periods
        notwithstanding (Kubernetes' namespace controller deletes object by object and waits;
        we do not yet). Creates are refused meanwhile, so nothing new slips in."""
        for strategy in self.registry:
            if strategy.kind.namespaced and strategy.allocation is not None:
                await self._delete_holders(strategy, strategy.allocation, namespace)
        for strategy in self.registry:
            if strategy.kind.namespaced:
                start = prefix(strategy.kind, namespace)
                await self.store.delete_range(start, range_end(start))

    async def _delete_holders(self, strategy: Strategy, hook: Allocation, namespace: str) -> None:
        """Objects holding allocations go one by one, each with its keys in its own Txn."""
        for _ in range(_DELETE_ATTEMPTS):
            resp = await self.store.scan(prefix(strategy.kind, namespace))
            if not resp.kvs:
                break
            for kv in resp.kvs:
                obj = decode(strategy.kind, kv.value, kv.mod_revision)
                releases = [txn.delete(k) for k in hook.held(obj)]
                await self.store.txn(
                    txn.if_unchanged(kv.key, kv.mod_revision, [txn.delete(kv.key), *releases])
                )


async def repair_allocations(store: Store, strategy: Strategy, hook: Allocation) -> tuple[int, int]:
    """Make the allocation keys match the objects of `strategy`'s kind, as Kubernetes' repair
    loops do: free keys no object holds (none should leak, every write is one Txn, but data
    from an older version or a hand edit may) and add the keys of objects that hold values
    without one. Everything is compared with the snapshot it was decided on, so a concurrent
    create or delete is never undone. Returns (freed, added)."""
    resp = await store.scan(prefix(strategy.kind, ""))
    revision = resp.header.revision
    want: dict[bytes, tuple[bytes, bytes, int]] = {}
    for kv in resp.kvs:
        obj = decode(strategy.kind, kv.value, kv.mod_revision)
        holder = allocation.owner(meta(obj).namespace, meta(obj).name)
        for k in hook.held(obj):
            want.setdefault(k, (holder, kv.key, kv.mod_revision))
    freed = added = 0
    present: set[bytes] = set()
    for start in hook.prefixes:
        for kv in (await store.scan(start, revision=revision)).kvs:
            if kv.key in want and want[kv.key][0] == kv.value:
                present.add(kv.key)
                continue
            done = await store.txn(txn.if_unchanged(kv.key, kv.mod_revision, [txn.delete(kv.key)]))
            freed += done.succeeded
    for k, (holder, obj_key, obj_revision) in want.items():
        if k in present:
            continue
        done = await store.txn(
            rpc_pb2.TxnRequest(
                compare=[txn.absent(k), *txn.unchanged_since(obj_key, obj_revision)],
                success=[txn.put(k, holder)],
            )
        )
        added += done.succeeded
        if not done.succeeded:
            log.warning("allocation held twice", key=k.decode(), holder=holder.decode())
    return freed, added


async def repair_all_allocations(store: Store, registry: Registry) -> None:
    """`repair_allocations` for every kind with an allocation hook, logged; at start."""
    for strategy in registry:
        if strategy.allocation is None:
            continue
        try:
            freed, added = await repair_allocations(store, strategy, strategy.allocation)
        except StatusError as exc:
            log.warning(
                "could not repair allocations", resource=strategy.kind.plural, error=exc.message
            )
            continue
        if freed or added:
            log.info(
                "allocations repaired", resource=strategy.kind.plural, freed=freed, added=added
            )

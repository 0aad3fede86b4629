"""The API server's compactor: keeps the store's MVCC history to about one interval, as
kube-apiserver does with `--etcd-compaction-interval` (default 5m), through the etcd v3 API
only, so it bounds a real etcd as well as `k8semu store`.

Every `interval`, each API server runs one compare-and-swap on the well-known key
`compact_rev_key` (no /registry prefix, as kube-apiserver's): "its version is still the one I
saw last time" -> put the store revision I saw last time. The key's version is a logical
clock shared by every API server on the store:

- the one that wins the swap compacts to the revision it saw one interval ago, so watchers
  and paginated lists keep one interval of history;
- the others lose, and take the key's current version and the current revision as what they
  saw; if the winner dies, one of them wins at its next tick. So among any number of API
  servers there is one compaction per interval (between one and two intervals apart while
  one takes over), and a fresh API server never compacts before it has waited a whole
  interval (its first swap only records a revision).

Compacting a revision that is already compacted (the store's own auto-compaction, another
tool) is not an error. Under the store's NOSPACE alarm the swap (a put) is refused; the
compactor then compacts to the revision it saw at its previous tick anyway, since compaction
is allowed under the alarm and is the first step out of it (a second API server doing the
same finds it compacted already).

It owns nothing else: no defragmentation (that gives space back to the file system, an
operator's or the store's job), no alarm handling.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from k8semu.apiserver.errors import StatusError, StorageFull
from k8semu.apiserver.store import Store, StoreCompacted
from k8semu.log import get_logger
from k8semu.pb.etcd import rpc_pb2

log = get_logger(__name__)

COMPACT_REV_KEY = b"compact_rev_key"
DEFAULT_COMPACTION_INTERVAL = 300.0  # kube-apiserver's default, 5m


@dataclass(slots=True)
class Tick:
    """What one tick did: `won` the swap; `compacted` to that revision (0: nothing)."""

    won: bool
    compacted: int = 0


class Compactor:
    """Run `run()` as a task (cancel to stop); `tick()` is one round, for tests."""

    def __init__(self, store: Store, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"interval: must be > 0, got {interval}")
        self.store = store
        self.interval = interval
        self.version = 0  # the compact_rev_key version this server saw last
        self.revision = 0  # the store revision it saw then: the next compaction's target
        self.compactions = 0  # compactions this server asked for (for tests and logs)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.tick()
            except StatusError as exc:
                log.warning("compaction failed; trying again next interval", error=exc.message)

    async def tick(self) -> Tick:
        key = COMPACT_REV_KEY
        try:
            resp = await self.store.txn(
                rpc_pb2.TxnRequest(
                    compare=[
                        rpc_pb2.Compare(
                            key=key,
                            target=rpc_pb2.Compare.VERSION,
                            result=rpc_pb2.Compare.EQUAL,
                            version=self.version,
                        )
                    ],
                    success=[
                        rpc_pb2.RequestOp(
                            request_put=rpc_pb2.PutRequest(
                                key=key, value=str(self.revision).encode()
                            )
                        )
                    ],
                    failure=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))],
                )
            )
        except StorageFull:
            # The swap is a put, refused under NOSPACE; compaction itself is not, and it is
            # what frees the space. The target is still one interval old.
            log.warning("store is full (NOSPACE): compacting without the swap")
            compacted = await self._compact(self.revision)
            self.revision = (await self.store.get(key)).header.revision
            return Tick(won=False, compacted=compacted)
        target = self.revision
        self.revision = resp.header.revision
        if not resp.succeeded:
            kvs = resp.responses[0].response_range.kvs if resp.responses else []
            self.version = kvs[0].version if kvs else 0
            log.info("another API server compacts this interval", version=self.version)
            return Tick(won=False)
        self.version += 1
        log.info("compaction swap won", version=self.version, target=target)
        if not target:
            return Tick(won=True)  # a fresh server: nothing seen one interval ago yet
        return Tick(won=True, compacted=await self._compact(target))

    async def _compact(self, revision: int) -> int:
        if not revision:
            return 0
        try:
            await self.store.compact(revision)
        except StoreCompacted:
            log.debug("already compacted", revision=revision)
            return 0
        self.compactions += 1
        log.info("compacted the store's history", revision=revision)
        return revision

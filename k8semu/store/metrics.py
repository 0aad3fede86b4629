"""The store replica's metrics, named as etcd names them (etcd server/etcdserver/metrics.go,
server/storage/{wal,backend,mvcc}/metrics.go), so dashboards and alerts written for etcd
read a k8semu store unchanged.

Counters and histograms are updated where the event happens (a leader change, a raft.db
write, an apply commit: a few hundred nanoseconds each, next to a SQLite transaction);
gauges that mirror state are read when scraped (`ReplicaCollector`), so they cost nothing
between scrapes.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from k8semu import metrics

if TYPE_CHECKING:
    from k8semu.store.server import StoreServer

# etcd's buckets for both disk histograms: 1 ms doubling to ~8 s.
_DISK_BUCKETS = tuple(0.001 * 2**i for i in range(14))

LEADER_CHANGES = Counter("etcd_server_leader_changes_seen", "The number of leader changes seen.")
WAL_FSYNC = Histogram(
    "etcd_disk_wal_fsync_duration_seconds",
    "The latency distributions of fsync called by WAL (here: one raft.db transaction).",
    buckets=_DISK_BUCKETS,
)
BACKEND_COMMIT = Histogram(
    "etcd_disk_backend_commit_duration_seconds",
    "The latency distributions of commit called by backend (here: one kv.db apply batch).",
    buckets=_DISK_BUCKETS,
)


class ReplicaCollector(Collector):
    """The gauges read from the replica at scrape time. One replica per process (as etcd):
    when a process runs several (in-process tests), the last one started is reported."""

    def __init__(self) -> None:
        self._replica: weakref.ref[StoreServer] | None = None
        self.in_use = 0  # bytes: refreshed before each scrape on the MVCC thread

    def track(self, replica: StoreServer) -> None:
        self._replica = weakref.ref(replica)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        replica = self._replica() if self._replica is not None else None
        if replica is None or replica.node is None:
            return
        node, sm = replica.node, replica.sm
        leader = node.leader
        yield _gauge("etcd_server_has_leader", "Whether or not a leader exists.", leader != 0)
        yield _gauge(
            "etcd_server_is_leader",
            "Whether or not this member is a leader.",
            leader == replica.config.member_id,
        )
        yield _gauge(
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed.",
            node.commit_index,
        )
        yield _gauge(
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied.",
            sm.applied_index,
        )
        if sm.ready:
            yield _gauge(
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
                sm.mvcc.size,
            )
            yield _gauge(
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes.",
                self.in_use,
            )
            yield _gauge(
                "etcd_debugging_mvcc_current_revision",
                "The current revision of store.",
                sm.revision,
            )

    async def refresh(self) -> None:
        """The in-use size needs SQL on the MVCC thread: read once per scrape."""
        replica = self._replica() if self._replica is not None else None
        if replica is not None and replica.sm.ready:
            self.in_use = await replica.sm.run(replica.sm.mvcc.db_size_in_use)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


REPLICA = ReplicaCollector()
metrics.live(REPLICA)
metrics.before_scrape(REPLICA.refresh)

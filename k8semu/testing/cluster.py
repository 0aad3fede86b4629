"""Real store clusters as OS processes, for tests and benchmarks to start, break and stop.

The machinery lives in ``k8semu.cluster.processes`` (``k8semu up`` runs local clusters with it);
this module is the name tests import it by. With no ``members`` given, a cluster takes free
loopback ports and a fresh token and refuses existing data directories - what a test wants.
"""

from __future__ import annotations

from k8semu.cluster.errors import (
    ClusterError,
    ClusterNotReadyError,
    MemberExitedError,
    WaitCancelledError,
)
from k8semu.cluster.processes import (
    DEFAULT_ETCD_BINARY,
    HOST,
    LOG_TAIL_LINES,
    POLL_INTERVAL_S,
    STATUS_RPC_TIMEOUT_S,
    STOP_GRACE_S,
    EtcdCluster,
    K8semuStoreCluster,
    Member,
    MemberSpec,
    ProcessCluster,
    free_loopback_ports,
)

__all__ = [
    "DEFAULT_ETCD_BINARY",
    "HOST",
    "LOG_TAIL_LINES",
    "POLL_INTERVAL_S",
    "STATUS_RPC_TIMEOUT_S",
    "STOP_GRACE_S",
    "ClusterError",
    "ClusterNotReadyError",
    "EtcdCluster",
    "K8semuStoreCluster",
    "Member",
    "MemberExitedError",
    "MemberSpec",
    "ProcessCluster",
    "WaitCancelledError",
    "free_loopback_ports",
]

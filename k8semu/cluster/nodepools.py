"""The supervisor's part in node-pool autoscaling: the cloud provider that makes nodes come and
go. About once a second it reads, through the API, which slots of each autoscaled pool the
cluster autoscaler wants (``nodeGroups`` of ``kube-system/cluster-autoscaler-status``, see
k8semu/controllers/clusterautoscaler/targets.py); the supervisor then starts the kubelet (and
proxy) of each wanted slot of this host and stops those no longer wanted.

A pool the ConfigMap does not name, or no answer from the API, changes nothing: the slots keep
running (or not) as they are, so an API outage never stops a node. Synchronous, like the
supervision loop; every call has a deadline.
"""

from __future__ import annotations

from collections.abc import Sequence

from k8semu.cluster.probes import Probes
from k8semu.controllers.clusterautoscaler import targets

__all__ = ["PoolTargets"]

CHECK_INTERVAL_S = 1.0
RPC_TIMEOUT_S = 0.5


class PoolTargets:
    """Reads the wanted slots of every pool (``poll``) at most once per interval."""

    def __init__(self, probes: Probes, api_servers: Sequence[str]) -> None:
        self._probes = probes
        self._servers = list(api_servers)
        self._next = 0.0
        #: The last answer read, for messages.
        self.last: dict[str, frozenset[str]] | None = None
        self.error = ""

    def poll(self, now: float) -> dict[str, frozenset[str]] | None:
        """pool -> the slots that should run, when it is time to ask and the API answers;
        None otherwise (then nothing is to change)."""
        if now < self._next or not self._servers:
            return None
        self._next = now + CHECK_INTERVAL_S
        try:
            data = self._probes.config_map(
                self._servers, targets.NAMESPACE, targets.STATUS_NAME, RPC_TIMEOUT_S
            )
        except Exception as exc:  # grpc.RpcError: no API server answers; ask again later
            self.error = str(exc)[:200]
            return None
        self.error = ""
        self.last = targets.decode(data.get(targets.NODE_GROUPS_KEY, "")) if data else {}
        return self.last

"""The supervisor's part in node-pool autoscaling: the cloud provider that makes nodes come and
go. About once a second it reads, through the API, which slots of each autoscaled pool the
cluster autoscaler wants (``nodeGroups`` of ``kube-system/cluster-autoscaler-status``, see
k8semu/controllers/clusterautoscaler/targets.py); the supervisor then starts the kubelet (and
proxy) of each wanted slot of this host and stops those no longer wanted.

A pool the ConfigMap does not name, or no answer from the API, changes nothing: the slots keep
running (or not) as they are, so an API outage never stops a node. The reading is done by a
background thread, so the supervision loop never waits for an API server that may be the
very thing it has to start again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from k8semu.cluster.probes import Probes
from k8semu.controllers.clusterautoscaler import targets

__all__ = ["PoolTargets"]

CHECK_INTERVAL_S = 1.0
RPC_TIMEOUT_S = 0.5


class PoolTargets:
    """The wanted slots of every pool, as last read; ``poll`` hands each new reading over once."""

    def __init__(
        self, api_servers: Sequence[str], make_probes: Callable[[], Probes] = Probes
    ) -> None:
        self._servers = list(api_servers)
        self._make_probes = make_probes
        self._lock = threading.Lock()
        self._latest: dict[str, frozenset[str]] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: The last API error ("" after an answer), for messages.
        self.error = ""

    def poll(self) -> dict[str, frozenset[str]] | None:
        """pool -> the slots that should run, when a reading came since the last call; None
        otherwise (then nothing is to change). Starts the reader at the first call."""
        if self._thread is None and self._servers:
            self._thread = threading.Thread(target=self._run, name="node-pools", daemon=True)
            self._thread.start()
        with self._lock:
            latest, self._latest = self._latest, None
        return latest

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=RPC_TIMEOUT_S * (len(self._servers) + 1) + 1)

    def _run(self) -> None:
        probes = self._make_probes()
        try:
            while not self._stop.is_set():
                self._read(probes)
                self._stop.wait(CHECK_INTERVAL_S)
        finally:
            probes.close()

    def _read(self, probes: Probes) -> None:
        try:
            data = probes.config_map(
                self._servers, targets.NAMESPACE, targets.STATUS_NAME, RPC_TIMEOUT_S
            )
        except Exception as exc:  # grpc.RpcError: no API server answers; ask again later
            self.error = str(exc)[:200]
            return
        self.error = ""
        wanted = targets.decode(data.get(targets.NODE_GROUPS_KEY, "")) if data else {}
        with self._lock:
            self._latest = wanted

"""Clusters: the cluster config model, the launch plan, the processes, and the launcher.

``config`` reads and validates ``cluster_configs/*.yaml``; ``plan`` turns a config (and a host)
into the processes to start, with one command-line builder per component; ``launcher`` is the
engine of ``k8semu up``/``join`` and ``startup`` the waits that tell it a stage is healthy;
``spawn`` starts every process (own session, log, cgroup, death with its starter); ``state``
owns the state directory (``state.json``, logs); ``status`` is ``k8semu status``/``down``;
``probes`` asks components how they are; ``stopping`` signals by pid and start time, in the
order a cluster stops; ``supervisor`` restarts what crashes, with back-off; ``processes``
starts store clusters for tests and benchmarks and ``component`` single components; ``errors``
holds every error of the package. This package sits above every
component: it starts them as processes and talks to them only through their public APIs (gRPC
health, the etcd v3 API, the Kubernetes API).
"""

from k8semu.cluster.state import component_log_path

__all__ = ["component_log_path"]

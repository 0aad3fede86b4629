"""Clusters: the cluster config model, the launch plan, the processes, and the launcher.

``config`` reads and validates ``cluster_configs/*.yaml``; ``plan`` turns a config (and a host)
into the processes to start; ``launcher`` is the engine of ``k8semu up``/``join``; ``state``
owns the state directory (``state.json``, logs); ``status`` is ``k8semu status``/``down``;
``probes`` asks components how they are; ``stopping`` signals by pid and start time;
``supervisor`` decides restart back-off; ``processes`` starts store clusters for tests and
benchmarks; ``errors`` holds every error of the package. This package sits above every
component: it starts them as processes and talks to them only through their public APIs (gRPC
health, the etcd v3 API, the Kubernetes API).
"""

from k8semu.cluster.state import component_log_path

__all__ = ["component_log_path"]

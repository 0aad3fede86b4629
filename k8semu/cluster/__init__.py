"""Local clusters: the cluster config model, the member processes, and the launcher.

``config`` reads and validates ``cluster_configs/*.yaml``; ``processes`` starts, signals and
stops member processes by pid (the launcher, the tests and the benchmarks all use it);
``supervisor`` decides restart back-off; ``launcher`` is the engine of ``k8semu up``;
``errors`` holds every error of the package. This package sits above every component: it
starts them as processes and talks to them only through their public APIs (the store
through the etcd v3 API).
"""

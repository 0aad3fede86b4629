"""Cluster add-ons shipped as Kubernetes manifests (package data), e.g. the cluster DNS.

`load(name)` returns a manifest's text for `k8semu apply` or the launcher to create; this
module only reads package data and never talks to a cluster.
"""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["DNS_CLUSTER_DOMAIN", "DNS_CLUSTER_IP", "available", "load"]

#: The kube-dns Service's fixed ClusterIP (in the default service CIDR 127.96.0.0/16) and the
#: cluster domain the DNS add-on serves; kubelets point pods at these.
DNS_CLUSTER_IP = "127.96.0.10"
DNS_CLUSTER_DOMAIN = "cluster.local"

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def available() -> list[str]:
    """Names of the shipped add-ons ("dns", ...)."""
    files = resources.files(__name__).iterdir()
    return sorted(f.name[:-5] for f in files if f.name.endswith(".yaml"))


def load(name: str) -> str:
    """The manifest text of add-on `name` (``dns``). KeyError for an unknown name."""
    if not _NAME.match(name):
        raise KeyError(name)
    resource = resources.files(__name__).joinpath(f"{name}.yaml")
    if not resource.is_file():
        raise KeyError(f"no add-on {name!r}; available: {', '.join(available())}")
    return resource.read_text(encoding="utf-8")

"""What the cluster autoscaler asks for, in the ConfigMap ``kube-system/cluster-autoscaler-status``
(the name and namespace the real cluster-autoscaler writes its status to).

Besides the human-readable ``status`` text, the key ``nodeGroups`` holds, per pool, the Node
slots that should run (JSON: ``{"<pool>": {"minSize": 0, "maxSize": 2, "targetSize": 1,
"nodes": ["<pool>-0"]}}``). The controller manager writes it; each host's supervisor reads it
and starts or stops the kubelets (and proxies) of its slots to match: the intent goes through
the API, as every component reaches cluster state only through it, and the supervisor plays
the cloud provider that makes instances come and go.

Pure: encoding and decoding, tolerant of anything in the ConfigMap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

__all__ = ["NAMESPACE", "NODE_GROUPS_KEY", "STATUS_KEY", "STATUS_NAME", "decode", "encode"]

NAMESPACE = "kube-system"
STATUS_NAME = "cluster-autoscaler-status"
STATUS_KEY = "status"
NODE_GROUPS_KEY = "nodeGroups"
MAX_NODES_PER_POOL = 1000  # what a reader takes of one pool, whatever the ConfigMap says


def encode(targets: Mapping[str, tuple[int, int, list[str]]]) -> str:
    """pool -> (min, max, slot names that should run), as the ``nodeGroups`` value."""
    return json.dumps(
        {
            pool: {"minSize": low, "maxSize": high, "targetSize": len(nodes), "nodes": nodes}
            for pool, (low, high, nodes) in sorted(targets.items())
        },
        sort_keys=True,
    )


def decode(text: str) -> dict[str, frozenset[str]]:
    """pool -> the slot names that should run, from a ``nodeGroups`` value; what cannot be
    read (not JSON, a pool that is not an object, names that are not strings) is left out,
    so a damaged ConfigMap never makes a reader fail, and says nothing about those pools."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(raw, dict):
        return {}
    out: dict[str, frozenset[str]] = {}
    for pool, group in raw.items():
        if not isinstance(pool, str) or not isinstance(group, dict):
            continue
        nodes = group.get("nodes")
        if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
            continue
        out[pool] = frozenset(nodes[:MAX_NODES_PER_POOL])
    return out

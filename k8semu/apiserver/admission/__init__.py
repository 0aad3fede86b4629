"""Admission: what a create passes through after its kind's defaults, as kube-apiserver's
admission chain (mutating plugins, the kind's validation, validating plugins), each plugin
in a module named for it.

    limitranger.py LimitRanger: fills in a LimitRange's default requests and limits
               (mutating) and refuses pods and claims outside its bounds (validating)
    quota.py   ResourceQuota: refuses a create that would exceed a quota of its namespace
               and charges the quota's status.used (compare-and-swap) before the write
"""

from __future__ import annotations

from google.protobuf.message import Message

from k8semu.apiserver.admission import limitranger, quota
from k8semu.apiserver.registry.strategy import Strategy


async def admit(
    verbs: quota.Verbs, strategy: Strategy, obj: Message, *, dry_run: bool = False
) -> None:
    """The chain for a create of `obj` (system fields and defaults set): raises the first
    refusal; on a dry run nothing is charged."""
    limit_ranges = await limitranger.ranges(verbs, strategy.kind, obj)
    limitranger.default(obj, limit_ranges)
    strategy.validate_create(obj)
    limitranger.check(strategy.kind, obj, limit_ranges)
    await quota.admit(verbs, strategy.kind, obj, dry_run=dry_run)

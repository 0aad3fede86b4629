"""`cordon`, `uncordon`: node maintenance verbs, as kubectl's.

cordon sets a Node's spec.unschedulable (the scheduler then places no new pod there, unless
the pod tolerates node.kubernetes.io/unschedulable, as daemon pods do); uncordon clears it.
Both say "already" when there was nothing to change, and are idempotent.
"""

from __future__ import annotations

import argparse

from k8semu.cli._kubeconfig import Target
from k8semu.cli._resources import UsageError
from k8semu.cli.verbs._shared import Errors, client_for, out
from k8semu.client import Client, ClientError
from k8semu.pb.api.v1 import core_pb2


def node_names(args: list[str]) -> list[str]:
    """`NODE...` or `node/NODE...`, as kubectl accepts them."""
    names = []
    for arg in args:
        kind, slash, name = arg.partition("/")
        if slash and kind not in ("node", "nodes", "no"):
            raise UsageError(f"{arg}: only nodes can be cordoned or drained")
        names.append(name if slash else arg)
    if not names:
        raise UsageError("a node name is required")
    return names


async def set_unschedulable(client: Client, name: str, value: bool) -> bool:
    """Set spec.unschedulable; False when it already was."""
    node = await client.get(core_pb2.Node, name)
    if node.spec.unschedulable == value:
        return False
    await client.patch(core_pb2.Node, name, {"spec": {"unschedulable": True if value else None}})
    return True


async def _cordon(ns: argparse.Namespace, target: Target, value: bool) -> None:
    word = "cordoned" if value else "uncordoned"
    errors = Errors()
    async with client_for(target, ns) as client:
        for name in node_names(ns.nodes):
            try:
                changed = await set_unschedulable(client, name, value)
            except ClientError as exc:
                errors.report(exc)
                continue
            out(f"node/{name} {word}\n" if changed else f"node/{name} already {word}\n")
    errors.check()


async def cmd_cordon(ns: argparse.Namespace, target: Target) -> None:
    await _cordon(ns, target, True)


async def cmd_uncordon(ns: argparse.Namespace, target: Target) -> None:
    await _cordon(ns, target, False)

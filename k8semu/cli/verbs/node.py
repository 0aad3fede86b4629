"""`cordon`, `uncordon`, `drain`: node maintenance verbs, as kubectl's.

cordon sets a Node's spec.unschedulable (the scheduler then places no new pod there, unless
the pod tolerates node.kubernetes.io/unschedulable, as daemon pods do); uncordon clears it.
Both say "already" when there was nothing to change, and are idempotent.

drain cordons, then evicts every pod bound to the node through pods/eviction, so each
PodDisruptionBudget is honoured: an eviction the budget refuses (429) is tried again every
5 s, as kubectl does, until `--timeout`. It refuses, before evicting anything, pods it would
lose for good unless told: DaemonSet pods (their controller would put them back; skipped with
`--ignore-daemonsets`), pods no controller owns (`--force`), pods with emptyDir data
(`--delete-emptydir-data`). It waits for each evicted pod to be gone (by uid).
"""

from __future__ import annotations

import argparse
import asyncio
import time

from k8semu.cli._kubeconfig import Target
from k8semu.cli._resources import UsageError
from k8semu.cli.verbs._shared import Errors, Failed, client_for, err, out
from k8semu.client import Client, ClientError, NotFound, ResourceExhausted, evict
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


RETRY_S = 5.0  # kubectl's pause before trying a refused eviction again
POLL_S = 1.0


def _owner_kind(pod: core_pb2.Pod) -> str:
    return next((r.kind for r in pod.metadata.owner_references if r.controller), "")


def _problems(pods: list[core_pb2.Pod], ns: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(errors that stop the drain, warnings), kubectl's wording; each lists ns/name."""

    def names(ps: list[core_pb2.Pod]) -> str:
        return ", ".join(f"{p.metadata.namespace}/{p.metadata.name}" for p in ps)

    daemons = [p for p in pods if _owner_kind(p) == "DaemonSet"]
    orphans = [p for p in pods if not _owner_kind(p)]
    local = [p for p in pods if any(v.HasField("empty_dir") for v in p.spec.volumes)]
    errors, warnings = [], []
    for found, allowed, what, flag in (
        (daemons, ns.ignore_daemonsets, "DaemonSet-managed Pods", "--ignore-daemonsets to ignore"),
        (orphans, ns.force, "Pods that declare no controller", "--force to override"),
        (
            local,
            ns.delete_emptydir_data,
            "Pods with local storage",
            "--delete-emptydir-data to override",
        ),
    ):
        if found and not allowed:
            errors.append(f"cannot delete {what} (use {flag}): {names(found)}")
        elif found:
            verb = "ignoring" if found is daemons else "deleting"
            warnings.append(f"Warning: {verb} {what}: {names(found)}")
    return errors, warnings


async def _evict_one(client: Client, pod: core_pb2.Pod, ns: argparse.Namespace, end: float) -> None:
    m = pod.metadata
    grace = ns.grace_period if ns.grace_period >= 0 else None
    out(f"evicting pod {m.namespace}/{m.name}\n", flush=True)
    while True:
        try:
            if ns.disable_eviction:
                await client.delete(
                    core_pb2.Pod, m.name, namespace=m.namespace, grace_period_seconds=grace
                )
            else:
                await evict(
                    client, m.name, namespace=m.namespace, uid=m.uid, grace_period_seconds=grace
                )
            break
        except NotFound:
            break
        except ResourceExhausted as exc:
            if time.monotonic() + RETRY_S > end:
                raise
            message = exc.message.split(": ", 1)[-1]
            where = f'pods/"{m.name}" -n "{m.namespace}"'
            err(f"error when evicting {where} (will retry after 5s): {message}")
            await asyncio.sleep(RETRY_S)
    while time.monotonic() < end:
        try:
            now = await client.get(core_pb2.Pod, m.name, namespace=m.namespace)
        except NotFound:
            break
        if now.metadata.uid != m.uid:
            break
        await asyncio.sleep(POLL_S)
    else:
        raise TimeoutError(f"pod {m.namespace}/{m.name} was not deleted within --timeout")
    out(f"pod/{m.name} evicted\n", flush=True)


async def cmd_drain(ns: argparse.Namespace, target: Target) -> None:
    end = time.monotonic() + (ns.timeout if ns.timeout > 0 else 365 * 86400.0)
    async with client_for(target, ns) as client:
        for name in node_names(ns.nodes):
            changed = await set_unschedulable(client, name, True)
            out(f"node/{name} cordoned\n" if changed else f"node/{name} already cordoned\n")
            listed = await client.list_all(
                core_pb2.Pod, field_selector=f"spec.nodeName={name}", label_selector=ns.pod_selector
            )
            pods = [
                p
                for p in listed.items
                if "kubernetes.io/config.mirror" not in p.metadata.annotations
            ]
            errors, warnings = _problems(pods, ns)
            if errors:
                err(f'error: unable to drain node "{name}" due to error: {"; ".join(errors)}')
                raise Failed
            for line in warnings:
                err(line)
            evicted = [p for p in pods if _owner_kind(p) != "DaemonSet"]
            results = await asyncio.gather(
                *(_evict_one(client, p, ns, end) for p in evicted), return_exceptions=True
            )
            failed = [r for r in results if isinstance(r, BaseException)]
            for exc in failed:
                if not isinstance(exc, (ClientError, TimeoutError)):
                    raise exc
                err(f"error: {exc}")
            if failed:
                err(f'error: unable to drain node "{name}": {len(failed)} pod(s) not evicted')
                raise Failed
            out(f"node/{name} drained\n")

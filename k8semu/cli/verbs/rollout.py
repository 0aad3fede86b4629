"""`rollout status|restart|history|undo` of Deployments, DaemonSets and StatefulSets (the pure
parts: k8semu.cli._rollout)."""

from __future__ import annotations

import argparse
import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from google.protobuf.message import Message

from k8semu.api import timestamps
from k8semu.cli import _rollout
from k8semu.cli._kubeconfig import Target
from k8semu.cli._resources import (
    UsageError,
)
from k8semu.cli.verbs._shared import (
    CONFLICT_RETRIES,
    Errors,
    client_for,
    label_of,
    named_objects,
    namespace_for,
    out,
    patch_object,
)
from k8semu.client import (
    Client,
    ClientError,
    Conflict,
)
from k8semu.controllers.history import Owner
from k8semu.pb.api.v1 import apps_pb2

M = TypeVar("M")
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
ROLLED_OUT = ("Deployment", "DaemonSet", "StatefulSet")
_OWNERS: dict[str, type[Owner]] = {
    "DaemonSet": apps_pb2.DaemonSet,
    "StatefulSet": apps_pb2.StatefulSet,
}


def rollout_message(d: apps_pb2.Deployment) -> tuple[str, bool]:
    """kubectl's rollout status text for a Deployment, and whether the rollout is done."""
    name = d.metadata.name
    st = d.status
    if d.metadata.generation > st.observed_generation:
        return "Waiting for deployment spec update to be observed...", False
    want = d.spec.replicas if d.spec.HasField("replicas") else 1
    prefix = f'Waiting for deployment "{name}" rollout to finish: '
    if st.updated_replicas < want:
        return f"{prefix}{st.updated_replicas} out of {want} new replicas have been updated...", (
            False
        )
    if st.replicas > st.updated_replicas:
        old = st.replicas - st.updated_replicas
        return f"{prefix}{old} old replicas are pending termination...", False
    if st.available_replicas < st.updated_replicas:
        return (
            f"{prefix}{st.available_replicas} of {st.updated_replicas} updated replicas are "
            "available...",
            False,
        )
    return f'deployment "{name}" successfully rolled out', True


def daemon_set_message(ds: apps_pb2.DaemonSet) -> tuple[str, bool]:
    """kubectl's rollout status text for a DaemonSet, and whether the rollout is done."""
    name, st = ds.metadata.name, ds.status
    if ds.spec.update_strategy.type not in ("", "RollingUpdate"):
        raise UsageError("rollout status is only available for RollingUpdate strategy type")
    if ds.metadata.generation > st.observed_generation:
        return "Waiting for daemon set spec update to be observed...", False
    prefix = f'Waiting for daemon set "{name}" rollout to finish: '
    desired = st.desired_number_scheduled
    if st.updated_number_scheduled < desired:
        text = f"{st.updated_number_scheduled} out of {desired} new pods have been updated..."
        return prefix + text, False
    if st.number_available < desired:
        return f"{prefix}{st.number_available} of {desired} updated pods are available...", False
    return f'daemon set "{name}" successfully rolled out', True


def stateful_set_message(sts: apps_pb2.StatefulSet) -> tuple[str, bool]:
    """kubectl's rollout status text for a StatefulSet, and whether the rollout is done."""
    st, spec = sts.status, sts.spec
    if spec.update_strategy.type not in ("", "RollingUpdate"):
        raise UsageError("rollout status is only available for RollingUpdate strategy type")
    if st.observed_generation == 0 or sts.metadata.generation > st.observed_generation:
        return "Waiting for statefulset spec update to be observed...", False
    replicas = spec.replicas if spec.HasField("replicas") else 1
    if st.ready_replicas < replicas:
        return f"Waiting for {replicas - st.ready_replicas} pods to be ready...", False
    if spec.update_strategy.HasField("rolling_update"):
        want = replicas - spec.update_strategy.rolling_update.partition
        if st.updated_replicas < want:
            return (
                "Waiting for partitioned roll out to finish: "
                f"{st.updated_replicas} out of {want} new pods have been updated...",
                False,
            )
        return f"partitioned roll out complete: {st.updated_replicas} new pods have been " \
            "updated...", True  # fmt: skip
    if st.update_revision != st.current_revision:
        return (
            f"waiting for statefulset rolling update to complete {st.updated_replicas} pods at"
            f" revision {st.update_revision}...",
            False,
        )
    return (
        f"statefulset rolling update complete {st.current_replicas} pods at revision"
        f" {st.current_revision}...",
        True,
    )


async def cmd_rollout(ns: argparse.Namespace, target: Target) -> None:
    pairs = named_objects(ns.resources, "rollout")
    other = next((kind.plural for kind, _ in pairs if kind.kind not in ROLLED_OUT), None)
    if other is not None:
        raise UsageError(f"rollout {ns.action}: only deployments, daemonsets and statefulsets"
                         f" are supported, not {other}")  # fmt: skip
    errors = Errors()
    async with client_for(target, ns) as client:
        for kind, name in pairs:
            space = namespace_for(kind, target) or ""
            try:
                if ns.action == "restart":
                    now = timestamps.format_time(timestamps.now())
                    patch = {
                        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}
                    }
                    await patch_object(client, kind, name, space, patch, False)
                    out(f"{label_of(kind)}/{name} restarted\n")
                elif kind.kind in _OWNERS:
                    await _controller_rollout(client, _OWNERS[kind.kind], name, space, ns)
                elif ns.action == "history":
                    await _rollout_history(client, name, space, ns.revision)
                elif ns.action == "undo":
                    await _rollout_undo(client, name, space, ns.to_revision)
                else:
                    await _wait_rolled_out(
                        functools.partial(client.get, apps_pb2.Deployment, name, namespace=space),
                        rollout_message,
                        ns.timeout,
                    )
            except (ClientError, UsageError) as exc:
                errors.report(exc)
    errors.check()


async def _replica_sets(client: Client, namespace: str) -> list[apps_pb2.ReplicaSet]:
    page = await client.list_all(apps_pb2.ReplicaSet, namespace=namespace)
    return list(page.items)


async def _rollout_history(client: Client, name: str, namespace: str, revision: int) -> None:
    d = await client.get(apps_pb2.Deployment, name, namespace=namespace)
    sets = await _replica_sets(client, namespace)
    if revision > 0:
        out(_rollout.revision_detail(d, sets, revision))
    else:
        out(_rollout.history_table(d, sets))


async def _rollout_undo(client: Client, name: str, namespace: str, to_revision: int) -> None:
    """kubectl's client-side rollback: the chosen revision's template into the Deployment,
    written with the resourceVersion read (re-read and retried on Conflict)."""
    for attempt in range(CONFLICT_RETRIES):
        d = await client.get(apps_pb2.Deployment, name, namespace=namespace)
        if d.spec.paused:
            raise UsageError(
                "you cannot rollback a paused deployment; resume it first with "
                f'\'k8semu patch deployment/{name} -p {{"spec":{{"paused":false}}}}\' and '
                "try again"
            )
        source = _rollout.rollback_source(d, await _replica_sets(client, namespace), to_revision)
        new = _rollout.rolled_back(d, source)
        if new is None:
            revision = source.metadata.annotations.get(_rollout.REVISION, "")
            out(
                f"deployment.apps/{name} skipped rollback (current template already matches "
                f"revision {revision})\n"
            )
            return
        if await _updated(client, new, attempt):
            out(f"deployment.apps/{name} rolled back\n")
            return


async def _updated(client: Client, obj: Message, attempt: int) -> bool:
    """client.update; False on a Conflict while attempts are left (the caller reads again)."""
    try:
        await client.update(obj)
    except Conflict:
        if attempt == CONFLICT_RETRIES - 1:
            raise
        return False
    return True


async def _wait_rolled_out(
    read: Callable[[], Awaitable[M]], message: Callable[[M], tuple[str, bool]], timeout: float
) -> None:
    """Print `message` of what `read` returns each time it changes, until it says done."""
    deadline = time.monotonic() + timeout if timeout > 0 else None
    last = ""
    while True:
        text, done = message(await read())
        if text != last:
            out(text + "\n", flush=True)
            last = text
        if done:
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise UsageError("timed out waiting for the condition")
        await asyncio.sleep(0.5)


async def _controller_rollout(
    client: Client, kind: type[Owner], name: str, namespace: str, ns: argparse.Namespace
) -> None:
    """history, undo and status of a DaemonSet or StatefulSet (restart is the caller's)."""
    if ns.action == "status":
        if kind is apps_pb2.DaemonSet:
            await _wait_rolled_out(
                functools.partial(client.get, apps_pb2.DaemonSet, name, namespace=namespace),
                daemon_set_message,
                ns.timeout,
            )
        else:
            await _wait_rolled_out(
                functools.partial(client.get, apps_pb2.StatefulSet, name, namespace=namespace),
                stateful_set_message,
                ns.timeout,
            )
        return
    for attempt in range(CONFLICT_RETRIES):
        owner = await client.get(kind, name, namespace=namespace)
        page = await client.list_all(apps_pb2.ControllerRevision, namespace=namespace)
        label = f"{kind.__name__.lower()}.apps/{name}"
        if ns.action == "history":
            if ns.revision > 0:
                out(_rollout.controller_revision_detail(owner, page.items, ns.revision))
            else:
                out(_rollout.controller_history_table(owner, page.items))
            return
        revision, template = _rollout.controller_rollback(owner, page.items, ns.to_revision)
        if template is None:
            out(f"{label} skipped rollback (current template already matches revision"
                f" {revision})\n")  # fmt: skip
            return
        owner.spec.template.CopyFrom(template)
        if await _updated(client, owner, attempt):
            out(f"{label} rolled back\n")
            return

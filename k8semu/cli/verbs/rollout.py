"""`rollout status|restart|history|undo` of Deployments (the pure parts: k8semu.cli._rollout)."""

from __future__ import annotations

import argparse
import asyncio
import time

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
from k8semu.pb.api.v1 import apps_pb2

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


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


async def cmd_rollout(ns: argparse.Namespace, target: Target) -> None:
    pairs = named_objects(ns.resources, "rollout")
    for kind, _ in pairs:
        if kind.kind != "Deployment":
            raise UsageError(
                f"rollout {ns.action}: only deployments are supported, not {kind.plural}"
            )
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
                elif ns.action == "history":
                    await _rollout_history(client, name, space, ns.revision)
                elif ns.action == "undo":
                    await _rollout_undo(client, name, space, ns.to_revision)
                else:
                    await _rollout_status(client, name, space, ns.timeout)
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
        try:
            await client.update(new)
        except Conflict:
            if attempt == CONFLICT_RETRIES - 1:
                raise
            continue
        out(f"deployment.apps/{name} rolled back\n")
        return


async def _rollout_status(client: Client, name: str, namespace: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout if timeout > 0 else None
    last = ""
    while True:
        d = await client.get(apps_pb2.Deployment, name, namespace=namespace)
        text, done = rollout_message(d)
        if text != last:
            out(text + "\n", flush=True)
            last = text
        if done:
            return
        if deadline is not None and time.monotonic() >= deadline:
            raise UsageError("timed out waiting for the condition")
        await asyncio.sleep(0.5)

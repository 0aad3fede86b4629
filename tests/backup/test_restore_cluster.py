"""`k8semu backup` and `k8semu restore` on a real cluster (`k8semu up --detach`, 3 store
replicas, one process-runtime worker), while its pods run and an informer watches.

One scenario, as a user lives it: a Deployment behind a NodePort Service, a ClusterIP
Service, a Secret and a ConfigMap; a backup; then changes the backup does not have (a new
pod, a new Service, a deleted Secret, a deleted pod); then `k8semu restore --yes`. Afterwards: the
Deployment's pods are the backup's pods: the one still running with the same processes
(adopted, no second copy), the one deleted after the backup started again; the pods the
backup does not know (a new pod, the deleted one's replacement) are gone, their processes
stopped; the Secret is back and the
lost Service gone; new Services get no ClusterIP or NodePort a restored one holds; and the
informer, which watched across the restore, relisted (its resourceVersion is above the
revision bump) and holds exactly what the API lists.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from k8semu.api import manifest
from k8semu.client import Client, ClientError, Informer
from k8semu.cluster.state import read_state
from k8semu.pb.api.v1 import apps_pb2, core_pb2
from tests.support.cluster import (
    api_tls,
    k8semu,
    processes_under,
    until,
    up_detached,
    user_env,
    wait_gone,
    write_config,
)
from tests.support.poll import Eventually

# The API server restarts during the restore: errors then mean "not yet".
settle = Eventually(retry_on=(ClientError,))

pytestmark = pytest.mark.slow

BUMP = 1_000_000_000
APP = """
apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: app}
spec: {replicas: 2, selector: {matchLabels: {app: web}}, template: {metadata: {labels: {app: web}},
  spec: {containers: [{name: echo, image: k8semu/echo, ports: [{containerPort: 8080}]}]}}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: app}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: app}
spec:
  selector: {app: db}
  ports: [{port: 5432}]
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: app}
data: {password: czNjcmV0}  # s3cret
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: app}
data: {mode: prod}
"""
LATE = """
apiVersion: v1
kind: Pod
metadata: {name: late, namespace: app}
spec:
  containers: [{name: echo, image: k8semu/echo, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: lost, namespace: app}
spec:
  type: NodePort
  selector: {app: none}
  ports: [{port: 81}]
"""


async def _available(client: Client) -> bool:
    d = await client.get(apps_pb2.Deployment, "web", namespace="app")
    return (
        d.status.available_replicas == 2 and d.status.observed_generation == d.metadata.generation
    )


async def _running_pods(client: Client) -> dict[str, str]:
    """name -> uid of the app's pods that run."""
    pods = (await client.list(core_pb2.Pod, namespace="app")).items
    return {p.metadata.name: p.metadata.uid for p in pods if p.status.phase == "Running"}


def _pod_pids(nodes: Path, uids: list[str]) -> dict[str, dict[int, int]]:
    """uid -> {pid: start time} of the processes running in that pod's directory."""
    return {uid: processes_under(next(nodes.glob(f"*/pods/{uid}"))) for uid in uids}


async def _allocations(client: Client) -> tuple[set[str], set[int]]:
    services = (await client.list(core_pb2.Service)).items
    ips = {s.spec.cluster_ip for s in services if s.spec.cluster_ip}
    ports = {p.node_port for s in services for p in s.spec.ports if p.node_port}
    return ips, ports


async def test_backup_restore_round_trip_with_running_pods(tmp_path: Path) -> None:
    env = user_env(tmp_path)
    config = write_config(tmp_path / "c.yaml", name="bk", stores=3, addons=False)
    state_dir = tmp_path / "state"
    backup = tmp_path / "bk.k8semu-backup"
    # (write_config gives it pod and Service ranges of its own.)
    config.write_text(config.read_text() + "backups: {interval: 1s, keep: 2}\n")
    up_detached(env, config, state_dir)
    try:
        api = read_state(state_dir).api_servers
        async with Client(api, tls=api_tls(state_dir)) as client:
            for obj in manifest.load_all(APP, source="app"):
                await client.create(obj)
            await settle(lambda: _available(client), timeout=60)
            before = await _running_pods(client)
            assert len(before) == 2
            allocated_before = await _allocations(client)
            informer = Informer(client, core_pb2.Pod, namespace="app")
            informer.start()
            await informer.wait_synced(timeout=30)

            made = k8semu(env, "backup", "-o", backup, "--state-dir", state_dir)
            assert made.returncode == 0, made.stderr
            listed = k8semu(env, "backup", "verify", backup)
            assert "OK" in listed.stdout and "secrets 1" in listed.stdout, listed.stdout

            for obj in manifest.load_all(LATE, source="late"):
                await client.create(obj)
            await client.delete(core_pb2.Secret, "creds", namespace="app")
            (gone, gone_uid), (_, kept_uid) = sorted(before.items())
            await client.delete(core_pb2.Pod, gone, namespace="app")
            running = await settle(lambda: _changed(client, gone), timeout=60, what="replaced")
            unknown = [uid for name, uid in running.items() if name not in before]  # late + new
            nodes = state_dir / "nodes"
            pids = _pod_pids(nodes, [kept_uid, *unknown])
            assert all(pids.values()), pids

            _refusals(env, tmp_path, backup, config, state_dir)
            await client.get(core_pb2.Pod, "late", namespace="app")  # still up, nothing changed

            t0 = time.monotonic()
            restored = k8semu(
                env, "restore", backup, "-f", config, "--state-dir", state_dir, "--yes",
                timeout=180,
            )  # fmt: skip
            assert restored.returncode == 0, restored.stdout + restored.stderr
            await settle(lambda: _available(client), timeout=90)
            print(f"restore RTO (restore command until the Deployment is available):"
                  f" {time.monotonic() - t0:.1f}s")  # fmt: skip

            # The backup's pods run: the one still running adopted (same processes, no second
            # copy), the one deleted after the backup started again.
            assert await _running_pods(client) == before
            assert _pod_pids(nodes, [kept_uid]) == {kept_uid: pids[kept_uid]}
            assert _pod_pids(nodes, [gone_uid])[gone_uid]
            # The pods the backup does not know: gone, their processes stopped.
            for uid in unknown:
                assert wait_gone(pids[uid], timeout=60) == []
            secret = await client.get(core_pb2.Secret, "creds", namespace="app")
            assert secret.data["password"] == b"s3cret"
            services = {
                s.metadata.name
                for s in (await client.list(core_pb2.Service, namespace="app")).items
            }
            assert services == {"web", "db"}

            # No ClusterIP or NodePort handed out twice after the restore.
            for i in range(5):
                await client.create(
                    manifest.load(
                        f"apiVersion: v1\nkind: Service\nmetadata: {{name: n{i}, namespace: app}}\n"
                        "spec: {type: NodePort, selector: {app: x}, ports: [{port: 80}]}\n",
                        source="svc",
                    )
                )
            ips, ports = await _allocations(client)
            assert allocated_before[0] <= ips and allocated_before[1] <= ports
            assert len(ips) == len(allocated_before[0]) + 5
            assert len(ports) == len(allocated_before[1]) + 5

            # The informer relisted across the restore: above the bump, no stale pod.
            async def informer_caught_up() -> bool:
                names = {p.metadata.name for p in informer.cache.list()}
                rv = int(informer.last_sync_resource_version or 0)
                return rv > BUMP and names == set(before)

            await settle(informer_caught_up, timeout=60)
            await informer.stop()

        # The new supervisor takes scheduled backups again, of the new store, keeping 2.
        def scheduled() -> list[dict[str, Any]] | None:
            run = k8semu(env, "backup", "list", "--state-dir", state_dir, "-o", "json")
            rows: list[dict[str, Any]] = json.loads(run.stdout)
            fresh = [r for r in rows if r["metadata"]["revision"] > BUMP]
            return rows if len(rows) == 2 and len(fresh) == 2 else None

        until("two scheduled backups of the restored store", scheduled, timeout=60)
    finally:
        k8semu(env, "down", "--state-dir", state_dir, timeout=120)


async def _changed(client: Client, deleted: str) -> dict[str, str] | None:
    """The running pods once `late` and a replacement of `deleted` run and `deleted` is gone."""
    running = await _running_pods(client)
    return running if len(running) == 3 and "late" in running and deleted not in running else None


def _refusals(
    env: dict[str, str], tmp_path: Path, backup: Path, config: Path, state_dir: Path
) -> None:
    """Bad restores are refused before anything is stopped or written."""
    before = (state_dir / "cluster.json").read_text()
    truncated = tmp_path / "truncated.k8semu-backup"
    truncated.write_bytes(backup.read_bytes()[: backup.stat().st_size // 2])
    other = tmp_path / "other.yaml"
    other.write_text(config.read_text().replace("name: bk", "name: other"))
    for args, why in (
        ((truncated, "-f", config, "--yes"), "truncated"),
        ((backup, "-f", other, "--yes"), "is a backup of cluster 'bk', not of 'other'"),
        ((backup, "-f", config), "pass --yes"),
    ):
        argv = [*map(str, args), "--state-dir", str(state_dir)]
        run = subprocess.run(
            [sys.executable, "-m", "k8semu", "restore", *argv],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert run.returncode == 1 and why in run.stderr, run.stdout + run.stderr
    assert (state_dir / "cluster.json").read_text() == before

"""`k8semu restore`: bring a cluster back from a backup file.

    k8semu restore FILE [-f CONFIG] [--state-dir DIR] [--yes] [--no-start]
                        [--bump-revision N] [--from-other-cluster] [--grace-period DURATION]

1. The file is verified end to end (k8semu.backup.archive.verify); a bad one is refused
   before anything is stopped or written.
2. A running cluster is stopped (asks first, unless --yes) - its pods are left running, for
   the kubelets to adopt; with no grace period when every store replica's data is gone.
3. Every store replica of the config is restored from the file as a new store cluster (new
   cluster id, revision bumped by --bump-revision and marked compacted, so watchers relist);
   the old store data is moved aside, not deleted (k8semu.cluster.backups).
4. The cluster is started again (``k8semu up --detach``; --no-start leaves that to you). The
   kubelets reconcile: containers still running that match a restored pod are adopted, pods
   the backup has and no process runs are started, and pods the backup does not know are
   stopped.

Exit status 0 when restored (and started), 1 when refused or failed (nothing written when the
file was bad), 2 for bad flags or config.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from k8semu.backup import archive
from k8semu.backup.archive import BackupError
from k8semu.cli._cluster import say
from k8semu.cli.up import resolve_state_dir
from k8semu.cluster import clientconfig
from k8semu.cluster import config as cluster_config
from k8semu.cluster.backups import DEFAULT_BUMP, other_cluster, restore_store
from k8semu.cluster.errors import ClusterConfigError, ClusterError
from k8semu.cluster.state import ClusterState, read_state
from k8semu.cluster.status import down


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="k8semu restore",
        description="Restore a cluster from a backup (`k8semu backup`): a new store cluster"
        " from the file, then the control plane and nodes, which adopt the pods still running.",
    )
    p.add_argument("file", type=Path, help="the backup file")
    p.add_argument("-f", "--config", type=Path, metavar="FILE", help="the cluster's config")
    p.add_argument("--state-dir", "--data-dir", dest="state_dir", type=Path, metavar="DIR")
    p.add_argument("-y", "--yes", action="store_true", help="stop a running cluster, no asking")
    p.add_argument("--no-start", action="store_true", help="restore only; start it yourself")
    p.add_argument(
        "--bump-revision",
        type=int,
        default=DEFAULT_BUMP,
        metavar="N",
        help="raise the store revision by N and mark it compacted (default %(default)s, as"
        " Kubernetes' docs pass to etcdutl); 0 keeps the backup's revisions",
    )
    p.add_argument(
        "--from-other-cluster",
        action="store_true",
        help="accept a backup of a cluster with another name (moving a cluster)",
    )
    p.add_argument(
        "--grace-period",
        default=cluster_config.format_duration(cluster_config.DEFAULT_STOP_GRACE_MS),
        metavar="DURATION",
        help="when stopping the cluster: SIGKILL this long after SIGTERM",
    )
    return p


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    t0 = time.monotonic()
    try:
        config = cluster_config.load_config(ns.config)
        grace_ms = cluster_config.parse_duration_ms(ns.grace_period, "--grace-period")
    except ClusterConfigError as exc:
        print(f"k8semu restore: bad flag or config: {exc}", file=sys.stderr)
        return 2
    if ns.bump_revision < 0:
        print("k8semu restore: --bump-revision: must be >= 0", file=sys.stderr)
        return 2
    state_dir = resolve_state_dir(ns.state_dir, config, None).resolve()
    try:
        meta = archive.verify(ns.file)
        say(
            f"{ns.file}: verified: cluster {meta.cluster!r}, store revision {meta.revision}"
            f" ({time.monotonic() - t0:.1f}s)"
        )
        if meta.cluster != config.name and not ns.from_other_cluster:
            raise BackupError(other_cluster(ns.file, meta.cluster, config.name))
        if not _stopped(state_dir, ns.yes, grace_ms / 1000):
            return 1
        result = restore_store(
            ns.file,
            config,
            state_dir,
            bump=ns.bump_revision,
            allow_other_cluster=ns.from_other_cluster,
        )
    except (BackupError, ClusterError, OSError) as exc:
        print(f"k8semu restore: {exc}", file=sys.stderr)
        return 1
    aside = f"; the old store data is in {result.moved_aside}" if result.moved_aside else ""
    say(
        f"restored {len(result.members)} store replicas ({', '.join(result.members)}) from"
        f" {ns.file}: a new store cluster at revision {result.revision}{aside}"
        f" ({time.monotonic() - t0:.1f}s after the command)"
    )
    if ns.no_start:
        say(f"not started (--no-start): `k8semu up --state-dir {state_dir}` starts it")
        return 0
    rc = _start(ns.config, state_dir)
    if rc == 0:
        took = time.monotonic() - t0
        say(f"cluster {config.name!r} restored and up {took:.1f}s after the command")
    return 0 if rc == 0 else 1


def _stopped(state_dir: Path, yes: bool, grace: float) -> bool:
    """Stop the cluster in ``state_dir`` if it runs (after asking, unless ``yes``), leaving its
    pods running; whether it is stopped."""
    try:
        state = read_state(state_dir)
    except ClusterError:
        return True  # no cluster ran from here
    alive = [c.name for c in state.components if c.alive()]
    if not alive and not state.launcher_alive() and not state.supervisor_alive():
        return True
    if not yes:
        question = (
            f"cluster {state.cluster!r} runs from {state_dir} ({len(alive)} processes); stop it"
            " and replace its store with the backup? [y/N] "
        )
        if not sys.stdin.isatty():
            print(
                f"k8semu restore: cluster {state.cluster!r} runs from {state_dir}; pass --yes to"
                " stop it and restore (nothing was changed)",
                file=sys.stderr,
            )
            return False
        if input(question).strip().lower() not in ("y", "yes"):
            print("k8semu restore: not restored (nothing was changed)", file=sys.stderr)
            return False
    t0 = time.monotonic()
    if _store_data_gone(state):
        # Nothing a graceful stop would save (a leader handing over, an API server draining):
        # the store's data is gone. SIGKILL at once; the pods still run for adoption.
        say("every store replica's data is gone: stopping without a grace period")
        grace = 0.0
    report = down(
        state_dir,
        grace=grace,
        say=say,
        user_config=clientconfig.user_config_path(os.environ),
        keep_pods=True,
    )
    if report.left:
        raise ClusterError(f"processes still alive after SIGKILL: {report.left}")
    say(
        f"stopped {len(report.stopped)} components in {time.monotonic() - t0:.1f}s; pods left"
        " running for the kubelets to adopt"
    )
    return True


def _store_data_gone(state: ClusterState) -> bool:
    stores = [c for c in state.components if c.kind == "store" and c.data_dir]
    return bool(stores) and not any((Path(c.data_dir) / "raft.db").exists() for c in stores)


def _start(config: Path | None, state_dir: Path) -> int:
    """``k8semu up --detach`` in this process (a second Python start-up costs seconds of the
    RTO on a busy machine)."""
    from k8semu.cli import up

    argv = ["--detach", "--state-dir", str(state_dir)]
    if config is not None:
        argv += ["-f", str(config)]
    return up.main(argv)

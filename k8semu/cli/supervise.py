"""`k8semu supervise`: the supervisor of a detached cluster.

    k8semu supervise [--state-dir DIR | --name CLUSTER]

``k8semu up --detach`` starts it (in a session of its own, output in
``<state-dir>/logs/supervisor.log``); run it by hand only to bring back a supervisor that was
killed (``k8semu up --detach`` on the running cluster does the same). It adopts the components
recorded in state.json, starts again those that are down (and not failed), and then runs the
same supervision loop as a foreground ``k8semu up`` (``k8semu.cluster.supervisor``) until
SIGTERM/SIGINT/SIGHUP; it then exits and leaves the components running (``k8semu down`` stops it
before it stops them). One supervisor per state dir (a lock file); none beside a foreground
``k8semu up``.

Exit status: 0 after a stop by signal, 1 when it cannot supervise (another supervisor, a
foreground launcher, an unusable state dir), 2 for bad flags or no cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from k8semu.cli._cluster import add_cluster_args, install_stop_handlers, restore_handlers
from k8semu.cluster import certs
from k8semu.cluster.backups import scheduled_backups
from k8semu.cluster.config import LauncherSpec
from k8semu.cluster.errors import ClusterConfigError, ClusterError
from k8semu.cluster.launcher import StopFlag
from k8semu.cluster.spawn import component_env
from k8semu.cluster.state import (
    ComponentRecord,
    find_state_dir,
    process_start_time,
    read_state,
    write_state,
)
from k8semu.cluster.supervisor import Supervised, Supervisor

SUPERVISOR_LOCK = "supervisor.lock"


def store_members(
    members: list[list[str]], records: list[ComponentRecord], seen: set[str]
) -> list[list[str]]:
    """The store's [name, client address] list after this host's replicas changed (``k8semu
    store scale``): members of other hosts kept, this host's (``seen``: every local replica
    name so far, updated) those ``records`` hold, new ones last."""
    local = {c.name.removeprefix("store-"): c.address for c in records if c.kind == "store"}
    gone = seen - set(local)
    seen |= set(local)
    known = {n for n, _ in members}
    kept = [[n, a] for n, a in members if n not in gone]
    return kept + [[n, a] for n, a in local.items() if n not in known]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="k8semu supervise",
        description="Supervise a detached cluster: restart what crashes, with back-off (started"
        " by `k8semu up --detach`; run it to bring back a supervisor that was killed).",
    )
    add_cluster_args(p)
    return p


def _say(line: str) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):
        print(line, flush=True)


def main(argv: Sequence[str]) -> int:
    ns = _parser().parse_args(list(argv))
    state_dir = find_state_dir(ns.state_dir, ns.name, os.environ).resolve()
    try:
        state = read_state(state_dir)
    except ClusterError as exc:
        print(f"k8semu supervise: {exc}", file=sys.stderr)
        return 2
    try:
        spec = LauncherSpec(**state.launcher)
    except (TypeError, ClusterConfigError) as exc:
        print(f"k8semu supervise: state.json's launcher section: {exc}", file=sys.stderr)
        return 1
    lock = os.open(state_dir / SUPERVISOR_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(lock, 32, 0).decode("ascii", "replace").strip() or "?"
            print(
                f"k8semu supervise: another supervisor (pid {holder}) supervises {state_dir}",
                file=sys.stderr,
            )
            return 1
        os.ftruncate(lock, 0)
        os.pwrite(lock, f"{os.getpid()}\n".encode(), 0)
        # Read again under the lock: the state may have changed while we waited for it.
        state = read_state(state_dir)
        if state.launcher_alive():
            print(
                f"k8semu supervise: a foreground `k8semu up` (pid {state.launcher_pid})"
                f" supervises {state_dir}",
                file=sys.stderr,
            )
            return 1
        if state.mode == "stopped":
            print(f"k8semu supervise: the cluster in {state_dir} is stopped", file=sys.stderr)
            return 1
        return _supervise(state_dir, spec)
    except ClusterError as exc:
        print(f"k8semu supervise: {exc}", file=sys.stderr)
        return 1
    finally:
        os.close(lock)


def _supervise(state_dir: Path, spec: LauncherSpec) -> int:
    stop = StopFlag()
    state = read_state(state_dir)
    me = os.getpid()
    state.mode = "detached"
    state.supervisor_pid = me
    state.supervisor_start_time = process_start_time(me) or 0
    env = component_env(os.environ)
    probes = certs.state_probes(state)
    members = [(n, a) for n, a in state.store_members]
    units = [Supervised(record=c) for c in state.components]
    local = {c.name.removeprefix("store-") for c in state.components if c.kind == "store"}

    def write() -> None:
        # Store members added or retired (`k8semu store scale`) join or leave the state.
        state.components = [u.record for u in supervisor.units]
        state.store_members = store_members(state.store_members, state.components, local)
        if state.store_members:  # not an external etcd
            state.store_endpoints = [a for _, a in state.store_members]
        supervisor.leader_watch.members = [(n, a) for n, a in state.store_members]
        write_state(state_dir, state)

    supervisor = Supervisor(
        units,
        spec=spec,
        state_dir=state_dir,
        env=env,
        say=_say,
        stop=stop,
        write_state=write,
        api_servers=state.api_servers,
        store_members=members,
        probes=probes,
        backups=scheduled_backups(state, state_dir, _say),
    )
    previous = install_stop_handlers(stop)
    _say(
        f"{time.strftime('%H:%M:%S')} k8semu supervise pid {me}: supervising cluster"
        f" {state.cluster!r} ({len(units)} components) in {state_dir}"
    )
    try:
        supervisor.adopt()
        write()
        supervisor.run()
    finally:
        restore_handlers(previous)
        probes.close()
        # Say we are gone (down reads this after stopping us); the components keep running.
        with contextlib.suppress(ClusterError, OSError):
            current = read_state(state_dir)
            if current.supervisor_pid == me:
                state.supervisor_pid = 0
                state.supervisor_start_time = 0
                write()
        _say(f"{time.strftime('%H:%M:%S')} k8semu supervise pid {me}: stopped ({stop.reason})")
        stop.close()
    return 0

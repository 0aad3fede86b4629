"""Starting one process of a cluster: the one way the launcher, its supervisor and the store
harness do it.

Every process starts in a session of its own (a Ctrl-C meant for its starter does not hit it
mid-run, and a detached one outlives the terminal), reads nothing, and appends its stdout and
stderr to a log file after a line that says what started. Two optional wrappers, both
``exec`` into the command so that the pid and the start time recorded for it stay the
component's own: the cgroup that ``k8semu chaos`` asks for (``$K8SEMU_CGROUP_PARENT``), and
``setpriv --pdeathsig KILL`` so that the kernel kills the process when its starter dies.

It starts processes and returns them; it never signals one.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from k8semu.cluster.errors import ClusterError

__all__ = ["CGROUP_PARENT_ENV", "SCRUBBED_ENV", "component_env", "in_own_cgroup", "spawn"]

# When the environment names a cgroup v2 directory here, every component is started in a cgroup of
# its own below it (``<dir>/<component name>``); ``k8semu chaos`` sets it so that its firewall
# rules can tell which component a socket belongs to (k8semu.chaos.netfilter).
CGROUP_PARENT_ENV = "K8SEMU_CGROUP_PARENT"
# Joins the cgroup, then becomes the component: the pid (and so the start time recorded in
# state.json) stays the component's, and every socket it opens belongs to that cgroup from the
# first one on (a socket keeps the cgroup it was created in).
_JOIN_CGROUP = 'mkdir -p "$1" && echo $$ > "$1/cgroup.procs" && shift && exec "$@"'

# Proxy variables would route gRPC or Go's HTTP through a proxy: they never leak from the
# starter's environment into a component's.
SCRUBBED_ENV = ("http_proxy", "https_proxy", "grpc_proxy", "all_proxy", "no_proxy")


def component_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without proxy settings, and Python's output unbuffered (a log line is
    written when it is printed, not when the process exits)."""
    env = {k: v for k, v in environ.items() if k.lower() not in SCRUBBED_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def in_own_cgroup(argv: Sequence[str], name: str, env: Mapping[str, str]) -> list[str]:
    """``argv``, started in the cgroup ``$K8SEMU_CGROUP_PARENT/<name>`` when ``env`` sets that
    variable (unchanged otherwise). A component that cannot join exits with the shell's error
    in its log: a partition test must never run with a component outside its cgroup."""
    parent = env.get(CGROUP_PARENT_ENV)
    if not parent:
        return list(argv)
    return ["/bin/sh", "-c", _JOIN_CGROUP, "k8semu-cgroup", f"{parent}/{name}", *argv]


def spawn(
    argv: Sequence[str],
    *,
    name: str,
    log_path: Path,
    env: Mapping[str, str],
    cwd: Path,
    die_with_parent: bool = False,
    cgroup: bool = True,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` as ``name`` (see the module docstring), in its own cgroup when ``cgroup``
    and ``env`` ask for one, dying with this process when ``die_with_parent``.

    Raises ClusterError naming ``name`` when its log cannot be opened or it cannot start.
    """
    command = in_own_cgroup(argv, name, env) if cgroup else list(argv)
    # The kernel sends the signal when the *thread* that forked exits, so only the main
    # thread (which lives as long as the process) may ask for it.
    if die_with_parent and threading.current_thread() is threading.main_thread():
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            command = [setpriv, "--pdeathsig", "KILL", "--", *command]
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = log_path.open("ab")
    except OSError as exc:
        raise ClusterError(f"cannot open the log of {name}: {exc}") from exc
    with log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"=== {stamp}: starting {name}: {' '.join(command)}\n".encode())
        log.flush()
        try:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise ClusterError(f"cannot start {name}: {command[0]}: {exc}") from exc

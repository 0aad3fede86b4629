"""The shell images (busybox, alpine, k8semu/busybox): the host's real /bin/sh plus applets.

``python -m k8semu.images.busybox [CMD ARGS...]`` (default ``sh``) execs CMD with a directory
of small applets first on PATH — ``wget``, ``nslookup``, ``nc`` (see `k8semu.images.applets`),
which Kubernetes examples use and hosts often lack, and which resolve names through the cluster
DNS when K8SEMU_DNS_SERVER is set. Everything else (sh, sleep, echo, cat, ...) is the host's.
The applet directory holds one tiny shell script per applet and is created once per Python
interpreter under the temp directory: root's, which the kubelet makes at start and every pod
user (each pod runs as a uid of its own) shares, or one per uid where root has none. The
program replaces itself with CMD (exec), so signals reach the container's command directly,
as with a real image's entrypoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import stat
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from k8semu.images.applets import APPLETS

SHELL = "/bin/sh"


def _scripts() -> dict[str, str]:
    python = shlex.quote(sys.executable)
    return {
        name: f'#!/bin/sh\nexec {python} -m k8semu.images.applets {name} "$@"\n' for name in APPLETS
    }


def _base(uid: int) -> Path:
    digest = hashlib.sha256(f"{sys.executable}:{__file__}".encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"k8semu-applets-{uid}-{digest}"


def _root_made(base: Path, scripts: dict[str, str]) -> bool:
    """Whether `base` and its scripts are root's, writable by no one else, and current: safe
    for any user to run."""
    try:
        for path in (base, *(base / name for name in scripts)):
            st = os.lstat(path)
            if st.st_uid != 0 or st.st_mode & 0o022 or stat.S_ISLNK(st.st_mode):
                return False
        return all((base / name).read_text() == text for name, text in scripts.items())
    except OSError:
        return False


def applet_dir() -> Path:
    """The directory of applet scripts for this interpreter (created on first use). Not root:
    root's when root made it (the kubelet does, `kubelet.process`), since every pod runs as a
    uid of its own and a directory per uid stayed in /tmp after its pod (1,246 of them in 35
    minutes of one machine's tests); else this uid's own."""
    scripts = _scripts()
    if os.getuid() != 0 and _root_made(_base(0), scripts):
        return _base(0)
    base = _base(os.getuid())
    for name, script in scripts.items():
        path = base / name
        with contextlib.suppress(OSError):
            if path.read_text() == script:
                continue
        base.mkdir(mode=0o755, parents=True, exist_ok=True)
        tmp = base / f".{name}.{os.getpid()}"
        tmp.write_text(script)
        tmp.chmod(0o755)
        os.replace(tmp, path)  # atomic: a concurrent container never sees half a script
    return base


def command_argv(argv: Sequence[str]) -> list[str]:
    """What to exec: ``sh`` is the host's /bin/sh; an empty command is an interactive-less sh."""
    args = list(argv) or ["sh"]
    if args[0] in ("sh", "/bin/sh", "ash", "/bin/ash", "/bin/busybox"):
        if args[0] == "/bin/busybox":
            args = args[1:] or ["sh"]
            return command_argv(args)
        args[0] = SHELL
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = command_argv(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ)
    try:
        bin_dir = str(applet_dir())
        env["PATH"] = bin_dir + os.pathsep + env.get("PATH", os.defpath)
    except OSError as exc:
        print(f"busybox: applets unavailable: {exc}", file=sys.stderr)
    sys.stdout.flush()
    try:
        os.execvpe(args[0], args, env)
    except OSError as exc:
        print(f"busybox: {args[0]}: {exc.strerror or exc}", file=sys.stderr)
        return 127
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main())

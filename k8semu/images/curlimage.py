"""The ``curlimages/curl`` image's entrypoint: like its ``entrypoint.sh``, arguments that are
no command (``-s``, a URL) are curl's, anything else runs as a command (``sh``), with the
shell images' applets (curl among them) first on PATH (`k8semu.images.busybox`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Sequence

from k8semu.images import busybox


def command_argv(argv: Sequence[str], path: str) -> list[str]:
    """The command to run for the image's `argv` (its default cmd is ``curl``)."""
    args = list(argv) or ["curl"]
    first = args[0]
    if first.startswith("-") or shutil.which(first, path=path) is None:
        return ["curl", *args]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    path = os.environ.get("PATH", os.defpath)
    with contextlib.suppress(OSError):  # busybox.main says why
        path = str(busybox.applet_dir()) + os.pathsep + path
    return busybox.main(command_argv(args, path))


if __name__ == "__main__":
    raise SystemExit(main())

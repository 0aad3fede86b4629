"""Sample applications shipped as manifests (package data), so `k8semu up --demo` and
`k8semu bench ha` find them wherever k8semu is installed, not only from a checkout's root.
The repository's examples/ directory links here for people who apply them by path.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["ECHO"]


def _path(name: str) -> Path:
    # pip installs packages as directories, so the resource is a plain file on disk.
    return Path(str(resources.files(__name__).joinpath(name)))


#: 3 echo pods behind a NodePort Service (30080): the demo app of `make run`.
ECHO = _path("echo.yaml")

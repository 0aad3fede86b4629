"""Built-in container images: which well-known image names map to which program shipped here.

`resolve(image, command, args)` gives the argv a kubelet execs for a container, following
Kubernetes' rules for an image's ENTRYPOINT and CMD:

- neither `command` nor `args`: entrypoint + default cmd;
- `args` only: entrypoint + args;
- `command` (with or without `args`): command + args (the image's cmd is ignored).

Two emulator twists keep real manifests working without the image's file system: a `command`
naming the image's own binary (``/agnhost``, ``nginx``, ``coredns``, ``/http-echo``) runs the
built-in program instead, and in an image with a shell (busybox, alpine, nginx) every other
`command` runs through ``k8semu.images.busybox``, which execs it with the applet directory
first on PATH.

A built-in image's entrypoint is ``[sys.executable, "-m", "k8semu.images.<module>"]``.
Names match with or without a registry, tag or digest (``nginx``, ``docker.io/library/nginx:1.25``,
``registry.k8s.io/coredns/coredns@sha256:...``). Unknown images give None: the kubelet then runs
an explicit command itself or reports ErrImagePull. This module must not start anything.
See docs/images.md for the table.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "BUILTIN_IMAGES",
    "VERSIONED_IMAGES",
    "BuiltinImage",
    "image_repository",
    "image_tag",
    "lookup",
    "resolve",
]


@dataclass(frozen=True, slots=True)
class BuiltinImage:
    """A program shipped in `k8semu.images`: its module and its default cmd (Docker's CMD)."""

    module: str
    cmd: tuple[str, ...] = ()
    #: Basenames of the image's own executables: a `command` starting with one runs this program.
    binaries: tuple[str, ...] = ()
    #: Every `command` (and `kubectl exec`) runs through ``k8semu.images.busybox``: the image's
    #: PATH holds applets (wget, curl, nslookup, nc).
    wraps_commands: bool = False

    @property
    def entrypoint(self) -> list[str]:
        return [sys.executable, "-m", f"k8semu.images.{self.module}"]


_ECHO_HTTP = BuiltinImage("echo", ("-listen=:5678",), ("http-echo",))
_ECHO_SERVER = BuiltinImage("echo", ("--listen=:80",), ("echo-server",))
_ECHO_8080 = BuiltinImage("echo", ("--listen=:8080",), ("echoserver",))
# nginx's images are Debian's, with a shell: `kubectl exec web-0 -- sh -c 'hostname'` and
# `-- curl http://localhost/` (the StatefulSet tutorial) run with the applets.
_WEB = BuiltinImage(
    "web", ("--listen=:80",), ("nginx", "httpd", "httpd-foreground"), wraps_commands=True
)
_DNS = BuiltinImage("dns", (), ("coredns",))
_LOADGEN = BuiltinImage("loadgen", (), ("loadgen",))
_BUSYBOX = _SHELL = BuiltinImage("busybox", ("sh",), wraps_commands=True)
_AGNHOST = BuiltinImage("agnhost", ("pause",), ("agnhost",))
# The walkthrough's image runs Apache (apache2-foreground) serving a PHP page.
_HPA_EXAMPLE = BuiltinImage("hpaexample", (), ("apache2-foreground", "httpd", "apache2"))

#: Repository (registry and tag stripped, ``docker.io/library/`` implied) -> program.
BUILTIN_IMAGES: dict[str, BuiltinImage] = {
    "hashicorp/http-echo": _ECHO_HTTP,
    "ealen/echo-server": _ECHO_SERVER,
    "echoserver": _ECHO_8080,  # k8s.gcr.io/echoserver
    "e2e-test-images/echoserver": _ECHO_8080,
    "e2e-test-images/agnhost": _AGNHOST,
    "agnhost": _AGNHOST,
    "nginx": _WEB,
    "nginx-slim": _WEB,  # registry.k8s.io/nginx-slim (StatefulSet Basics)
    "nginxinc/nginx-unprivileged": BuiltinImage(
        "web", ("--listen=:8080",), ("nginx",), wraps_commands=True
    ),
    "httpd": _WEB,
    "busybox": _BUSYBOX,
    "alpine": _BUSYBOX,
    "coredns/coredns": _DNS,
    "coredns": _DNS,  # registry.k8s.io/coredns
    "k8semu/echo": _ECHO_8080,
    "k8semu/web": _WEB,
    "k8semu/dns": _DNS,
    "k8semu/loadgen": _LOADGEN,
    "k8semu/busybox": _BUSYBOX,
    "hpa-example": _HPA_EXAMPLE,  # registry.k8s.io/hpa-example, k8s.gcr.io/hpa-example
    "k8semu/hpa-example": _HPA_EXAMPLE,
    # The tutorials' tool images: their tools are the applets (docs/tutorials.md).
    "e2e-test-images/jessie-dnsutils": _BUSYBOX,  # registry.k8s.io/e2e-test-images/...
    "radial/busyboxplus": _BUSYBOX,
    "curlimages/curl": BuiltinImage("curlimage", ("curl",), wraps_commands=True),
}


def _sample(app: str, version: str, *, shell: bool = True) -> BuiltinImage:
    """A tutorial's sample app (`k8semu.images.samples`) at one of its versions; `shell`: the
    image has a shell and curl (`kubectl exec -ti POD -- bash`)."""
    return BuiltinImage("samples", (app, f"--version={version}"), wraps_commands=shell)


_HELLO_APP = {
    "1.0": _sample("hello-app", "1.0.0", shell=False),
    "2.0": _sample("hello-app", "2.0.0", shell=False),
}

#: Images that exist only at some tags: repository -> tag -> program. Any other tag (the
#: bootcamp's `v10`) is no image at all: the kubelet reports ErrImagePull, as a registry's
#: "not found" does.
VERSIONED_IMAGES: dict[str, dict[str, BuiltinImage]] = {
    # gcr.io/google-samples/kubernetes-bootcamp:v1 (Learn Kubernetes Basics).
    "google-samples/kubernetes-bootcamp": {"v1": _sample("bootcamp", "1")},
    "jocatalin/kubernetes-bootcamp": {
        "v1": _sample("bootcamp", "1"),
        "v2": _sample("bootcamp", "2"),
    },
    # gcr.io/google-samples/hello-app (a distroless Go image: no shell), also published as
    # us-docker.pkg.dev/google-samples/containers/gke/hello-app (today's tutorials).
    "google-samples/hello-app": _HELLO_APP,
    "google-samples/containers/gke/hello-app": _HELLO_APP,
}

# Registries whose path is dropped before lookup; any first component with a "." or ":" (a
# host name or host:port) or "localhost" counts as a registry too.
_PATH_PREFIXES = ("library/", "google_containers/", "google-containers/")


def image_repository(image: str) -> str:
    """The repository part of an image reference: no registry, tag or digest, lower case.

    ``registry.k8s.io/coredns/coredns:v1.11.1`` -> ``coredns/coredns``;
    ``nginx@sha256:abc`` -> ``nginx``; ``localhost:5000/k8semu/echo`` -> ``k8semu/echo``.
    """
    ref = image.strip().lower()
    ref = ref.split("@", 1)[0]
    parts = ref.split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    last = parts[-1]
    if ":" in last:
        parts[-1] = last.split(":", 1)[0]
    repo = "/".join(parts)
    for prefix in _PATH_PREFIXES:
        if repo.startswith(prefix):
            repo = repo[len(prefix) :]
    return repo


def image_tag(image: str) -> str:
    """The tag of an image reference, ``latest`` when it has none (``""`` with only a digest)."""
    ref = image.strip().lower()
    ref, at, _ = ref.partition("@")
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        return last.split(":", 1)[1]
    return "" if at else "latest"


def lookup(image: str) -> BuiltinImage | None:
    """The built-in program for `image`, or None when it is not built in."""
    if not image or not image.strip():
        return None
    repository = image_repository(image)
    versions = VERSIONED_IMAGES.get(repository)
    if versions is not None:
        return versions.get(image_tag(image))
    return BUILTIN_IMAGES.get(repository)


def resolve(image: str, command: Sequence[str], args: Sequence[str]) -> list[str] | None:
    """The argv to exec for a container of a built-in image, or None when it is not built in.

    `command` replaces the image's entrypoint and `args` its default cmd, as in Kubernetes.
    """
    builtin = lookup(image)
    if builtin is None:
        return None
    if command:
        # The image's own binary first: `command: [nginx, -g, ...]` in an image with a shell.
        if command[0].rsplit("/", 1)[-1] in builtin.binaries:
            return [*builtin.entrypoint, *command[1:], *args]
        if builtin.wraps_commands:
            return [*_SHELL.entrypoint, *command, *args]
        return [*command, *args]
    if args:
        return [*builtin.entrypoint, *args]
    return [*builtin.entrypoint, *builtin.cmd]

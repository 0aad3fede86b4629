"""resolve(): Kubernetes' entrypoint/cmd rules over the built-in image table."""

from __future__ import annotations

import sys

import pytest

from k8semu.images import applets, image_repository, resolve


def ep(module: str) -> list[str]:
    return [sys.executable, "-m", f"k8semu.images.{module}"]


@pytest.mark.parametrize(
    ("image", "module"),
    [
        ("hashicorp/http-echo", "echo"),
        ("hashicorp/http-echo:1.0", "echo"),
        ("docker.io/hashicorp/http-echo:latest", "echo"),
        ("ealen/echo-server", "echo"),
        ("k8s.gcr.io/echoserver:1.10", "echo"),
        ("registry.k8s.io/e2e-test-images/agnhost:2.39", "agnhost"),
        ("nginx", "web"),
        ("nginx:1.25", "web"),
        ("docker.io/library/nginx:1.25-alpine", "web"),
        ("nginx@sha256:0123abcd", "web"),
        ("httpd:2.4", "web"),
        ("registry.k8s.io/nginx-slim:0.21", "web"),
        ("busybox", "busybox"),
        ("busybox:1.36", "busybox"),
        ("alpine:3.19", "busybox"),
        ("registry.k8s.io/coredns/coredns:v1.11.1", "dns"),
        ("coredns/coredns", "dns"),
        ("k8semu/echo", "echo"),
        ("k8semu/web", "web"),
        ("k8semu/dns", "dns"),
        ("k8semu/loadgen", "loadgen"),
        ("k8semu/busybox", "busybox"),
        ("localhost:5000/k8semu/echo:dev", "echo"),
    ],
)
def test_builtin_images_resolve_to_their_module(image: str, module: str) -> None:
    argv = resolve(image, [], [])
    assert argv is not None
    assert argv[:3] == ep(module)


def test_unknown_images_are_not_built_in() -> None:
    assert resolve("postgres:16", [], []) is None
    assert resolve("myregistry.io/team/app:1", ["./app"], []) is None
    assert resolve("", [], []) is None


def test_default_cmd_args_replace_cmd_command_replaces_entrypoint() -> None:
    assert resolve("hashicorp/http-echo", [], []) == [*ep("echo"), "-listen=:5678"]
    assert resolve("hashicorp/http-echo", [], ["-text=hi"]) == [*ep("echo"), "-text=hi"]
    assert resolve("k8semu/echo", [], []) == [*ep("echo"), "--listen=:8080"]
    assert resolve("nginx", [], []) == [*ep("web"), "--listen=:80"]
    assert resolve("busybox", [], []) == [*ep("busybox"), "sh"]
    # command replaces the entrypoint and drops the image's cmd
    assert resolve("k8semu/dns", ["/usr/bin/env"], ["true"]) == ["/usr/bin/env", "true"]


def test_commands_naming_the_image_binary_run_the_builtin() -> None:
    assert resolve("registry.k8s.io/e2e-test-images/agnhost:2.39", ["/agnhost", "netexec"], [
        "--http-port=8080"
    ]) == [*ep("agnhost"), "netexec", "--http-port=8080"]  # fmt: skip
    assert resolve("nginx", ["nginx", "-g", "daemon off;"], []) == [*ep("web"), "-g", "daemon off;"]
    assert resolve("coredns/coredns", [], ["-conf", "/etc/coredns/Corefile"]) == [
        *ep("dns"), "-conf", "/etc/coredns/Corefile",
    ]  # fmt: skip


def test_shell_image_commands_run_through_busybox_for_the_applets() -> None:
    assert resolve("busybox:1.36", ["sh", "-c", "wget -qO- http://web"], []) == [
        *ep("busybox"), "sh", "-c", "wget -qO- http://web",
    ]  # fmt: skip
    assert resolve("alpine", ["sleep"], ["3600"]) == [*ep("busybox"), "sleep", "3600"]
    # nginx's images have a shell: any other command (kubectl exec's too) gets the applets.
    assert resolve("registry.k8s.io/nginx-slim:0.24", ["sh", "-c", "hostname"], []) == [
        *ep("busybox"), "sh", "-c", "hostname",
    ]  # fmt: skip
    assert resolve("nginx", ["curl"], ["http://localhost/"]) == [
        *ep("busybox"), "curl", "http://localhost/",
    ]  # fmt: skip


def test_hostname_applet_says_the_pods_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert applets.hostname([], {"HOSTNAME": "web-0"}) == 0
    assert applets.hostname(["-s"], {"HOSTNAME": "web-0.nginx"}) == 0
    assert capsys.readouterr().out == "web-0\nweb-0\n"


def test_image_repository_strips_registry_tag_and_digest() -> None:
    assert image_repository("registry.k8s.io/coredns/coredns:v1.11.1") == "coredns/coredns"
    assert image_repository("docker.io/library/nginx:1.25") == "nginx"
    assert image_repository("NGINX@sha256:abc") == "nginx"

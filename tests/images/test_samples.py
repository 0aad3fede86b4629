"""The tutorials' images: kubernetes-bootcamp and hello-app answer as their originals (only
at the tags that exist), the curl applet (localhost is the pod's own IP; curl's exit codes),
and the tool images (dnsutils, busyboxplus, curlimages/curl)."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from k8semu.images import image_tag, lookup, resolve
from tests.images.conftest import ImageProcess


def _get(host: str, port: int, path: str = "/") -> str:
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=10) as resp:
        return str(resp.read().decode())


def test_bootcamp_v2_answers_and_logs_each_request(
    start_image: Callable[..., ImageProcess],
) -> None:
    app = start_image(
        "samples", "bootcamp", "--version=2", "--listen=127.0.0.63:0",
        env={"HOSTNAME": "kubernetes-bootcamp-abc"},
    )  # fmt: skip
    host, port = app.address()
    assert (
        _get(host, port)
        == "Hello Kubernetes bootcamp! | Running on: kubernetes-bootcamp-abc | v=2\n"
    )
    app.wait_line("Running On: kubernetes-bootcamp-abc \\| Total Requests: 1")
    assert any(line.startswith("Kubernetes Bootcamp App Started At:") for line in app.lines)


def test_hello_app_answers_on_port_env(start_image: Callable[..., ImageProcess]) -> None:
    app = start_image(
        "samples", "hello-app", "--version=2.0.0",
        env={"POD_IP": "127.0.0.64", "PORT": "0", "HOSTNAME": "hello-xyz"},
    )  # fmt: skip
    host, port = app.address()
    assert host == "127.0.0.64"
    assert _get(host, port, "/x") == "Hello, world!\nVersion: 2.0.0\nHostname: hello-xyz\n"
    app.wait_line("Serving request: /x")


@pytest.mark.parametrize(
    ("image", "argv_tail"),
    [
        ("gcr.io/google-samples/kubernetes-bootcamp:v1", ["bootcamp", "--version=1"]),
        ("jocatalin/kubernetes-bootcamp:v2", ["bootcamp", "--version=2"]),
        ("docker.io/jocatalin/kubernetes-bootcamp:v1", ["bootcamp", "--version=1"]),
        ("gcr.io/google-samples/hello-app:2.0", ["hello-app", "--version=2.0.0"]),
        ("us-docker.pkg.dev/google-samples/containers/gke/hello-app:1.0",
         ["hello-app", "--version=1.0.0"]),
    ],
)  # fmt: skip
def test_sample_images_exist_at_their_tags(image: str, argv_tail: list[str]) -> None:
    assert resolve(image, [], []) == [sys.executable, "-m", "k8semu.images.samples", *argv_tail]


@pytest.mark.parametrize(
    "image",
    [
        "gcr.io/google-samples/kubernetes-bootcamp:v10",  # the tutorial's broken update
        "jocatalin/kubernetes-bootcamp",  # no latest tag
        "gcr.io/google-samples/hello-app:3.0",
        "jocatalin/kubernetes-bootcamp@sha256:0123",
    ],
)
def test_other_tags_are_no_image(image: str) -> None:
    assert lookup(image) is None and resolve(image, [], []) is None


def test_image_tag() -> None:
    assert image_tag("localhost:5000/a/b:v2") == "v2"
    assert image_tag("localhost:5000/a/b") == "latest"
    assert image_tag("a/b@sha256:00") == ""
    assert image_tag("a/b:1.0@sha256:00") == "1.0"


def test_exec_in_a_sample_or_tool_image_has_the_applets_on_path() -> None:
    shell = [sys.executable, "-m", "k8semu.images.busybox"]
    for image in (
        "jocatalin/kubernetes-bootcamp:v2",
        "registry.k8s.io/e2e-test-images/jessie-dnsutils:1.3",
        "radial/busyboxplus:curl",
        "curlimages/curl:8.5.0",
    ):
        assert resolve(image, ["bash"], []) == [*shell, "bash"], image
    # hello-app is distroless: no shell, the command runs as it is.
    assert resolve("gcr.io/google-samples/hello-app:2.0", ["sh"], []) == ["sh"]
    assert resolve("registry.k8s.io/e2e-test-images/jessie-dnsutils:1.3", [], []) == [*shell, "sh"]


def _run(
    module: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"k8semu.images.{module}", *args],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_curl_reaches_localhost_as_the_pod_ip_and_says_why_it_fails(
    start_image: Callable[..., ImageProcess],
) -> None:
    echo = start_image("echo", "--listen=127.0.0.65:0", env={"POD_NAME": "echo-curl"})
    _, port = echo.address()
    pod = {"POD_IP": "127.0.0.65"}
    done = _run("applets", "curl", "-s", f"http://localhost:{port}/c", env=pod)
    assert done.returncode == 0 and "pod: echo-curl" in done.stdout, done
    head = _run("applets", "curl", "-sI", f"localhost:{port}/", env=pod)
    assert head.stdout.startswith("HTTP/1.1 200 OK\n"), head  # text mode: \r\n read as \n
    posted = _run("applets", "curl", "-s", "-X", "PUT", "-d", "a=1", f"localhost:{port}/p", env=pod)
    assert "PUT /p HTTP/1.1" in posted.stdout and "a=1" in posted.stdout, posted
    failed = _run("applets", "curl", "-sf", f"localhost:{port}/fail", env=pod)
    assert failed.returncode == 0
    failed = _run("applets", "curl", "-sSf", f"localhost:{port}/healthz", env=pod)
    assert failed.returncode == 22 and "error: 500" in failed.stderr, failed
    refused = _run("applets", "curl", "http://127.0.0.66:9/")
    assert refused.returncode == 7 and "curl: (7) Failed to connect" in refused.stderr, refused
    unknown = _run("applets", "curl", "-s", "http://no-such-host.invalid/")
    assert unknown.returncode == 6, unknown


def test_curlimages_entrypoint_prepends_curl_unless_given_a_command(
    start_image: Callable[..., ImageProcess],
) -> None:
    echo = start_image("echo", "--listen=127.0.0.67:0", env={"POD_NAME": "echo-ci"})
    host, port = echo.address()
    direct = _run("curlimage", "-s", f"http://{host}:{port}/")
    assert "pod: echo-ci" in direct.stdout, direct
    shell = _run("curlimage", "sh", "-c", f"curl -s http://{host}:{port}/ && echo done")
    assert "pod: echo-ci" in shell.stdout and shell.stdout.endswith("done\n"), shell


def test_dig_through_the_cluster_dns(
    start_image: Callable[..., ImageProcess], tmp_path: Path
) -> None:
    dns = start_image("dns", "--listen", "127.0.0.68:0", "--zone", "cluster.test",
                      "--record", "web.default A 127.0.0.62", cwd=tmp_path)  # fmt: skip
    host, port = dns.address()
    env = {"K8SEMU_DNS_SERVER": f"{host}:{port}", "K8SEMU_DNS_SEARCH": "cluster.test"}
    full = _run("applets", "dig", "web.default.cluster.test", env=env)
    assert full.returncode == 0, full
    assert "status: NOERROR" in full.stdout and "ANSWER SECTION:" in full.stdout, full.stdout
    assert "web.default.cluster.test.\t5\tIN\tA\t127.0.0.62" in full.stdout, full.stdout
    short = _run("applets", "dig", "+short", "+search", "web.default", env=env)
    assert short.stdout == "127.0.0.62\n", short
    missing = _run("applets", "dig", f"@{host}:{port}", "nothing.cluster.test", "AAAA")
    assert missing.returncode == 0 and "status: NXDOMAIN" in missing.stdout, missing
    unanswered = _run("applets", "dig", "@127.0.0.69:9", "web.default.cluster.test")
    assert unanswered.returncode == 9 and "communications error" in unanswered.stdout
    assert _run("applets", "dig").returncode == 1

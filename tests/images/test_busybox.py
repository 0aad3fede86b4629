"""The shell image: the host's sh with wget, nslookup and nc applets first on PATH."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.images.conftest import ImageProcess


def sh(script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "k8semu.images.busybox", "sh", "-c", script],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_wget_fetches_from_the_echo_server(start_image: Callable[..., ImageProcess]) -> None:
    echo = start_image("echo", "--listen=127.0.0.61:0", env={"POD_NAME": "echo-xyz"})
    host, port = echo.address()
    done = sh(f"wget -qO- -T 5 http://{host}:{port}/from-busybox && echo OK")
    assert done.returncode == 0, done.stderr
    assert "pod: echo-xyz" in done.stdout
    assert "GET /from-busybox HTTP/1.1" in done.stdout
    assert done.stdout.rstrip().endswith("OK")
    url = f"http://{host}:{port}"
    failed = sh(f"wget -q -O- {url}/fail >/dev/null; wget -qO- {url}/healthz")
    assert failed.returncode == 1
    assert "server returned error: HTTP/1.1 500" in failed.stderr


def test_nc_and_nslookup_through_the_cluster_dns(
    start_image: Callable[..., ImageProcess], tmp_path: Path
) -> None:
    echo = start_image("echo", "--listen=127.0.0.62:0", "--quiet")
    _, port = echo.address()
    dns = start_image("dns", "--listen", "127.0.0.63:0", "--zone", "cluster.test",
                      "--record", "web.default A 127.0.0.62", cwd=tmp_path)  # fmt: skip
    dns_host, dns_port = dns.address()
    env = {"K8SEMU_DNS_SERVER": f"{dns_host}:{dns_port}", "K8SEMU_DNS_SEARCH": "cluster.test"}
    done = sh(
        f"nc -z web.default {port} && echo open; nc -z -w 1 127.0.0.62 1 || echo closed; "
        "nslookup web.default",
        env,
    )
    assert done.returncode == 0, done.stderr
    assert "open\nclosed\n" in done.stdout
    assert "Name:\tweb.default.cluster.test" in done.stdout
    assert "Address: 127.0.0.62" in done.stdout
    missing = sh("nslookup nothing.here", env)
    assert missing.returncode == 1 and "NXDOMAIN" in missing.stdout
    explicit = sh(f"nslookup web.default.cluster.test {dns_host}:{dns_port}")
    assert "Address: 127.0.0.62" in explicit.stdout


def test_default_command_is_sh_and_missing_commands_exit_127() -> None:
    done = subprocess.run([sys.executable, "-m", "k8semu.images.busybox"], input="echo hi\n",
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0 and done.stdout == "hi\n"
    missing = subprocess.run(
        [sys.executable, "-m", "k8semu.images.busybox", "no-such-command-k8semu"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert missing.returncode == 127


def test_wget_arguments_as_busybox_reads_them() -> None:
    from k8semu.images.applets import AppletError, _wget_args

    a = _wget_args(["-qSO-", "-T", "5", "--header", "X-A: 1", "http://web/x"])
    assert (a.quiet, a.show_headers, a.output, a.timeout) == (True, True, "-", 5.0)
    assert a.url == "http://web/x"
    assert a.headers == {"X-A": "1"}
    b = _wget_args(["--output-document=out", "--timeout=2", "-s", "--no-check-certificate", "web"])
    assert (b.output, b.timeout, b.spider, b.quiet, b.url) == ("out", 2.0, True, False, "web")
    assert _wget_args(["-O", "f", "--", "u"]).output == "f"
    with pytest.raises(AppletError, match="unrecognized option '-x'"):
        _wget_args(["-qx", "u"])


def test_wget_follows_a_redirect_and_saves_the_file(
    start_image: Callable[..., ImageProcess], tmp_path: Path
) -> None:
    (tmp_path / "root" / "docs").mkdir(parents=True)
    (tmp_path / "root" / "docs" / "index.html").write_text("hello from docs\n")
    (tmp_path / "out").mkdir()
    web = start_image("web", "--listen=127.0.0.64:0", "--root", str(tmp_path / "root"))
    host, port = web.address()
    done = subprocess.run(  # /docs is redirected to /docs/, saved as index.html
        [sys.executable, "-m", "k8semu.images.applets", "wget", "-S", f"http://{host}:{port}/docs"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path / "out",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "HTTP/1.1 301" in done.stderr and "HTTP/1.1 200" in done.stderr
    assert "saving to 'index.html'" in done.stderr
    assert (tmp_path / "out" / "index.html").read_text() == "hello from docs\n"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root")
def test_pod_users_share_roots_applet_directory_and_leave_none_of_their_own() -> None:
    from k8semu.images import busybox

    shared = busybox.applet_dir()  # as root: what the kubelet makes at start
    uid = 299_998  # a pod user's (the default --pod-user-range's end), with no directory yet
    pattern = f"k8semu-applets-{uid}-*"
    for old in Path(tempfile.gettempdir()).glob(pattern):
        shutil.rmtree(old, ignore_errors=True)
    argv = [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--",
        sys.executable,
        "-m",
        "k8semu.images.busybox",
        "sh",
        "-c",
        "command -v wget",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(shared / "wget")
    # Before: one directory per pod uid, left in /tmp for good.
    assert not list(Path(tempfile.gettempdir()).glob(pattern))

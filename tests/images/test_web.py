"""The web image: files from the pod's working dir, the welcome page, traversal refused, 404s."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable
from pathlib import Path

from k8semu.images import web
from tests.images.conftest import ImageProcess


def get(host: str, port: int, path: str, method: str = "GET") -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection(host, port, timeout=5)
    conn.request(method, path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body, {k.lower(): v for k, v in resp.getheaders()}


def raw_get(host: str, port: int, target: str) -> bytes:
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    return data


def test_serves_nginx_html_dir_files_and_404(
    start_image: Callable[..., ImageProcess], tmp_path: Path
) -> None:
    html = tmp_path / "usr/share/nginx/html"
    (html / "sub").mkdir(parents=True)
    (html / "index.html").write_text("<h1>from a configMap</h1>")
    (html / "sub" / "data.json").write_text('{"a": 1}')
    (tmp_path / "secret.txt").write_text("outside the root")
    web = start_image("web", "--listen=127.0.0.31:0", cwd=tmp_path)
    host, port = web.address()
    status, body, _ = get(host, port, "/")
    assert (status, body) == (200, b"<h1>from a configMap</h1>")
    status, body, headers = get(host, port, "/sub/data.json")
    assert status == 200 and body == b'{"a": 1}'
    assert headers["content-type"].startswith("application/json")
    status, body, headers = get(host, port, "/sub/data.json", "HEAD")
    assert status == 200 and body == b"" and headers["content-length"] == "8"
    assert get(host, port, "/missing.html")[0] == 404
    assert get(host, port, "/sub")[0] == 301
    assert get(host, port, "/sub/")[0] == 403  # no index, no listing
    assert get(host, port, "/", "POST")[0] == 405
    for target in ("/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt",
                   "/sub/%2E%2E/%2e%2e/secret.txt", "/..%2fsecret.txt"):  # fmt: skip
        reply = raw_get(host, port, target)
        assert reply.startswith(b"HTTP/1.1 403"), (target, reply[:40])
        assert b"outside the root" not in reply
    (html / "escape").symlink_to(tmp_path / "secret.txt")
    assert raw_get(host, port, "/escape").startswith(b"HTTP/1.1 403")
    web.wait_line(r'"GET /sub/data.json HTTP/1.1" 200')


def test_welcome_page_names_the_pod_without_content(
    start_image: Callable[..., ImageProcess], tmp_path: Path
) -> None:
    web = start_image("web", "--listen=:0", env={"POD_NAME": "web-7d9f", "POD_IP": "127.0.0.32"},
                      cwd=tmp_path)  # fmt: skip
    host, port = web.address()
    assert host == "127.0.0.32"
    status, body, _ = get(host, port, "/")
    assert status == 200
    assert b"Welcome to nginx!" in body and b"web-7d9f" in body
    assert get(host, port, "/other")[0] == 404
    assert web.terminate() == 0


def test_document_root_follows_the_pod_dir_when_working_dir_differs(tmp_path: Path) -> None:
    html = tmp_path / "usr/share/nginx/html"
    html.mkdir(parents=True)
    app = tmp_path / "app"
    app.mkdir()
    env = {"K8SEMU_ROOT": str(tmp_path)}
    assert web.parse_args([], env, app).root == html
    assert web.parse_args(["--root", "/usr/share/nginx/html"], env, app).root == html
    assert web.parse_args(["--root", "site"], env, app).root == app / "site"
    assert web.parse_args([], {}, tmp_path).root == html  # no K8SEMU_ROOT: the working dir
    assert web.parse_args([], {}, app).root is None  # nothing: the built-in welcome page

"""The web image (nginx, httpd, k8semu/web): a static file server of one directory.

The document root is ``--root``, else the first that exists of ``usr/share/nginx/html`` (nginx),
``usr/local/apache2/htdocs`` (httpd) and ``html`` under the container root (K8SEMU_ROOT, else
the working directory) — the kubelet runs each container in a per-pod directory and writes
volumes relative to it, so a configMap mounted at /usr/share/nginx/html lands where this server
looks. ``/`` without an index.html
serves a "Welcome to nginx!" page naming the pod. GET and HEAD only; paths are percent-decoded
and must stay inside the root after symlinks are resolved (else 403); directories without
index.html are 403, missing files 404, a directory without its slash is redirected.
"""

from __future__ import annotations

import argparse
import html
import mimetypes
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from k8semu.images import _common
from k8semu.images._http import HTTPServer, Request, Response, error_response, serve_until_stopped

DEFAULT_PORT = 80
ROOT_CANDIDATES = ("usr/share/nginx/html", "usr/local/apache2/htdocs", "html")
MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass(slots=True)
class WebConfig:
    host: str
    port: int
    root: Path | None
    pod_name: str
    server_name: str = "nginx"
    quiet: bool = False


def welcome_page(pod_name: str, server_name: str) -> bytes:
    pod = html.escape(pod_name)
    title = "Welcome to nginx!" if server_name == "nginx" else "It works!"
    return (
        "<!DOCTYPE html>\n<html>\n<head>\n"
        f"<title>{title}</title>\n</head>\n<body>\n<h1>{title}</h1>\n"
        f"<p>If you see this page, the web server on pod <b>{pod}</b> is successfully "
        "installed and working (k8semu built-in image).</p>\n"
        "</body>\n</html>\n"
    ).encode()


class WebApp:
    def __init__(self, config: WebConfig) -> None:
        self.config = config
        self.root = config.root.resolve() if config.root is not None else None
        self.welcome = welcome_page(config.pod_name, config.server_name)

    def __call__(self, request: Request) -> Response:
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"405 Method Not Allowed\n", headers=[("Allow", "GET, HEAD")])
        raw_path = request.path
        if "://" in raw_path:  # absolute-form target
            raw_path = "/" + raw_path.split("://", 1)[1].partition("/")[2]
        try:
            path = urllib.parse.unquote(raw_path, errors="strict")
        except UnicodeDecodeError:
            return error_response(400, "bad path encoding")
        if "\0" in path or "\\" in path:
            return error_response(400, "bad path")
        segments = [s for s in path.split("/") if s not in ("", ".")]
        if ".." in segments:
            return error_response(403, "path leaves the document root")
        if self.root is None or not self.root.is_dir():
            if not segments:
                return self._welcome()
            return error_response(404)
        target = self.root.joinpath(*segments)
        try:
            resolved = target.resolve()
        except (OSError, RuntimeError):
            return error_response(404)
        if resolved != self.root and self.root not in resolved.parents:
            return error_response(403, "path leaves the document root")
        if resolved.is_dir():
            if not path.endswith("/"):
                return Response(301, b"", headers=[("Location", raw_path + "/")])
            index = resolved / "index.html"
            if index.is_file():
                return self._file(index)
            if not segments:
                return self._welcome()
            return error_response(403, "directory listing is off")
        if resolved.is_file():
            return self._file(resolved)
        return error_response(404)

    def _welcome(self) -> Response:
        return Response(200, self.welcome, "text/html; charset=utf-8")

    def _file(self, path: Path) -> Response:
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                return error_response(500, "file too large for this server")
            data = path.read_bytes()
        except PermissionError:
            return error_response(403)
        except OSError:
            return error_response(404)
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/json", "application/javascript"):
            ctype += "; charset=utf-8"
        return Response(200, data, ctype)


def find_root(explicit: str | None, container_root: Path, cwd: Path) -> Path | None:
    """The document root: `explicit` (an absolute image path maps under `container_root` when
    it does not exist on the host), else the first of ROOT_CANDIDATES under the container root
    or the working directory."""
    if explicit:
        root = Path(explicit)
        if root.is_absolute() and not root.exists():
            mapped = container_root / explicit.lstrip("/")
            if mapped.exists():
                return mapped
        return root if root.is_absolute() else cwd / root
    for base in dict.fromkeys((container_root, cwd)):
        for candidate in ROOT_CANDIDATES:
            if (base / candidate).is_dir():
                return base / candidate
    return None


def parse_args(argv: Sequence[str], env: Mapping[str, str], cwd: Path) -> WebConfig:
    parser = argparse.ArgumentParser(prog="web", description=__doc__)
    parser.add_argument("--listen", default=None, help=":PORT or HOST:PORT (default :80)")
    parser.add_argument("--root", default=None, help="document root")
    parser.add_argument("--server-name", default="nginx", choices=["nginx", "httpd"])
    parser.add_argument("--quiet", action="store_true", help="no access log")
    # nginx's own flags in manifests (`nginx -g 'daemon off;'`) are accepted and ignored.
    args, unknown = parser.parse_known_args(list(argv))
    if unknown:
        print(f"web: ignoring arguments {unknown}", flush=True)
    host, port = _common.parse_listen(args.listen, DEFAULT_PORT, _common.pod_ip(env))
    pod = env.get("POD_NAME", "") or env.get("HOSTNAME", "") or os.uname().nodename
    root = find_root(args.root, _common.container_root(env, cwd), cwd)
    return WebConfig(host, port, root, pod, args.server_name, args.quiet)


async def serve(config: WebConfig) -> int:
    server = HTTPServer(WebApp(config), _common.Log(quiet=config.quiet), name="nginx (k8semu)")
    detail = f", root {config.root or '(built-in page)'}"
    return await serve_until_stopped(server, config.host, config.port, prog="web", detail=detail)


def main(argv: Sequence[str] | None = None) -> int:
    return _common.main(argv, lambda args, env: serve(parse_args(args, env, Path.cwd())))


if __name__ == "__main__":
    raise SystemExit(main())

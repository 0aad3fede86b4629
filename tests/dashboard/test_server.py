"""The dashboard's side of the API server's REST port: its files, its one JSON endpoint, and
clean answers (metav1.Status) to bad paths, methods and bodies."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

from tests.dashboard.conftest import Cluster
from tests.support.cluster import k8semu


def raw(
    c: Cluster, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request as sent (no client-side path normalisation)."""
    url = urlsplit(c.rest)
    conn = (
        http.client.HTTPSConnection(url.hostname or "", url.port, timeout=10, context=c.ssl)
        if url.scheme == "https"
        else http.client.HTTPConnection(url.hostname or "", url.port, timeout=10)
    )
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def status_of(body: bytes) -> dict[str, object]:
    doc: dict[str, object] = json.loads(body)
    assert doc["kind"] == "Status", doc
    return doc


def test_page_and_assets(cluster: Cluster) -> None:
    code, headers, body = raw(cluster, "GET", "/dashboard")
    assert code == 308 and headers["Location"] == "/dashboard/"
    code, headers, body = raw(cluster, "GET", "/dashboard/")
    assert code == 200 and headers["Content-Type"].startswith("text/html"), headers
    assert b"<title>k8semu dashboard</title>" in body
    etag = headers["ETag"]
    code, _, _ = raw(cluster, "GET", "/dashboard/", headers={"If-None-Match": etag})
    assert code == 304
    for name, ctype in (("app.js", "text/javascript"), ("style.css", "text/css")):
        code, headers, _ = raw(cluster, "GET", f"/dashboard/{name}")
        assert code == 200 and headers["Content-Type"].startswith(ctype), (name, headers)
    code, headers, body = raw(cluster, "HEAD", "/dashboard/app.js")
    assert code == 200 and body == b""


def test_store_status(cluster: Cluster) -> None:
    code, _, body = raw(cluster, "GET", "/dashboard/api/store")
    assert code == 200
    members = json.loads(body)["members"]
    assert len(members) == 1
    m = members[0]
    assert m["healthy"] and m["isLeader"] and m["raftTerm"] >= 1 and m["dbSize"] > 0, m
    assert m["errors"] == []


def test_bad_paths_are_not_found(cluster: Cluster) -> None:
    for path in ("/dashboard/nope.js", "/dashboard/api/nope", "/dashboard/static/app.js",
                 "/dashboard/%2e%2e/server.py", "/dashboard/../k8semu/dashboard/server.py",
                 "/dashboard/__init__.py"):  # fmt: skip
        code, _, body = raw(cluster, "GET", path)
        assert code == 404, (path, code, body[:200])
        assert status_of(body)["reason"] == "NotFound", path


def test_writes_are_refused(cluster: Cluster) -> None:
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for path in ("/dashboard/", "/dashboard/api/store", "/dashboard/app.js"):
            code, _, body = raw(cluster, method, path, b"{}", {"Content-Type": "application/json"})
            assert code == 405, (method, path, code)
            assert status_of(body)["reason"] == "MethodNotAllowed"


def test_oversized_body(cluster: Cluster) -> None:
    big = b"x" * (4 * 1024 * 1024)
    code, _, body = raw(cluster, "POST", "/dashboard/", big, {"Content-Type": "text/plain"})
    assert code == 413, code
    assert status_of(body)["reason"] == "RequestEntityTooLarge"


def test_status_lists_the_dashboard(cluster: Cluster) -> None:
    shown = k8semu(cluster.env, "status", "--state-dir", cluster.state_dir)
    assert f"dashboard: {cluster.dashboard}" in shown.stdout, shown.stdout

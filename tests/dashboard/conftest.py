"""One real cluster (a store replica, an API server with its REST port, scheduler, controller
manager, a simulated-runtime node w1 and a tainted process-runtime node w2 for a pod whose log
is followed) and one headless Chromium for the whole package.

Chromium and its driver come from Debian (`chromium`, `chromium-driver`:
scripts/install-system-deps.sh); Selenium from PyPI (the test extra). Without them the
browser tests skip, naming what is missing. `K8SEMU_DASHBOARD_DOCS=1` also copies each
view's screenshot to docs/img/dashboard-<view>.png.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import ssl
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from k8semu.chaos.events import ChaosEvents
from k8semu.client import Client
from k8semu.cluster.certs import PKIPaths
from k8semu.cluster.processes import free_loopback_ports
from tests.support.cluster import k8semu, status, stop_recorded, user_env, write_config

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
NS = "dash"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
T = TypeVar("T")


@dataclass
class Cluster:
    env: dict[str, str]
    state_dir: Path
    rest: str  # https://HOST:PORT (http:// on a cluster with `security: {tls: false}`)
    grpc: list[str]
    #: A cluster-admin ServiceAccount's token, the one the page is given (`up` turns
    #: authorization on: the browser has no client certificate).
    token: str = ""

    @property
    def ssl(self) -> ssl.SSLContext | None:
        """Verifies the API server with the cluster's CA (TLS is `up`'s default) and
        authenticates as its admin."""
        pki = self.state_dir / "pki"
        if not (pki / "ca.crt").exists():
            return None
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ctx

    @property
    def dashboard(self) -> str:
        return f"{self.rest}/dashboard/"

    def request(
        self, method: str, path: str, body: Any = None, ctype: str = "application/json"
    ) -> tuple[int, dict[str, Any]]:
        """A REST call: (HTTP code, JSON body)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.rest + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ssl) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def ok(self, method: str, path: str, body: Any = None, ctype: str = "application/json") -> Any:
        code, doc = self.request(method, path, body, ctype)
        assert code < 300, (method, path, code, doc)
        return doc


def until(
    what: str,
    check: Callable[[], T | None],
    timeout: float = 30.0,
    note: Callable[[], str] | None = None,
) -> T:
    """Poll `check()` until it returns something true (returned); fail naming `what` (and
    what `note()` says then)."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    said = f"; {note()}" if note is not None else ""
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r}){said}")


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "nginx:1.25",
                            "ports": [{"containerPort": 80}],
                            "resources": {"requests": {"cpu": "100m", "memory": "32Mi"}},
                            "readinessProbe": {"httpGet": {"path": "/", "port": 80}},
                        }
                    ]
                },
            },
        },
    }


def _seed(c: Cluster) -> None:
    """What the views show: two Deployments, a NodePort Service, an HPA, chaos Events."""
    c.ok("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})
    for name, replicas in (("web", 2), ("held", 1)):
        c.ok("POST", f"/apis/apps/v1/namespaces/{NS}/deployments", _deployment(name, replicas))
    service = {
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]},
    }
    c.ok("POST", f"/api/v1/namespaces/{NS}/services", service)
    hpa = {
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1,
            "maxReplicas": 5,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 50},
                    },
                }
            ],
        },
    }
    c.ok("POST", f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers", hpa)
    asyncio.run(_chaos_events(c))


def _admin_token(c: Cluster) -> str:
    """A token of kube-system/dashboard, bound to cluster-admin (docs/security.md's recipe)."""
    c.ok("POST", "/api/v1/namespaces/kube-system/serviceaccounts",
         {"metadata": {"name": "dashboard"}})  # fmt: skip
    c.ok("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", {
        "metadata": {"name": "dashboard"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "cluster-admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "dashboard", "namespace": "kube-system"}],
    })  # fmt: skip
    path = "/api/v1/namespaces/kube-system/serviceaccounts/dashboard/token"
    token = str(c.ok("POST", path, {"spec": {"expirationSeconds": 7200}})["status"]["token"])

    def allowed() -> bool:
        req = urllib.request.Request(
            c.rest + "/api/v1/pods", headers={"Authorization": f"Bearer {token}"}
        )
        ctx = ssl.create_default_context(cafile=str(c.state_dir / "pki" / "ca.crt"))
        try:
            with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
                return bool(resp.status == 200)
        except urllib.error.HTTPError:
            return False

    until("the dashboard's binding takes effect", allowed)
    return token


async def _chaos_events(c: Cluster) -> None:
    """A short chaos run's record, written as `k8semu chaos` writes it."""
    async with Client(c.grpc, tls=PKIPaths(c.state_dir).api_client()) as client:
        events = ChaosEvents(client, "test")
        now = time.time()
        faults = [
            {"fault": "kill", "target": "store-s2", "kind": "store", "duration": 0},
            {"fault": "pause", "target": "scheduler-1", "kind": "scheduler", "duration": 2.0},
            {"fault": "kill", "target": "kubelet-w1", "kind": "kubelet", "nodes": ["w1"]},
        ]
        for i, fault in enumerate(faults):
            events.fault(i, fault, now - 20 + 5 * i)
            if i < 2:
                events.outcome(i, fault, now - 18 + 5 * i + i, 2.0 + i)
        await events.flush()


LOG_NODE = "w2"


def _add_log_node(config: Path) -> None:
    """A second node, w2, on the process runtime (the simulated one keeps no container logs),
    tainted so that only the pods meant for it (the followed log's) go there."""
    kubelet, proxy = free_loopback_ports(2)
    text = config.read_text()
    w1_ip = re.search(r"nodeIP: (127\.0\.\d+)\.1,", text)
    assert w1_ip, text
    node = (
        f"  - {{name: {LOG_NODE}, nodeIP: {w1_ip[1]}.2, runtime: process, kubeletPort: {kubelet},"
        f" proxyPort: {proxy}, taints: [{{key: k8semu.io/logs, effect: NoSchedule}}]}}\n"
    )
    head, sep, tail = text.partition("nodes:\n")
    assert sep, text
    first, _, rest = tail.partition("\n")
    config.write_text(f"{head}{sep}{first}\n{node}{rest}")


@pytest.fixture(scope="package")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("dashboard")
    env = user_env(base)
    config = write_config(
        base / "cluster.yaml", name=f"dash-{uuid.uuid4().hex[:6]}", runtime="simulated",
        addons=False,
    )  # fmt: skip
    _add_log_node(config)
    state_dir = base / "state"
    try:
        up = k8semu(env, "up", "-f", config, "--state-dir", state_dir, "--detach", timeout=120)
        assert up.returncode == 0, up.stdout + up.stderr
        st = status(env, state_dir)
        rest = st["dashboards"][0].removesuffix("/dashboard/")
        # `up` says where the dashboard is.
        assert f"dashboard    {rest}/dashboard/" in up.stdout, up.stdout
        c = Cluster(env, state_dir, rest, list(st["apiServers"]))
        _seed(c)
        c.token = _admin_token(c)
        yield c
    finally:
        k8semu(env, "down", "--state-dir", state_dir, timeout=60)
        stop_recorded([state_dir])


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            pytest.skip(f"no {path}: apt-get install chromium chromium-driver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    # The DevTools network log: what the page sent (its Authorization header).
    # and the console (a script error fails test_views.py::test_no_script_errors).
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    # The cluster's own CA signed the API server's certificate: a user trusts it (or accepts
    # the certificate once); the test browser accepts it.
    options.accept_insecure_certs = True
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="package")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Any, str], Path]:
    """Save a screenshot of the browser's window as <tmp>/dashboard-<name>.png (and in
    docs/img with K8SEMU_DASHBOARD_DOCS=1)."""
    where = tmp_path_factory.mktemp("screenshots")

    def save(driver: Any, name: str) -> Path:
        path = where / f"dashboard-{name}.png"
        assert driver.save_screenshot(str(path)), path
        if os.environ.get("K8SEMU_DASHBOARD_DOCS") == "1":
            shutil.copy(path, DOCS_IMG / path.name)
        return path

    return save

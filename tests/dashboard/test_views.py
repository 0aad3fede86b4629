"""The dashboard in a real headless Chromium against a real cluster (conftest.py): each view
loads and is photographed, updates arrive by watches without a reload, and the actions write
through the REST API."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard.conftest import NS, Cluster, until
from tests.support.cluster import k8semu

# A view's hash and a text that shows its data arrived.
VIEWS = [
    ("cluster", "Leader"),
    ("workloads", f"{NS}/web"),
    ("networking", "NodePort"),
    ("events", "Scheduled"),
    ("autoscaling", f"{NS}/web → Deployment/web"),
    ("chaos", "recovered after 2.00 s"),
    ("apply", "Paste a YAML"),
]


def text(driver: Any) -> str:
    return str(driver.execute_script("return document.body.innerText"))


def show(driver: Any, view: str) -> None:
    driver.execute_script("location.hash = arguments[0]", view)


@pytest.fixture(scope="module")
def page(browser: Any, cluster: Cluster) -> Any:
    browser.get(cluster.dashboard)
    if cluster.token:  # authorization is on: the page asks with the user's token
        browser.execute_script(
            "sessionStorage.setItem('k8semu.dashboard.token', arguments[0])", cluster.token
        )
        browser.get(cluster.dashboard)
    until("the page's script", lambda: browser.execute_script("return !!window.k8semuDashboard"))
    # Set once per load: a test that finds it changed saw a reload.
    browser.execute_script("window.loadMark = Math.random()")
    return browser


def select(page: Any, selector: str) -> None:
    """Type a label selector into the filter (as a user does: an input event)."""
    page.execute_script(
        "const f = document.getElementById('selector'); f.value = arguments[0];"
        "f.dispatchEvent(new Event('input'))",
        selector,
    )


def click(page: Any, what: str, css: str) -> None:
    """Click the first element matching `css` once it is there (found and clicked in one
    script: a render between finding and clicking would otherwise leave a stale element)."""
    until(what, lambda: page.execute_script(
        "const b = document.querySelector(arguments[0]); if (b) b.click(); return !!b", css
    ))  # fmt: skip


def no_reload(page: Any) -> None:
    assert page.execute_script("return window.loadMark !== undefined"), "the page reloaded"


def confirm(page: Any, value: str | None = None) -> None:
    """Answer the dialog that every action opens (OK; `value` into its field first)."""
    until(
        "the confirm dialog",
        lambda: page.execute_script("return document.getElementById('confirm').open"),
    )
    if value is not None:
        field = page.find_element("id", "confirm-input")
        field.clear()
        field.send_keys(value)
    page.find_element("id", "confirm-ok").click()


@pytest.mark.parametrize(("view", "marker"), VIEWS, ids=[v for v, _ in VIEWS])
def test_view_loads(page: Any, view: str, marker: str, shots: Callable[[Any, str], Path]) -> None:
    show(page, view)
    until(f"{view} view shows {marker!r}", lambda: marker in text(page))
    errors = page.execute_script(
        "return [...document.querySelectorAll('#content .error')].map(e => e.innerText)"
    )
    assert not errors, errors
    if view == "autoscaling":  # a line, not a dot, in the screenshot: two samples or more
        until("two HPA samples", lambda: page.execute_script(
            "return document.querySelector('polyline.line-0')?.getAttribute('points')"
            ".includes(' ')"
        ))  # fmt: skip
    shots(page, view)
    no_reload(page)


def test_pod_details(page: Any, cluster: Cluster, shots: Callable[[Any, str], Path]) -> None:
    pods = cluster.ok("GET", f"/api/v1/namespaces/{NS}/pods?labelSelector=app%3Dweb")["items"]
    name = pods[0]["metadata"]["name"]
    show(page, f"pod/{NS}/{name}")
    until("the pod's manifest", lambda: f"name: {name}" in text(page))
    body = text(page)
    assert "Containers" in body and "readiness probe" in body and "http GET :80/" in body
    note = until(
        "the log panel's answer",
        lambda: (n := page.find_element("id", "log-note").text) != "connecting…" and n,
    )
    assert note, note
    shots(page, "pod")


def pod_rows(page: Any) -> dict[str, str]:
    """The pods table: name -> status word."""
    rows = page.execute_script(
        "return [...document.querySelectorAll('#t-pods tbody tr')].map("
        "r => [...r.cells].map(c => c.innerText))"
    )
    return {r[0]: r[1].lstrip("● ") for r in rows if len(r) > 1}


def test_deleted_pod_terminates_and_is_replaced(page: Any, cluster: Cluster) -> None:
    show(page, "workloads")
    select(page, "app=held")
    first = until(
        "the held pod running", lambda: [n for n, s in pod_rows(page).items() if s == "Running"]
    )
    victim = first[0]
    name = victim.split("/", 1)[1]
    # A finalizer keeps it Terminating long enough to be seen (the simulated runtime stops
    # containers at once); it is removed below.
    cluster.ok(
        "PATCH", f"/api/v1/namespaces/{NS}/pods/{name}",
        {"metadata": {"finalizers": ["k8semu.io/test-hold"]}}, "application/merge-patch+json",
    )  # fmt: skip
    try:
        deleted = k8semu(cluster.env, "delete", "pod", name, "-n", NS)
        assert deleted.returncode == 0, deleted.stderr
        until(
            "the deleted pod shown Terminating", lambda: pod_rows(page).get(victim) == "Terminating"
        )
        until(
            "its replacement shown Running",
            lambda: [n for n, s in pod_rows(page).items() if n != victim and s == "Running"],
        )
    finally:
        cluster.request(
            "PATCH", f"/api/v1/namespaces/{NS}/pods/{name}", {"metadata": {"finalizers": None}},
            "application/merge-patch+json",
        )  # fmt: skip
    until("the finalized pod gone from the page", lambda: victim not in pod_rows(page))
    select(page, "")
    no_reload(page)


def test_scale_from_the_page(page: Any, cluster: Cluster) -> None:
    show(page, "workloads")
    click(
        page, "the Scale button of web", f'tr[data-deployment="{NS}/web"] button[data-act="scale"]'
    )
    confirm(page, "3")
    path = f"/apis/apps/v1/namespaces/{NS}/deployments/web"
    until("spec.replicas 3", lambda: cluster.ok("GET", path)["spec"]["replicas"] == 3)
    until(
        "the page's desired column at 3",
        lambda: (
            page.execute_script(
                "return document.querySelector(arguments[0])?.innerText",
                f'tr[data-deployment="{NS}/web"] td[data-col=desired]',
            )
            == "3"
        ),
    )
    no_reload(page)


def test_cordon_from_the_page(page: Any, cluster: Cluster) -> None:
    show(page, "cluster")
    node = "/api/v1/nodes/w1"
    click(page, "the Cordon button", 'button[data-act="cordon"][data-on="1"]')
    confirm(page)
    until("w1 unschedulable", lambda: cluster.ok("GET", node)["spec"].get("unschedulable"))
    until("the page says SchedulingDisabled", lambda: "SchedulingDisabled" in text(page))
    click(page, "the Uncordon button", 'button[data-act="cordon"][data-on=""]')
    confirm(page)
    until("w1 schedulable", lambda: not cluster.ok("GET", node)["spec"].get("unschedulable"))


BAD = f"""apiVersion: apps/v1
kind: Deployment
metadata:
  name: bad
  namespace: {NS}
spec:
  replicas: -1
  selector:
    matchLabels: {{app: bad}}
  template:
    metadata:
      labels: {{app: bad}}
    spec:
      containers:
      - name: c
        image: nginx
"""
GOOD = f"""apiVersion: v1
kind: ConfigMap
metadata:
  name: pasted
  namespace: {NS}
data:
  greeting: "hello: world"
"""


def apply(page: Any, manifest: str) -> None:
    show(page, "apply")
    page.execute_script("document.getElementById('manifest').value = arguments[0]", manifest)
    click(page, "the Apply button", "#apply-button")
    confirm(page)


def test_bad_manifest_shows_the_field_error(
    page: Any, cluster: Cluster, shots: Callable[[Any, str], Path]
) -> None:
    apply(page, BAD)
    field = until(
        "the field of the error",
        lambda: page.find_elements("css selector", "#apply-results .cause .field"),
    )
    assert field[0].text == "spec.replicas", field[0].text
    assert "line 7" in page.find_element("id", "apply-results").text
    shots(page, "apply-error")
    code, _ = cluster.request("GET", f"/apis/apps/v1/namespaces/{NS}/deployments/bad")
    assert code == 404


def test_good_manifest_is_created_then_configured(page: Any, cluster: Cluster) -> None:
    apply(page, GOOD)
    until(
        "created",
        lambda: "ConfigMap/pasted created" in page.find_element("id", "apply-results").text,
    )
    doc = cluster.ok("GET", f"/api/v1/namespaces/{NS}/configmaps/pasted")
    assert doc["data"] == {"greeting": "hello: world"}
    apply(page, GOOD.replace("hello: world", "again"))
    until(
        "configured",
        lambda: "ConfigMap/pasted configured" in page.find_element("id", "apply-results").text,
    )
    assert (
        cluster.ok("GET", f"/api/v1/namespaces/{NS}/configmaps/pasted")["data"]["greeting"]
        == "again"
    )


def test_restart_then_undo_from_the_page(
    page: Any, cluster: Cluster, shots: Callable[[Any, str], Path]
) -> None:
    show(page, "workloads")
    path = f"/apis/apps/v1/namespaces/{NS}/deployments/web"
    row = f'tr[data-deployment="{NS}/web"]'

    def restarted_at() -> str | None:
        meta = cluster.ok("GET", path)["spec"]["template"].get("metadata", {})
        return meta.get("annotations", {}).get("kubectl.kubernetes.io/restartedAt")

    assert restarted_at() is None
    click(page, "the Restart button of web", f'{row} button[data-act="restart"]')
    confirm(page)
    until("the restartedAt annotation", restarted_at)
    until(
        "revision 2 shown",
        lambda: (
            page.execute_script(
                "return document.querySelector(arguments[0])?.cells[6].innerText", row
            )
            == "2"
        ),
    )
    page.execute_script("document.getElementById('toasts').replaceChildren()")
    click(page, "the Undo button of web", f'{row} button[data-act="undo"]')
    confirm(page)
    said = until("the undo's notice", lambda: page.find_element("id", "toasts").text)
    assert said.startswith(f"rolled {NS}/web back"), said
    until(
        "the template of revision 1 back",
        lambda: restarted_at() is None,
        note=lambda: page.find_element("id", "toasts").text,
    )
    click(page, "the History button of web", f'{row} button[data-act="history"]')
    until("the rollout history", lambda: "Rollout history of web" in text(page))
    shots(page, "workloads-history")


def sent_tokens(page: Any, since: float) -> set[str]:
    """The Authorization headers of the API requests the page sent after `since` (epoch ms)
    and logged since the last call."""
    found = set()
    for entry in page.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg["method"] != "Network.requestWillBeSent" or entry["timestamp"] < since:
            continue
        request = msg["params"]["request"]
        if "/api" in request["url"]:
            found.add(request["headers"].get("Authorization", ""))
    return found


def test_a_token_goes_with_every_request(page: Any, cluster: Cluster) -> None:
    token = cluster.token or "s3cret"
    show(page, "events")
    page.find_element("id", "token").send_keys(token)
    since = time.time() * 1000
    click(page, "the token's button", '#login button[type="submit"]')
    until("token set", lambda: page.find_element("id", "token-note").text == "token set")
    assert page.execute_script("return sessionStorage.getItem('k8semu.dashboard.token')") == token
    seen: set[str] = set()
    until("requests with the token", lambda: seen.update(sent_tokens(page, since)) or seen)
    assert seen == {f"Bearer {token}"}, seen
    until("every list loaded", lambda: page.execute_script(
        "return Object.values(window.k8semuDashboard.state.inf).every(i => i.synced)"
    ))  # fmt: skip
    since = time.time() * 1000
    click(page, "Forget", "#logout")
    until("no token", lambda: page.find_element("id", "token-note").text == "no token")
    seen.clear()
    until("requests without it", lambda: seen.update(sent_tokens(page, since)) or seen)
    assert seen == {""}, seen
    if cluster.token:  # the next tests need it back: without, every request is a 401
        page.find_element("id", "token").send_keys(token)
        click(page, "the token's button", '#login button[type="submit"]')
        until("token set", lambda: page.find_element("id", "token-note").text == "token set")


def test_narrow_window(page: Any, shots: Callable[[Any, str], Path]) -> None:
    """A phone-wide window: the page itself never scrolls sideways (wide tables scroll in
    their own box) and the header wraps."""
    size = page.get_window_size()
    try:
        page.set_window_size(400, 800)
        # Events move down the list as more arrive: any of them will do there.
        for view, marker in [(v, "message" if v == "events" else m) for v, m in VIEWS]:
            show(page, view)
            until(f"{view} at 400 px", lambda marker=marker: marker in text(page))
            wide = page.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert wide <= 1, (view, wide)
        show(page, "workloads")
        until("the workloads at 400 px", lambda: f"{NS}/web" in text(page))
        shots(page, "narrow")
    finally:
        page.set_window_size(size["width"], size["height"])

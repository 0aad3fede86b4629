"""The dashboard in a real headless Chromium against a real cluster (conftest.py): each view
loads and is photographed, updates arrive by watches without a reload, and the actions write
through the REST API."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from k8semu.cluster.state import is_same_process, read_state
from tests.dashboard.conftest import LOG_NODE, NS, Cluster, until
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
    # The simulated runtime keeps no logs: the API says so, and the page shows its words.
    note = until(
        "the log panel's answer",
        lambda: (n := page.find_element("id", "log-note").text) != "connecting…" and n,
    )
    assert note.startswith("logs: 400 BadRequest: no log of container web"), note
    shots(page, "pod")


TICKER = {
    "metadata": {"name": "ticker", "namespace": NS},
    "spec": {
        "nodeSelector": {"kubernetes.io/hostname": LOG_NODE},
        "tolerations": [{"key": "k8semu.io/logs", "operator": "Exists"}],
        "containers": [
            {
                "name": "tick",
                "image": "busybox",
                "command": [
                    "sh",
                    "-c",
                    "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.5; done",
                ],
            }
        ],
    },
}


def test_pod_logs_followed(page: Any, cluster: Cluster, shots: Callable[[Any, str], Path]) -> None:
    """A process-runtime pod that writes a line every half second: the pod view follows its
    log (lines keep arriving); a wrong container name shows the API's 400 and its message."""
    cluster.ok("POST", f"/api/v1/namespaces/{NS}/pods", TICKER)
    path = f"/api/v1/namespaces/{NS}/pods/ticker"
    until(
        "the ticker running",
        lambda: cluster.ok("GET", path).get("status", {}).get("phase") == "Running",
    )
    show(page, f"pod/{NS}/ticker")
    note = lambda: page.find_element("id", "log-note").text  # noqa: E731
    logs = lambda: page.find_element("id", "log-text").text  # noqa: E731
    until("following", lambda: note() == "following", note=note)
    first = until("a line", lambda: [ln for ln in logs().splitlines() if ln.startswith("tick")])
    seen = int(first[-1].split()[1])
    until(f"a line after tick {seen}", lambda: f"tick {seen + 2}" in logs(), note=logs)
    page.execute_script("document.getElementById('logs').scrollIntoView()")
    shots(page, "pod-logs")
    field = page.find_element("id", "log-container")
    field.send_keys("nope")
    page.find_element("id", "log-restart").click()
    said = until(
        "the API's answer for a wrong container", lambda: note().startswith("logs: 400") and note()
    )
    assert "nope" in said, said
    field.clear()
    page.find_element("id", "log-restart").click()
    until("followed again", lambda: note() == "following", note=note)
    # A redraw (the pod changed) keeps the manifest where the reader scrolled it.
    top = page.execute_script(
        "const m = document.querySelector('pre.manifest'); m.scrollTop = 120; return m.scrollTop"
    )
    assert top > 0, top
    cluster.ok(
        "PATCH", path, {"metadata": {"labels": {"seen": "yes"}}}, "application/merge-patch+json"
    )
    until("the new label in the manifest", lambda: "seen: yes" in text(page))
    assert page.execute_script("return document.querySelector('pre.manifest').scrollTop") == top
    cluster.ok("DELETE", path)
    no_reload(page)


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
    doc = cluster.ok("GET", f"/api/v1/namespaces/{NS}/configmaps/pasted")
    assert doc["data"]["greeting"] == "again"
    # Server-side apply: the page's field manager owns what it applied.
    managers = {(m["manager"], m["operation"]) for m in doc["metadata"]["managedFields"]}
    assert ("k8semu-dashboard", "Apply") in managers, managers
    apply(page, GOOD.replace("hello: world", "again"))
    until(
        "unchanged",
        lambda: "ConfigMap/pasted unchanged" in page.find_element("id", "apply-results").text,
    )


OWNED = f"""apiVersion: v1
kind: ConfigMap
metadata:
  name: owned
  namespace: {NS}
data:
  color: blue
"""


def test_a_conflict_is_shown_then_forced(
    page: Any, cluster: Cluster, shots: Callable[[Any, str], Path]
) -> None:
    path = f"/api/v1/namespaces/{NS}/configmaps"
    cluster.ok(
        "POST", f"{path}?fieldManager=other-tool",
        {"metadata": {"name": "owned", "namespace": NS}, "data": {"color": "red"}},
    )  # fmt: skip
    apply(page, OWNED)
    said = until(
        "the conflict",
        lambda: "Conflict" in (t := page.find_element("id", "apply-results").text) and t,
    )
    assert 'conflict with "other-tool"' in said and ".data.color" in said, said
    assert cluster.ok("GET", f"{path}/owned")["data"] == {"color": "red"}
    shots(page, "apply-conflict")
    click(page, "Apply with force", 'button[data-act="force-apply"]')
    confirm(page)
    until(
        "forced",
        lambda: (
            "ConfigMap/owned configured (forced)" in page.find_element("id", "apply-results").text
        ),
    )
    assert page.execute_script("return document.activeElement.dataset.result") == "0"
    doc = cluster.ok("GET", f"{path}/owned")
    assert doc["data"] == {"color": "blue"}
    owners = {m["manager"]: m for m in doc["metadata"]["managedFields"]}
    assert "f:color" in json.dumps(owners["k8semu-dashboard"]["fieldsV1"]), owners


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


def test_a_token_goes_with_every_request(page: Any) -> None:
    show(page, "events")
    page.find_element("id", "token").send_keys("s3cret")
    since = time.time() * 1000
    click(page, "the token's button", '#login button[type="submit"]')
    until("token set", lambda: page.find_element("id", "token-note").text == "token set")
    assert (
        page.execute_script("return sessionStorage.getItem('k8semu.dashboard.token')") == "s3cret"
    )
    seen: set[str] = set()
    until("requests with the token", lambda: seen.update(sent_tokens(page, since)) or seen)
    assert seen == {"Bearer s3cret"}, seen
    until("every list loaded", lambda: page.execute_script(
        "return Object.values(window.k8semuDashboard.state.inf).every(i => i.synced)"
    ))  # fmt: skip
    since = time.time() * 1000
    click(page, "Forget", "#logout")
    until("no token", lambda: page.find_element("id", "token-note").text == "no token")
    seen.clear()
    until("requests without it", lambda: seen.update(sent_tokens(page, since)) or seen)
    assert seen == {""}, seen


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
        # The row itself (a notice of an earlier action may name dash/web too).
        page.execute_script("document.getElementById('toasts').replaceChildren()")
        until("the workloads at 400 px", lambda: page.execute_script(
            "return !!document.querySelector(arguments[0]) && "
            "!document.body.innerText.includes('loading')",
            f'tr[data-deployment="{NS}/web"]',
        ))  # fmt: skip
        page.execute_script("window.scrollTo(0, 0)")
        shots(page, "narrow")
    finally:
        page.set_window_size(size["width"], size["height"])


COMPONENT_TABLES = (
    "/api/v1/namespaces/kube-system/configmaps?labelSelector=k8semu.io%2Fcomponents%3Dtrue"
)


def published(cluster: Cluster, name: str) -> dict[str, Any]:
    """Component `name`'s row in its host's component table, read from the API."""
    for cm in cluster.ok("GET", COMPONENT_TABLES)["items"]:
        if name in cm.get("data", {}):
            row: dict[str, Any] = json.loads(cm["data"][name])
            return row
    raise AssertionError(f"{name} is in no component table")


def test_a_killed_process_restarts_in_the_page(
    page: Any, cluster: Cluster, shots: Callable[[Any, str], Path]
) -> None:
    """The scheduler killed (by the pid this test's `up` recorded): its supervisor starts it
    again and publishes the new restart count, which the Cluster view shows without a reload."""
    show(page, "cluster")
    sched = next(c for c in read_state(cluster.state_dir).components if c.kind == "scheduler")
    css = f'span[data-restarts="{sched.name}"]'

    def in_page() -> str | None:
        found = page.execute_script("return document.querySelector(arguments[0])?.innerText", css)
        return str(found) if found is not None else None

    before = int(until("the scheduler's row", in_page))
    # Each process's health, from what answers for it (store Status, Leases, the Nodes).
    until("health words", lambda: all(w in page.execute_script(
        "return document.getElementById('t-processes').innerText"
    ) for w in ("Healthy", "Serving", "Renewing", "Ready")))  # fmt: skip
    row = published(cluster, sched.name)
    assert (row["kind"], row["state"], row["pid"]) == ("scheduler", "running", sched.pid), row
    assert is_same_process(sched.pid, sched.start_time)
    os.kill(sched.pid, signal.SIGKILL)
    until("a restart counted in the page", lambda: int(in_page() or 0) > before)
    after = until(
        "the scheduler running again in its table",
        lambda: (
            (r := published(cluster, sched.name))["state"] == "running"
            and r["pid"] != sched.pid
            and r
        ),
    )
    assert after["restarts"] > before and after["started"], after
    until("its row Running with the new pid", lambda: page.execute_script(
        "const r = document.querySelector(arguments[0])?.closest('tr');"
        "return r && r.innerText.includes('Running') && r.innerText.includes(arguments[1])",
        css, str(after["pid"]),
    ))  # fmt: skip
    page.execute_script(
        "document.getElementById('toasts').replaceChildren();"
        "document.getElementById('t-processes').scrollIntoView()"
    )
    shots(page, "cluster-processes")
    no_reload(page)


def test_a_stale_table_shows_unknown(page: Any, cluster: Cluster) -> None:
    """A host whose supervisor stopped publishing (its table older than 90 s): its processes
    are Unknown, with what they last said, and the page says why."""
    row = {"kind": "kubelet", "host": "gone", "pid": 7, "state": "running", "restarts": 0,
           "started": "2020-01-01T00:00:00Z", "nodes": ["g1"]}  # fmt: skip
    cm = {
        "metadata": {
            "name": "k8semu-components-gone",
            "namespace": "kube-system",
            "labels": {"k8semu.io/components": "true"},
            "annotations": {"k8semu.io/published-at": "2020-01-01T00:00:00Z"},
        },
        "data": {"kubelet-gone": json.dumps(row)},
    }
    path = "/api/v1/namespaces/kube-system/configmaps"
    cluster.ok("POST", path, cm)
    try:
        show(page, "cluster")
        found = until("the stale row", lambda: page.execute_script(
            "return document.querySelector('span[data-process=\"kubelet-gone\"]')"
            "?.closest('tr').innerText"
        ))  # fmt: skip
        assert "Unknown" in found and "last said running" in found, found
        assert "the supervisor of gone has not published" in text(page)
    finally:
        cluster.request("DELETE", f"{path}/k8semu-components-gone")
    until("the row gone", lambda: "kubelet-gone" not in text(page))
    no_reload(page)


def test_the_table_is_refreshed_through_the_api(cluster: Cluster) -> None:
    """A publisher with nothing new to say writes its table again (a fresh published-at), so a
    reader can tell it is alive; through the cluster's real API server, create then update."""
    from k8semu.cluster import certs
    from k8semu.cluster.publish import PUBLISHED_AT, ComponentPublisher
    from k8semu.cluster.state import ComponentRecord

    said: list[str] = []
    servers = cluster.grpc
    pub = ComponentPublisher(
        servers, "refresh-test",
        lambda: certs.probes(cluster.state_dir, [("apiserver", a) for a in servers]),
        said.append, refresh_s=0.5,
    )  # fmt: skip
    path = "/api/v1/namespaces/kube-system/configmaps/k8semu-components-refresh-test"
    record = ComponentRecord(name="x-1", kind="x", host="refresh-test", stage=0, command=["x"])
    try:
        pub.publish([record])

        def stamp() -> str | None:
            code, doc = cluster.request("GET", path)
            return doc["metadata"]["annotations"][PUBLISHED_AT] if code == 200 else None

        first = until("the table created", stamp)
        until("written again", lambda: (s := stamp()) and s != first)
        assert json.loads(cluster.ok("GET", path)["data"]["x-1"])["kind"] == "x"
        assert not said, said
    finally:
        pub.close()
        cluster.request("DELETE", path)


def test_keyboard_only(page: Any, cluster: Cluster) -> None:
    """With the keyboard alone: Tab reaches a Deployment's Scale button, Enter opens its
    dialog, Escape closes it without writing; Alt+1 (the access key) goes to the Cluster view."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    show(page, "workloads")
    button = f'tr[data-deployment="{NS}/held"] button[data-act="scale"]'
    until("the Scale button", lambda: page.execute_script(
        "return !!document.querySelector(arguments[0])", button
    ))  # fmt: skip
    path = f"/apis/apps/v1/namespaces/{NS}/deployments/held"
    replicas = cluster.ok("GET", path)["spec"]["replicas"]
    page.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
    on_it = "return document.activeElement === document.querySelector(arguments[0])"
    for _ in range(200):  # bounded: the page has far fewer stops before it
        if page.execute_script(on_it, button):
            break
        ActionChains(page).send_keys(Keys.TAB).perform()
    assert page.execute_script(on_it, button), page.execute_script(
        "return document.activeElement.outerHTML"
    )
    ActionChains(page).send_keys(Keys.ENTER).perform()
    until("the dialog open", lambda: page.execute_script(
        "return document.getElementById('confirm').open"
    ))  # fmt: skip
    ActionChains(page).send_keys(Keys.ESCAPE).perform()
    until("the dialog closed", lambda: page.execute_script(
        "return !document.getElementById('confirm').open"
    ))  # fmt: skip
    assert cluster.ok("GET", path)["spec"]["replicas"] == replicas
    ActionChains(page).key_down(Keys.ALT).send_keys("1").key_up(Keys.ALT).perform()
    until("the Cluster view", lambda: page.execute_script("return location.hash") == "#cluster")
    no_reload(page)


def test_the_page_outlives_its_api_server(page: Any, cluster: Cluster) -> None:
    """The API server that served the page SIGKILLed (by the pid `up` recorded): its
    supervisor starts it again, the page's watches reconnect by themselves, and the Cluster
    view shows the API server's restart, all without a reload."""
    show(page, "cluster")
    api = next(c for c in read_state(cluster.state_dir).components if c.kind == "apiserver")
    css = f'span[data-restarts="{api.name}"]'
    shown = "return document.querySelector(arguments[0])?.innerText"
    before = int(until("the API server's row", lambda: page.execute_script(shown, css)))
    assert is_same_process(api.pid, api.start_time)
    os.kill(api.pid, signal.SIGKILL)
    until(
        "the restart shown after the reconnect",
        lambda: int(page.execute_script(shown, css) or 0) > before,
        timeout=60,
        note=lambda: page.find_element("id", "banner").text,
    )
    until("live again", lambda: page.find_element("id", "conn").text == "live")
    no_reload(page)


def test_an_unknown_field_is_shown_at_its_line(page: Any, cluster: Cluster) -> None:
    """fieldValidation=Strict: a misspelt field is refused, named, and linked to its line."""
    apply(page, GOOD.replace("name: pasted", "name: typo").replace("\ndata:", "\ndatta:"))
    said = until(
        "the refusal",
        lambda: "ConfigMap/typo:" in (t := page.find_element("id", "apply-results").text) and t,
        note=lambda: page.find_element("id", "apply-results").text,
    )
    assert "datta" in said and "line 6" in said, said
    code, _ = cluster.request("GET", f"/api/v1/namespaces/{NS}/configmaps/typo")
    assert code == 404
    # No name: said in the page, nothing sent (an apply names its object).
    apply(page, GOOD.replace("  name: pasted\n", ""))
    said = until(
        "the missing name",
        lambda: "metadata.name" in (t := page.find_element("id", "apply-results").text) and t,
    )
    assert "Required value" in said and "MethodNotAllowed" not in said, said


def test_no_script_errors(page: Any) -> None:
    """Nothing the tests above did made the page's scripts fail (the console's errors; a
    refused request is logged by the browser too, but as a network entry, and is expected)."""
    errors = [
        e["message"]
        for e in page.get_log("browser")
        if e["level"] == "SEVERE" and e.get("source") != "network"
    ]
    assert not errors, errors

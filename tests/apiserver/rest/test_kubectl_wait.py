"""`kubectl wait` and `kubectl delete --wait` against the REST API: kubectl watches the object
(a field-selected watch from the list's resourceVersion) and returns when the condition, the
JSONPath value or the deletion arrives, or times out with its own message."""

from __future__ import annotations

import json
import selectors
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .conftest import KUBECTL, REST, TIMEOUT

POD = """
apiVersion: v1
kind: Pod
metadata: {name: %s}
spec:
  containers:
  - {name: c, image: busybox, command: [sleep, "3600"]}
"""


@contextmanager
def background_kubectl(rest: REST, *args: str) -> Iterator[subprocess.Popen[str]]:
    """`kubectl ARGS` running while the block changes the object; ended by pid after."""
    assert KUBECTL is not None
    proc = subprocess.Popen(
        [KUBECTL, f"--server={rest.url}", "-v=6", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"KUBECONFIG": "/dev/null", "HOME": "/nonexistent", "PATH": "/usr/bin:/bin"},
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def watching(proc: subprocess.Popen[str]) -> None:
    """Returns once kubectl's request log (-v=6) shows its watch answered: from then on a
    change reaches it as an event (before, it might see the end state in its first list)."""
    assert proc.stderr is not None
    seen: list[str] = []
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        end = time.monotonic() + TIMEOUT
        while time.monotonic() < end and proc.poll() is None:
            if not sel.select(timeout=end - time.monotonic()):
                break
            line = proc.stderr.readline()
            seen.append(line)
            if "watch=true" in line and " 200 OK" in line:
                return
    raise AssertionError("kubectl never watched:\n" + "".join(seen))


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out + err


def patch_status(rest: REST, name: str, status: dict[str, object]) -> None:
    code, doc = rest.json(
        "PATCH",
        f"/api/v1/namespaces/default/pods/{name}/status",
        {"status": status},
        **{"Content-Type": "application/merge-patch+json"},
    )
    assert code == 200, doc


def without_conditions(rest: REST, name: str) -> None:
    """No kubelet runs here: the pod stays Pending with no conditions until the test
    writes them."""
    code, doc = rest.json("GET", f"/api/v1/namespaces/default/pods/{name}")
    assert code == 200 and not doc.get("status", {}).get("conditions"), doc


def test_wait_for_condition_returns_when_the_condition_is_written(rest: REST) -> None:
    rest.kubectl("create", "-f", "-", stdin=POD % "kw-ready")
    without_conditions(rest, "kw-ready")
    with background_kubectl(
        rest, "wait", "--for=condition=Ready", "pod/kw-ready", "--timeout=60s"
    ) as proc:
        watching(proc)
        # A condition of another type, or Ready=False, does not end the wait.
        patch_status(rest, "kw-ready", {"conditions": [{"type": "Ready", "status": "False"}]})
        assert proc.poll() is None
        patch_status(rest, "kw-ready", {"conditions": [{"type": "Ready", "status": "True"}]})
        code, out = finish(proc)
    assert code == 0, out
    assert "pod/kw-ready condition met" in out


def test_wait_for_jsonpath_value(rest: REST) -> None:
    rest.kubectl("create", "-f", "-", stdin=POD % "kw-phase")
    with background_kubectl(
        rest, "wait", "--for=jsonpath={.status.phase}=Running", "pod/kw-phase", "--timeout=60s"
    ) as proc:
        watching(proc)
        patch_status(rest, "kw-phase", {"phase": "Running"})
        code, out = finish(proc)
    assert code == 0, out
    assert "pod/kw-phase condition met" in out


def test_wait_times_out_with_kubectls_message(rest: REST) -> None:
    rest.kubectl("create", "-f", "-", stdin=POD % "kw-never")
    out = rest.kubectl("wait", "--for=condition=Ready", "pod/kw-never", "--timeout=2s", check=False)
    assert "timed out waiting for the condition on pods/kw-never" in out, out


def test_wait_for_delete_and_delete_wait_follow_the_finalizer(rest: REST) -> None:
    manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kw-held", "finalizers": ["example.com/hold"]},
        "data": {"k": "v"},
    }
    rest.kubectl("create", "-f", "-", stdin=json.dumps(manifest))
    # `delete --wait` (kubectl's default) waits for the object to be gone: with a finalizer
    # the object only gets a deletionTimestamp, so kubectl waits until its timeout.
    held = rest.kubectl("delete", "cm", "kw-held", "--timeout=2s", check=False)
    assert 'configmap "kw-held" deleted' in held, held
    code, doc = rest.json("GET", "/api/v1/namespaces/default/configmaps/kw-held")
    assert code == 200 and doc["metadata"]["deletionTimestamp"], doc
    with background_kubectl(rest, "wait", "--for=delete", "cm/kw-held", "--timeout=60s") as proc:
        watching(proc)
        code, doc = rest.json(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/kw-held",
            {"metadata": {"finalizers": None}},
            **{"Content-Type": "application/merge-patch+json"},
        )
        assert code == 200, doc
        code, out = finish(proc)
    assert code == 0, out
    assert "configmap/kw-held condition met" in out
    assert rest.json("GET", "/api/v1/namespaces/default/configmaps/kw-held")[0] == 404

"""The Kubernetes docs' "Running Automated Tasks with a CronJob" and "Jobs" pages, followed
with kubectl: the `hello` CronJob (busybox:1.28, `date; echo Hello from the Kubernetes
cluster`) run at once with `kubectl create job --from=cronjob/hello`, and the `pi` Job
(perl:5.34.0, which runs the host's perl: docs/images.md) read with `kubectl logs job/pi`.

The CronJob's own schedule (every minute) is the CronJob controller's tests' business
(tests/controllers/test_cronjob.py, an injected clock): here it must wait less than a minute.
"""

from __future__ import annotations

import shutil

import pytest

from .conftest import MANIFESTS, Cluster, until

pytestmark = pytest.mark.slow

HELLO = (MANIFESTS / "cronjob.yaml").read_text()
# The page's Job computes 2,000 digits; Debian's perl 5.36 (Math::BigInt::Calc) dies past about
# 1,000 ("Can't use an undefined value as an ARRAY reference") after ~30 s, on the host as in
# the pod, so the test asks for 100.
PI = (MANIFESTS / "pi-job.yaml").read_text()


def _complete(c: Cluster, job: str) -> bool:
    doc = c.get("job", job) or {}
    conditions = doc.get("status", {}).get("conditions", [])
    return any(x["type"] == "Complete" and x["status"] == "True" for x in conditions)


def test_cronjob_run_by_hand(cluster: Cluster) -> None:
    assert "cronjob.batch/hello created" in cluster.kubectl("create", "-f", "-", stdin=HELLO)
    table = cluster.kubectl("get", "cronjob", "hello")
    assert table.split("\n")[1].split()[:4] == ["hello", "*", "*", "*"], table
    out = cluster.kubectl("create", "job", "--from=cronjob/hello", "hello-manual")
    assert "job.batch/hello-manual created" in out, out
    until("hello-manual Complete", lambda: _complete(cluster, "hello-manual"))
    logs = cluster.kubectl("logs", "job/hello-manual")
    assert logs.splitlines()[-1] == "Hello from the Kubernetes cluster", logs
    owner = cluster.get("job", "hello-manual")["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("CronJob", "hello")
    cluster.kubectl("delete", "cronjob", "hello")
    until("hello's jobs gone with it", lambda: cluster.get("job", "hello-manual") is None)


def test_pi_job(cluster: Cluster) -> None:
    if shutil.which("perl") is None:
        pytest.skip("no perl on the host (the perl image runs the host's perl)")
    assert "job.batch/pi created" in cluster.kubectl("apply", "-f", "-", stdin=PI)
    until("pi Complete", lambda: _complete(cluster, "pi"))
    digits = cluster.kubectl("logs", "job/pi").strip()
    assert digits.startswith("3.14159265358979323846") and len(digits) == 101, digits
    described = cluster.kubectl("describe", "job", "pi")
    assert "1 Succeeded / 0 Failed" in described, described
    cluster.kubectl("delete", "job", "pi")

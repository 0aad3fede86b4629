"""The Kubernetes docs' "HorizontalPodAutoscaler Walkthrough", followed with kubectl as far
as it works: the php-apache Deployment and Service (registry.k8s.io/hpa-example), the
autoscaling/v2 HPA manifest, `kubectl get hpa` showing the CPU metric, the busybox load
generator's wget reaching the Service. The scale-up under load is the HPA tests' business
(tests/controllers/test_podautoscaler*.py, `k8semu bench autoscale`): it takes minutes.

`kubectl autoscale` (kubectl 1.32 writes autoscaling/v1, served by conversion) makes the
same HPA.
"""

from __future__ import annotations

import pytest

from .conftest import MANIFESTS, Cluster, until

pytestmark = pytest.mark.slow

PHP_APACHE = (MANIFESTS / "php-apache.yaml").read_text()
HPA = (MANIFESTS / "hpa.yaml").read_text()


def test_php_apache_with_the_v2_manifest(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", "-", stdin=PHP_APACHE)
    cluster.kubectl("rollout", "status", "deploy/php-apache", "--timeout=85s")
    assert "created" in cluster.kubectl("apply", "-f", "-", stdin=HPA)

    def targets() -> str | None:
        """TARGETS once it shows a reading (`cpu: <unknown>/50%` until then)."""
        row = cluster.kubectl("get", "hpa", "php-apache").split("\n")[1].split()
        shown = row[2] if row[2] != "cpu:" else row[2] + " " + row[3]
        return None if "unknown" in shown else shown

    shown = until("the HPA's CPU reading", targets)
    assert shown.startswith("cpu: ") and shown.endswith("%/50%"), shown
    # The load generator's loop, bounded, without a terminal.
    cluster.kubectl(
        "run", "load-generator", "--image=busybox:1.28", "--restart=Never", "--",
        "/bin/sh", "-c", "for i in 1 2 3; do wget -q -O- http://php-apache; done",
    )  # fmt: skip
    until(
        "load-generator Succeeded",
        lambda: (
            (cluster.get("pod", "load-generator") or {}).get("status", {}).get("phase")
            == "Succeeded"
        ),
    )
    assert cluster.kubectl("logs", "load-generator") == "OK!OK!OK!"
    cluster.kubectl("delete", "pod", "load-generator", "--wait=false")
    cluster.kubectl("delete", "hpa", "php-apache")


def test_kubectl_autoscale(cluster: Cluster) -> None:
    """The walkthrough's own command: kubectl writes autoscaling/v1, served by conversion
    (k8semu/apiserver/rest/versions.py); the HPA is the same object at v2."""
    cluster.kubectl("apply", "-f", "-", stdin=PHP_APACHE)
    try:
        cluster.kubectl("rollout", "status", "deploy/php-apache", "--timeout=85s")
        out = cluster.kubectl("autoscale", "deployment", "php-apache", "--cpu-percent=50",
                              "--min=1", "--max=10")  # fmt: skip
        assert "horizontalpodautoscaler.autoscaling/php-apache autoscaled" in out, out
        spec = cluster.get("hpa", "php-apache")["spec"]
        assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 10)
        [metric] = spec["metrics"]
        assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 50}

        def reading() -> str | None:
            row = cluster.kubectl("get", "hpa", "php-apache").split("\n")[1]
            return None if "unknown" in row else row

        assert "%/50%" in until("the HPA's CPU reading", reading)
    finally:
        cluster.run("delete", "hpa", "php-apache")
        cluster.run("delete", "-f", "-", stdin=PHP_APACHE)

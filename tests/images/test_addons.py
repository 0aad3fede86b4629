"""The DNS add-on manifest loads as Kubernetes objects with the agreed names and addresses."""

from __future__ import annotations

import pytest

from k8semu import addons
from k8semu.api.manifest import load_all
from k8semu.images import resolve
from k8semu.pb.api.v1 import apps_pb2, core_pb2


def test_dns_addon_is_a_coredns_deployment_and_the_kube_dns_service() -> None:
    assert "dns" in addons.available()
    objs = load_all(addons.load("dns"), source="dns.yaml")
    deploy = next(o for o in objs if isinstance(o, apps_pb2.Deployment))
    svc = next(o for o in objs if isinstance(o, core_pb2.Service))
    assert (deploy.metadata.name, deploy.metadata.namespace) == ("coredns", "kube-system")
    assert deploy.spec.replicas == 2
    container = deploy.spec.template.spec.containers[0]
    argv = resolve(container.image, list(container.command), list(container.args))
    assert argv is not None and "k8semu.images.dns" in argv
    assert "--kubernetes" in argv
    assert container.readiness_probe.http_get.path == "/ready"
    assert (svc.metadata.name, svc.metadata.namespace) == ("kube-dns", "kube-system")
    assert svc.spec.cluster_ip == addons.DNS_CLUSTER_IP
    assert {(p.name, p.port, p.protocol) for p in svc.spec.ports} == {
        ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"),
    }  # fmt: skip
    assert dict(svc.spec.selector) == dict(deploy.spec.template.metadata.labels)


def test_unknown_addon() -> None:
    with pytest.raises(KeyError):
        addons.load("nope")
    with pytest.raises(KeyError):
        addons.load("../cluster/default")

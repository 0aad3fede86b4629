"""Defaulting and validation as tables, through the registry rows (pure, no processes)."""

from __future__ import annotations

from typing import Any

import pytest

from k8semu.api import kinds, manifest
from k8semu.apiserver import registry
from k8semu.apiserver.allocation import DEFAULT_RANGES
from k8semu.apiserver.errors import Invalid
from k8semu.apiserver.registry.strategy import Strategy

REGISTRY = registry.build(DEFAULT_RANGES)

DEPLOY: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [{"name": "c", "image": "nginx", "ports": [{"containerPort": 80}]}]
            },
        },
    },
}
SERVICE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {"ports": [{"port": 80}]},
}
POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p", "namespace": "default"},
    "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 8080}]}]},
}


def _row(obj: Any) -> Strategy:
    return REGISTRY.strategy(kinds.for_message(obj))


def _defaulted(doc: dict[str, Any]) -> Any:
    obj = manifest.from_dict(doc)
    _row(obj).defaults(obj)
    return obj


def _get(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


@pytest.mark.parametrize(
    ("doc", "path", "want"),
    [
        (POD, "spec.restartPolicy", "Always"),
        (POD, "spec.terminationGracePeriodSeconds", 30),
        (POD, "spec.containers.0.ports.0.protocol", "TCP"),
        (SERVICE, "spec.type", "ClusterIP"),
        (SERVICE, "spec.sessionAffinity", "None"),
        (SERVICE, "spec.ports.0.protocol", "TCP"),
        (SERVICE, "spec.ports.0.targetPort", 80),
        (DEPLOY, "spec.replicas", 1),
        (DEPLOY, "spec.strategy.type", "RollingUpdate"),
        (DEPLOY, "spec.strategy.rollingUpdate.maxSurge", "25%"),
        (DEPLOY, "spec.strategy.rollingUpdate.maxUnavailable", "25%"),
        (DEPLOY, "spec.revisionHistoryLimit", 10),
        (DEPLOY, "spec.progressDeadlineSeconds", 600),
        (DEPLOY, "spec.template.spec.restartPolicy", "Always"),
    ],
)
def test_defaults(doc: dict[str, Any], path: str, want: object) -> None:
    assert _get(manifest.to_dict(_defaulted(doc)), path) == want


def test_defaults_keep_what_is_set() -> None:
    obj = _defaulted({**DEPLOY, "spec": {**DEPLOY["spec"], "replicas": 0}})
    assert manifest.to_dict(obj)["spec"]["replicas"] == 0


def _with(doc: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    copy = manifest.to_dict(manifest.from_dict(doc))
    parts = path.split(".")
    target: Any = copy
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target.setdefault(part, {})
    target[parts[-1]] = value
    return copy


@pytest.mark.parametrize(
    ("doc", "path", "value", "error"),
    [
        (POD, "metadata.name", "Bad_Name", "metadata.name: invalid value 'Bad_Name'"),
        (POD, "metadata.name", "a" * 254, "metadata.name: must be no more than 253"),
        (SERVICE, "metadata.name", "a.b", "metadata.name: invalid value 'a.b'"),
        (POD, "metadata.name", "", "metadata.name: Required value"),
        (POD, "metadata.labels", {"bad key!": "v"}, "metadata.labels[bad key!]"),
        (POD, "spec.containers", [], "spec.containers: Required value"),
        (POD, "spec.containers.0.image", "", "spec.containers[0].image: Required value"),
        (POD, "spec.restartPolicy", "Sometimes", "spec.restartPolicy: Unsupported value"),
        (DEPLOY, "spec.replicas", -1, "spec.replicas: must be >= 0"),
        (DEPLOY, "spec.selector", {"matchLabels": {"app": "x"}}, "spec.template.metadata.labels"),
        (SERVICE, "spec.type", "Weird", "spec.type: Unsupported value"),
        (SERVICE, "spec.ports.0.port", 70000, "spec.ports[0].port: must be between 1 and 65535"),
        (
            POD,
            "spec.containers.0.readinessProbe",
            {"periodSeconds": 1},
            "spec.containers[0].readinessProbe: Required value: must specify a handler type",
        ),
        (
            DEPLOY,
            "spec.template.spec.containers.0.livenessProbe",
            {"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}},
            "spec.template.spec.containers[0].livenessProbe: Forbidden: may not specify more",
        ),
        (
            POD,
            "spec.containers.0.lifecycle",
            {"preStop": {"sleep": {"seconds": 31}}},
            "spec.containers[0].lifecycle.preStop.sleep.seconds: Invalid value: 31: must be"
            " non-negative and less than terminationGracePeriodSeconds (30)",
        ),
        (
            POD,
            "spec.containers.0.lifecycle",
            {"postStart": {}},
            "spec.containers[0].lifecycle.postStart: Required value: must specify a handler",
        ),
    ],
)
def test_validation(doc: dict[str, Any], path: str, value: object, error: str) -> None:
    obj = _defaulted(_with(doc, path, value))
    kind = kinds.for_message(obj)
    with pytest.raises(Invalid) as err:
        _row(obj).validate_create(obj)
    assert error in err.value.message
    assert err.value.message.startswith(f'{kind.plural} "')


def test_valid_objects_pass_and_immutable_fields_on_update() -> None:
    for doc in (POD, SERVICE, DEPLOY):
        obj = _defaulted(doc)
        _row(obj).validate_create(obj)
    old = _defaulted(DEPLOY)
    new = _defaulted(
        _with(
            _with(DEPLOY, "spec.selector.matchLabels.app", "x"),
            "spec.template.metadata.labels.app",
            "x",
        )
    )
    with pytest.raises(Invalid) as err:
        _row(new).validate_for_update(new, old)
    assert "spec.selector: field is immutable" in err.value.message

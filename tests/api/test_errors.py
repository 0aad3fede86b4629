"""Every manifest error names the source, document, object and field path, as kubectl does."""

from __future__ import annotations

import pytest

from k8semu.api import errors, manifest

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  template:
    spec:
      containers:
      - name: web
        image: nginx
        {extra}
"""


def deployment(replicas: str = "1", extra: str = "") -> str:
    return DEPLOYMENT.format(replicas=replicas, extra=extra)


def load_error(text: str, source: str = "web.yaml") -> errors.ManifestError:
    with pytest.raises(errors.ManifestError) as info:
        manifest.load_all(text, source=source)
    return info.value


def test_unknown_field_names_the_full_path() -> None:
    err = load_error(deployment(extra="imagePullPolicyy: Always"))
    assert type(err) is errors.UnknownFieldError
    assert str(err) == (
        'web.yaml: document 1: Deployment "web": '
        "spec.template.spec.containers[0].imagePullPolicyy: unknown field"
    )
    assert (err.source, err.document, err.kind, err.name) == ("web.yaml", 1, "Deployment", "web")
    assert err.path == "spec.template.spec.containers[0].imagePullPolicyy"
    assert err.message == "unknown field"


def test_snake_case_proto_names_are_unknown_fields() -> None:
    # json_format would accept the proto name too; manifests must use the Kubernetes name.
    err = load_error(deployment(extra="image_pull_policy: Always"))
    assert err.path == "spec.template.spec.containers[0].image_pull_policy"


def test_wrong_type_names_the_path_and_the_value() -> None:
    err = load_error(deployment(replicas="three"))
    assert type(err) is errors.FieldTypeError
    assert str(err) == (
        'web.yaml: document 1: Deployment "web": spec.replicas: expected integer, got "three"'
    )


@pytest.mark.parametrize(
    ("extra", "path", "message"),
    [
        ("ports: 80", "ports", "expected array, got 80"),
        ("ports: [80]", "ports[0]", "expected object, got 80"),
        ("ports: [{containerPort: true}]", "ports[0].containerPort", "expected integer, got true"),
        ("ports: [{containerPort: 1.5}]", "ports[0].containerPort", "expected integer, got 1.5"),
        ("ports: [{name: 8080}]", "ports[0].name", "expected string, got 8080"),
        ("command: sleep", "command", 'expected array, got "sleep"'),
        ("env: [{name: A, value: 8080}]", "env[0].value", "expected string, got 8080"),
        (
            "readinessProbe: {httpGet: {port: true}}",
            "readinessProbe.httpGet.port",
            "expected integer or string, got true",
        ),
        (
            "resources: {limits: {cpu: [1]}}",
            "resources.limits[cpu]",
            "expected quantity string, got array",
        ),
    ],
)
def test_field_type_errors(extra: str, path: str, message: str) -> None:
    err = load_error(deployment(extra=extra))
    assert type(err) is errors.FieldTypeError
    assert err.path == "spec.template.spec.containers[0]." + path
    assert err.message == message


@pytest.mark.parametrize(
    ("extra", "path", "message"),
    [
        (
            "resources: {limits: {cpu: 12Qi}}",
            "resources.limits[cpu]",
            'invalid quantity "12Qi": must be a number with an optional suffix '
            "(m, k, M, G, Ki, Mi, Gi, e3, ...)",
        ),
        (
            "ports: [{containerPort: 4294967296}]",
            "ports[0].containerPort",
            "4294967296 is out of range [-2147483648, 2147483647]",
        ),
        (
            "livenessProbe: {tcpSocket: {port: 2147483648}}",
            "livenessProbe.tcpSocket.port",
            "2147483648 is out of range [-2147483648, 2147483647]",
        ),
    ],
)
def test_invalid_values(extra: str, path: str, message: str) -> None:
    err = load_error(deployment(extra=extra))
    assert type(err) is errors.InvalidValueError
    assert err.path == "spec.template.spec.containers[0]." + path
    assert err.message == message


def test_invalid_time_and_base64() -> None:
    err = load_error(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s, creationTimestamp: yesterday}\n"
    )
    assert str(err) == (
        'web.yaml: document 1: Secret "s": metadata.creationTimestamp: '
        'invalid time "yesterday" (want RFC 3339, "2024-01-01T00:00:00Z")'
    )
    err = load_error("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {key: not*base64}\n")
    assert type(err) is errors.InvalidValueError
    assert str(err) == 'web.yaml: document 1: Secret "s": data[key]: illegal base64 data'


def test_map_values_must_be_strings() -> None:
    err = load_error(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: n, labels: {version: 1.0}}\n"
    )
    assert str(err) == (
        'web.yaml: document 1: Namespace "n": metadata.labels[version]: expected string, got 1.0'
    )


def test_unknown_kind_names_document_and_source() -> None:
    text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n---\n" + (
        "apiVersion: apps/v1\nkind: Deploymnt\nmetadata: {name: web}\n"
    )
    err = load_error(text, source="app.yaml")
    assert type(err) is errors.ManifestKindError
    assert (
        str(err)
        == 'app.yaml: document 3: Deploymnt "web": no kind "Deploymnt" in apiVersion "apps/v1"'
    )


def test_kind_in_the_wrong_group_gets_a_hint() -> None:
    err = load_error("apiVersion: v1\nkind: Deployment\nmetadata: {name: web}\n")
    assert str(err) == (
        'web.yaml: document 1: Deployment "web": no kind "Deployment" in apiVersion "v1" '
        '(kind Deployment is served by apiVersion "apps/v1")'
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind: Pod\nmetadata: {name: p}\n", 'Pod "p": apiVersion: missing (every object needs'),
        ("apiVersion: v1\n", "kind: missing (every object needs apiVersion and kind)"),
        ("apiVersion: 1\nkind: Pod\n", "Pod: apiVersion: expected string, got 1"),
    ],
)
def test_missing_or_bad_type_meta(text: str, expected: str) -> None:
    err = load_error(text)
    assert type(err) is errors.ManifestKindError
    assert str(err).startswith("web.yaml: document 1: " + expected)


def test_document_that_is_not_a_mapping() -> None:
    err = load_error("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n- a\n- b\n")
    assert type(err) is errors.ManifestSyntaxError
    assert str(err) == "web.yaml: document 2: expected an object (a mapping), got array"


def test_yaml_syntax_error_has_line_and_column() -> None:
    err = load_error("apiVersion: v1\nkind: Namespace\nmetadata: {name: a\n")
    assert type(err) is errors.ManifestSyntaxError
    assert str(err).startswith("web.yaml: document 1: invalid YAML: line 4, column 1: ")
    assert isinstance(err.__cause__, Exception)


def test_duplicate_keys_are_rejected() -> None:
    err = load_error("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  name: b\n")
    assert type(err) is errors.ManifestSyntaxError
    assert str(err) == "web.yaml: document 1: line 5: duplicate key 'name'"


def test_from_dict_uses_its_own_context() -> None:
    with pytest.raises(errors.FieldTypeError) as info:
        manifest.from_dict({"apiVersion": "v1", "kind": "Namespace", "metadata": []})
    assert str(info.value) == "<object>: Namespace: metadata: expected object, got array"


def test_hierarchy() -> None:
    for cls in (
        errors.ManifestSyntaxError,
        errors.ManifestKindError,
        errors.UnknownFieldError,
        errors.FieldTypeError,
        errors.InvalidValueError,
    ):
        assert issubclass(cls, errors.ManifestError)
    assert issubclass(errors.ManifestError, errors.APIError)
    assert issubclass(errors.UnknownKindError, errors.APIError)
    assert issubclass(errors.QuantityError, errors.APIError)
    assert issubclass(errors.QuantityError, ValueError)

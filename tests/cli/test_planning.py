"""Pure parts of the CLI: kind resolution, argument forms, apply planning, kubeconfig."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from k8semu.api import manifest
from k8semu.api.errors import UnknownFieldError
from k8semu.cli import _apply, _kubeconfig, kubectl
from k8semu.cli._resources import (
    UsageError,
    load_manifests,
    parse_map_edits,
    parse_selections,
    resolve_kind,
    split_objects_and_edits,
)
from k8semu.cli.verbs import VERBS
from k8semu.cli.verbs._shared import format_error, merge_patch
from k8semu.cli.verbs.rollout import rollout_message
from k8semu.pb.api.v1 import apps_pb2

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: nginx, image: "nginx:1.25", ports: [{containerPort: 80}]}]
"""


def test_every_verb_is_one_row_with_a_parser_and_a_handler() -> None:
    for name, verb in VERBS.items():
        assert verb.name == name
        assert kubectl.parser(verb).prog == f"k8semu {name}"
        assert callable(kubectl.handler(verb))


def test_the_command_help_does_not_import_the_client() -> None:
    """`k8semu store` builds the help listing the verbs; that must stay light."""
    code = (
        "import sys; import k8semu.cli.main as m; "
        "assert 'get' in m.VERBS; "
        "heavy = [n for n in ('k8semu.client', 'grpc') if n in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("text", "plural"),
    [
        ("po", "pods"), ("pod", "pods"), ("pods", "pods"), ("Pod", "pods"),
        ("deploy", "deployments"), ("deployments.apps", "deployments"),
        ("svc", "services"), ("no", "nodes"), ("ns", "namespaces"), ("rs", "replicasets"),
        ("ep", "endpoints"), ("hpa", "horizontalpodautoscalers"), ("cm", "configmaps"),
    ],
)  # fmt: skip
def test_kind_names_as_kubectl_accepts_them(text: str, plural: str) -> None:
    assert resolve_kind(text).plural == plural


def test_unknown_kind_and_binding() -> None:
    with pytest.raises(UsageError, match='doesn\'t have a resource type "foo"'):
        resolve_kind("foo")
    with pytest.raises(UsageError):
        resolve_kind("bindings")


def test_selection_forms() -> None:
    [sel] = parse_selections(["po", "a", "b", "a"], verb="get")
    assert (sel.kind.plural, sel.names) == ("pods", ["a", "b"])
    sels = parse_selections(["deploy/web", "svc/web", "deploy/api"], verb="get")
    assert [(s.kind.plural, s.names) for s in sels] == [
        ("deployments", ["web", "api"]),
        ("services", ["web"]),
    ]
    assert [s.kind.plural for s in parse_selections(["pods,svc"], verb="get")] == [
        "pods",
        "services",
    ]
    # kubectl's `all` category, in kubectl's order (the REST discovery lists the same kinds).
    assert [s.kind.plural for s in parse_selections(["all"], verb="get")] == [
        "pods",
        "services",
        "daemonsets",
        "deployments",
        "replicasets",
        "statefulsets",
        "horizontalpodautoscalers",
        "cronjobs",
        "jobs",
    ]
    with pytest.raises(UsageError, match="You must specify the type of resource to get"):
        parse_selections([], verb="get")
    with pytest.raises(UsageError, match="resource/name form"):
        parse_selections(["pods", "svc/web"], verb="get")


def test_label_edits() -> None:
    words, edits = split_objects_and_edits(["deploy", "web", "a=b", "c-"])
    assert words == ["deploy", "web"]
    edit = parse_map_edits(edits, what="label")
    assert (edit.set, edit.remove) == ({"a": "b"}, ["c"])
    with pytest.raises(UsageError, match="both modify and remove"):
        parse_map_edits(["a=b", "a-"], what="label")
    with pytest.raises(UsageError, match="at least one label"):
        parse_map_edits([], what="label")


def test_load_manifests_dirs_and_errors(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.yaml").write_text(DEPLOYMENT)
    (tmp_path / "sub" / "b.yml").write_text(DEPLOYMENT.replace("name: web,", "name: api,"))
    (tmp_path / "notes.txt").write_text("not a manifest")
    assert len(load_manifests([str(tmp_path)], recursive=False)) == 1
    assert len(load_manifests([str(tmp_path)], recursive=True)) == 2
    with pytest.raises(UsageError, match="does not exist"):
        load_manifests([str(tmp_path / "missing.yaml")], recursive=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEPLOYMENT + "---\n" + DEPLOYMENT.replace("replicas: 2", "replicaz: 2"))
    with pytest.raises(UnknownFieldError, match=r"document 2: Deployment \"web\": spec.replicaz"):
        load_manifests([str(bad)], recursive=False)


def _live(text: str, **status: int) -> apps_pb2.Deployment:
    """`text` as the server would return it: server fields, defaults, a status."""
    obj = manifest.load(text, source="live")
    assert isinstance(obj, apps_pb2.Deployment)
    obj.metadata.uid = "u1"
    obj.metadata.resource_version = "7"
    obj.metadata.creation_timestamp.seconds = 1_700_000_000
    obj.spec.template.spec.containers[0].image_pull_policy = "IfNotPresent"
    obj.spec.revision_history_limit = 10
    for key, value in status.items():
        setattr(obj.status, key, value)
    return obj


def test_plan_create_sets_last_applied() -> None:
    plan = _apply.plan(manifest.load(DEPLOYMENT, source="f"), None)
    assert plan.action == "create"
    annotation = plan.obj.metadata.annotations[_apply.LAST_APPLIED]  # type: ignore[attr-defined]
    assert json.loads(annotation)["spec"]["replicas"] == 2


def test_plan_unchanged_keeps_server_and_defaulted_fields() -> None:
    created = _apply.plan(manifest.load(DEPLOYMENT, source="f"), None).obj
    live = _live(manifest.dump(created), ready_replicas=2)
    plan = _apply.plan(manifest.load(DEPLOYMENT, source="f"), live)
    assert plan.action == "unchanged"


def test_plan_update_changes_only_what_the_file_says() -> None:
    created = _apply.plan(manifest.load(DEPLOYMENT, source="f"), None).obj
    live = _live(manifest.dump(created), ready_replicas=2)
    live.metadata.labels["added-by"] = "label-command"  # not ours: kept
    edited = DEPLOYMENT.replace("nginx:1.25", "nginx:1.26").replace(", labels: {app: web}}", "}")
    plan = _apply.plan(manifest.load(edited, source="f"), live)
    assert plan.action == "update"
    obj = plan.obj
    assert isinstance(obj, apps_pb2.Deployment)
    container = obj.spec.template.spec.containers[0]
    assert container.image == "nginx:1.26"
    assert container.image_pull_policy == "IfNotPresent"  # defaulted by the server: kept
    assert obj.metadata.resource_version == "7"  # optimistic concurrency on update
    assert obj.metadata.uid == "u1"
    assert obj.spec.revision_history_limit == 10
    assert dict(obj.metadata.labels) == {"added-by": "label-command"}  # app removed: was applied
    assert obj.status.ready_replicas == 2


def test_merge_lists() -> None:
    live = [{"name": "a", "x": 1, "d": 9}, {"name": "b"}]
    assert _apply.merge_list(live, [{"name": "a", "x": 2}], []) == [{"name": "a", "x": 2, "d": 9}]
    assert _apply.merge_list([{"port": 80, "nodePort": 30000}], [{"port": 80}], []) == [
        {"port": 80, "nodePort": 30000}
    ]
    assert _apply.merge_list([1, 2], [3], [1, 2]) == [3]


def test_merge_patch_rfc7386() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}}
    patch = {"a": "z", "c": {"f": None}}
    assert merge_patch(target, patch) == {"a": "z", "c": {"d": "e"}}


def test_error_texts() -> None:
    from k8semu.client import ConnectFailed, Invalid, NotFound, OutcomeUnknown, Unavailable

    assert (
        format_error(NotFound('pods "x" not found'))
        == 'Error from server (NotFound): pods "x" not found'
    )
    assert format_error(Invalid('deployments "w": spec.replicas: must be >= 0')).startswith(
        "Error from server (Invalid): "
    )
    assert format_error(Invalid("labelSelector: bad")).startswith(
        "Error from server (BadRequest): "
    )
    assert format_error(Unavailable("no leader")).startswith(
        "Error from server (ServiceUnavailable): "
    )
    assert format_error(
        ConnectFailed("get pods via x: failed to connect to all addresses")
    ).startswith("Unable to connect to the server: ")
    assert format_error(OutcomeUnknown("patch deployments/default/web via x: ...")) == (
        "error: outcome unknown: patch deployments/default/web via x: ..."
    )


def test_rollout_messages() -> None:
    d = apps_pb2.Deployment()
    d.metadata.name = "web"
    d.metadata.generation = 2
    d.status.observed_generation = 1
    assert rollout_message(d) == (
        "Waiting for deployment spec update to be observed...",
        False,
    )
    d.status.observed_generation = 2
    d.spec.replicas = 3
    d.status.updated_replicas = 1
    assert "1 out of 3 new replicas have been updated" in rollout_message(d)[0]
    d.status.updated_replicas = d.status.replicas = d.status.available_replicas = 3
    assert rollout_message(d) == ('deployment "web" successfully rolled out', True)


def test_kubeconfig(tmp_path: Path) -> None:
    empty: dict[str, str] = {}
    target = _kubeconfig.resolve(environ=empty, kubeconfig=None)
    assert target.servers == ("127.0.0.1:6443",) or target.context  # no file in a test HOME
    config = tmp_path / "config"
    config.write_text(
        "current-context: two\n"
        "contexts:\n"
        "- {name: one, servers: [127.0.0.1:1], namespace: a}\n"
        "- {name: two, servers: ['127.0.0.1:2', 'http://127.0.0.1:3'], namespace: b}\n"
    )
    env = {_kubeconfig.ENV_VAR: str(config)}
    assert _kubeconfig.resolve(environ=env) == _kubeconfig.Target(
        ("127.0.0.1:2", "127.0.0.1:3"), "b", "two"
    )
    one = _kubeconfig.resolve(environ=env, context="one", namespace="n")
    assert (one.servers, one.namespace) == (("127.0.0.1:1",), "n")
    assert _kubeconfig.resolve(environ=env, server="h:9,h:10").servers == ("h:9", "h:10")
    with pytest.raises(_kubeconfig.ConfigError, match='context "three" not found'):
        _kubeconfig.resolve(environ=env, context="three")
    with pytest.raises(_kubeconfig.ConfigError, match="expected HOST:PORT"):
        _kubeconfig.resolve(environ=env, server="nohost")
    with pytest.raises(_kubeconfig.ConfigError, match="no such file"):
        _kubeconfig.resolve(kubeconfig=str(tmp_path / "missing"), environ=empty)

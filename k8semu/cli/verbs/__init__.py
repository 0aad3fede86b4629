"""The kubectl-like verbs of `k8semu`, one declaration each: name, help, arguments, handler.

    VERBS["get"].help        # "Display one or many objects."
    VERBS["get"].handler     # "read:cmd_get", k8semu.cli.verbs.read.cmd_get

Light on purpose: `k8semu --help` lists the verbs from this table without importing the
client or grpc (so `k8semu store` starts fast); a verb's handler module (`read`, `write`,
`generate`, `rollout`, `node`, grouped as kubectl groups its commands) is imported only when
the verb runs, by `k8semu.cli.kubectl`. Adding a verb is one row here and its handler in a
group module.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from k8semu import durations

Arguments = Callable[[argparse.ArgumentParser], None]
"""Adds a verb's own arguments (the connection flags are common to every verb)."""


@dataclass(frozen=True, kw_only=True)
class Verb:
    """One verb. `handler` is "module:function" in this package: an async function of the
    parsed arguments and the resolved target (kubeconfig), raising on failure."""

    name: str
    help: str
    arguments: Arguments
    handler: str


def _files(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        default=[],
        required=required,
        help="a manifest file, a directory of them, or - for stdin (repeatable)",
    )
    p.add_argument("-R", "--recursive", action="store_true", help="descend into directories")


def _resources(p: argparse.ArgumentParser, nargs: str, metavar: str) -> None:
    p.add_argument("resources", nargs=nargs, metavar=metavar)


_MANY = "KIND [NAME...] | KIND/NAME..."
_ONE = "KIND NAME | KIND/NAME"


def _get(p: argparse.ArgumentParser) -> None:
    _resources(p, "*", _MANY)
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("-l", "--selector", default="", help="label selector")
    p.add_argument("--field-selector", default="")
    p.add_argument("-o", "--output", choices=["wide", "yaml", "json", "name"])
    p.add_argument("-w", "--watch", action="store_true", help="then watch for changes")
    p.add_argument("--show-labels", action="store_true")
    p.add_argument("--no-headers", action="store_true")
    p.add_argument(
        "--show-managed-fields",
        action="store_true",
        help="keep metadata.managedFields in -o yaml|json (left out by default, as kubectl)",
    )


def _describe(p: argparse.ArgumentParser) -> None:
    _resources(p, "*", _MANY)
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("-l", "--selector", default="")


def _delete(p: argparse.ArgumentParser) -> None:
    _resources(p, "*", _MANY)
    _files(p, required=False)
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("-l", "--selector", default="")
    p.add_argument("--field-selector", default="")
    p.add_argument("--all", action="store_true", help="every object of the kind")
    p.add_argument("--grace-period", type=int, default=-1, help="seconds; -1: the default")
    p.add_argument("--now", action="store_true", help="same as --grace-period=1")
    p.add_argument(
        "--cascade",
        default="background",
        choices=["background", "foreground", "orphan", "true", "false"],
    )
    p.add_argument("--ignore-not-found", action="store_true")


def _patch(p: argparse.ArgumentParser) -> None:
    _resources(p, "+", _ONE)
    p.add_argument("-p", "--patch", required=True, help="the patch, JSON (or YAML)")
    p.add_argument(
        "--type",
        default="merge",
        choices=["merge", "json", "strategic"],
        help="merge: JSON merge patch (RFC 7386, the default); json: JSON patch (RFC 6902, a"
        " list of operations); strategic: Kubernetes' strategic merge patch (lists such as"
        " containers merge by their key)",
    )
    p.add_argument("--subresource", choices=["status"])


def _scale(p: argparse.ArgumentParser) -> None:
    _resources(p, "+", "KIND NAME... | KIND/NAME...")
    p.add_argument("--replicas", type=int, required=True)
    p.add_argument("--current-replicas", type=int, default=-1, help="precondition")


def _edits(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs="+", metavar="KIND NAME KEY=VAL... KEY-...")
    p.add_argument("--overwrite", action="store_true", help="allow replacing values")


def _rollout(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["status", "restart", "history", "undo"])
    _resources(p, "+", _ONE)
    p.add_argument(
        "--timeout",
        type=durations.seconds_flag,
        default=0,
        help="status: how long to wait (30s, 5m; 0: forever)",
    )
    p.add_argument("--revision", type=int, default=0, help="history: show this revision's template")
    p.add_argument(
        "--to-revision", type=int, default=0, help="undo: the revision (0: the previous)"
    )


def _run(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", metavar="NAME")
    p.add_argument("args", nargs="*", metavar="-- COMMAND ARGS", help="the container's args "
                   "(its command with --command)")  # fmt: skip
    p.add_argument("--image", required=True, help="the container image")
    p.add_argument("--restart", default="Always", help="Always (default), OnFailure, Never")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE (repeatable)")
    p.add_argument("--port", type=int, default=0, help="the port the container exposes")
    p.add_argument("-l", "--labels", default="", help="KEY=VALUE,... (default run=NAME)")
    p.add_argument("--command", action="store_true", help="the args after -- are the command")
    p.add_argument("-i", "--stdin", action="store_true",
                   help="stay attached: show the output (stdin is not forwarded)")  # fmt: skip
    p.add_argument("-t", "--tty", action="store_true", help="as -i")
    p.add_argument("--attach", action="store_true", help="as -i")
    p.add_argument("--rm", action="store_true", help="delete the pod when the output ends")
    p.add_argument("--overrides", default="", help="a JSON merge patch over the generated Pod")
    p.add_argument("--pod-running-timeout", type=durations.seconds_flag, default=60.0,
                   help="how long to wait for the pod to start with -i (1m)")  # fmt: skip


def _autoscale(p: argparse.ArgumentParser) -> None:
    _resources(p, "+", "KIND NAME | KIND/NAME")
    p.add_argument("--max", type=int, default=-1, help="upper limit of replicas (required)")
    p.add_argument("--min", type=int, default=-1, help="lower limit of replicas (default 1)")
    p.add_argument("--cpu-percent", type=int, default=-1,
                   help="target average CPU utilization (%% of requests); default 80")  # fmt: skip
    p.add_argument("--name", dest="hpa_name", default="", help="the HPA's name (default: NAME)")


def _top(p: argparse.ArgumentParser) -> None:
    p.add_argument("resource", metavar="nodes|pods", help="node (no, nodes) or pod (po, pods)")
    p.add_argument("name", nargs="?", default="", metavar="NAME")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("-l", "--selector", default="", help="label selector")
    p.add_argument("--containers", action="store_true", help="pods: one line per container")
    p.add_argument("--sort-by", default="", help="cpu or memory (largest first)")
    p.add_argument("--no-headers", action="store_true")


def _api_resources(p: argparse.ArgumentParser) -> None:
    p.add_argument("--namespaced", choices=["true", "false"])
    p.add_argument("-o", "--output", choices=["name", "wide"])


def _nodes(p: argparse.ArgumentParser) -> None:
    p.add_argument("nodes", nargs="+", metavar="NODE")


def _drain(p: argparse.ArgumentParser) -> None:
    _nodes(p)
    p.add_argument("--ignore-daemonsets", action="store_true", help="skip DaemonSet pods")
    p.add_argument("--force", action="store_true", help="also pods no controller owns")
    p.add_argument("--delete-emptydir-data", action="store_true", help="also pods with emptyDir")
    p.add_argument("--disable-eviction", action="store_true", help="delete, bypassing budgets")
    p.add_argument("--grace-period", type=int, default=-1, help="-1: each pod's own")
    p.add_argument("--timeout", type=durations.seconds_flag, default=0.0, help="0: no limit")
    p.add_argument("--pod-selector", default="", help="only pods with these labels")


def _version(p: argparse.ArgumentParser) -> None:
    p.add_argument("--client", action="store_true", help="client version only")


_TABLE = (
    Verb(
        name="apply",
        help="Create or update objects to match manifests (three-way merge).",
        arguments=_files,
        handler="write:cmd_apply",
    ),
    Verb(name="create", help="Create objects from manifests.", arguments=_files,
         handler="write:cmd_create"),
    Verb(name="get", help="Display one or many objects.", arguments=_get, handler="read:cmd_get"),
    Verb(name="describe", help="Show an object's details and events.", arguments=_describe,
         handler="read:cmd_describe"),
    Verb(name="delete", help="Delete objects by name, file or selector.", arguments=_delete,
         handler="write:cmd_delete"),
    Verb(name="patch", help="Update fields: a merge, json or strategic patch.", arguments=_patch,
         handler="write:cmd_patch"),
    Verb(name="scale", help="Set a Deployment's or ReplicaSet's replicas.", arguments=_scale,
         handler="write:cmd_scale"),
    Verb(name="autoscale", help="Create a HorizontalPodAutoscaler for a Deployment or "
         "ReplicaSet.", arguments=_autoscale, handler="generate:cmd_autoscale"),
    Verb(name="run", help="Create a Pod running one image.", arguments=_run,
         handler="generate:cmd_run"),
    Verb(name="label", help="Update the labels of objects.", arguments=_edits,
         handler="write:cmd_label"),
    Verb(name="annotate", help="Update the annotations of objects.", arguments=_edits,
         handler="write:cmd_annotate"),
    Verb(name="rollout", help="Manage the rollout of a Deployment.", arguments=_rollout,
         handler="rollout:cmd_rollout"),
    Verb(name="top", help="Display resource (CPU/memory) usage of nodes or pods.",
         arguments=_top, handler="top:cmd_top"),
    Verb(name="cordon", help="Mark nodes as unschedulable.", arguments=_nodes,
         handler="node:cmd_cordon"),
    Verb(name="uncordon", help="Mark nodes as schedulable.", arguments=_nodes,
         handler="node:cmd_uncordon"),
    Verb(name="drain", help="Cordon a node and evict its pods, honouring disruption "
         "budgets.", arguments=_drain, handler="node:cmd_drain"),
    Verb(name="api-resources", help="The resource types the server serves.",
         arguments=_api_resources, handler="read:cmd_api_resources"),
    Verb(name="version", help="Client version; is the server reachable?", arguments=_version,
         handler="read:cmd_version"),
)  # fmt: skip

VERBS: dict[str, Verb] = {v.name: v for v in _TABLE}

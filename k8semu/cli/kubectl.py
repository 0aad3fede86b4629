"""The kubectl-like verbs of `k8semu`: apply, create, get, describe, delete, patch, scale,
label, annotate, rollout, api-resources, version.

    k8semu apply -f app.yaml
    k8semu get pods -n web -o wide
    k8semu delete deploy/web --cascade=foreground

Each verb is one row of k8semu.cli.verbs.VERBS (name, help, arguments, handler); this module
runs one: the verb's parser (its arguments and the connection flags every verb takes), the
target from flags and kubeconfig, then its handler. Every verb reaches the cluster only
through `k8semu.client` (never the API server's modules). Errors print as kubectl prints them
and make the exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, cast

from k8semu import durations
from k8semu.api.errors import ManifestError
from k8semu.cli import _kubeconfig
from k8semu.cli._kubeconfig import ConfigError, Target
from k8semu.cli._resources import UsageError
from k8semu.cli.verbs import VERBS, Verb
from k8semu.cli.verbs._shared import Failed, err, format_error
from k8semu.client import ClientError

Handler = Callable[[argparse.Namespace, Target], Coroutine[Any, Any, None]]


def _connection(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    g.add_argument("-n", "--namespace", help="the namespace (default: the context's, or default)")
    g.add_argument("-s", "--server", help="API server(s): HOST:PORT[,HOST:PORT]")
    g.add_argument("--kubeconfig", help=f"config file (default: ${_kubeconfig.ENV_VAR} or "
                   f"{_kubeconfig.DEFAULT_PATH})")  # fmt: skip
    g.add_argument("--context", help="the context of the config file to use")
    g.add_argument(
        "--request-timeout",
        type=durations.seconds_flag,
        default=10.0,
        help="per request: 30s, 1m; a bare number is seconds (default 10s)",
    )


def parser(verb: Verb) -> argparse.ArgumentParser:
    """The connection flags every verb takes, then the verb's own arguments."""
    p = argparse.ArgumentParser(prog=f"k8semu {verb.name}", description=verb.help)
    _connection(p)
    verb.arguments(p)
    return p


def handler(verb: Verb) -> Handler:
    """The verb's handler, importing its group module now (not at `k8semu --help`)."""
    module, _, function = verb.handler.partition(":")
    return cast(Handler, getattr(importlib.import_module(f"k8semu.cli.verbs.{module}"), function))


def main(argv: Sequence[str]) -> int:
    """Run one verb: `argv` is `[verb, args...]`. Returns the exit code."""
    verb = VERBS[argv[0]]
    ns = parser(verb).parse_intermixed_args(list(argv[1:]))
    try:
        target = _kubeconfig.resolve(
            server=ns.server,
            namespace=ns.namespace,
            kubeconfig=ns.kubeconfig,
            context=ns.context,
        )
        asyncio.run(handler(verb)(ns, target))
    except Failed:
        return 1
    except (UsageError, ConfigError, ManifestError, ClientError) as exc:
        err(format_error(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    return 0

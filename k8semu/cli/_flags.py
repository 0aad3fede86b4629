"""The flag groups the component commands share, so a flag reads and fails the same way in
every component: which API servers to use, the node a component runs for, where its health
service listens, leader election (kube-scheduler's and kube-controller-manager's names) and
logging. Each `add_*` adds a group to a parser; its reader turns the parsed values into what
the component takes, with a ValueError naming the flag."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from k8semu import durations
from k8semu import log as logging_setup
from k8semu.cli import _kubeconfig

if TYPE_CHECKING:
    from k8semu.client import LeaderElectionConfig
    from k8semu.transport import ServerTLS


def flag_names(fields: Iterable[str], prefix: str = "--") -> dict[str, str]:
    """The flag of each config field: node_monitor_period -> --node-monitor-period."""
    return {name: prefix + name.replace("_", "-") for name in fields}


def named_as_flags(exc: ValueError, flags: Mapping[str, str]) -> ValueError:
    """A config's ValueError ("lease_duration: must be greater than renew_deadline") with
    its fields named as the flags the user typed (`flags`: field -> flag)."""
    text = str(exc)
    for name in sorted(flags, key=len, reverse=True):  # a longer name may contain a shorter
        text = text.replace(name, flags[name])
    return ValueError(text)


# ---- durations given as text, checked when the config is built -------------------------------


def seconds(text: str, flag: str, *, positive: bool = False) -> float:
    """A duration flag (500ms, 2s, 1m30s; a bare 0 as in Go) in seconds; ValueError naming
    `flag` (also for 0 when `positive`)."""
    if text.strip() == "0":
        ms = 0
    else:
        try:
            ms = durations.parse_ms(text)
        except ValueError as exc:
            raise ValueError(f"{flag}: {exc}") from None
    if positive and ms <= 0:
        raise ValueError(f"{flag}: must be > 0")
    return ms / 1000


def add_duration(
    p: argparse.ArgumentParser, flag: str, default: float, help_text: str = ""
) -> None:
    """A duration flag checked by argparse (the one type, k8semu/durations.py), in seconds."""
    p.add_argument(flag, type=durations.seconds_flag, default=default, help=help_text or None)


def duration_text(value: float) -> str:
    """A default in seconds as the flag's text (2s, 500ms)."""
    return durations.format_ms(round(value * 1000))


# ---- the API servers a component talks to ----------------------------------------------------


def add_api_servers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--server", help="API servers, HOST:PORT[,HOST:PORT] (default 127.0.0.1:6443)")
    p.add_argument("--kubeconfig", help="k8semu config file naming the API servers")
    p.add_argument("--context", help="context in the kubeconfig")


def api_servers(ns: argparse.Namespace) -> tuple[str, ...]:
    """The API servers the flags name; ConfigError (a ValueError) naming what is wrong."""
    return api_target(ns).servers


def api_target(ns: argparse.Namespace) -> _kubeconfig.Target:
    """The API servers and the TLS credentials (`Target.tls()`) the flags name: the
    kubeconfig's, as `k8semu up` writes one per component."""
    return _kubeconfig.resolve(server=ns.server, kubeconfig=ns.kubeconfig, context=ns.context)


# ---- certificate files -----------------------------------------------------------------------


def pem_file(value: str, flag: str) -> Path | None:
    """A certificate or key flag's file (None when not given); ValueError naming the flag."""
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"{flag}: {value}: no such file")
    return path


def cert_and_key(ns: argparse.Namespace, cert_flag: str, key_flag: str) -> tuple[Path, Path] | None:
    """A certificate and its key from two flags: both or neither (None)."""
    cert = pem_file(getattr(ns, cert_flag.lstrip("-").replace("-", "_")), cert_flag)
    key = pem_file(getattr(ns, key_flag.lstrip("-").replace("-", "_")), key_flag)
    if (cert is None) != (key is None):
        raise ValueError(f"{cert_flag} and {key_flag}: give both or neither")
    return None if cert is None or key is None else (cert, key)


def add_serving_tls(p: argparse.ArgumentParser, what: str) -> None:
    """Kubernetes' serving flags (kubelet's, kube-scheduler's, kube-controller-manager's):
    TLS on `what`, clients must present a certificate of --client-ca-file. None given: plain
    text (components started by hand, tests, benchmarks)."""
    g = p.add_argument_group("serving TLS (Kubernetes' flags)")
    g.add_argument("--tls-cert-file", default="", help=f"certificate of {what}")
    g.add_argument("--tls-private-key-file", default="", help="its key")
    g.add_argument(
        "--client-ca-file",
        default="",
        help="CA of the client certificates every caller must present (CN: user, O: groups)",
    )


def serving_tls(ns: argparse.Namespace) -> ServerTLS | None:
    """The listener's TLS from `add_serving_tls`'s flags (or kube-apiserver's, the same
    names); ValueError naming the flag."""
    from k8semu.transport import ServerTLS  # gRPC is loaded only by commands that serve

    pair = cert_and_key(ns, "--tls-cert-file", "--tls-private-key-file")
    client_ca = pem_file(ns.client_ca_file, "--client-ca-file")
    if client_ca is not None and pair is None:
        raise ValueError("--client-ca-file: needs --tls-cert-file and --tls-private-key-file")
    if pair is None:
        return None
    return ServerTLS(cert_file=pair[0], key_file=pair[1], client_ca_file=client_ca)


# ---- the node a kubelet or proxy runs for ----------------------------------------------------


def add_node(p: argparse.ArgumentParser, *, ip_help: str) -> None:
    p.add_argument("--node-name", default="", help="this node's name (default: the host name)")
    p.add_argument("--node-ip", default="127.0.0.1", help=ip_help)


def add_listen_address(p: argparse.ArgumentParser, default: str, what: str) -> None:
    p.add_argument("--listen-address", default=default, help=f"HOST:PORT of {what}")


def add_metrics_address(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metrics-address",
        default="",
        help="HOST:PORT to serve Prometheus metrics on at /metrics over HTTP "
        "(port 0: any free port; default: none)",
    )


def metrics_address(ns: argparse.Namespace, flag: str = "--metrics-address") -> str:
    """The metrics listen address the flag gives ("" for none); AddressError naming it."""
    text: str = getattr(ns, flag.lstrip("-").replace("-", "_"))
    if not text:
        return ""
    from k8semu import metrics  # prometheus_client: only when the flag is used

    host, port = metrics.parse_address(text, flag=flag)
    return f"{host}:{port}"


# ---- leader election -------------------------------------------------------------------------

_ELECTION_FLAGS = flag_names(
    ("lease_duration", "renew_deadline", "retry_period"), "--leader-elect-"
)


def add_leader_election(
    p: argparse.ArgumentParser, defaults: LeaderElectionConfig, lease: str
) -> None:
    """`--leader-elect/--no-leader-elect` and the three durations; `lease` is what the
    component competes for, for the help text."""
    p.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"act only while holding the Lease {lease}",
    )
    for name, flag in _ELECTION_FLAGS.items():
        p.add_argument(flag, default=duration_text(getattr(defaults, name)))


def leader_election(ns: argparse.Namespace, defaults: LeaderElectionConfig) -> LeaderElectionConfig:
    """The timings the flags give (other fields as in `defaults`); ValueError naming a flag."""
    lease, renew, retry = (
        seconds(getattr(ns, f"leader_elect_{name}"), flag) for name, flag in _ELECTION_FLAGS.items()
    )
    try:
        return dataclasses.replace(
            defaults, lease_duration=lease, renew_deadline=renew, retry_period=retry
        )
    except ValueError as exc:
        raise named_as_flags(exc, _ELECTION_FLAGS) from None


# ---- the parser and logging -------------------------------------------------------------------


def component_parser(
    command: str, description: str, *, metrics: bool = True
) -> argparse.ArgumentParser:
    """The parser of `k8semu COMMAND`, with the logging flags every component takes and
    --metrics-address (unless `metrics` is False: the store has etcd's flag instead)."""
    p = argparse.ArgumentParser(prog=f"k8semu {command}", description=description)
    p.add_argument("--log-level", default="info")
    p.add_argument("--log-format", default="console", choices=["console", "json"])
    if metrics:
        add_metrics_address(p)
    return p


def configure_logging(ns: argparse.Namespace, component: str, node: str = "") -> None:
    """structlog for this process; ValueError naming --log-level when it is unknown."""
    logging_setup.configure(component, node=node, level=ns.log_level, fmt=ns.log_format)

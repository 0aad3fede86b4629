"""`k8semu store`: run one store replica, with etcd's flag names; and `store snapshot`.

    k8semu store --name s1 --data-dir DIR --listen-client-urls http://127.0.0.1:2379 \\
        --listen-peer-urls http://127.0.0.1:2380 --initial-cluster s1=http://127.0.0.1:2380,...
    k8semu store snapshot save FILE --endpoints 127.0.0.1:2379
    k8semu store snapshot restore FILE --data-dir DIR --name s1 --initial-cluster ...
    k8semu store replace NAME [--state-dir DIR]   (a replica of a running cluster whose data
                                                   is lost; see cli/store_replace.py)
    k8semu store scale --replicas N | remove NAME  (grow or shrink a running cluster's store;
                                                   see cli/store_scale.py)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from k8semu.cli import _flags, _serving
from k8semu.store import config as cfg
from k8semu.store.errors import StoreError
from k8semu.transport import ServerTLS


def _run_parser() -> argparse.ArgumentParser:
    p = _flags.component_parser(
        "store",
        "Run one replica of the store (etcd v3 API on the client URL, Raft on "
        "the peer URL). Subcommands: `k8semu store snapshot save|restore`, "
        "`k8semu store replace NAME`, `k8semu store scale --replicas N`, "
        "`k8semu store remove NAME`.",
        metrics=False,
    )
    p.add_argument("--name", default="default", help="this member's name in --initial-cluster")
    p.add_argument("--data-dir", help="data directory (default: ./NAME.k8semu-store)")
    p.add_argument("--listen-client-urls", default="http://127.0.0.1:2379")
    p.add_argument("--advertise-client-urls", default="", help="default: --listen-client-urls")
    p.add_argument("--listen-peer-urls", default="http://127.0.0.1:2380")
    p.add_argument("--initial-advertise-peer-urls", default="", help="accepted for etcd parity")
    p.add_argument(
        "--listen-metrics-urls",
        default="",
        help="http://HOST:PORT to serve Prometheus metrics on at /metrics (etcd's flag; "
        "port 0: any free port; default: none)",
    )
    p.add_argument(
        "--initial-cluster", default="", help="NAME=PEER_URL,...; default: NAME=--listen-peer-urls"
    )
    p.add_argument("--initial-cluster-token", default=cfg.DEFAULT_CLUSTER_TOKEN)
    p.add_argument("--initial-cluster-state", default="new", choices=["new", "existing"])
    p.add_argument("--heartbeat-interval", type=int, default=cfg.DEFAULT_HEARTBEAT_MS, help="ms")
    p.add_argument("--election-timeout", type=int, default=cfg.DEFAULT_ELECTION_MS, help="ms")
    p.add_argument("--snapshot-count", type=int, default=cfg.DEFAULT_SNAPSHOT_COUNT)
    p.add_argument("--max-request-bytes", type=int, default=cfg.DEFAULT_MAX_REQUEST_BYTES)
    p.add_argument(
        "--quota-backend-bytes",
        type=int,
        default=0,
        help="raise a NOSPACE alarm when kv.db reaches this many bytes; 0 = the default "
        f"({cfg.DEFAULT_QUOTA_BACKEND_BYTES}, etcd's), negative = no quota",
    )
    p.add_argument(
        "--max-txn-ops",
        type=int,
        default=cfg.DEFAULT_MAX_TXN_OPS,
        help="operations allowed in one txn, nested txns included",
    )
    p.add_argument(
        "--auto-compaction-mode",
        default="periodic",
        choices=list(cfg.COMPACTION_MODES),
        help="periodic: keep a duration of history; revision: keep a number of revisions",
    )
    p.add_argument(
        "--auto-compaction-retention",
        default="0",
        help="periodic: a duration (5m, 1h) or a whole number of hours; revision: a number "
        "of revisions; 0 = no auto-compaction",
    )
    p.add_argument(
        "--experimental-watch-progress-notify-interval",
        default=_flags.duration_text(cfg.DEFAULT_PROGRESS_NOTIFY_S),
        help="how often idle watchers that asked for it get a progress notification",
    )
    _tls_flags(p)
    return p


def _tls_flags(p: argparse.ArgumentParser) -> None:
    """etcd's security flags, so etcd's clients and docs work as they are (no flag: plain)."""
    g = p.add_argument_group("security (etcd's flags)")
    for prefix, port, ca, auth in (
        ("", "client", "--trusted-ca-file", "--client-cert-auth"),
        ("peer-", "peer", "--peer-trusted-ca-file", "--peer-client-cert-auth"),
    ):
        g.add_argument(f"--{prefix}cert-file", default="", help=f"{port} port: its certificate")
        g.add_argument(f"--{prefix}key-file", default="", help=f"{port} port: its key")
        g.add_argument(ca, default="", help=f"{port} port: the CA of its clients' certificates")
        g.add_argument(
            auth, action="store_true", help=f"{port} port: refuse clients without one {ca} signed"
        )


def _server_tls(
    ns: argparse.Namespace, prefix: str, ca_flag: str, auth_flag: str
) -> ServerTLS | None:
    """The TLS of one port from its flags; None when no certificate is given."""
    cert, key = getattr(ns, f"{prefix}cert_file"), getattr(ns, f"{prefix}key_file")
    ca, auth = getattr(ns, ca_flag.lstrip("-").replace("-", "_")), getattr(ns, auth_flag)
    dash = prefix.replace("_", "-")
    if not cert and not key:
        if ca or auth:
            given = ca_flag if ca else "--" + auth_flag.replace("_", "-")
            raise cfg.ConfigError(f"--{dash}cert-file and --{dash}key-file: needed with {given}")
        return None
    if not (cert and key):
        raise cfg.ConfigError(f"--{dash}cert-file and --{dash}key-file: give both or neither")
    if auth and not ca:
        raise cfg.ConfigError(f"{ca_flag}: needed with --{auth_flag.replace('_', '-')}")
    for flag, value in ((f"--{dash}cert-file", cert), (f"--{dash}key-file", key), (ca_flag, ca)):
        if value and not Path(value).is_file():
            raise cfg.ConfigError(f"{flag}: {value}: no such file")
    return ServerTLS(
        cert_file=Path(cert),
        key_file=Path(key),
        client_ca_file=Path(ca) if ca else None,
        require_client_cert=auth,
    )


def _first_url(value: str, flag: str) -> str:
    urls = [u for u in value.split(",") if u.strip()]
    if len(urls) != 1:
        raise cfg.ConfigError(f"{flag}: expected exactly one URL, got {value!r}")
    from k8semu.transport import AddressError, parse_url

    try:
        return parse_url(urls[0], flag=flag)
    except AddressError as exc:
        raise cfg.ConfigError(str(exc)) from exc


def build_config(ns: argparse.Namespace) -> cfg.StoreConfig:
    listen_peer = _first_url(ns.listen_peer_urls, "--listen-peer-urls")
    initial = ns.initial_cluster or f"{ns.name}=http://{listen_peer}"
    advertise = tuple(u.strip() for u in ns.advertise_client_urls.split(",") if u.strip())
    return cfg.StoreConfig(
        name=ns.name,
        data_dir=Path(ns.data_dir or f"{ns.name}.k8semu-store"),
        listen_client=_first_url(ns.listen_client_urls, "--listen-client-urls"),
        listen_peer=listen_peer,
        members=cfg.parse_initial_cluster(initial),
        advertise_client=advertise,
        cluster_token=ns.initial_cluster_token,
        heartbeat_ms=ns.heartbeat_interval,
        election_ms=ns.election_timeout,
        snapshot_count=ns.snapshot_count,
        max_request_bytes=ns.max_request_bytes,
        quota_backend_bytes=_quota(ns.quota_backend_bytes),
        max_txn_ops=ns.max_txn_ops,
        auto_compaction=cfg.AutoCompaction.parse(
            ns.auto_compaction_mode, ns.auto_compaction_retention
        ),
        initial_cluster_state=ns.initial_cluster_state,
        progress_notify_s=_duration_s(
            ns.experimental_watch_progress_notify_interval,
            "--experimental-watch-progress-notify-interval",
        ),
        client_tls=_server_tls(ns, "", "--trusted-ca-file", "client_cert_auth"),
        peer_tls=_peer_tls(ns),
    )


def _peer_tls(ns: argparse.Namespace) -> ServerTLS | None:
    tls = _server_tls(ns, "peer_", "--peer-trusted-ca-file", "peer_client_cert_auth")
    if tls is not None and tls.client_ca_file is None:
        # The same file checks the peers this member dials; there is no system CA here.
        raise cfg.ConfigError("--peer-trusted-ca-file: needed with --peer-cert-file")
    return tls


def _quota(value: int) -> int:
    """etcd's --quota-backend-bytes: 0 is the default, a negative value turns it off."""
    if value == 0:
        return cfg.DEFAULT_QUOTA_BACKEND_BYTES
    return max(value, 0)


def _duration_s(text: str, flag: str) -> float:
    try:
        return _flags.seconds(text, flag, positive=True)
    except ValueError as exc:
        raise cfg.ConfigError(str(exc)) from None


def main(argv: Sequence[str]) -> int:
    if argv and argv[0] == "snapshot":
        from k8semu.cli import store_snapshot

        return store_snapshot.main(list(argv[1:]))
    if argv and argv[0] == "replace":
        from k8semu.cli import store_replace

        return store_replace.main(list(argv[1:]))
    if argv and argv[0] in ("scale", "remove"):
        from k8semu.cli import store_scale

        return store_scale.main(argv[0], list(argv[1:]))
    ns = _run_parser().parse_args(list(argv))
    try:
        config = build_config(ns)
        metrics = _flags.metrics_address(ns, METRICS_FLAG)
        _flags.configure_logging(ns, "store", node=ns.name)
    except ValueError as exc:  # ConfigError and AddressError are ValueErrors
        return _serving.usage_error("store", exc)
    return _serving.run("store", lambda: _serve(config, metrics), errors=(StoreError,))


METRICS_FLAG = "--listen-metrics-urls"


async def _serve(config: cfg.StoreConfig, metrics: str) -> None:
    from k8semu.store.server import StoreServer, tune_gc

    server = StoreServer(config)
    tune_gc()
    # Crash-only: a replica whose log or state machine failed must not keep serving.
    await _serving.serve(
        server,
        grace=_serving.STOP_GRACE,
        failure=server.wait_failed,
        metrics=metrics,
        metrics_flag=METRICS_FLAG,
    )

"""What one ``k8semu up`` (or ``k8semu join``) starts: the components of one host, in stages.

A config says what the whole cluster is; a plan says which processes *this* launch starts, with
their exact command lines, addresses, data directories and log files, grouped in dependency
stages (store -> API servers -> scheduler and controller manager -> kubelets and proxies). The
launcher starts a stage only when the one before it is healthy.

Names are stable, so ``k8semu logs``/``status``/``down`` find a component again::

    store-<member>                  one store replica (``k8semu store``, or ``etcd``)
    apiserver-<i>, scheduler-<i>, controller-manager-<i>   (as named in the config)
    kubelet-<node>, proxy-<node>    one worker node; kubelet-<pool> for a hollow-node pool

Pure: builds command lines from the config; it must not start processes, read the environment
or touch the network.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from k8semu import addons
from k8semu.cluster.certs import PKIPaths
from k8semu.cluster.config import (
    BackupsSpec,
    ClusterConfig,
    LauncherSpec,
    NetworkSpec,
    NodeSpec,
    StoreMemberSpec,
    TimingsSpec,
    format_duration,
)
from k8semu.cluster.config.autoscaling import HorizontalPodAutoscalerSpec
from k8semu.cluster.config.values import bracketed

__all__ = [
    "STAGES",
    "ComponentPlan",
    "NodeContext",
    "Plan",
    "apiserver_args",
    "controller_manager_args",
    "kubelet_argv",
    "leader_election_args",
    "plan_cluster",
    "plan_node",
    "proxy_argv",
    "scheduler_args",
    "store_flags",
]

#: Stage index -> what it holds, in start order; stopping goes the other way.
STAGES = ("store", "API servers", "schedulers and controller managers", "nodes")
STORE, API, CONTROL, NODES = range(4)

LOG_DIR = "logs"
STORE_DIR = "store"
NODES_DIR = "nodes"
#: The ``ports`` key of a component's Prometheus /metrics listener (`k8semu status` lists it).
METRICS = "metrics"
REST = "rest"  # an API server's REST API port (ComponentPlan.ports)


@dataclass(frozen=True, slots=True, kw_only=True)
class ComponentPlan:
    """One process to start.

    ``address`` is where its gRPC health service answers (for a store replica, its client
    URL, where ``Maintenance.Status`` answers too). ``command`` is the ``k8semu`` subcommand
    it needs ("" for a program outside k8semu, such as etcd). ``node_names`` are the Nodes a
    kubelet registers.
    """

    name: str
    kind: str
    host: str
    stage: int
    argv: tuple[str, ...]
    address: str
    ports: dict[str, str] = field(default_factory=dict)
    #: ports key -> the config field it came from, for "address in use" errors.
    origins: dict[str, str] = field(default_factory=dict)
    log_path: Path
    data_dir: Path
    command: str = ""
    node_names: tuple[str, ...] = ()
    #: False for a hollow-node pool's kubelet: it picks its own gRPC port (its Nodes' Ready is
    #: the check).
    health_check: bool = True
    #: The autoscaled node pool this process is part of ("" for the rest) and the pool
    #: slot (a Node name) whose kubelet or proxy it is.
    pool: str = ""
    pool_node: str = ""
    #: False for a pool slot beyond the pool's initial size: planned (so the supervisor can
    #: start it when the cluster autoscaler asks) but not started by ``up``.
    autostart: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """Everything one launch starts and how it knows they are ready.

    ``store_members`` are *all* the store's (name, client address), also those on other hosts:
    the leader check asks every one. ``store_external`` is an etcd someone else runs (checked,
    never started). ``skipped`` are (component, reason) left out because this install has no
    such command yet.
    """

    cluster: str
    host: str
    components: tuple[ComponentPlan, ...]
    api_servers: tuple[str, ...]
    #: The API servers' REST URLs (http://HOST:PORT), what kubectl's kubeconfig names.
    rest_servers: tuple[str, ...] = ()
    store_members: tuple[tuple[str, str], ...] = ()
    store_external: tuple[str, ...] = ()
    store_token: str = ""
    launcher: LauncherSpec = field(default_factory=LauncherSpec)
    backups: BackupsSpec = field(default_factory=BackupsSpec)
    skipped: tuple[tuple[str, str], ...] = ()
    #: (name, manifest) of the add-ons to apply once up; only on the host that runs the first
    #: API server (so a multi-host cluster applies them once).
    addons: tuple[tuple[str, str], ...] = ()
    #: Whether the store and API servers serve mutual TLS (certificates under pki/).
    tls: bool = False

    def stage(self, index: int) -> list[ComponentPlan]:
        return [c for c in self.components if c.stage == index]

    @property
    def node_names(self) -> tuple[str, ...]:
        """The Nodes that must turn Ready before this launch is up."""
        return tuple(n for c in self.components if c.autostart for n in c.node_names)


def _k8semu(python: str, command: str, *args: str) -> tuple[str, ...]:
    return (python, "-m", "k8semu", command, *args)


def plan_cluster(
    config: ClusterConfig,
    state_dir: Path,
    *,
    host: str | None = None,
    python: str,
    commands: Collection[str],
    store_token: str | None = None,
) -> Plan:
    """The components of ``host`` (every host's when None: a one-machine run of the whole
    config) with their state under ``state_dir``. ``commands`` are the ``k8semu`` subcommands
    this install has; a component whose command is missing is left out and listed in
    ``skipped``. ``store_token`` replaces the config's store token (a restored store is a new
    cluster with a token of its own, which its state dir remembers)."""
    if host is not None:
        config.host(host)  # an unknown host is an error naming --host
    here = (lambda h: True) if host is None else (lambda h: h == host)
    token = store_token or config.store_token
    planned = [
        *_plan_store(config, state_dir, python, token),
        *_plan_control_plane(config, state_dir, python),
        *_plan_nodes(config, state_dir, python),
    ]
    if config.security.tls:
        paths = PKIPaths(state_dir)
        external = config.store.external
        planned = [secured(c, paths, store=not external) for c in planned]
    ours = [c for c in planned if here(c.host)]
    kept = tuple(c for c in ours if not c.command or c.command in commands)
    skipped = tuple(
        (c.name, f"this install has no `k8semu {c.command}` command yet")
        for c in ours
        if c.command and c.command not in commands
    )
    store = config.store
    return Plan(
        cluster=config.name,
        host=host or "",
        components=kept,
        api_servers=config.api_server_addresses,
        rest_servers=config.rest_urls,
        store_members=tuple((m.name, m.client_address) for m in store.members),
        store_external=store.endpoints,
        store_token=token,
        launcher=config.launcher,
        backups=config.backups,
        skipped=skipped,
        addons=_addons(config, here),
        tls=config.security.tls,
    )


#: The user (certificate and kubeconfig under pki/) of each kind that reaches the API servers.
_TLS_USERS = {"scheduler": "scheduler", "controller-manager": "controller-manager"}
_NO_TLS_URL_FLAGS = frozenset({"--listen-metrics-urls"})  # metrics stay plain HTTP


def secured(c: ComponentPlan, paths: PKIPaths, *, store: bool = True) -> ComponentPlan:
    """`c` with the TLS flags of its kind: a store replica (etcd's flags; its URLs https),
    an API server (kube-apiserver's, to the kubelets too; `store`: also to the cluster's own
    store), the others a kubeconfig with their API servers and certificate, and their own
    listener's (the kubelet's --tls-cert-file, --tls-private-key-file, --client-ca-file)."""
    argv = list(c.argv)
    if c.kind in ("store", "etcd"):
        for i, arg in enumerate(argv):
            if i and argv[i - 1] not in _NO_TLS_URL_FLAGS and "http://" in arg:
                argv[i] = arg.replace("http://", "https://")
        argv += paths.store_flags(c.name.removeprefix("store-"))
    elif c.kind == "apiserver":
        argv += paths.apiserver_flags(store=store)
    elif c.kind in ("kubelet", "proxy"):
        argv += paths.kubeconfig_flags(c.name) + paths.serving_flags(c.name)
    elif c.kind in _TLS_USERS:
        user = _TLS_USERS[c.kind]
        argv += paths.kubeconfig_flags(user) + paths.serving_flags(user)
    return dataclasses.replace(c, argv=tuple(argv))


def _plan_store(
    config: ClusterConfig, state_dir: Path, python: str, token: str
) -> list[ComponentPlan]:
    """One replica per store member (none for an external etcd): ``k8semu store``, or etcd
    with the same flags."""
    store = config.store
    if store.external:
        return []
    out = []
    for i, m in enumerate(store.members):
        data = state_dir / STORE_DIR / m.name
        flags = store_flags(config, m, data, token)
        if store.backend == "etcd":
            argv: tuple[str, ...] = (
                store.etcd_binary, *flags,
                "--initial-cluster-state", "new",
                "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
            )  # fmt: skip
            kind, command = "etcd", ""
        else:
            argv = _k8semu(python, "store", *flags)
            kind, command = "store", "store"
        out.append(
            ComponentPlan(
                name=f"store-{m.name}",
                kind=kind,
                host=m.host,
                stage=STORE,
                argv=argv,
                address=m.client_address,
                ports={
                    "client": m.client_address,
                    "peer": m.peer_address,
                    **({METRICS: m.metrics_address} if m.metrics_url else {}),
                },
                origins={
                    "client": f"store.members[{i}].clientURL",
                    "peer": f"store.members[{i}].peerURL",
                    METRICS: f"store.members[{i}].metricsURL",
                },
                log_path=state_dir / LOG_DIR / f"store-{m.name}.log",
                data_dir=data,
                command=command,
            )
        )
    return out


def store_flags(
    config: ClusterConfig, member: StoreMemberSpec, data_dir: Path, token: str | None = None
) -> tuple[str, ...]:
    """The etcd flags (etcd's names and units) that both ``k8semu store`` and etcd take for
    ``member`` of ``config``'s store (``token``: the store token, default the config's)."""
    store = config.store
    return (
        "--name", member.name,
        "--data-dir", str(data_dir),
        "--listen-client-urls", member.client_url,
        "--advertise-client-urls", member.client_url,
        "--listen-peer-urls", member.peer_url,
        "--initial-advertise-peer-urls", member.peer_url,
        "--initial-cluster", ",".join(f"{m.name}={m.peer_url}" for m in store.members),
        "--initial-cluster-token", token or config.store_token,
        "--heartbeat-interval", str(store.heartbeat_ms),
        "--election-timeout", str(store.election_ms),
        "--snapshot-count", str(store.snapshot_count),
        "--auto-compaction-mode", store.auto_compaction_mode,
        "--auto-compaction-retention", store.auto_compaction_retention,
        "--quota-backend-bytes", str(store.quota_backend_bytes),
        *(("--listen-metrics-urls", member.metrics_url) if member.metrics_url else ()),
    )  # fmt: skip


def _plan_control_plane(config: ClusterConfig, state_dir: Path, python: str) -> list[ComponentPlan]:
    """Every API server, scheduler and controller manager: ``k8semu <command> --listen-address
    ADDRESS`` and that kind's flags."""
    assert config.api_server is not None
    assert config.scheduler is not None and config.controller_manager is not None
    stores = config.store.client_addresses
    apis = config.api_server_addresses
    net, timings = config.network, config.timings
    election = leader_election_args(timings)
    # (instances, command, config key, stage, port name, flags after the listen address)
    kinds = (
        (config.api_server, "apiserver", "apiServer", API, "api",
         apiserver_args(stores, net, timings)),
        (config.scheduler, "scheduler", "scheduler", CONTROL, "health",
         scheduler_args(apis, election)),
        (config.controller_manager, "controller-manager", "controllerManager", CONTROL, "health",
         controller_manager_args(
             apis, net, timings, config.horizontal_pod_autoscaler, config.autoscaled_pools
         )),
    )  # fmt: skip
    out = []
    for spec, command, key, stage, port, flags in kinds:
        for i, inst in enumerate(spec.instances):
            address = config.address_of(inst)
            ports = {port: address}
            metrics: tuple[str, ...] = ()
            if inst.metrics_port:
                ports[METRICS] = f"{address.rpartition(':')[0]}:{inst.metrics_port}"
                metrics = ("--metrics-address", ports[METRICS])
            if inst.rest_port:  # an API server's REST API (kubectl's)
                ports[REST] = f"{address.rpartition(':')[0]}:{inst.rest_port}"
                metrics += ("--rest-address", ports[REST])
            out.append(
                ComponentPlan(
                    name=inst.name,
                    kind=command,
                    host=inst.host,
                    stage=stage,
                    argv=_k8semu(python, command, "--listen-address", address, *flags, *metrics),
                    address=address,
                    ports=ports,
                    origins={
                        port: f"{key}.instances[{i}].port",
                        METRICS: f"{key}.instances[{i}].metricsPort",
                        REST: f"{key}.instances[{i}].restPort",
                    },
                    log_path=state_dir / LOG_DIR / f"{inst.name}.log",
                    data_dir=state_dir,
                    command=command,
                )
            )
    return out


def _plan_nodes(config: ClusterConfig, state_dir: Path, python: str) -> list[ComponentPlan]:
    """Every node's kubelet and proxy, on the cluster's API servers and DNS."""
    cluster = NodeContext(
        servers=config.api_server_addresses,
        timings=config.timings,
        cluster_dns=config.network.dns_ip,
        cluster_domain=config.network.cluster_domain,
    )
    out = []
    for node in config.all_nodes:
        # Slots of an autoscaled pool past its initial size are planned but not started.
        initial = node.autoscaling.initial_nodes if node.autoscaling else len(node.members())
        for i, member in enumerate(node.members()):
            out += [
                c if i < initial else dataclasses.replace(c, autostart=False)
                for c in plan_node(member, cluster, state_dir, python)
            ]
    return out


def _addons(config: ClusterConfig, here: Callable[[str], bool]) -> tuple[tuple[str, str], ...]:
    """The add-on manifests, with the cluster's DNS address and domain filled in."""
    instances = config.api_server.instances if config.api_server else ()
    if not instances or not here(instances[0].host):
        return ()
    out = []
    for name in config.addons:
        text = addons.load(name)
        if name == "dns":
            text = text.replace(addons.DNS_CLUSTER_IP, config.network.dns_ip).replace(
                addons.DNS_CLUSTER_DOMAIN, config.network.cluster_domain
            )
        out.append((name, text))
    return tuple(out)


def _duration_or_zero(ms: int) -> str:
    return format_duration(ms) if ms else "0"


def apiserver_args(
    store_endpoints: Sequence[str],
    network: NetworkSpec | None = None,
    timings: TimingsSpec | None = None,
) -> tuple[str, ...]:
    """``k8semu apiserver``'s flags but its listen address: on the store at
    ``store_endpoints``, with ``network``'s service ranges and ``timings``' compaction interval
    (the API server's own defaults when None). The launcher, the test fixtures and the
    benchmarks all start an API server so."""
    args: tuple[str, ...] = ("--store-endpoints", ",".join(store_endpoints))
    if network is not None:
        args += (
            "--service-cluster-ip-range", network.service_cidr,
            "--service-node-port-range", network.node_port_range,
            "--load-balancer-ip-pool", network.load_balancer_pool,
        )  # fmt: skip
    if timings is not None:
        interval = _duration_or_zero(timings.etcd_compaction_interval_ms)
        args += ("--etcd-compaction-interval", interval)
        args += ("--event-ttl", _duration_or_zero(timings.event_ttl_ms))
        args += ("--metric-resolution", _duration_or_zero(timings.metric_resolution_ms))
    return args


def scheduler_args(servers: Sequence[str], extra: Sequence[str] = ()) -> tuple[str, ...]:
    """``k8semu scheduler``'s flags but its listen address: on the API servers ``servers``,
    then ``extra`` (the launcher's leader-election timings; a test's or a benchmark's own
    flags). The launcher, the tests and the benchmarks all start a scheduler so."""
    return ("--server", ",".join(servers), *extra)


def controller_manager_args(
    servers: Sequence[str],
    network: NetworkSpec,
    timings: TimingsSpec,
    hpa: HorizontalPodAutoscalerSpec | None = None,
    pools: Sequence[NodeSpec] = (),
) -> tuple[str, ...]:
    """``k8semu controller-manager``'s flags but its listen address: every controller, on the
    API servers ``servers``, with ``timings``' leader election and node lifecycle,
    ``network``'s pod and service ranges, ``hpa``'s HorizontalPodAutoscaler settings (the
    controller manager's own defaults when None) and the autoscaled node ``pools``."""
    args = (
        *node_pools_args(pools),
        "--server", ",".join(servers),
        "--controllers", "*",
        *leader_election_args(timings),
        "--node-monitor-period", format_duration(timings.node_monitor_period_ms),
        "--node-monitor-grace-period", format_duration(timings.node_monitor_grace_ms),
        "--pod-eviction-timeout", format_duration(timings.pod_eviction_ms),
        "--cluster-cidr", network.cluster_cidr,
        "--node-cidr-mask-size", str(network.node_cidr_mask_size),
        "--service-cidr", network.service_cidr,
    )  # fmt: skip
    return args + (hpa.flags() if hpa is not None else ())


def node_pools_args(pools: Sequence[NodeSpec]) -> tuple[str, ...]:
    """``--node-pools JSON``: what the cluster autoscaler knows of each autoscaled pool (the
    cloud provider's node groups in Kubernetes): its size bounds, its scale-down settings and
    the template of its nodes (capacity, labels, taints). None without pools."""
    if not pools:
        return ()
    groups = []
    for pool in pools:
        assert pool.autoscaling is not None
        scaling = pool.autoscaling
        groups.append(
            {
                "name": pool.name,
                "minNodes": scaling.min_nodes,
                "maxNodes": scaling.max_nodes,
                "initialNodes": scaling.initial_nodes,
                "hollow": pool.hollow,
                "scaleDownUtilization": scaling.scale_down_utilization,
                "scaleDownUnneededTime": format_duration(scaling.scale_down_unneeded_ms),
                "capacity": dict(pool.capacity),
                "labels": dict(pool.members()[0].labels),
                "taints": [
                    {"key": t.key, "value": t.value, "effect": t.effect} for t in pool.taints
                ],
            }
        )
    return ("--node-pools", json.dumps(groups, separators=(",", ":")))


def leader_election_args(timings: TimingsSpec) -> tuple[str, ...]:
    """``--leader-elect`` and ``timings``' lease, renew deadline and retry period."""
    return (
        "--leader-elect",
        "--leader-elect-lease-duration", format_duration(timings.leader_elect_lease_ms),
        "--leader-elect-renew-deadline", format_duration(timings.leader_elect_renew_ms),
        "--leader-elect-retry-period", format_duration(timings.leader_elect_retry_ms),
    )  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeContext:
    """What the kubelet and proxy of a node are told of the cluster they are part of: its API
    servers, its timings and its DNS (none: pods get no cluster DNS)."""

    servers: tuple[str, ...]
    timings: TimingsSpec = field(default_factory=TimingsSpec)
    cluster_dns: str = ""
    cluster_domain: str = "cluster.local"


def kubelet_argv(
    node: NodeSpec, cluster: NodeContext, root_dir: Path, python: str
) -> tuple[str, ...]:
    """``k8semu kubelet ...`` for ``node`` (a hollow pool: one process, ``--count`` nodes)."""
    timings = cluster.timings
    args = [
        "--server", ",".join(cluster.servers),
        "--node-name", node.name,
        "--node-ip", node.node_ip,
        # A hollow pool's kubelet serves its nodes' usage summaries (for the resource metrics)
        # on a port of its own choosing: its Nodes' annotation names it, nothing else needs it.
        "--listen-address",
        f"{bracketed(node.node_ip)}:{0 if node.hollow else node.kubelet_port}",
        "--runtime", node.runtime,
        "--root-dir", str(root_dir),
        "--capacity", ",".join(f"{k}={v}" for k, v in node.capacity),
        "--node-lease-duration", format_duration(timings.node_lease_ms),
        "--node-lease-renew-interval", format_duration(timings.node_lease_renew_ms),
        "--node-status-update-frequency", format_duration(timings.node_status_update_ms),
    ]  # fmt: skip
    if node.labels:
        args += ["--node-labels", ",".join(f"{k}={v}" for k, v in node.labels)]
    if node.taints:
        args += ["--register-with-taints", ",".join(t.flag() for t in node.taints)]
    if cluster.cluster_dns:
        args += ["--cluster-dns", cluster.cluster_dns, "--cluster-domain", cluster.cluster_domain]
    if node.hollow and not node.pool:  # a pool's slot is one node under its own name
        args += ["--count", str(node.count)]
    if node.kubelet_metrics_port:
        args += ["--metrics-address", f"{bracketed(node.node_ip)}:{node.kubelet_metrics_port}"]
    return _k8semu(python, "kubelet", *args)


def proxy_argv(node: NodeSpec, servers: tuple[str, ...], python: str) -> tuple[str, ...]:
    """``k8semu proxy ...`` for ``node`` (with its tunnel port, when it has one)."""
    extra: tuple[str, ...] = ("--tunnel-port", str(node.tunnel_port)) if node.tunnel_port else ()
    if node.proxy_metrics_port:
        extra += ("--metrics-address", f"{bracketed(node.node_ip)}:{node.proxy_metrics_port}")
    return _k8semu(
        python, "proxy",
        "--server", ",".join(servers),
        "--node-name", node.name,
        "--node-ip", node.node_ip,
        "--listen-address", f"{bracketed(node.node_ip)}:{node.proxy_port}",
        *extra,
    )  # fmt: skip


def plan_node(
    node: NodeSpec, cluster: NodeContext, state_dir: Path, python: str
) -> list[ComponentPlan]:
    """The kubelet (and the proxy, unless off or hollow) of one worker node or pool."""
    root = state_dir / NODES_DIR / node.name
    logs = state_dir / LOG_DIR
    kubelet_address = f"{bracketed(node.node_ip)}:{node.kubelet_port}"
    ports = {} if node.hollow else {"kubelet": kubelet_address}
    if node.kubelet_metrics_port:
        ports[METRICS] = f"{bracketed(node.node_ip)}:{node.kubelet_metrics_port}"
    out = [
        ComponentPlan(
            name=f"kubelet-{node.name}",
            kind="kubelet",
            host=node.host,
            stage=NODES,
            argv=kubelet_argv(node, cluster, root, python),
            address=kubelet_address,
            ports=ports,
            origins={
                "kubelet": f"{node.path}.kubeletPort",
                METRICS: f"{node.path}.kubeletMetricsPort",
            },
            health_check=not node.hollow,
            log_path=logs / f"kubelet-{node.name}.log",
            data_dir=root,
            command="kubelet",
            node_names=node.node_names,
            pool=node.pool,
            pool_node=node.name if node.pool else "",
        )
    ]
    if node.proxy and not node.hollow:
        proxy_address = f"{bracketed(node.node_ip)}:{node.proxy_port}"
        ports = {"health": proxy_address}
        origins = {"health": f"{node.path}.proxyPort"}
        if node.tunnel_port:
            ports["tunnel"] = f"{bracketed(node.node_ip)}:{node.tunnel_port}"
            origins["tunnel"] = f"{node.path}.tunnelPort"
        if node.proxy_metrics_port:
            ports[METRICS] = f"{bracketed(node.node_ip)}:{node.proxy_metrics_port}"
            origins[METRICS] = f"{node.path}.proxyMetricsPort"
        out.append(
            ComponentPlan(
                name=f"proxy-{node.name}",
                kind="proxy",
                host=node.host,
                stage=NODES,
                argv=proxy_argv(node, cluster.servers, python),
                address=proxy_address,
                ports=ports,
                origins=origins,
                log_path=logs / f"proxy-{node.name}.log",
                data_dir=root,
                command="proxy",
                pool=node.pool,
                pool_node=node.name if node.pool else "",
            )
        )
    return out

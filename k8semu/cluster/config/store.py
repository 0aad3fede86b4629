"""The ``store`` section: our Raft store's replicas (or a real etcd's), their URLs and timings.

Errors name ``store.<field>``; the timing rules are the store's own (``k8semu.store.config``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from k8semu.cluster.config import defaults
from k8semu.cluster.config.values import (
    check_choice,
    check_dns_label,
    check_host_port,
    format_duration,
    is_unspecified,
)
from k8semu.cluster.errors import ClusterConfigError
from k8semu.store import config as store_config
from k8semu.transport import AddressError, parse_url

__all__ = ["StoreMemberSpec", "StoreSpec", "default_store_members"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreMemberSpec:
    """One store replica: its name and its client and peer URLs, ``http://HOST:PORT``."""

    name: str
    client_url: str
    peer_url: str
    #: The host (``hosts[].name``) that runs this replica.
    host: str = ""
    #: Prometheus /metrics (etcd's --listen-metrics-urls), ``http://HOST:PORT``; "": none.
    metrics_url: str = ""

    @property
    def client_address(self) -> str:
        """``HOST:PORT`` of the client URL (what etcdctl's ``--endpoints`` takes)."""
        return self.client_url.removeprefix("http://")

    @property
    def peer_address(self) -> str:
        """``HOST:PORT`` of the peer URL."""
        return self.peer_url.removeprefix("http://")

    @property
    def metrics_address(self) -> str:
        """``HOST:PORT`` of the metrics URL ("" when none)."""
        return self.metrics_url.removeprefix("http://")


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSpec:
    """The ``store`` section: a static cluster of ``replicas`` store processes.

    Invariants after construction: ``len(members) == replicas`` (an empty ``members`` becomes
    the default layout), member names and addresses are unique, URLs are ``http://HOST:PORT``
    with a non-zero port, and the timings are ones the store accepts.
    """

    replicas: int = defaults.DEFAULT_STORE_REPLICAS
    heartbeat_ms: int = defaults.DEFAULT_STORE_HEARTBEAT_MS
    election_ms: int = defaults.DEFAULT_STORE_ELECTION_MS
    snapshot_count: int = defaults.DEFAULT_STORE_SNAPSHOT_COUNT
    #: etcd's flags and units: ``periodic`` keeps a duration (``10m``, or a number of hours),
    #: ``revision`` a number of revisions; ``"0"`` turns auto-compaction off.
    auto_compaction_mode: str = defaults.DEFAULT_STORE_AUTO_COMPACTION_MODE
    auto_compaction_retention: str = defaults.DEFAULT_STORE_AUTO_COMPACTION_RETENTION
    #: Bytes a replica's database may reach before the NOSPACE alarm (etcd's flag; 0 = its
    #: default, negative = no quota).
    quota_backend_bytes: int = defaults.DEFAULT_STORE_QUOTA_BACKEND_BYTES
    members: tuple[StoreMemberSpec, ...] = ()
    #: ``k8semu`` (our store) or ``etcd`` (a real etcd: started by us from ``etcd_binary``, or
    #: an external cluster at ``endpoints``, of which nothing is started).
    backend: str = defaults.DEFAULT_STORE_BACKEND
    endpoints: tuple[str, ...] = ()
    etcd_binary: str = defaults.DEFAULT_ETCD_BINARY

    @property
    def external(self) -> bool:
        """An etcd cluster someone else runs: nothing of the store is started."""
        return bool(self.endpoints)

    @property
    def client_addresses(self) -> tuple[str, ...]:
        """What the API servers are given as ``--store-endpoints``."""
        if self.endpoints:
            return self.endpoints
        return tuple(m.client_address for m in self.members)

    def __post_init__(self) -> None:
        check_choice(self.backend, defaults.STORE_BACKENDS, "store.backend")
        if self.endpoints:
            self._check_external()
            return
        if self.replicas < 1:
            raise ClusterConfigError("store.replicas", "must be >= 1")
        self._check_timings()
        self._check_compaction()
        if not self.members:
            object.__setattr__(self, "members", default_store_members(self.replicas))
        elif len(self.members) != self.replicas:
            raise ClusterConfigError(
                "store.members",
                f"lists {len(self.members)} members but store.replicas is {self.replicas}; list "
                "one member per replica, or leave store.members out to use the default ports",
            )
        object.__setattr__(self, "members", tuple(_checked_members(self.members)))

    def _check_external(self) -> None:
        if self.backend != "etcd":
            raise ClusterConfigError(
                "store.endpoints",
                "an external store is a real etcd: set store.backend: etcd, or leave "
                "store.endpoints out to start our own store",
            )
        for i, endpoint in enumerate(self.endpoints):
            check_host_port(endpoint, f"store.endpoints[{i}]")

    def _check_timings(self) -> None:
        if self.heartbeat_ms < 1:
            raise ClusterConfigError("store.heartbeatInterval", "must be at least 1ms")
        beats = defaults.STORE_MIN_ELECTION_HEARTBEATS
        if self.election_ms < beats * self.heartbeat_ms:
            raise ClusterConfigError(
                "store.electionTimeout",
                f"must be at least {beats}x store.heartbeatInterval "
                f"({format_duration(self.election_ms)} < {beats} x "
                f"{format_duration(self.heartbeat_ms)})",
            )
        if self.snapshot_count < 1:
            raise ClusterConfigError("store.snapshotCount", "must be >= 1")

    def _check_compaction(self) -> None:
        check_choice(
            self.auto_compaction_mode, store_config.COMPACTION_MODES, "store.autoCompactionMode"
        )
        try:
            store_config.AutoCompaction.parse(
                self.auto_compaction_mode, self.auto_compaction_retention
            )
        except store_config.ConfigError as exc:
            reason = str(exc).removeprefix("--auto-compaction-retention: ")
            raise ClusterConfigError("store.autoCompactionRetention", reason) from None


def default_store_members(replicas: int) -> tuple[StoreMemberSpec, ...]:
    """``s1``..``sN`` on 127.0.0.1 at 2379/2380, 12379/12380, 22379/22380, ..."""
    last_port = (
        defaults.DEFAULT_STORE_PEER_PORT + (replicas - 1) * defaults.DEFAULT_STORE_PORT_STRIDE
    )
    if last_port > 65535:
        raise ClusterConfigError(
            "store.replicas",
            f"{replicas} replicas do not fit the default ports (2379/2380 + "
            f"{defaults.DEFAULT_STORE_PORT_STRIDE} per replica); list store.members with their"
            " URLs",
        )
    return tuple(
        StoreMemberSpec(
            name=f"s{i + 1}",
            client_url=f"http://{defaults.DEFAULT_STORE_HOST}:"
            f"{defaults.DEFAULT_STORE_CLIENT_PORT + i * defaults.DEFAULT_STORE_PORT_STRIDE}",
            peer_url=f"http://{defaults.DEFAULT_STORE_HOST}:"
            f"{defaults.DEFAULT_STORE_PEER_PORT + i * defaults.DEFAULT_STORE_PORT_STRIDE}",
        )
        for i in range(replicas)
    )


def _checked_members(members: tuple[StoreMemberSpec, ...]) -> Iterator[StoreMemberSpec]:
    """Each member with normalized URLs; errors name ``store.members[i].<field>``."""
    names: dict[str, int] = {}
    addresses: dict[str, str] = {}
    for i, m in enumerate(members):
        path = f"store.members[{i}]"
        check_dns_label(m.name, f"{path}.name")
        if m.name in names:
            raise ClusterConfigError(
                f"{path}.name", f"{m.name!r} is already the name of store.members[{names[m.name]}]"
            )
        names[m.name] = i
        given = (
            ("clientURL", m.client_url),
            ("peerURL", m.peer_url),
            ("metricsURL", m.metrics_url),
        )
        urls = {key: _checked_url(url, f"{path}.{key}", addresses) for key, url in given if url}
        yield StoreMemberSpec(
            name=m.name,
            client_url=urls["clientURL"],
            peer_url=urls["peerURL"],
            host=m.host,
            metrics_url=urls.get("metricsURL", ""),
        )


def _checked_url(url: str, where: str, addresses: dict[str, str]) -> str:
    """``url`` as ``http://HOST:PORT``, its address not one that ``addresses`` already holds
    (it is added there)."""
    if url.strip().lower().startswith("https://"):
        # The config says where a replica listens; whether it speaks TLS is security.tls.
        raise ClusterConfigError(
            where, f"{url!r}: only http:// URLs here (TLS is the security.tls setting)"
        )
    try:
        address = parse_url(url, flag=where)
    except AddressError as exc:
        raise ClusterConfigError(where, str(exc).removeprefix(f"{where}: ")) from exc
    host, _, port = address.rpartition(":")
    if int(port) == 0:
        raise ClusterConfigError(
            where, f"{url!r}: port 0 is not allowed (peers and clients need a fixed port)"
        )
    if is_unspecified(host):
        raise ClusterConfigError(
            where, f"{url!r}: give the address to listen on and advertise, not {host}"
        )
    if address in addresses:
        raise ClusterConfigError(where, f"{address} is also {addresses[address]}")
    addresses[address] = where
    return f"http://{address}"

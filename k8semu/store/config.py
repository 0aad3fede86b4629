"""Configuration of one store replica, with etcd's flag names and validated at the edge.

Defaults live here and only here (design decision 6). Timings are emulator-fast: a 50 ms
heartbeat and a 500 ms election timeout make a leader failover visible in well under a
second; etcd's own defaults (100 ms / 1000 ms) are one flag away.
"""

from __future__ import annotations

import functools
import hashlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from k8semu import durations
from k8semu.transport import AddressError, ClientTLS, ServerTLS, client_ssl_context, parse_url

DEFAULT_HEARTBEAT_MS = 50
DEFAULT_ELECTION_MS = 500
DEFAULT_SNAPSHOT_COUNT = 10_000
DEFAULT_MAX_REQUEST_BYTES = 1_572_864  # etcd's --max-request-bytes default (1.5 MiB)
DEFAULT_CLUSTER_TOKEN = "k8semu-store"
DEFAULT_PROGRESS_NOTIFY_S = 5.0
# etcd's --quota-backend-bytes default (2 GiB): the same limit as etcd, so a cluster that fits
# one fits the other. 0 on the command line means this default; a negative value turns the
# quota off (as in etcd).
DEFAULT_QUOTA_BACKEND_BYTES = 2 * 1024 * 1024 * 1024
DEFAULT_MAX_TXN_OPS = 128  # etcd's --max-txn-ops default
COMPACTION_MODES = ("periodic", "revision")


@dataclass(frozen=True, slots=True)
class AutoCompaction:
    """etcd's --auto-compaction-mode/--auto-compaction-retention, parsed.

    periodic: keep `period_s` seconds of history; revision: keep the last `revisions`.
    Both zero means off (etcd's default).
    """

    mode: str = "periodic"
    period_s: float = 0.0
    revisions: int = 0

    @property
    def enabled(self) -> bool:
        return self.period_s > 0 or self.revisions > 0

    @classmethod
    def parse(cls, mode: str, retention: str) -> AutoCompaction:
        """etcd's rules: a bare integer is hours (periodic) or revisions (revision); a
        periodic retention may also be a duration (`30m`, `1h30m`)."""
        if mode not in COMPACTION_MODES:
            raise ConfigError(
                f"--auto-compaction-mode: {mode!r}: must be one of {', '.join(COMPACTION_MODES)}"
            )
        text = retention.strip()
        if text.isdigit():
            if mode == "revision":
                return cls(mode, revisions=int(text))
            return cls(mode, period_s=int(text) * 3600.0)
        if mode == "revision":
            raise ConfigError(
                f"--auto-compaction-retention: {retention!r}: revision mode keeps a number of "
                "revisions (a whole number, e.g. 1000)"
            )
        try:
            ms = durations.parse_ms(text)
        except ValueError as exc:
            raise ConfigError(
                f"--auto-compaction-retention: {exc} (or a whole number of hours)"
            ) from None
        return cls(mode, period_s=ms / 1000)


class ConfigError(ValueError):
    """A flag or config value that cannot be used; the message names it."""


def member_id(name: str, token: str) -> int:
    """Stable non-zero uint64 id of a member, from its name and the cluster token."""
    digest = hashlib.sha256(f"{token}\x00{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


def cluster_id(token: str, members: Mapping[str, str]) -> int:
    text = "\x00".join(["cluster", token, *sorted(members)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") or 1


def parse_initial_cluster(text: str) -> dict[str, str]:
    """`s1=http://127.0.0.1:2380,s2=...` -> {name: peer address}."""
    members: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, url = item.partition("=")
        if not sep or not name or not url:
            raise ConfigError(f"--initial-cluster: {item!r}: expected NAME=URL")
        if name in members:
            raise ConfigError(f"--initial-cluster: member {name!r} listed twice")
        try:
            members[name] = parse_url(url, flag="--initial-cluster")
        except AddressError as exc:
            raise ConfigError(str(exc)) from exc
    if not members:
        raise ConfigError("--initial-cluster: no members")
    return members


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreConfig:
    """One replica. `members` maps every member name (this one included) to its peer address."""

    name: str
    data_dir: Path
    listen_client: str
    listen_peer: str
    members: Mapping[str, str]
    advertise_client: tuple[str, ...] = ()
    cluster_token: str = DEFAULT_CLUSTER_TOKEN
    heartbeat_ms: int = DEFAULT_HEARTBEAT_MS
    election_ms: int = DEFAULT_ELECTION_MS
    snapshot_count: int = DEFAULT_SNAPSHOT_COUNT
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    progress_notify_s: float = DEFAULT_PROGRESS_NOTIFY_S
    #: Bytes kv.db may reach before NOSPACE; 0 = no quota (the CLI turns etcd's 0 into the
    #: default and a negative value into 0).
    quota_backend_bytes: int = DEFAULT_QUOTA_BACKEND_BYTES
    max_txn_ops: int = DEFAULT_MAX_TXN_OPS
    auto_compaction: AutoCompaction = field(default_factory=AutoCompaction)
    #: "existing": this member was bootstrapped before, so it must find its Raft log.
    initial_cluster_state: str = "new"
    ids: dict[str, int] = field(default_factory=dict, compare=False)
    #: The ids a data dir recorded when its member first started (as etcd, the flags that
    #: made them are not read again), or that the cluster it joined gave it; 0: from flags.
    recorded_cluster_id: int = 0
    recorded_member_id: int = 0
    #: TLS of the client port (--cert-file, --key-file, --trusted-ca-file,
    #: --client-cert-auth) and of the peer port (the --peer-* ones, also used to dial the
    #: peers); None: plain text.
    client_tls: ServerTLS | None = None
    peer_tls: ServerTLS | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("--name: must not be empty")
        if self.name not in self.members:
            raise ConfigError(f"--name: {self.name!r} is not in --initial-cluster")
        if self.heartbeat_ms <= 0:
            raise ConfigError("--heartbeat-interval: must be > 0")
        if self.election_ms < 5 * self.heartbeat_ms:
            raise ConfigError(
                f"--election-timeout: must be at least 5x --heartbeat-interval "
                f"({self.election_ms} < 5*{self.heartbeat_ms})"
            )
        if self.snapshot_count < 1:
            raise ConfigError("--snapshot-count: must be >= 1")
        if self.max_request_bytes < 1024:
            raise ConfigError("--max-request-bytes: must be >= 1024")
        if self.quota_backend_bytes < 0:
            raise ConfigError("--quota-backend-bytes: must be >= 0 here (0 = no quota)")
        if self.max_txn_ops < 1:
            raise ConfigError("--max-txn-ops: must be >= 1")
        if self.initial_cluster_state not in ("new", "existing"):
            raise ConfigError("--initial-cluster-state: must be new or existing")
        self.ids.update({n: member_id(n, self.cluster_token) for n in self.members})
        if len(set(self.ids.values())) != len(self.ids):
            raise ConfigError("--initial-cluster: member ids collide; rename a member")

    @property
    def member_id(self) -> int:
        return self.recorded_member_id or self.ids[self.name]

    @property
    def cluster_id(self) -> int:
        return self.recorded_cluster_id or cluster_id(self.cluster_token, self.members)

    @property
    def election_tick(self) -> int:
        return max(2, round(self.election_ms / self.heartbeat_ms))

    @property
    def client_urls(self) -> tuple[str, ...]:
        scheme = "http" if self.client_tls is None else "https"
        return self.advertise_client or (f"{scheme}://{self.listen_client}",)

    @property
    def peer_scheme(self) -> str:
        return "http" if self.peer_tls is None else "https"

    def peer_client_ssl(self) -> ssl.SSLContext | None:
        """The context to dial peers with: the peer certificate, checking theirs against
        --peer-trusted-ca-file; None for plain text."""
        tls = self.peer_tls
        if tls is None:
            return None
        assert tls.client_ca_file is not None  # build_config requires it
        return _client_context(
            ClientTLS(ca_file=tls.client_ca_file, cert_file=tls.cert_file, key_file=tls.key_file)
        )


@functools.cache
def _client_context(tls: ClientTLS) -> ssl.SSLContext:
    # One context per process: loading the files again per connection would cost a handshake.
    return client_ssl_context(tls)

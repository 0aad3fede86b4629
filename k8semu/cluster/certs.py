"""Which certificates a cluster needs, where they live, and the kubeconfigs that carry them.

Two CAs, as kubeadm lays them out under the state directory's ``pki/``:

    pki/ca.crt, ca.key            the cluster CA: API servers, users, components
    pki/etcd/ca.crt, ca.key       the store's CA: replicas (client and peer ports), and the
                                  only clients the store admits (the API servers, the probes)
    pki/<name>.crt, .key          apiserver, apiserver-kubelet-client, admin, scheduler,
                                  controller-manager, kubelet-<node>, proxy-<node>
    pki/etcd/<name>.crt, .key     store-<member>, apiserver-etcd-client, healthcheck-client
    pki/kubeconfigs/<name>.conf   a component's API servers and credentials (--kubeconfig)
    pki/encryption-config.yaml    the API servers' --encryption-provider-config: Secrets
                                  encrypted at rest with an aesgcm key made once (0600)
    pki/sa.key, sa.pub            the key pair that signs and verifies ServiceAccount tokens

A separate store CA means a certificate made for a kubelet or a user is refused by the store:
only the API servers (and the launcher's probes) may read and write raw keys.

``plan`` only names these paths (it stays pure); ``ensure`` makes what is missing before the
launcher starts anything (`pki.CertificateAuthority.ensure` reuses what still fits), and
``probes`` gives the launcher, the supervisor and ``status`` the credentials to ask the
TLS components with.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from k8semu import pki, transport
from k8semu.cluster import clientconfig
from k8semu.cluster.config import ClusterConfig
from k8semu.cluster.probes import Probes
from k8semu.cluster.state import ClusterState

__all__ = ["PKIPaths", "ensure", "probes", "state_probes"]

PKI_DIR = "pki"
#: The suffix of a serving certificate kept apart from the client one (`join --token`).
SERVING_SUFFIX = "-serving"
AUDIT_LOG_MAX_MB = 100
AUDIT_LOG_BACKUPS = 3
API_KINDS = frozenset({"apiserver"})
STORE_KINDS = frozenset({"store", "etcd"})
#: Kinds whose own gRPC listeners serve TLS with a certificate of the cluster CA and take any
#: client certificate of it for health (the launcher's probes ask as the admin).
SERVING_KINDS = frozenset({"kubelet", "proxy", "scheduler", "controller-manager"})
#: The API server's client certificate to the kubelets (kubeadm's name, CN and O): the only
#: one a kubelet takes for a pod's logs, exec, attach and port-forward.
KUBELET_CLIENT = "apiserver-kubelet-client"
#: Kubernetes' names for the API server's in-cluster Service.
_KUBERNETES_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
)
#: Components that reach the API servers with a kubeconfig of their own: name -> (CN, O).
_CONTROL_USERS = {
    "scheduler": ("system:kube-scheduler", ()),
    "controller-manager": ("system:kube-controller-manager", ()),
}


@dataclass(frozen=True, slots=True)
class PKIPaths:
    """Where a state directory keeps its certificates (see the module docstring)."""

    state_dir: Path

    @property
    def root(self) -> Path:
        return self.state_dir / PKI_DIR

    @property
    def etcd(self) -> Path:
        return self.root / "etcd"

    def cert(self, name: str, *, etcd: bool = False) -> pki.CertFiles:
        base = self.etcd if etcd else self.root
        return pki.CertFiles(base / f"{name}.crt", base / f"{name}.key", base / "ca.crt")

    def kubeconfig(self, name: str) -> Path:
        return self.root / "kubeconfigs" / f"{name}.conf"

    @property
    def encryption_config(self) -> Path:
        return self.root / "encryption-config.yaml"

    def store_flags(self, member: str) -> tuple[str, ...]:
        """etcd's security flags of store replica `member` (both ports, both directions)."""
        own = self.cert(f"store-{member}", etcd=True)
        cert, key, ca = str(own.cert), str(own.key), str(own.ca)
        return (
            "--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca,
            "--client-cert-auth",
            "--peer-cert-file", cert, "--peer-key-file", key, "--peer-trusted-ca-file", ca,
            "--peer-client-cert-auth",
        )  # fmt: skip

    def apiserver_flags(self, *, store: bool) -> tuple[str, ...]:
        """kube-apiserver's TLS flags; `store`: also those to a store this cluster runs."""
        own = self.cert("apiserver")
        flags: tuple[str, ...] = (
            "--tls-cert-file", str(own.cert), "--tls-private-key-file", str(own.key),
            "--client-ca-file", str(own.ca),
            "--encryption-provider-config", str(self.encryption_config),
        )  # fmt: skip
        kubelets = self.cert(KUBELET_CLIENT)
        flags += (
            "--kubelet-certificate-authority", str(kubelets.ca),
            "--kubelet-client-certificate", str(kubelets.cert),
            "--kubelet-client-key", str(kubelets.key),
        )  # fmt: skip
        if store:
            etcd = self.cert("apiserver-etcd-client", etcd=True)
            flags += (
                "--etcd-cafile", str(etcd.ca),
                "--etcd-certfile", str(etcd.cert), "--etcd-keyfile", str(etcd.key),
            )  # fmt: skip
        return flags

    @property
    def sa_key(self) -> Path:
        return self.root / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.root / "sa.pub"

    def auth_flags(self, audit_log: Path) -> tuple[str, ...]:
        """kube-apiserver's authentication, authorization and audit flags, as kubeadm sets
        them: the Node authorizer then RBAC, no anonymous requests, ServiceAccount tokens
        signed with sa.key (and verified with sa.pub), every request in `audit_log`
        (rotated at 100 MB, three old files kept)."""
        return (
            "--authorization-mode", "Node,RBAC",
            "--anonymous-auth=false",
            "--enable-bootstrap-token-auth",
            "--service-account-signing-key-file", str(self.sa_key),
            "--service-account-key-file", str(self.sa_pub),
            "--audit-log-path", str(audit_log),
            "--audit-log-maxsize", str(AUDIT_LOG_MAX_MB),
            "--audit-log-maxbackup", str(AUDIT_LOG_BACKUPS),
        )  # fmt: skip

    def controller_manager_flags(self) -> tuple[str, ...]:
        """The cluster CA for the root-ca-cert-publisher (kube-root-ca.crt ConfigMaps) and
        csrsigning (the certificates of nodes that join by token)."""
        ca = str(self.root / "ca.crt")
        return (
            "--root-ca-file", ca,
            "--cluster-signing-cert-file", ca,
            "--cluster-signing-key-file", str(self.root / "ca.key"),
        )  # fmt: skip

    def kubeconfig_flags(self, name: str) -> tuple[str, ...]:
        return ("--kubeconfig", str(self.kubeconfig(name)))

    def serving_flags(self, name: str) -> tuple[str, ...]:
        """The kubelet's (kube-scheduler's, ...) serving flags: certificate `name` on its own
        listener (`name`-serving when there is one: a node that joined by token has its client
        and serving certificates from different signers), callers' certificates of the
        cluster CA required."""
        own = self.cert(name)
        serving = self.cert(name + SERVING_SUFFIX)
        if serving.cert.exists():
            own = serving
        return (
            "--tls-cert-file", str(own.cert), "--tls-private-key-file", str(own.key),
            "--client-ca-file", str(own.ca),
        )  # fmt: skip

    def api_client(self) -> transport.ClientTLS | None:
        """Who the launcher asks the API servers as: the admin, or on a joined host (which
        has no admin certificate) its kubelet; None without certificates (TLS off)."""
        if self.cert("admin").cert.exists():
            return _client_tls(self.cert("admin"))
        kubelets = sorted(
            p.stem for p in self.root.glob("kubelet-*.crt") if not p.stem.endswith(SERVING_SUFFIX)
        )
        return _client_tls(self.cert(kubelets[0])) if kubelets else None

    def store_tls(self) -> transport.ClientTLS:
        return _client_tls(self.cert("healthcheck-client", etcd=True))

    def store_client(self) -> transport.ClientTLS | None:
        """`store_tls` where this state dir has it (a TLS cluster's store), else None."""
        exists = self.cert("healthcheck-client", etcd=True).cert.exists()
        return self.store_tls() if exists else None

    def credentials(self, name: str) -> clientconfig.Credentials:
        files = self.cert(name)
        return clientconfig.Credentials(
            pki.pem_bytes(files.ca), pki.pem_bytes(files.cert), pki.pem_bytes(files.key)
        )


def _client_tls(files: pki.CertFiles) -> transport.ClientTLS:
    return transport.ClientTLS(ca_file=files.ca, cert_file=files.cert, key_file=files.key)


def _host_of(address: str) -> str:
    return address.rpartition(":")[0].strip("[]")


def _names(*hosts: str) -> tuple[str, ...]:
    """Loopback, this machine's name, and `hosts` (addresses or names), each once."""
    return tuple(dict.fromkeys(("127.0.0.1", "localhost", socket.gethostname(), *hosts)))


def _specs(config: ClusterConfig) -> tuple[list[pki.CertSpec], list[pki.CertSpec]]:
    """(store CA's, cluster CA's) certificates of every component of `config`."""
    store_hosts = [_host_of(m.client_address) for m in config.store.members]
    etcd = [
        pki.CertSpec(f"store-{m.name}", m.name, hosts=_names(*store_hosts))
        for m in config.store.members
    ]
    etcd += [
        pki.CertSpec("apiserver-etcd-client", "kube-apiserver-etcd-client", server=False),
        pki.CertSpec("healthcheck-client", "kube-etcd-healthcheck-client", server=False),
    ]
    api_hosts = [_host_of(a) for a in config.api_server_addresses]
    network = config.network
    first_service_ip = str(ipaddress.ip_network(network.service_cidr)[1])
    in_cluster = (*_KUBERNETES_NAMES, f"kubernetes.default.svc.{network.cluster_domain}")
    cluster = [
        pki.CertSpec(
            "apiserver",
            "kube-apiserver",
            hosts=_names(*api_hosts, *in_cluster, first_service_ip),
        ),
        pki.CertSpec("admin", "kubernetes-admin", ("system:masters",), server=False),
        pki.CertSpec(
            KUBELET_CLIENT, "kube-apiserver-kubelet-client", ("system:masters",), server=False
        ),
    ]
    # The scheduler's and controller manager's certificates also serve their health ports.
    control_hosts = {
        "scheduler": config.scheduler.instances if config.scheduler else (),
        "controller-manager": (
            config.controller_manager.instances if config.controller_manager else ()
        ),
    }
    cluster += [
        pki.CertSpec(
            name,
            cn,
            orgs,
            hosts=_names(*(_host_of(config.address_of(i)) for i in control_hosts[name])),
        )
        for name, (cn, orgs) in _CONTROL_USERS.items()
    ]
    for node in config.all_nodes:
        for member in node.members():
            cluster += _node_specs(member.name, member.node_ip)
    return etcd, cluster


def _node_specs(name: str, node_ip: str) -> list[pki.CertSpec]:
    """A node's kubelet (system:node:NAME in system:nodes, as the node authorizer expects)
    and proxy certificates."""
    return [
        pki.CertSpec(
            f"kubelet-{name}",
            f"system:node:{name}",
            ("system:nodes",),
            hosts=_names(node_ip, name),
        ),
        pki.CertSpec(f"proxy-{name}", "system:kube-proxy", hosts=_names(node_ip)),
    ]


def write_kubeconfigs(paths: PKIPaths, users: Iterable[str], servers: tuple[str, ...]) -> None:
    """A kubeconfig for each of `users` (certificates under pki/) naming `servers`."""
    for user in users:
        clientconfig.write_kubeconfig(
            paths.kubeconfig(user), user, servers, creds=paths.credentials(user)
        )


def ensure_node(
    ca_dir: Path, state_dir: Path, name: str, node_ip: str, servers: tuple[str, ...]
) -> PKIPaths:
    """For `k8semu join`: the cluster CA copied from `ca_dir` (a copy of the first host's
    pki/ca.crt and ca.key), and this node's kubelet and proxy certificates and kubeconfigs
    signed with it."""
    paths = PKIPaths(state_dir)
    paths.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    for file, mode in (("ca.crt", 0o644), ("ca.key", 0o600)):
        source, target = ca_dir / file, paths.root / file
        data = pki.pem_bytes(source)
        if not target.exists() or target.read_bytes() != data:
            target.touch(mode=mode)
            target.chmod(mode)
            target.write_bytes(data)
    specs = _node_specs(name, node_ip)
    pki.ensure_all(paths.root, specs)
    write_kubeconfigs(paths, [s.name for s in specs], servers)
    return paths


def ensure(config: ClusterConfig, state_dir: Path) -> PKIPaths:
    """Every certificate and component kubeconfig of `config` under `state_dir`, made where
    missing, expiring or no longer matching; PKIError (a ValueError) naming a bad file."""
    paths = PKIPaths(state_dir)
    etcd, cluster = _specs(config)
    if config.store.members and not config.store.external:
        pki.ensure_all(paths.etcd, etcd)
    pki.ensure_all(paths.root, cluster)
    ensure_encryption_config(paths.encryption_config)
    pki.ensure_signing_key(paths.sa_key, paths.sa_pub)
    users = [
        *_CONTROL_USERS,
        *(s.name for s in cluster if s.name.startswith(("kubelet-", "proxy-"))),
    ]
    write_kubeconfigs(paths, users, config.api_server_addresses)
    return paths


def ensure_encryption_config(path: Path) -> None:
    """An EncryptionConfiguration (kube-apiserver's) encrypting Secrets with a fresh 32-byte
    aesgcm key, written once and then reused (a new key would make every Secret written
    before unreadable); identity after it reads Secrets written before encryption was on."""
    if path.exists():
        return
    secret = base64.b64encode(os.urandom(32)).decode()
    doc = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "EncryptionConfiguration",
        "resources": [
            {
                "resources": ["secrets"],
                "providers": [
                    {"aesgcm": {"keys": [{"name": "key1", "secret": secret}]}},
                    {"identity": {}},
                ],
            }
        ],
    }
    pki.write_file(path, yaml.safe_dump(doc, sort_keys=False).encode(), 0o600)


def state_probes(state: ClusterState) -> Probes:
    """`probes` for the cluster a state.json describes (its components, its other hosts'
    store replicas and API servers)."""
    return probes(
        Path(state.state_dir),
        [
            *((c.kind, c.address) for c in state.components),
            *(("store", a) for _, a in state.store_members),
            *(("apiserver", a) for a in state.api_servers),
        ],
    )


def probes(state_dir: Path, components: Iterable[tuple[str, str]]) -> Probes:
    """Probes that ask the TLS components of a state directory's cluster with its
    credentials: the admin's for API servers, kubelets, proxies, schedulers and controller
    managers (their health takes any certificate of the cluster CA), the health-check
    client's for store replicas.
    `components` are (kind, address); a cluster without ``pki/`` (TLS off) gets plain probes."""
    paths = PKIPaths(state_dir)
    api = paths.api_client()
    if api is None:
        return Probes()
    tls: dict[str, transport.ClientTLS] = {}
    for kind, address in components:
        if kind in API_KINDS or kind in SERVING_KINDS:
            tls[address] = api
        elif kind in STORE_KINDS and paths.cert("healthcheck-client", etcd=True).cert.exists():
            tls[address] = paths.store_tls()
    return Probes(tls=tls)

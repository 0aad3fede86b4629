"""The per-node tunnel: how a proxy on host A reaches a pod IP that lives on host B.

Pod IPs are loopback addresses (127.244.N.x) and so only reachable on their own host. Each
node's proxy, when started with a tunnel port, serves on `node_ip:tunnel_port` a one-line
handshake: the client sends ``CONNECT <ip>:<port>\\n``; the tunnel connects to that address on
its own host and answers ``OK\\n`` (then bytes are spliced both ways, with the same flow
control and half-close as the service data path) or ``ERR <reason>\\n`` and closes. Only
loopback targets (127.0.0.0/8) are accepted, so a tunnel is never an open relay.

The dialing side (`TunnelDialer`) decides per endpoint: the endpoint's node (its Endpoints
`nodeName`, else the node whose podCIDR holds the IP) has its tunnel (Node annotation
`k8semu.io/tunnel-endpoint`, else InternalIP:tunnel port) at an address that is not this
host's -> connect there with the CONNECT line; otherwise connect directly. The same decision
says which pods get overlay listeners on this host (`k8semu.proxy.overlay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from typing import Any

from k8semu.client import Indexer
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2
from k8semu.proxy.datapath import DataPathConfig, Frontend, direct
from k8semu.proxy.overlay import internal_ip, tunnel_endpoint
from k8semu.proxy.table import Endpoint, PortKey

log = get_logger(__name__)

DEFAULT_TUNNEL_PORT = 10262
_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
_MAX_LINE = 128
HANDSHAKE_TIMEOUT = 10.0  # seconds for a tunnel client to send its CONNECT line
TUNNEL_KEY = PortKey("", "tunnel", "", "TCP")


def parse_connect(line: bytes) -> tuple[str, int]:
    """`CONNECT 127.244.1.5:8080` -> ("127.244.1.5", 8080); ValueError when malformed or not
    a loopback address."""
    text = line.decode("ascii").strip()
    verb, _, target = text.partition(" ")
    if verb != "CONNECT":
        raise ValueError("expected CONNECT ip:port")
    host, _, port_text = target.rpartition(":")
    ip = ipaddress.IPv4Address(host)
    port = int(port_text)
    if ip not in _LOOPBACK:
        raise ValueError(f"{ip}: only loopback (pod) addresses are served")
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return str(ip), port


class _Handshake(asyncio.Protocol):
    """Reads the CONNECT line, then hands the transport to the splice."""

    def __init__(self, frontend: Frontend) -> None:
        self.f = frontend
        self.transport: Any = None
        self.buf = b""
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.timer = self.f.loop.call_later(HANDSHAKE_TIMEOUT, self._refuse, "no CONNECT line")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        line, sep, rest = self.buf.partition(b"\n")
        if not sep:
            if len(self.buf) > _MAX_LINE:
                self._refuse("line too long")
            return
        if rest:  # the dialer waits for OK before sending: anything more is a protocol error
            self._refuse("data before OK")
            return
        try:
            ip, port = parse_connect(line)
        except (ValueError, UnicodeDecodeError) as exc:
            self._refuse(str(exc))
            return
        if self.timer is not None:
            self.timer.cancel()
        self.f.adopt(self.transport, Endpoint(ip, port))

    def _refuse(self, why: str) -> None:
        with contextlib.suppress(Exception):
            self.transport.write(f"ERR {why[:100]}\n".encode())
            self.transport.close()

    def eof_received(self) -> bool:
        return False


class TunnelServer:
    """Serves CONNECT on `ip:port` for this host's pod IPs."""

    def __init__(self, ip: str, port: int, *, connect_timeout: float = 2.0) -> None:
        self.ip = ip
        self.port = port
        self.config = DataPathConfig(connect_timeout=connect_timeout)
        self.frontend: Frontend | None = None
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        frontend = self.frontend = Frontend(TUNNEL_KEY, config=self.config, dialer=direct)
        self._server = await loop.create_server(
            lambda: _Handshake(frontend), self.ip, self.port, reuse_address=True
        )
        log.info("tunnel listening", address=f"{self.ip}:{self.port}")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if self.frontend is not None:
            self.frontend.close_all()


def _is_local(ip: str) -> bool:
    """True when `ip` is an address of this host (loopback, or bindable here)."""
    try:
        addr = ipaddress.IPv4Address(ip)
    except ValueError:
        return True
    if addr in _LOOPBACK:
        return True
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((ip, 0))
        except OSError:
            return False
    return True


class TunnelDialer:
    """A `Dialer`: through the endpoint's node's tunnel when that node is on another host.

    A node's tunnel is where its Node annotation `k8semu.io/tunnel-endpoint` says, else its
    InternalIP at this proxy's own tunnel port (`k8semu.proxy.overlay.tunnel_endpoint`); the
    node is remote when that address is not one of this host's.
    """

    def __init__(self, nodes: Indexer[core_pb2.Node], *, tunnel_port: int) -> None:
        self.nodes = nodes
        self.tunnel_port = tunnel_port
        self._local: dict[str, bool] = {}

    def node_of(self, ep: Endpoint) -> core_pb2.Node | None:
        if ep.node_name:
            node = self.nodes.get(ep.node_name)
            if node is not None:
                return node
        try:
            ip = ipaddress.IPv4Address(ep.ip)
        except ValueError:
            return None
        for node in self.nodes.list():
            for cidr in (node.spec.pod_cidr, *node.spec.pod_cidrs):
                with contextlib.suppress(ValueError):
                    if cidr and ip in ipaddress.IPv4Network(cidr, strict=False):
                        return node
        return None

    def _is_local(self, ip: str) -> bool:
        local = self._local.get(ip)
        if local is None:
            local = self._local[ip] = _is_local(ip)
        return local

    def route(self, node: core_pb2.Node | None) -> tuple[str, int] | None:
        """The tunnel to reach `node`'s pods through; None when they are reached directly
        (the node is on this host, or where its tunnel is is not known)."""
        if node is None:
            return None
        where = tunnel_endpoint(node, self.tunnel_port)
        if where is None or self._is_local(where[0]):
            return None
        # A node with a loopback InternalIP but a published tunnel elsewhere is still here.
        ip = internal_ip(node)
        if ip and ip != where[0] and self._is_local(ip):
            return None
        return where

    def is_remote(self, node: core_pb2.Node) -> bool:
        """True when `node`'s pods live on another host (reached through its tunnel)."""
        return self.route(node) is not None

    def __call__(self, ep: Endpoint) -> tuple[str, int, bytes]:
        where = self.route(self.node_of(ep))
        if where is None:
            return direct(ep)
        return where[0], where[1], f"CONNECT {ep.ip}:{ep.port}\n".encode()

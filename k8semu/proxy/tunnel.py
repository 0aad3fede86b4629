"""The per-node tunnel: how a proxy on host A reaches a pod IP that lives on host B.

Pod IPs are loopback addresses (127.244.N.x) and so only reachable on their own host. Each
node's proxy, when started with a tunnel port, serves on `node_ip:tunnel_port` a one-line
handshake (the wire format is k8semu.proxy.tunnelwire's): a CONNECT line naming a pod's
ip:port, answered OK, after which bytes are spliced both ways with the same flow control and
half-close as the service data path (or, with `udp`, datagrams cross as frames), or ERR and
the connection closes. Only loopback targets are accepted, so a tunnel is never an open relay;
a proxy's tunnel narrows that to the pod IPs of its own node (`TunnelServer.pod_ips`), so it
reaches neither the host's services (the store's port on 127.0.0.1) nor another node's pods.
With TLS (`security.tls`, the default of `k8semu up`) the tunnel is mutual TLS: only a peer
with a certificate of the cluster CA naming one of `TunnelServer.peers` (the other proxies)
gets as far as the CONNECT line. Every refusal is answered `ERR <reason>` and logged.

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
import ssl
from collections.abc import Collection
from typing import Any

from k8semu import aio
from k8semu.client import Indexer
from k8semu.log import get_logger
from k8semu.pb.api.v1 import core_pb2
from k8semu.proxy.datapath import DataPathConfig, Frontend, direct
from k8semu.proxy.overlay import internal_ip, tunnel_endpoint
from k8semu.proxy.table import Endpoint, PortKey
from k8semu.proxy.tunnelwire import (
    MAX_REQUEST_LINE,
    OK,
    UDP_FRAME_MAX,
    connect_line,
    frame,
    parse_request,
    refusal,
    unframe,
)
from k8semu.transport import peer_subject

log = get_logger(__name__)

DEFAULT_TUNNEL_PORT = 10262
_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
HANDSHAKE_TIMEOUT = 10.0  # seconds for a tunnel client to send its CONNECT line
TUNNEL_KEY = PortKey("", "tunnel", "", "TCP")


class _Handshake(asyncio.Protocol):
    """Reads the CONNECT line, then hands the transport to the splice (when the server's
    checks let it: see `TunnelServer`)."""

    def __init__(self, server: TunnelServer, frontend: Frontend) -> None:
        self.server = server
        self.f = frontend
        self.relays = server.relays
        self.transport: Any = None
        self.buf = b""
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.timer = self.f.loop.call_later(HANDSHAKE_TIMEOUT, self._refuse, "no CONNECT line")
        why = self.server.refuse_peer(self)
        if why:
            self._refuse(why)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        line, sep, rest = self.buf.partition(b"\n")
        if not sep:
            if len(self.buf) > MAX_REQUEST_LINE:
                self._refuse("line too long")
            return
        if rest:  # the dialer waits for OK before sending: anything more is a protocol error
            self._refuse("data before OK")
            return
        try:
            ip, port, protocol = parse_request(line)
        except (ValueError, UnicodeDecodeError) as exc:
            self._refuse(str(exc))
            return
        if self.timer is not None:
            self.timer.cancel()
        why = self.server.refuse_target(ip, self.transport.get_extra_info("peername"))
        if why:
            self._refuse(why)
            return
        if protocol == "UDP":
            relay = _UDPRelay(self.transport, self.relays, self.f)
            self.transport.set_protocol(relay)
            relay.start(ip, port)
            return
        self.f.adopt(self.transport, Endpoint(ip, port))

    def _refuse(self, why: str) -> None:
        if self.timer is not None:
            self.timer.cancel()
        with contextlib.suppress(Exception):
            self.transport.write(refusal(why))
            self.transport.close()

    def eof_received(self) -> bool:
        return False


class _UDPRelay(asyncio.Protocol):
    """The tunnel's end of one UDP session (`CONNECT ip:port udp`): a UDP socket connected to
    the pod, datagrams to and from it framed on the TCP connection (`frame`). Either side
    going away (the TCP connection closed, an ICMP error from the pod's address) ends both."""

    def __init__(self, transport: Any, relays: set[_UDPRelay], frontend: Frontend) -> None:
        self.transport = transport
        self.relays = relays
        self.stats = frontend.stats
        self.loop = frontend.loop
        self.high = frontend.config.write_buffer_high
        self.udp: Any = None
        self.buf = bytearray()
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        relays.add(self)

    def start(self, ip: str, port: int) -> None:
        self.stats.connections_total += 1
        self.stats.connections_active += 1
        self.transport.pause_reading()  # frames wait until the pod's socket is open
        self.task = self.loop.create_task(self._open(ip, port))

    async def _open(self, ip: str, port: int) -> None:
        try:
            udp, _ = await self.loop.create_datagram_endpoint(
                lambda: _RelayDatagrams(self), remote_addr=(ip, port)
            )
        except OSError as exc:
            self.stats.errors += 1
            with contextlib.suppress(Exception):
                self.transport.write(refusal(str(exc)))
            self.close()
            return
        if self.closed:
            udp.close()
            return
        self.udp = udp
        self.transport.write(OK)
        self.transport.resume_reading()
        if self.buf:
            self.data_received(b"")

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.udp is None:  # early bytes (the client should wait for OK): kept until open
            if len(self.buf) > 2 * UDP_FRAME_MAX:
                self.close()
            return
        for datagram in unframe(self.buf):
            self.stats.bytes_in += len(datagram)
            self.udp.sendto(datagram)

    def reply(self, datagram: bytes) -> None:
        # UDP may drop; a tunnel whose reader is slow must not grow this process's memory.
        if self.transport.get_write_buffer_size() > self.high:
            self.stats.errors += 1
            return
        self.stats.bytes_out += len(datagram)
        self.transport.write(frame(datagram))

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.relays.discard(self)
        self.stats.connections_active -= 1
        with contextlib.suppress(Exception):
            self.transport.close()
        if self.udp is not None:
            self.udp.close()


class _RelayDatagrams(asyncio.DatagramProtocol):
    def __init__(self, relay: _UDPRelay) -> None:
        self.relay = relay

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.relay.reply(data)

    def error_received(self, exc: Exception) -> None:
        self.relay.stats.errors += 1
        self.relay.close()


class TunnelServer:
    """Serves CONNECT on `ip:port` for this host's pod IPs. With `config`, tunnelled TCP
    connections follow its idle and half-open timeouts (swept every `sweep_interval`), as
    Service connections do; `connect_timeout` alone keeps the old default config.

    `pod_ips`: when set (a proxy sets it from its pod cache on every sync), only these
    addresses are reached, every other target refused; None: any loopback address (a tunnel
    tested alone). `tls`: a server context requiring client certificates (mutual TLS), and
    `peers` the certificate users (CN) allowed to open a tunnel; None: plain TCP."""

    def __init__(
        self,
        ip: str,
        port: int,
        *,
        connect_timeout: float = 2.0,
        config: DataPathConfig | None = None,
        sweep_interval: float = 1.0,
        tls: ssl.SSLContext | None = None,
        peers: Collection[str] = (),
        node_name: str = "",
    ) -> None:
        self.ip = ip
        self.port = port
        self.config = config or DataPathConfig(connect_timeout=connect_timeout)
        self.sweep_interval = sweep_interval
        self.tls = tls
        self.peers = frozenset(peers)
        self.node_name = node_name
        self.pod_ips: frozenset[str] | None = None
        self.refused = 0
        self.frontend: Frontend | None = None
        self.relays: set[_UDPRelay] = set()
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def refuse_peer(self, handshake: _Handshake) -> str:
        """Why the peer of a new connection may not use this tunnel ("" when it may)."""
        if self.tls is None:
            return ""
        subject = peer_subject(handshake)
        user = "anonymous" if subject is None else subject.user
        if user in self.peers:
            return ""
        return self._refused(f"user {user!r} may not open a tunnel", handshake)

    def refuse_target(self, ip: str, peer: Any) -> str:
        """Why `ip` is not served ("" when it is): not a pod IP of this node."""
        if self.pod_ips is None or ip in self.pod_ips:
            return ""
        node = self.node_name or self.ip
        return self._refused(f"{ip} is not a pod IP of node {node}", peer)

    def _refused(self, why: str, peer: Any) -> str:
        self.refused += 1
        if isinstance(peer, _Handshake):
            peer = peer.transport.get_extra_info("peername")
        log.warning("tunnel request refused", reason=why, peer=str(peer))
        return why

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        frontend = self.frontend = Frontend(TUNNEL_KEY, config=self.config, dialer=direct)
        self._server = await loop.create_server(
            lambda: _Handshake(self, frontend),
            self.ip,
            self.port,
            reuse_address=True,
            ssl=self.tls,
        )
        self._sweeper = loop.create_task(self._sweep(frontend), name="tunnel-sweep")
        log.info("tunnel listening", address=f"{self.ip}:{self.port}")

    async def _sweep(self, frontend: Frontend) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.sweep_interval)
            frontend.sweep(self.sweep_interval, loop.time())

    async def stop(self) -> None:
        task, self._sweeper = self._sweeper, None
        await aio.cancel_and_wait([task])
        if self._server is not None:
            self._server.close()
            self._server = None
        if self.frontend is not None:
            self.frontend.close_all()
        for relay in list(self.relays):
            relay.close()


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
        return where[0], where[1], connect_line(ep.ip, ep.port)

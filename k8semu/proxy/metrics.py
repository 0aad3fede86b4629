"""The proxy's per-Service-port metrics. kube-proxy has none per Service (the kernel
forwards its traffic); ours splices every connection, so it can count them:
k8semu_proxy_connections_total, k8semu_proxy_connections_active,
k8semu_proxy_received_bytes_total, k8semu_proxy_sent_bytes_total, k8semu_proxy_errors_total
and k8semu_proxy_http_requests_total, each {namespace,service,port,protocol}.

Read from the data path's own counters (`PortStats`) when scraped, so the data path pays
nothing for them. A Service port that goes away takes its counters along (a counter reset,
which Prometheus' rate() handles).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from k8semu import metrics

if TYPE_CHECKING:
    from k8semu.proxy.proxier import Proxier

_LABELS = ["namespace", "service", "port", "protocol"]
# (name, help, PortSnapshot field) of the counters.
_COUNTERS = (
    ("k8semu_proxy_connections", "Connections accepted per Service port.", "connections_total"),
    ("k8semu_proxy_received_bytes", "Bytes received from clients.", "bytes_in"),
    ("k8semu_proxy_sent_bytes", "Bytes sent to clients.", "bytes_out"),
    ("k8semu_proxy_errors", "Connections that failed (no endpoint, dial error).", "errors"),
    ("k8semu_proxy_http_requests", "HTTP requests seen on the spliced streams.", "http_requests"),
)


class _Ports(Collector):
    """One proxy per process (in-process tests: the last one started)."""

    def __init__(self) -> None:
        self.proxier: weakref.ref[Proxier] | None = None

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        proxier = self.proxier() if self.proxier is not None else None
        ports = proxier.snapshot() if proxier is not None else []
        counters = [CounterMetricFamily(n, h, labels=_LABELS) for n, h, _ in _COUNTERS]
        active = GaugeMetricFamily(
            "k8semu_proxy_connections_active", "Connections open now.", labels=_LABELS
        )
        for port in ports:
            key = port.key
            labels = [key.namespace, key.service, key.port_name, key.protocol]
            for family, (_, _, field) in zip(counters, _COUNTERS, strict=True):
                family.add_metric(labels, getattr(port, field))
            active.add_metric(labels, port.connections_active)
        yield from counters
        yield active


PORTS = _Ports()
metrics.live(PORTS)

"""The proxy's per-Service-port and per-endpoint metrics. kube-proxy has none per Service
(the kernel forwards its traffic); ours splices every connection, so it can count them:

- per Service port, {namespace,service,port,protocol}: k8semu_proxy_connections_total,
  k8semu_proxy_connections_active, k8semu_proxy_received_bytes_total,
  k8semu_proxy_sent_bytes_total, k8semu_proxy_errors_total, k8semu_proxy_http_requests_total;
- per endpoint of a Service port, the same labels plus endpoint="ip:port":
  k8semu_proxy_endpoint_connections_total, k8semu_proxy_endpoint_connections_active,
  k8semu_proxy_endpoint_requests_total (connections, or HTTP/1.x requests on connections
  that speak it: `EndpointStats`), k8semu_proxy_endpoint_http_requests_total,
  k8semu_proxy_endpoint_received_bytes_total, k8semu_proxy_endpoint_sent_bytes_total.

Read from the data path's own counters (`PortStats`, `EndpointStats`) when scraped, so the
data path pays nothing for them. A Service port that goes away takes its counters along,
and so does an endpoint that is no longer ready once its connections closed (a counter
reset, which Prometheus' rate() handles).
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
_ENDPOINT_LABELS = [*_LABELS, "endpoint"]
# (name, help, PortSnapshot field) of the counters.
_COUNTERS = (
    ("k8semu_proxy_connections", "Connections accepted per Service port.", "connections_total"),
    ("k8semu_proxy_received_bytes", "Bytes received from clients.", "bytes_in"),
    ("k8semu_proxy_sent_bytes", "Bytes sent to clients.", "bytes_out"),
    ("k8semu_proxy_errors", "Connections that failed (no endpoint, dial error).", "errors"),
    ("k8semu_proxy_http_requests", "HTTP requests seen on the spliced streams.", "http_requests"),
)
# (name, help, EndpointSnapshot field) of the per-endpoint counters.
_ENDPOINT_COUNTERS = (
    (
        "k8semu_proxy_endpoint_connections",
        "Connections (UDP: sessions) forwarded to the endpoint.",
        "connections_total",
    ),
    (
        "k8semu_proxy_endpoint_requests",
        "Requests forwarded to the endpoint: connections, or HTTP/1.x requests on "
        "connections that speak it.",
        "requests",
    ),
    (
        "k8semu_proxy_endpoint_http_requests",
        "HTTP/1.x requests forwarded to the endpoint.",
        "http_requests",
    ),
    ("k8semu_proxy_endpoint_received_bytes", "Bytes from clients to the endpoint.", "bytes_in"),
    ("k8semu_proxy_endpoint_sent_bytes", "Bytes from the endpoint to clients.", "bytes_out"),
)

_Family = CounterMetricFamily | GaugeMetricFamily


class _Ports(Collector):
    """One proxy per process (in-process tests: the last one started)."""

    def __init__(self) -> None:
        self.proxier: weakref.ref[Proxier] | None = None

    def collect(self) -> Iterator[_Family]:
        proxier = self.proxier() if self.proxier is not None else None
        if proxier is None:  # a process that only imported the package: no families at all
            return
        ports = proxier.snapshot()
        counters = [CounterMetricFamily(n, h, labels=_LABELS) for n, h, _ in _COUNTERS]
        active = GaugeMetricFamily(
            "k8semu_proxy_connections_active", "Connections open now.", labels=_LABELS
        )
        per_endpoint = [
            CounterMetricFamily(n, h, labels=_ENDPOINT_LABELS) for n, h, _ in _ENDPOINT_COUNTERS
        ]
        endpoint_active = GaugeMetricFamily(
            "k8semu_proxy_endpoint_connections_active",
            "Connections (UDP: sessions) to the endpoint open now.",
            labels=_ENDPOINT_LABELS,
        )
        for port in ports:
            key = port.key
            labels = [key.namespace, key.service, key.port_name, key.protocol]
            for family, (_, _, field) in zip(counters, _COUNTERS, strict=True):
                family.add_metric(labels, getattr(port, field))
            active.add_metric(labels, port.connections_active)
            for ep in port.endpoints:
                ep_labels = [*labels, f"{ep.ip}:{ep.port}"]
                for family, (_, _, field) in zip(per_endpoint, _ENDPOINT_COUNTERS, strict=True):
                    family.add_metric(ep_labels, getattr(ep, field))
                endpoint_active.add_metric(ep_labels, ep.connections_active)
        yield from counters
        yield active
        yield from per_endpoint
        yield endpoint_active


PORTS = _Ports()
metrics.live(PORTS)

"""Traffic as HPA metrics: requests per second per pod (`type: Pods`) and per Service
(`type: Object`, `describedObject: Service/NAME`), from the proxies' per-endpoint counters.

Every proxy counts what it forwards per endpoint (pod IP:port) of each Service port and
serves the totals on `Proxy.GetMetrics`; it names its address on its Node
(`k8semu.io/proxy-endpoint`). All proxies are read and summed: on one host the proxies of
all nodes share each ClusterIP listener (SO_REUSEPORT), so any of them may have forwarded a
pod's requests. A proxy that does not answer is left out: a proxy that is not running
forwards nothing (the kernel hands its share of a shared listener to the others), and its
earlier counts are history already taken into account.

Rates (`TrafficHistory`, pure): per proxy, samples of its counters, timed by the proxy's own
uptime (no clock skew, no RPC latency). A rate is taken between the newest sample and the
newest one at least `window` seconds older (else the oldest kept, if at least
`min_interval` older); with no such pair yet (first contact, a restarted proxy) the source
samples again `min_interval` later. An endpoint's counter that went down was forgotten
by that proxy and listed again: it counts from zero. A proxy whose `instance` changed was
restarted: its history starts over. Endpoints only in the older sample are gone (their
pods too). Only Service ports count (not the tunnel's or the pod overlay's listeners, which
carry the same requests a second time).

Metric names (the value is per second, as a milli-quantity: 2500m is 2.5 requests/s):
`requests_per_second` (connections, or HTTP/1.x requests on connections that speak it),
`http_requests_per_second` (HTTP/1.x requests only), `connections_per_second`. A metric
`selector` is not supported (an error in the HPA's conditions, not a guess).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from k8semu.api.selectors import LabelSelector
from k8semu.client import Client, ClientError, NotFound
from k8semu.controllers.podautoscaler.metrics import MetricsUnavailable
from k8semu.controllers.podautoscaler.replicas import PodMetric
from k8semu.pb.api.v1 import autoscaling_pb2 as pb
from k8semu.pb.api.v1 import core_pb2
from k8semu.pb.proxy.v1 import proxy_pb2
from k8semu.proxy import scrape

# Metric name -> index of its counter in `Sample.counters` values.
METRICS = {
    "requests_per_second": 0,
    "http_requests_per_second": 1,
    "connections_per_second": 2,
}
SERVICE_SCOPES = ("", "external")  # the tunnel's and the overlay's listeners are not Services
DEFAULT_MIN_INTERVAL = 1.0  # seconds: the shortest span a rate is taken over
HISTORY_LIMIT = 64  # samples kept per proxy, whatever the window


@dataclass(frozen=True, slots=True)
class EndpointKey:
    """One endpoint of one Service port, as one proxy counts it."""

    namespace: str
    service: str
    port_name: str
    protocol: str
    scope: str
    ip: str
    port: int


Counters = tuple[int, int, int]  # requests, HTTP requests, connections


@dataclass(frozen=True, slots=True)
class Sample:
    """One proxy's counters at `uptime` seconds after it started."""

    instance: str
    uptime: float
    counters: Mapping[EndpointKey, Counters]

    @classmethod
    def of(cls, message: proxy_pb2.ProxyMetrics) -> Sample:
        counters: dict[EndpointKey, Counters] = {}
        for port in message.ports:
            if not port.namespace or port.scope not in SERVICE_SCOPES:
                continue
            for ep in port.endpoints:
                key = EndpointKey(
                    port.namespace,
                    port.service,
                    port.port_name,
                    port.protocol,
                    port.scope,
                    ep.ip,
                    ep.port,
                )
                counters[key] = (ep.requests_total, ep.http_requests_total, ep.connections_total)
        return cls(message.instance, message.uptime_seconds, counters)


Rates = dict[EndpointKey, tuple[float, float, float]]


def rates_between(old: Sample, new: Sample) -> Rates:
    """Per endpoint of `new`, each counter's rate from `old` to `new` (same proxy instance,
    `new` later). A counter below its old value (the endpoint was forgotten and listed
    again) counts from zero; an endpoint not in `old` appeared since, from zero too."""
    span = new.uptime - old.uptime
    if span <= 0:
        raise ValueError(f"samples {span:.3f}s apart")
    out: Rates = {}
    for key, now in new.counters.items():
        then = old.counters.get(key, (0, 0, 0))
        r, h, c = (n - t if n >= t else n for n, t in zip(now, then, strict=True))
        out[key] = (r / span, h / span, c / span)
    return out


@dataclass(slots=True)
class _Proxy:
    instance: str
    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=HISTORY_LIMIT))
    taken: float = 0.0  # the reader's monotonic clock when the newest sample came


class TrafficHistory:
    """Samples per proxy (by node name) and the rates they give; pure, the time is passed
    in (`taken`, the reader's monotonic seconds, only decides when to sample again)."""

    def __init__(self, *, window: float, min_interval: float = DEFAULT_MIN_INTERVAL) -> None:
        if not window > 0 or not min_interval > 0:
            raise ValueError("window and min_interval must be > 0")
        self.window = window
        self.min_interval = min(min_interval, window)
        self._proxies: dict[str, _Proxy] = {}

    def fresh(self, proxy: str, taken: float) -> bool:
        """Whether `proxy`'s newest sample is recent enough to answer without another."""
        p = self._proxies.get(proxy)
        return p is not None and taken - p.taken < self.min_interval

    def add(self, proxy: str, sample: Sample, taken: float) -> None:
        p = self._proxies.get(proxy)
        if (
            p is None
            or p.instance != sample.instance
            or (p.samples and sample.uptime <= p.samples[-1].uptime)
        ):
            p = self._proxies[proxy] = _Proxy(sample.instance)  # new, or restarted
        p.samples.append(sample)
        p.taken = taken
        # Keep the newest sample at least `window` older than this one, and all after it.
        while len(p.samples) > 2 and sample.uptime - p.samples[1].uptime >= self.window:
            p.samples.popleft()

    def forget_except(self, proxies: Iterable[str]) -> None:
        """Drop the history of proxies no longer listed (their Node is gone)."""
        keep = set(proxies)
        for name in [n for n in self._proxies if n not in keep]:
            del self._proxies[name]

    def pair(self, proxy: str) -> tuple[Sample, Sample] | None:
        """(older, newest) to take `proxy`'s rates over, None while it has no such pair.
        Half `min_interval` is enough: the reader waits `min_interval` on its own clock,
        and the proxy's may have seen a little less of it."""
        p = self._proxies.get(proxy)
        if p is None or len(p.samples) < 2:
            return None
        newest = p.samples[-1]
        oldest = p.samples[0]
        if newest.uptime - oldest.uptime < self.min_interval / 2:
            return None
        return oldest, newest

    def rates(self, proxies: Iterable[str]) -> Rates:
        """Rates summed over `proxies` (those that have a pair), each proxy process once
        (two Nodes naming the same proxy must not count its traffic twice)."""
        total: Rates = {}
        seen: set[str] = set()
        for name in proxies:
            found = self.pair(name)
            if found is None or found[1].instance in seen:
                continue
            seen.add(found[1].instance)
            for key, (r, h, c) in rates_between(*found).items():
                tr, th, tc = total.get(key, (0.0, 0.0, 0.0))
                total[key] = (tr + r, th + h, tc + c)
        return total


Fetch = Callable[[core_pb2.Node], Awaitable[proxy_pb2.ProxyMetrics]]


class ProxyTraffic:
    """Pod and Service traffic metrics from the proxies; see the module doc."""

    def __init__(
        self,
        client: Client,
        *,
        window: float,
        min_interval: float = DEFAULT_MIN_INTERVAL,
        timeout: float = scrape.DEFAULT_TIMEOUT,
        fetch: Fetch | None = None,
        nodes: Callable[[], Iterable[core_pb2.Node]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`nodes`: the Nodes from a cache (the controller's informer); without it they are
        listed through `client` on each round."""
        self.client = client
        self.nodes = nodes
        self.history = TrafficHistory(window=window, min_interval=min_interval)
        self.timeout = timeout
        self.fetch: Fetch = fetch or (
            lambda node: scrape.node_metrics(node, timeout=timeout, tls=client.tls)
        )
        self.clock = clock
        self._lock = asyncio.Lock()

    async def rates(self) -> Rates:
        """Every proxy's endpoint rates, summed; MetricsUnavailable when no proxy gives one."""
        async with self._lock:  # HPAs evaluated together share one round of samples
            nodes = await self._nodes()
            proxies = {
                n.metadata.name: n
                for n in nodes
                if n.metadata.annotations.get(scrape.ENDPOINT_ANNOTATION)
            }
            if not proxies:
                raise MetricsUnavailable(
                    f"no node names its proxy ({scrape.ENDPOINT_ANNOTATION} annotation)"
                )
            self.history.forget_except(proxies)
            failures = await self._sample(proxies, fresh_ok=True)
            waiting = [n for n in proxies if n not in failures and self.history.pair(n) is None]
            if waiting:  # first contact, or a restarted proxy: a second sample shortly
                await asyncio.sleep(self.history.min_interval)
                failures.update(await self._sample({n: proxies[n] for n in waiting}))
            answered = [n for n in proxies if n not in failures]
            if not answered:
                raise MetricsUnavailable("no proxy answered: " + "; ".join(failures.values()))
            return self.history.rates(answered)

    async def _nodes(self) -> Iterable[core_pb2.Node]:
        if self.nodes is not None:
            return self.nodes()
        try:
            return (await self.client.list_all(core_pb2.Node)).items
        except ClientError as exc:
            raise MetricsUnavailable(f"unable to list nodes: {exc}") from exc

    async def _sample(
        self, proxies: Mapping[str, core_pb2.Node], *, fresh_ok: bool = False
    ) -> dict[str, str]:
        """Sample the proxies (concurrently); the ones that failed, with why."""
        names = [n for n in proxies if not (fresh_ok and self.history.fresh(n, self.clock()))]
        answers = await asyncio.gather(
            *(self.fetch(proxies[n]) for n in names), return_exceptions=True
        )
        failures: dict[str, str] = {}
        taken = self.clock()
        for name, answer in zip(names, answers, strict=True):
            if isinstance(answer, proxy_pb2.ProxyMetrics):
                self.history.add(name, Sample.of(answer), taken)
            elif isinstance(answer, Exception):
                failures[name] = str(answer)
            else:
                raise answer
        return failures

    # ---- the custom metrics of a MetricsSource (see metrics.Combined) ------------------------

    async def pod_metric(
        self, namespace: str, selector: LabelSelector, metric: pb.MetricIdentifier
    ) -> dict[str, PodMetric]:
        index = _counter(metric)
        try:
            pods = (await self.client.list_all(core_pb2.Pod, namespace=namespace)).items
        except ClientError as exc:
            raise MetricsUnavailable(f"unable to list pods: {exc}") from exc
        by_ip: dict[str, str] = {}
        for pod in pods:
            if selector.matches(pod.metadata.labels):
                for ip in {pod.status.pod_ip, *(p.ip for p in pod.status.pod_ips)} - {""}:
                    by_ip[ip] = pod.metadata.name
        rates = await self.rates()
        per_pod: dict[str, float] = {}
        for key, values in rates.items():
            name = by_ip.get(key.ip) if key.namespace == namespace else None
            if name is not None:
                per_pod[name] = per_pod.get(name, 0.0) + values[index]
        now = time.time()
        window = self.history.window
        # A pod no proxy lists as an endpoint has no sample (the calculator's missing-pod
        # rules apply); one listed with no traffic has 0.
        return {name: PodMetric(round(rate * 1000), now, window) for name, rate in per_pod.items()}

    async def object_metric(
        self, namespace: str, described: pb.CrossVersionObjectReference, metric: pb.MetricIdentifier
    ) -> int:
        index = _counter(metric)
        if described.kind != "Service" or described.api_version not in ("", "v1"):
            raise MetricsUnavailable(
                f"unable to get metric {metric.name}: of {described.kind}/{described.name}: "
                "only Services (apiVersion v1) are served"
            )
        try:
            await self.client.get(core_pb2.Service, described.name, namespace=namespace)
        except NotFound:
            raise MetricsUnavailable(
                f'unable to get metric {metric.name}: services "{described.name}" not found'
            ) from None
        except ClientError as exc:
            raise MetricsUnavailable(f"unable to get metric {metric.name}: {exc}") from exc
        rates = await self.rates()
        total = sum(
            values[index]
            for key, values in rates.items()
            if key.namespace == namespace and key.service == described.name
        )
        return round(total * 1000)


def _counter(metric: pb.MetricIdentifier) -> int:
    index = METRICS.get(metric.name)
    if index is None:
        known = ", ".join(METRICS)
        raise MetricsUnavailable(
            f"unable to get metric {metric.name}: not served (served: {known})"
        )
    selector = metric.selector
    if selector.match_labels or selector.match_expressions:
        raise MetricsUnavailable(
            f"unable to get metric {metric.name}: metric selectors are not supported"
        )
    return index

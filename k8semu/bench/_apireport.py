"""``k8semu bench api``'s workload options, results and their Markdown: what both protocols
(gRPC, REST) share, and the targets they are held to. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PHASES = ("create", "get", "list", "update", "delete")
PROTOCOLS = ("grpc", "rest", "both")
# Issue 14's target: REST p99 within this factor of gRPC's, every verb.
TARGET_REST_RATIO = 2.0
# Which watch event each mutating phase produces.
EVENT_OF_PHASE = {"create": "ADDED", "update": "MODIFIED", "delete": "DELETED"}

# Issue 3's targets on this machine, and Kubernetes' API call latency SLOs (p99).
TARGET_MUTATING_P99_MS = 50.0
TARGET_WATCH_P99_MS = 50.0
SLO_MUTATING_P99_MS = 1000.0
SLO_GET_P99_MS = 1000.0  # read-only, scope resource
SLO_LIST_P99_MS = 5000.0  # read-only, scope namespace


@dataclass(frozen=True, kw_only=True)
class APIBenchOptions:
    """The workload. Every phase stops after ``rate * seconds`` calls or ``max_seconds``."""

    rate: float = 100.0
    seconds: float = 20.0
    writers: int = 32
    watchers: int = 100
    batching: bool = True  # watchers accept batched events, as k8semu.client does
    namespace: str = "bench"
    phases: tuple[str, ...] = PHASES
    list_limit: int = 100
    call_timeout: float = 5.0
    max_seconds: float = 120.0
    drain_seconds: float = 10.0
    ready_timeout: float = 60.0
    token: str = ""  # a bearer token sent with every call (bench api --auth)

    @property
    def calls(self) -> int:
        return max(1, round(self.rate * self.seconds))


@dataclass
class VerbResult:
    """One phase: latencies in milliseconds, from send to acknowledgement."""

    verb: str
    calls: int
    errors: int
    seconds: float
    rate: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    max_slip_ms: float  # how late against the schedule the latest call was sent
    capped: bool
    last_error: str = ""
    client_cpu_s: float = 0.0
    server_cpu_s: float | None = None  # the store replicas and the API server together
    apiserver_cpu_s: float | None = None  # the API server alone


@dataclass
class WatchResult:
    """Deliveries of one event type to every watcher; milliseconds from the write's send."""

    event: str
    writes: int
    watchers: int
    deliveries: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    all_p50_ms: float  # per write: until the last watcher had it
    all_p99_ms: float
    from_ack_p50_ms: float
    from_ack_p99_ms: float

    @property
    def expected(self) -> int:
        return self.writes * self.watchers


@dataclass
class APIBenchResult:
    options: APIBenchOptions
    server: str
    protocol: str = "grpc"
    verbs: list[VerbResult] = field(default_factory=list)
    watches: list[WatchResult] = field(default_factory=list)
    watchers_cut_off: int = 0
    watch_errors: list[str] = field(default_factory=list)
    error: str = ""


def describe(r: VerbResult) -> str:
    errors = f", {r.errors} errors (last: {r.last_error})" if r.errors else ""
    return (
        f"{r.verb}: {r.calls} calls, {r.rate:.1f}/s, p50 {r.p50_ms:.1f} ms, p90 {r.p90_ms:.1f}"
        f" ms, p99 {r.p99_ms:.1f} ms, max {r.max_ms:.1f} ms, schedule slip <="
        f" {r.max_slip_ms:.1f} ms{errors}{' (capped)' if r.capped else ''}"
    )


# -- output ------------------------------------------------------------------------------------


def _ms(x: float) -> str:
    return "inf" if x == float("inf") else f"{x:.1f}"


def _targets(verb: str) -> tuple[str, float | None]:
    if verb in ("create", "update", "delete"):
        return (
            f"<= {TARGET_MUTATING_P99_MS:g} ms (k8s SLO <= {SLO_MUTATING_P99_MS / 1e3:g} s)",
            TARGET_MUTATING_P99_MS,
        )
    if verb == "get":
        return f"(k8s SLO <= {SLO_GET_P99_MS / 1e3:g} s)", SLO_GET_P99_MS
    return f"(k8s SLO <= {SLO_LIST_P99_MS / 1e3:g} s, namespace scope)", SLO_LIST_P99_MS


def render(result: APIBenchResult, env: dict[str, Any]) -> str:
    """Two Markdown tables (calls, watch deliveries) with the targets, then the setup."""
    o = result.options
    lines = [
        f"| pods, {o.rate:g}/s, {o.watchers} watchers | calls | calls/s | p50 ms | p90 ms |"
        " p99 ms | max ms | errors | target p99 | met |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for r in result.verbs:
        text, limit = _targets(r.verb.split(" ")[0])
        met = "yes" if limit is not None and r.p99_ms <= limit and not r.errors else "no"
        lines.append(
            f"| {r.verb} | {r.calls:,} | {r.rate:.1f} | {_ms(r.p50_ms)} | {_ms(r.p90_ms)} |"
            f" {_ms(r.p99_ms)} | {_ms(r.max_ms)} | {r.errors} | {text} | {met} |"
        )
    if result.watches:
        lines += [
            "",
            "| watch delivery (from the write's send) | deliveries | p50 ms | p90 ms | p99 ms |"
            " max ms | to all watchers p50 / p99 ms | from the ack p50 / p99 ms | target |"
            " met |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
        ]
        for w in result.watches:
            met = "yes" if w.all_p99_ms <= TARGET_WATCH_P99_MS else "no"
            lines.append(
                f"| {w.event} x {w.watchers} watchers | {w.deliveries:,} / {w.expected:,} |"
                f" {_ms(w.p50_ms)} | {_ms(w.p90_ms)} | {_ms(w.p99_ms)} | {_ms(w.max_ms)} |"
                f" {_ms(w.all_p50_ms)} / {_ms(w.all_p99_ms)} |"
                f" {_ms(w.from_ack_p50_ms)} / {_ms(w.from_ack_p99_ms)} |"
                f" to all watchers p99 <= {TARGET_WATCH_P99_MS:g} ms | {met} |"
            )
    load1, load5, _ = env["load_average"]
    where = env.get("server") or "3-replica k8semu store + 1 API server on 127.0.0.1"
    lines += [
        "",
        f"Setup: {where}; each phase {o.calls:,} calls at {o.rate:g}/s on an absolute schedule"
        f" from {o.writers} concurrent tasks over one channel; {o.watchers} pod watchers, one"
        " connection each, attached throughout; latency from send to acknowledgement; watch"
        " delivery from the write's send to each watcher's event (from the ack: can be"
        " negative). One Python grpc.aio client process"
        f" ({'uvloop' if env['uvloop'] else 'asyncio'}, grpcio {env['grpcio']});"
        f" {env['cpus']} CPUs ({env['cpu_model']}), load average {load1:.2f}/{load5:.2f}"
        f" before the run, {env['date']}.",
    ]
    for r in result.verbs:
        if r.max_slip_ms > 1000.0 / o.rate * 2:
            lines.append(
                f"{r.verb}: the client fell behind its schedule by up to {r.max_slip_ms:.0f} ms."
            )
        if r.server_cpu_s is not None and r.seconds > 0:
            api = ""
            if r.apiserver_cpu_s is not None and r.calls:
                api = (
                    f" (the API server {r.apiserver_cpu_s / r.seconds:.0%},"
                    f" {r.apiserver_cpu_s / r.calls * 1e3:.2f} ms per call)"
                )
            lines.append(
                f"{r.verb}: servers used {r.server_cpu_s / r.seconds:.0%} of a CPU{api}, the"
                f" client {r.client_cpu_s / r.seconds:.0%}."
            )
    if result.watchers_cut_off:
        lines.append(f"{result.watchers_cut_off} watchers were cut off as too slow.")
    for e in result.watch_errors:
        lines.append(f"watch error: {e}")
    if result.error:
        lines.append(f"failed: {result.error}")
    return "\n".join(lines)


def compare(results: Sequence[APIBenchResult]) -> str:
    """REST p99 / gRPC p99 per verb and per watch event, against TARGET_REST_RATIO."""
    by = {r.protocol: r for r in results}
    return ratio_table(by["grpc"], by["rest"], ("gRPC", "REST"), TARGET_REST_RATIO)


def ratio_table(
    base: APIBenchResult, other: APIBenchResult, names: tuple[str, str], target: float
) -> str:
    """`other` p99 / `base` p99 per verb and per watch event, against `target`."""
    a, b = names
    lines = [
        f"| p99 ms | {a} | {b} | {b} / {a} | within {target:g}x |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    pairs = [(g.verb, g.p99_ms, r.p99_ms) for g, r in zip(base.verbs, other.verbs, strict=False)]
    pairs += [
        (f"watch {g.event} (to all)", g.all_p99_ms, r.all_p99_ms)
        for g, r in zip(base.watches, other.watches, strict=False)
    ]
    for what, g_ms, r_ms in pairs:
        ratio = r_ms / g_ms if g_ms else float("inf")
        met = "yes" if ratio <= target else "no"
        lines.append(f"| {what} | {_ms(g_ms)} | {_ms(r_ms)} | {ratio:.2f} | {met} |")
    return "\n".join(lines)

"""The figures of ``k8semu bench autoscale``: its options, its result, what is judged from the
samples (``analyse``), the Markdown report, the JSON and the plot.

Everything here is computed from what the run recorded (``Sample`` rows every
``--sample-interval``, one ``Outcome`` per request, CPU seconds from /proc): no cluster, no
network, so tests build results by hand. Times are seconds since the load started.

Targets (issue 12, "Benchmark"), each PASS, MISS or - (not judged: it did not happen):

- new replicas computed within one HPA sync period after the metric crosses the target: the
  kubelet's CPU rate is an average over its last ``RATE_WINDOW_S``, so the metric has crossed
  at most that long after the step; the check allows sync period + that window from the step;
- the new pods serving (Ready and in the Service's endpoints) within one more sync period plus
  pod start (``POD_START_S``, Kubernetes' pod startup SLO);
- no request failed after its one retry while scaling up (the step until the new pods serve)
  or down (the first scale-down until the endpoints settle);
- scale-down only after the stabilization window: the first scale-down came at least
  ``--window`` after the drop.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k8semu.api.quantity import milli_value
from k8semu.bench._autoscaleload import SHAPES, Outcome
from k8semu.bench._common import pyplot, save_figure, say, summarize, write_json

__all__ = [
    "AutoscaleOptions",
    "AutoscaleResult",
    "Check",
    "Overhead",
    "Sample",
    "WindowRow",
    "analyse",
    "plot",
    "render",
    "report",
    "to_json",
]

RATE_WINDOW_S = 10.0  # the kubelet's CPU rate window (k8semu.kubelet.stats.DEFAULT_WINDOW)
POD_START_S = 5.0  # Kubernetes' pod startup SLO
HOLLOW_PODS = 110  # pods a hollow node takes (ClusterLayout.hollow_capacity)
TOLERANCE = 0.1  # the HPA's default (--horizontal-pod-autoscaler-tolerance)
SETTLE_S = 5.0  # after the endpoints settle, a scale-down's stragglers (preStop, proxies)


@dataclass(frozen=True, kw_only=True)
class AutoscaleOptions:
    """The run; durations in seconds. The profile's drop phase is what ``duration`` leaves
    after ``warmup``, ``step`` and ``spike``."""

    #: The cluster: process-runtime workers (with proxies), keys set on the generated config,
    #: or a config of one's own; where its directory goes, whether it is kept.
    nodes: int = 1
    overrides: Mapping[str, Any] = field(default_factory=dict)
    config: Path | None = None
    workdir: Path | None = None
    keep: bool = False
    ready_timeout: float = 300.0
    #: The load profile (seconds, requests/s and factors of ``rate``).
    duration: float = 300.0  # the whole profile; the drop phase is what the others leave
    rate: float = 6.0  # steady, for ``warmup``
    warmup: float = 90.0
    step: float = 60.0  # at 2x
    spike: float = 15.0  # at ``spike_factor``x
    spike_factor: float = 3.0
    drop_factor: float = 0.25  # until ``duration``
    #: The HPA: its behavior's scale-down stabilization window; the cluster config's
    #: horizontalPodAutoscaler.syncPeriod (None: the config's default); what it scales on.
    window: float = 60.0
    sync_period: float | None = None
    metric: str = "cpu"
    cpu_percent: int = 50
    rps_target: float = 5.0
    min_replicas: int = 1
    max_replicas: int = 8
    #: The app: its CPU request and limit; sqrt steps per request (~9 ms of CPU here: at
    #: 50% of 50m a pod serves ~3 requests/s, so the profile goes 3 -> 5 -> 7 -> 1 pods
    #: while the whole app asks for at most ~160m of this shared 2-core machine).
    cpu_request: str = "50m"
    cpu_limit: str = "100m"
    iterations: int = 200_000
    #: The client (``_autoscaleload.LoadDriver``) and the sampling.
    shapes: tuple[str, ...] = SHAPES
    max_in_flight: int = 64
    keepalive_requests: int = 50
    request_timeout: float = 5.0
    sample_interval: float = 0.5
    progress: bool = True
    #: The metrics-overhead sub-run: that many pods on that many hollow nodes (0: none),
    #: CPU read over a window without them and one with them.
    overhead_pods: int = 200
    overhead_nodes: int = 4
    overhead_window: float = 45.0

    @property
    def drop(self) -> float:
        return self.duration - self.warmup - self.step - self.spike

    @property
    def t_step(self) -> float:
        return self.warmup

    @property
    def t_drop(self) -> float:
        return self.warmup + self.step + self.spike

    def phases(self) -> list[tuple[str, float, float]]:
        """(name, start, end) of the profile's phases."""
        edges = [0.0, self.t_step, self.t_step + self.step, self.t_drop, self.duration]
        names = ("steady", "step (2x)", f"spike ({self.spike_factor:g}x)",
                 f"drop ({self.drop_factor:g}x)")  # fmt: skip
        return [(n, edges[i], edges[i + 1]) for i, n in enumerate(names)]

    def check(self) -> None:
        """ValueError naming the flag when the options do not fit together."""
        if self.drop <= 0:
            raise ValueError(
                f"--duration {self.duration:g}s leaves no drop phase after --warmup + --step +"
                f" --spike ({self.t_drop:g}s)"
            )
        if self.config is not None and not self.config.is_file():
            raise ValueError(f"--config: no such file: {self.config}")
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"--min-replicas {self.min_replicas} is above --max-replicas {self.max_replicas}"
            )
        unknown = [s for s in self.shapes if s not in SHAPES]
        if unknown or not self.shapes:
            raise ValueError(f"--shapes: want some of {','.join(SHAPES)}, got {unknown or '-'}")
        if self.overhead_pods < 0:
            raise ValueError(f"--overhead-pods: must be >= 0, got {self.overhead_pods}")
        if self.overhead_pods > HOLLOW_PODS * self.overhead_nodes:
            raise ValueError(
                f"--overhead-pods {self.overhead_pods} do not fit on --overhead-nodes"
                f" {self.overhead_nodes} ({HOLLOW_PODS} pods each)"
            )
        for flag, text in (("--cpu-request", self.cpu_request), ("--cpu-limit", self.cpu_limit)):
            try:
                if milli_value(text) <= 0:
                    raise ValueError("must be > 0")
            except ValueError as exc:
                raise ValueError(f"{flag} {text!r}: {exc}") from None
        if milli_value(self.cpu_limit) < milli_value(self.cpu_request):
            raise ValueError(f"--cpu-limit {self.cpu_limit} is below --cpu-request")


@dataclass(frozen=True, slots=True)
class Sample:
    """What the cluster showed at ``t``: the Deployment's spec and ready replicas, the
    Service's ready endpoints, the HPA's desired replicas and current metric (None before
    it has them), and the profile's rate."""

    t: float
    target_rps: float
    spec: int
    ready: int
    endpoints: int
    desired: int | None
    metric: float | None
    active: bool = True  # the HPA's ScalingActive was not False (it could read its metric)


@dataclass
class Overhead:
    """CPU seconds of the hollow pool's kubelet and of the API servers over ``window_s``,
    ``without`` pods on the hollow nodes and ``with_pods`` of them."""

    pods: int
    nodes: int
    window_s: float
    without: dict[str, float | None]
    with_pods: dict[str, float | None]

    def per_100_pods(self, what: str) -> float | None:
        """Milli-cores (CPU ms per second) the ``pods`` add to ``what``, per 100 pods."""
        a, b = self.without.get(what), self.with_pods.get(what)
        if a is None or b is None or not self.pods:
            return None
        return (b - a) / self.window_s * 1000 * 100 / self.pods


@dataclass
class WindowRow:
    """Requests due in one window of the run, of one client shape (or all)."""

    window: str
    shape: str
    start: float
    end: float
    requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    failed_first_try: int
    failed_after_retry: int


@dataclass
class Check:
    """One target: ``passed`` None when not judged (what it judges did not happen)."""

    name: str
    target: str
    measured: str
    passed: bool | None


@dataclass
class AutoscaleResult:
    options: AutoscaleOptions
    config: str = ""
    cluster_up_s: float = 0.0
    sync_period_s: float = 0.0
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    samples: list[Sample] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list, repr=False)
    skipped: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    # Samples in which the HPA's ScalingActive was False (no metric), and the last (t, reason).
    inactive_samples: int = 0
    inactive_last: tuple[float, str] | None = None
    components: list[dict[str, Any]] = field(default_factory=list)
    sampled_seconds: float = 0.0
    overhead: Overhead | None = None
    error: str = ""
    # analysed
    replicas_before_step: int = 0
    replicas_computed: int = 0
    computed_s: float | None = None  # after the step
    serving_s: float | None = None
    max_replicas_seen: int = 0
    replicas_at_drop: int = 0
    first_scale_down_s: float | None = None  # after the drop
    # After the last sample whose HPA reading called for the replicas held at the drop.
    down_after_high_s: float | None = None
    final_replicas: int = 0
    scale_up_window: tuple[float, float] | None = None
    scale_down_window: tuple[float, float] | None = None
    windows: list[WindowRow] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.error and all(c.passed is not False for c in self.checks)


# -- analysis ----------------------------------------------------------------------------------


def _first(samples: Iterable[Sample], cond: Any) -> Sample | None:
    return next((s for s in samples if cond(s)), None)


def _rows(
    name: str, start: float, end: float, outcomes: Sequence[Outcome], shapes: Sequence[str]
) -> list[WindowRow]:
    """One row per shape, plus one for all when there are several shapes."""
    inside = [o for o in outcomes if start <= o.t < end]
    groups = [(s, [o for o in inside if o.shape == s]) for s in shapes]
    if len(shapes) > 1:
        groups.append(("all", inside))
    rows = []
    for shape, group in groups:
        lat = summarize([o.latency for o in group if o.ok])
        rows.append(
            WindowRow(
                window=name,
                shape=shape,
                start=start,
                end=end,
                requests=len(group),
                p50_ms=lat.p50 * 1e3,
                p99_ms=lat.p99 * 1e3,
                max_ms=lat.max * 1e3,
                failed_first_try=sum(1 for o in group if not o.first_ok),
                failed_after_retry=sum(1 for o in group if not o.ok),
            )
        )
    return rows


def _scale_up(r: AutoscaleResult) -> None:
    o, samples = r.options, r.samples
    before = [s for s in samples if s.t < o.t_step]
    r.replicas_before_step = before[-1].spec if before else o.min_replicas
    up = _first(
        samples,
        lambda s: (
            o.t_step <= s.t < o.t_drop and max(s.spec, s.desired or 0) > r.replicas_before_step
        ),
    )
    if up is None:
        return
    r.computed_s = up.t - o.t_step
    r.replicas_computed = max(up.spec, up.desired or 0)
    serving = _first(samples, lambda s: s.t >= up.t and s.endpoints >= r.replicas_computed)
    if serving is not None:
        r.serving_s = serving.t - o.t_step
    r.scale_up_window = (o.t_step, serving.t if serving is not None else o.t_drop)


def _recommends(o: AutoscaleOptions, s: Sample) -> int:
    """What the HPA's formula makes of the reading in ``s``: ceil(ready pods x metric /
    target) (Kubernetes' ReplicaCalculator without its missing-metric adjustments), or the
    replicas as they are within the tolerance."""
    if s.metric is None:
        return 0
    ratio = s.metric / (o.cpu_percent if o.metric == "cpu" else o.rps_target)
    return s.spec if abs(ratio - 1) <= TOLERANCE else math.ceil(s.ready * ratio - 1e-9)


def _scale_down(r: AutoscaleResult) -> None:
    o = r.options
    after = [s for s in r.samples if s.t >= o.t_drop]
    if not after:
        return
    r.final_replicas = after[-1].spec
    r.replicas_at_drop = after[0].spec
    peak = 0
    first = None
    for s in after:
        if peak and s.spec < peak:
            first = s
            break
        peak = max(peak, s.spec)
    if first is None:
        return
    r.replicas_at_drop = peak
    r.first_scale_down_s = first.t - o.t_drop
    high = [x for x in r.samples if x.t < first.t and x.active and _recommends(o, x) >= peak]
    if high:
        r.down_after_high_s = first.t - high[-1].t
    settled = _first(after, lambda s: s.t >= first.t and s.spec == r.final_replicas == s.endpoints)
    end = settled.t + SETTLE_S if settled is not None else o.duration
    r.scale_down_window = (first.t - o.sample_interval, min(end, o.duration))


def _window_check(r: AutoscaleResult) -> Check:
    """The HPA keeps the highest recommendation of the last ``window`` seconds, so the first
    scale-down must come at least ``window`` after its last recommendation of the replicas
    held at the drop. That recommendation is not visible; the last sample whose reading
    (status.currentMetrics, the last sync's, while ScalingActive) calls for them is: that
    sync was about one sync period before the reading changed, hence the goal of window - sync
    after that sample. A spike whose readings failed (pods unready) recommends nothing, so the
    window may end before the drop's + window."""
    o, sync = r.options, r.sync_period_s
    goal = o.window - sync - o.sample_interval
    first, after = r.first_scale_down_s, r.down_after_high_s
    judged = first is not None or o.drop >= o.window + 2 * sync + RATE_WINDOW_S
    passed = None
    if first is not None:
        passed = after >= goal if after is not None else first >= o.window
    elif judged:
        passed = False
    measured = "never" if first is None else f"{first:.1f} s after the drop"
    if after is not None:
        measured += f", {after:.1f} s after the last reading calling for {r.replicas_at_drop}"
    return Check(
        "scale-down only after the stabilization window",
        f">= {o.window:g} s after the last high recommendation (~{goal:g} s after its reading)",
        f"{measured} ({r.replicas_at_drop} -> {r.final_replicas})",
        passed,
    )


def _checks(r: AutoscaleResult) -> list[Check]:
    o, sync = r.options, r.sync_period_s
    compute_limit = sync + RATE_WINDOW_S
    serve_limit = compute_limit + sync + POD_START_S

    def secs(v: float | None) -> str:
        return "never" if v is None else f"{v:.1f} s"

    def within(v: float | None, limit: float) -> bool | None:
        return None if r.replicas_computed == 0 else (v is not None and v <= limit)

    rows = {(w.window, w.shape): w for w in r.windows}
    checks = [
        Check(
            "replicas rose under load",
            f"> {r.replicas_before_step or o.min_replicas}",
            f"{r.max_replicas_seen} at most",
            r.max_replicas_seen > (r.replicas_before_step or o.min_replicas),
        ),
        Check(
            "step -> HPA computes new replicas",
            f"<= {compute_limit:g} s (sync {sync:g} s + {RATE_WINDOW_S:g} s CPU window)",
            f"{secs(r.computed_s)} ({r.replicas_before_step} -> {r.replicas_computed})",
            None
            if r.samples == []
            else (r.computed_s is not None and r.computed_s <= compute_limit),
        ),
        Check(
            "step -> new pods serving (Ready, in endpoints)",
            f"<= {serve_limit:g} s (+ sync + {POD_START_S:g} s pod start)",
            secs(r.serving_s),
            within(r.serving_s, serve_limit),
        ),
    ]
    for name, key in (("scale-up", "scale-up"), ("scale-down", "scale-down")):
        row = rows.get((key, "all")) or next((w for w in r.windows if w.window == key), None)
        checks.append(
            Check(
                f"no failed request with one retry during {name}",
                "0",
                "-" if row is None else
                f"{row.failed_after_retry} of {row.requests} ({row.failed_first_try} before retry)",
                None if row is None else row.failed_after_retry == 0,
            )
        )  # fmt: skip
    checks.append(_window_check(r))
    return checks


def analyse(r: AutoscaleResult) -> None:
    """Fill the analysed fields of ``r`` from its samples and outcomes."""
    o = r.options
    r.max_replicas_seen = max((s.spec for s in r.samples), default=0)
    _scale_up(r)
    _scale_down(r)
    r.windows = []
    for name, a, b in o.phases():
        r.windows += _rows(name, a, b, r.outcomes, o.shapes)
    for name, span in (("scale-up", r.scale_up_window), ("scale-down", r.scale_down_window)):
        if span is not None:
            r.windows += _rows(name, span[0], span[1], r.outcomes, o.shapes)
    r.checks = _checks(r) if r.samples else []


# -- output ------------------------------------------------------------------------------------


def _mark(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "MISS")


def _overhead_lines(r: AutoscaleResult) -> list[str]:
    lines = []
    ov = r.overhead
    if ov is not None:
        lines += [
            "",
            f"Metrics overhead: {ov.pods} pods with modelled usage on {ov.nodes} hollow nodes,"
            f" CPU over {ov.window_s:g} s without them and with them (/proc/PID/stat):",
            "",
            "| process | CPU s without | CPU s with | added per 100 pods |",
            "| --- | ---: | ---: | ---: |",
        ]
        for what, label in (("kubelet", "hollow kubelet"), ("apiserver", "API server")):
            a, b, per = ov.without.get(what), ov.with_pods.get(what), ov.per_100_pods(what)
            cells = [f"{v:.2f}" if v is not None else "-" for v in (a, b)]
            added = f"{per:.1f} millicores" if per is not None else "-"
            lines.append(f"| {label} | {cells[0]} | {cells[1]} | {added} |")
    kubelets = [c for c in r.components if c["kind"] == "kubelet" and c.get("nodes", 0) <= 1]
    served = [s.endpoints for s in r.samples]
    if kubelets and served and r.sampled_seconds > 0:
        mean_pods = sum(served) / len(served)
        cpu = sum(c["cpu_s"] for c in kubelets)
        per = cpu / r.sampled_seconds * 1000 * 100 / max(mean_pods, 1e-9)
        lines.append(
            f"Process-runtime kubelet(s) during the load, all their work (pods, 1 s readiness"
            f" probes, summaries): {cpu:.1f} CPU s over {r.sampled_seconds:.0f} s with"
            f" {mean_pods:.1f} pods on average = {per:.0f} millicores per 100 pods."
        )
    if r.components:
        cpu = ", ".join(f"{c['name']} {c['cpu_s']:.1f}" for c in r.components)
        lines.append(f"CPU seconds of each component during the load: {cpu}.")
    return lines


def render(r: AutoscaleResult, env: Mapping[str, Any]) -> str:
    """Markdown: the targets, latency and errors per window and shape, the overhead."""
    o = r.options
    lines = ["| target | goal | measured | result |", "| --- | --- | --- | --- |"]
    lines += [f"| {c.name} | {c.target} | {c.measured} | {_mark(c.passed)} |" for c in r.checks]
    lines += [
        "",
        "| window | seconds | client | requests | p50 ms | p99 ms | max ms |"
        " failed first try | failed after retry |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for w in r.windows:
        lines.append(
            f"| {w.window} | {w.start:.0f}-{w.end:.0f} | {w.shape} | {w.requests:,} |"
            f" {w.p50_ms:,.1f} | {w.p99_ms:,.1f} | {w.max_ms:,.0f} | {w.failed_first_try} |"
            f" {w.failed_after_retry} |"
        )
    lines += _overhead_lines(r)
    if r.skipped:
        lines.append(f"The client was at --max-in-flight {o.max_in_flight}: {r.skipped} not sent.")
    if r.error_kinds:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(r.error_kinds.items()))
        lines.append(f"Failed attempts by kind: {kinds}.")
    if r.inactive_last is not None:
        t, why = r.inactive_last
        lines.append(
            f"The HPA's ScalingActive was False in {r.inactive_samples} of {len(r.samples)}"
            f" samples, the last at {t:.0f} s: {why}"
        )
    metric = (
        f"CPU {o.cpu_percent}% of {o.cpu_request}"
        if o.metric == "cpu"
        else f"{o.metric} {o.rps_target:g}/pod"
    )
    load1, load5, _ = env["load_average"]
    lines += [
        "",
        f"Setup: {r.config}; cluster up in {r.cluster_up_s:.0f} s. {o.rate:g} requests/s"
        f" steady for {o.warmup:g} s, 2x for {o.step:g} s, {o.spike_factor:g}x for {o.spike:g}"
        f" s, {o.drop_factor:g}x for {o.drop:g} s, through the ClusterIP, shared by the"
        f" {', '.join(o.shapes)} clients (one retry each). hpa-example with {o.iterations:,}"
        f" iterations a request, CPU {o.cpu_request} requested, {o.cpu_limit} limit; HPA on"
        f" {metric}, {o.min_replicas}-{o.max_replicas} replicas, scale-down window"
        f" {o.window:g} s, sync period {r.sync_period_s:g} s. {env['cpus']} CPUs"
        f" ({env['cpu_model']}); load average {load1:.2f}/{load5:.2f} before the cluster,"
        f" {r.load_before[0]:.2f} when the load started, {r.load_after[0]:.2f} when it ended;"
        f" {env['date']}.",
    ]
    if r.error:
        lines.append(f"failed: {r.error}")
    lines.append(f"Verdict: {'PASS' if r.passed else 'MISS'}")
    return "\n".join(lines)


def report(
    r: AutoscaleResult, env: Mapping[str, Any], json_path: Path | None, png: Path | None
) -> None:
    """The report on stdout, and the figures to ``json_path`` and ``png`` when given."""
    print(render(r, env))
    write_json(json_path, to_json(r, env), what="figures")
    if png is not None and r.samples:
        plot(r, png)
        say(f"plot written to {png}")


def to_json(r: AutoscaleResult, env: Mapping[str, Any]) -> dict[str, Any]:
    """Everything but the per-request outcomes (a timeline per second instead)."""
    doc = dataclasses.asdict(r)
    doc.pop("outcomes", None)
    doc["passed"] = r.passed
    doc["per_second"] = [
        {"t": t, "requests": n, "failed_first_try": f1, "failed_after_retry": f2}
        for t, n, f1, f2 in _per_second(r.outcomes)
    ]
    return {"environment": dict(env), "result": doc}


def _per_second(outcomes: Sequence[Outcome]) -> list[tuple[int, int, int, int]]:
    buckets: dict[int, list[int]] = {}
    for o in outcomes:
        b = buckets.setdefault(int(o.t), [0, 0, 0])
        b[0] += 1
        b[1] += not o.first_ok
        b[2] += not o.ok
    return [(t, *buckets[t]) for t in sorted(buckets)]  # type: ignore[misc]


def _latency_panel(ax: Any, outcomes: Sequence[Outcome], bucket: float = 5.0) -> None:
    groups: dict[int, list[float]] = {}
    for o in outcomes:
        if o.ok:
            groups.setdefault(int(o.t // bucket), []).append(o.latency * 1e3)
    ts = sorted(groups)
    for q, label in ((50, "p50"), (99, "p99")):
        ys = [summarize(groups[t]).p50 if q == 50 else summarize(groups[t]).p99 for t in ts]
        ax.plot([(t + 0.5) * bucket for t in ts], ys, label=f"{label} per {bucket:g} s")
    failed = [o.t for o in outcomes if not o.first_ok]
    if failed:
        ax.plot(failed, [1.0] * len(failed), "rx", label="failed first try")
    ax.set_yscale("log")
    ax.set_ylabel("latency ms (log)")
    ax.legend(fontsize=7, loc="upper left")


def plot(r: AutoscaleResult, path: Path) -> None:
    """Four panels over time: load (asked and sent), replicas (spec, ready, in endpoints, HPA
    desired), the HPA's metric against its target, request latency; phases shaded."""
    o, s = r.options, r.samples
    fig, axes = pyplot().subplots(4, 1, figsize=(11, 12), sharex=True)
    ts = [x.t for x in s]
    per_s = _per_second(r.outcomes)
    axes[0].plot(ts, [x.target_rps for x in s], label="profile requests/s")
    axes[0].plot([t + 0.5 for t, *_ in per_s], [n for _, n, _, _ in per_s], ".", ms=3,
                 label="requests sent per second")  # fmt: skip
    axes[0].set_ylabel("requests/s")
    for attr, label in (("spec", "spec.replicas"), ("ready", "ready"),
                        ("endpoints", "in endpoints")):  # fmt: skip
        axes[1].step(ts, [getattr(x, attr) for x in s], where="post", label=label)
    axes[1].step(ts, [x.desired if x.desired is not None else float("nan") for x in s],
                 where="post", linestyle=":", label="HPA desired")  # fmt: skip
    axes[1].set_ylabel("replicas")
    axes[2].plot(ts, [x.metric if x.metric is not None else float("nan") for x in s],
                 label="HPA current")  # fmt: skip
    target = o.cpu_percent if o.metric == "cpu" else o.rps_target
    axes[2].axhline(target, color="red", linestyle="--", linewidth=1, label="target")
    axes[2].set_ylabel("CPU % of request" if o.metric == "cpu" else f"{o.metric} per pod")
    _latency_panel(axes[3], r.outcomes)
    axes[3].set_xlabel("seconds since the load started")
    for ax in axes:
        for i, (_, a, b) in enumerate(o.phases()):
            if i % 2:
                ax.axvspan(a, b, color="grey", alpha=0.12)
        ax.grid(True, alpha=0.3)
        if ax is not axes[3]:
            ax.legend(fontsize=7, loc="upper left")
    title = (
        f"k8semu bench autoscale: {o.rate:g} req/s steady, step 2x at {o.t_step:g} s,"
        f" spike {o.spike_factor:g}x, drop {o.drop_factor:g}x at {o.t_drop:g} s;"
        f" window {o.window:g} s, sync {r.sync_period_s:g} s"
    )
    save_figure(fig, path, title=title, fontsize=10, dpi=90)

"""What a soak run produces and how it is judged and shown: the result (samples, counts), the
verdict on unbounded growth, the Markdown tables, the JSON document, the plot and the progress
line per interval.

``verdict`` is pure (synthetic samples test it); nothing here measures or starts anything.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k8semu.bench._clusterrun import control_plane_steady
from k8semu.bench._common import pyplot, save_figure
from k8semu.bench._soaksampling import VERBS, IntervalSample, MemberSample
from k8semu.bench._soakworkload import Limits, SoakOptions
from k8semu.durations import format_ms

__all__ = ["Check", "SoakResult", "plot", "progress_line", "render", "to_json", "verdict"]


@dataclass
class Check:
    """One verdict line. ``gating`` checks make the exit status 1 when they fail."""

    name: str
    passed: bool
    detail: str
    gating: bool = True


@dataclass
class SoakResult:
    options: SoakOptions
    config: str = ""
    cluster_up_s: float = 0.0
    samples: list[IntervalSample] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    writes: int = 0
    write_errors: int = 0
    last_error: str = ""
    seconds: float = 0.0
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    error: str = ""

    @property
    def passed(self) -> bool:
        return not self.error and all(c.passed for c in self.checks if c.gating)


# -- the verdict -------------------------------------------------------------------------------


_DEFAULT_LIMITS = Limits()


def _mb(n: float) -> str:
    return f"{n / 2**20:,.2f} MB"


def _file_check(
    base: IntervalSample, end: IntervalSample, label: str, attr: str, ratio: float
) -> Check:
    """Every member's file (``attr`` of MemberSample) at ``end`` at most ``ratio`` times its
    size at ``base``; the detail names the member that grew most."""
    worst, detail = 0.0, ""
    b_members = {m.name: m for m in base.members}
    for m in end.members:
        b = b_members.get(m.name)
        if b is None or getattr(b, attr) <= 0:
            continue
        r = getattr(m, attr) / getattr(b, attr)
        if r >= worst:
            worst = r
            detail = (
                f"{m.name}: {_mb(getattr(b, attr))} at {base.t_s:.0f} s ->"
                f" {_mb(getattr(m, attr))} at {end.t_s:.0f} s ({r:.2f}x)"
            )
    return Check(
        f"{label} <= {ratio:g}x its size at the end of warm-up",
        worst <= ratio,
        detail or "no sizes",
    )


def _rss_check(base: IntervalSample, end: IntervalSample, limits: Limits) -> Check:
    """By component name: a restarted one is its own failure (``_restart_check``)."""
    base_c = {c.name: c for c in base.components if c.pid}
    end_c = {c.name: c for c in end.components if c.pid}
    worst_r, worst_name = 0.0, ""
    for name, b in base_c.items():
        e = end_c.get(name)
        if e is None or b.rss_mb <= 0:
            continue
        r = e.rss_mb / b.rss_mb
        if r >= worst_r:
            worst_r, worst_name = r, f"{name}: {b.rss_mb:.1f} -> {e.rss_mb:.1f} MB ({r:.2f}x)"
    grown = [
        f"{name} {base_c[name].rss_mb:.0f}->{end_c[name].rss_mb:.0f} MB"
        for name in base_c
        if name in end_c and end_c[name].rss_mb > limits.rss_ratio * base_c[name].rss_mb
    ]
    return Check(
        f"every component's RSS <= {limits.rss_ratio:g}x its RSS at the end of warm-up",
        not grown,
        ("grew: " + ", ".join(grown)) if grown else f"largest {worst_name or '-'}",
    )


def _fd_check(after: Sequence[IntervalSample], limits: Limits) -> Check:
    leaking = []
    for name in dict.fromkeys(c.name for c in after[0].components if c.pid):
        series = [c.fds for s in after for c in s.components if c.name == name and c.pid]
        if len(series) < 2:
            continue
        monotonic = all(y >= x for x, y in itertools.pairwise(series))
        grew = series[-1] - series[0] > max(limits.fd_slack, limits.fd_ratio * series[0])
        if monotonic and grew:
            leaking.append(f"{name} {series[0]}->{series[-1]}")
    return Check(
        "no component's open fds grow monotonically after warm-up",
        not leaking,
        ("grew: " + ", ".join(leaking)) if leaking else "bounded",
    )


def _store_leader_check(end: IntervalSample) -> Check:
    return Check(
        "no store leader change",
        end.store_leader_changes == 0 and end.store_term_bumps == 0,
        f"{end.store_leader_changes} leader changes, Raft term +{end.store_term_bumps}",
    )


def _control_plane_check(
    lease_changes: Mapping[str, int | None], became_leader: Mapping[str, int]
) -> Check:
    """No Lease changed hands and no leader-elected component started leading again (a
    leader that missed its renew deadline and won its own Lease back restarted its work)."""
    steady, detail = control_plane_steady(lease_changes, became_leader)
    return Check("no control-plane leader change (scheduler, controller manager)", steady, detail)


def _restart_check(samples: Sequence[IntervalSample]) -> Check:
    restarted = sorted({r for s in samples for r in s.restarts})
    return Check("no component restarted or exited", not restarted, ", ".join(restarted) or "none")


def _informational(
    samples: Sequence[IntervalSample], end: IntervalSample, limits: Limits, write_rate: float
) -> list[Check]:
    """Not gating: the write rate reached, write errors, whether history was compacted."""
    checks = []
    span = samples[-1].t_s - (samples[0].t_s - _interval_of(samples))
    writes = sum(s.writes for s in samples)
    errors = sum(s.write_errors for s in samples)
    if write_rate > 0 and span > 0:
        got = writes / span
        checks.append(
            Check(
                f"write rate >= {limits.min_rate_ratio:.0%} of the {write_rate:g}/s asked",
                got >= limits.min_rate_ratio * write_rate,
                f"{got:.1f} writes/s",
                gating=False,
            )
        )
    checks.append(
        Check("no failed writes", errors == 0, f"{errors} of {writes + errors}", gating=False)
    )
    compacted = end.compact_revision > 0
    checks.append(
        Check(
            "the store's history is compacted",
            compacted,
            f"compaction revision {end.compact_revision:,} of revision {end.revision:,}"
            if compacted
            else f"never compacted (revision {end.revision:,})",
            gating=False,
        )
    )
    return checks


def verdict(
    samples: Sequence[IntervalSample],
    *,
    warmup: float,
    limits: Limits = _DEFAULT_LIMITS,
    write_rate: float = 0.0,
) -> list[Check]:
    """Judge the samples: pure, so synthetic samples test it.

    The baseline is the first sample taken at or after ``warmup`` seconds, the end is the
    last sample (it must be a later one). Unbounded growth is, per store member: its database
    file (or its Raft log files) at the end more than ``db_ratio`` (``log_ratio``) times the
    baseline; per component process: its RSS at the end more than ``rss_ratio`` times the
    baseline, or its open fds never going down after the baseline and ending more than
    max(``fd_slack``, ``fd_ratio`` x baseline) above it; any store leader change or Raft term
    rise, or any control-plane Lease changing hands, since the churn started; any component
    restarted or gone. Informational (not gating): the write rate reached and write errors.
    """
    after = [s for s in samples if s.t_s >= warmup]
    if len(after) < 2:
        return [
            Check(
                "enough samples",
                False,
                f"{len(after)} sample(s) at or after the {warmup:g} s warm-up; the verdict needs"
                " the baseline and a later one",
            )
        ]
    base, end = after[0], after[-1]
    return [
        _file_check(base, end, "store database file", "db_file", limits.db_ratio),
        _file_check(base, end, "store Raft log files", "log_files", limits.log_ratio),
        _rss_check(base, end, limits),
        _fd_check(after, limits),
        _store_leader_check(end),
        _control_plane_check(end.lease_changes, end.became_leader),
        _restart_check(samples),
        *_informational(samples, end, limits, write_rate),
    ]


def _interval_of(samples: Sequence[IntervalSample]) -> float:
    if len(samples) >= 2:
        return samples[1].t_s - samples[0].t_s
    return samples[0].t_s if samples else 0.0


# -- output ------------------------------------------------------------------------------------


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f}"


def _unit(o: SoakOptions) -> str:
    return "min" if o.interval == 60 else f"x{format_ms(int(o.interval * 1000))}"


def _store_row(s: IntervalSample) -> str:
    lat = s.latency

    def p99(verb: str) -> str:
        v = lat.get(verb)
        return f"{v.p99_ms:,.0f}" if v and v.count else "-"

    create = lat.get("create")
    cr = f"{create.p50_ms:,.0f}/{create.p99_ms:,.0f}" if create and create.count else "-"
    leader = next((m for m in s.members if m.is_leader), None)
    size = _mib(leader.db_size) if leader else "-"
    in_use = _mib(leader.db_size_in_use) if leader else "-"
    log_max = max((m.log_files for m in s.members), default=0)
    return (
        f"| {s.index} | {s.t_s:,.0f} | {s.write_rate:,.1f} | {s.write_errors} | {cr} |"
        f" {p99('patch')} | {p99('delete')} | {p99('get')} | {p99('list')} |"
        f" {_mib(s.db_file_max)} | {size} | {in_use} | {_mib(log_max)} | {s.revision:,} |"
        f" {s.compact_revision:,} | {s.store_leader_changes} | {s.store_term_bumps} |"
    )


def _store_table(result: SoakResult) -> list[str]:
    """One row per interval: churn, API latency, the store's sizes, revisions, leaders."""
    return [
        f"| {_unit(result.options)} | t s | writes/s | errors | create p50/p99 ms | patch p99 |"
        " delete p99 | get p99 | list p99 | db file MB (max) | dbSize MB | in use MB |"
        " Raft log MB (max) | revision | compacted at | leader changes | term + |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        " ---: | ---: | ---: | ---: | ---: |",
        *(_store_row(s) for s in result.samples),
    ]


def _component_table(result: SoakResult) -> list[str]:
    """One row per interval, one column per component (as the first sample lists them)."""
    names = [c.name for c in result.samples[0].components] if result.samples else []
    if not names:
        return []
    lines = [
        "",
        f"| {_unit(result.options)} | " + " | ".join(names) + " |",
        "| ---: | " + " | ".join("---:" for _ in names) + " |",
    ]
    for s in result.samples:
        by = {c.name: c for c in s.components}
        cells = []
        for n in names:
            c = by.get(n)
            cells.append(
                f"{c.rss_mb:.0f} MB {c.cpu_pct:.0f}% {c.fds} fd" if c and c.pid else "gone"
            )
        lines.append(f"| {s.index} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "Per component: RSS at the sample, CPU (% of one core) over the interval, open fds."
    )
    return lines


def _checks_table(checks: Sequence[Check]) -> list[str]:
    lines = ["", "| check | result | detail |", "| --- | --- | --- |"]
    for chk in checks:
        mark = ("PASS" if chk.passed else "FAIL") + ("" if chk.gating else " (info)")
        lines.append(f"| {chk.name} | {mark} | {chk.detail} |")
    return lines


def _setup(result: SoakResult, env: Mapping[str, Any]) -> list[str]:
    o = result.options
    load = env.get("load_average", (0.0, 0.0, 0.0))
    lines = [
        "",
        f"Setup: {result.config}; churn {o.write_rate:g} API writes/s for"
        f" {format_ms(int(o.duration * 1000))} ({result.writes:,} writes,"
        f" {result.write_errors} failed), samples every {format_ms(int(o.interval * 1000))},"
        f" warm-up {format_ms(int(o.warmup * 1000))}; {env.get('cpus')} CPUs"
        f" ({env.get('cpu_model')}), load average {load[0]:.2f}/{load[1]:.2f} before,"
        f" {result.load_after[0]:.2f}/{result.load_after[1]:.2f} after; {env.get('date')}.",
    ]
    if result.last_error:
        lines.append(f"Last failed write: {result.last_error}")
    if result.error:
        lines.append(f"failed: {result.error}")
    return lines


def render(result: SoakResult, env: Mapping[str, Any]) -> str:
    """Markdown: the per-interval store/API table, the per-component table, the verdict."""
    lines = [
        *_store_table(result),
        *_component_table(result),
        *_checks_table(result.checks),
        *_setup(result, env),
        f"Verdict: {'PASS' if result.passed else 'FAIL'}",
    ]
    return "\n".join(lines)


def _store_panels(axes: Any, result: SoakResult, t: Sequence[float]) -> None:
    """The top row: database sizes, Raft log files, revisions, API p99 per verb."""
    samples = result.samples
    ax = axes[0]
    member_names = [m.name for m in samples[0].members] if samples else []
    for name in member_names:
        ax.plot(t, [_member(s, name).db_file / 2**20 for s in samples], label=f"{name} file")
    ax.plot(t, [_leader_value(s, "db_size") / 2**20 for s in samples], "--", label="dbSize")
    ax.plot(
        t, [_leader_value(s, "db_size_in_use") / 2**20 for s in samples], ":", label="dbSizeInUse"
    )
    _finish(ax, "store database (MB)", result)
    ax = axes[1]
    for name in member_names:
        ax.plot(t, [_member(s, name).log_files / 2**20 for s in samples], label=f"{name} log")
    _finish(ax, "Raft log files (MB)", result)
    ax = axes[2]
    ax.plot(t, [s.revision for s in samples], label="revision")
    ax.plot(t, [s.compact_revision for s in samples], label="compaction revision")
    _finish(ax, "store revisions", result)
    ax = axes[3]
    for verb in VERBS:
        ys = [s.latency[verb].p99_ms if verb in s.latency else float("nan") for s in samples]
        if any(y == y for y in ys):
            ax.plot(t, ys, label=f"{verb} p99")
    ax.set_yscale("log")
    _finish(ax, "API latency p99 (ms, log)", result)


def _process_panels(axes: Any, result: SoakResult, t: Sequence[float], colours: Any) -> None:
    """The bottom row: RSS, CPU and fds per component, the churn and leader changes."""
    samples = result.samples
    names = [c.name for c in samples[0].components] if samples else []
    for ax, attr, title in (
        (axes[0], "rss_mb", "RSS (MB)"),
        (axes[1], "cpu_pct", "CPU (% of one core)"),
        (axes[2], "fds", "open file descriptors"),
    ):
        ax.set_prop_cycle(color=colours)
        for name in names:
            ys = [_comp_value(s, name, attr) for s in samples]
            ax.plot(t, ys, label=name)
        _finish(ax, title, result)
    ax = axes[3]
    ax.plot(t, [s.write_rate for s in samples], label="writes/s")
    ax.plot(t, [s.write_errors for s in samples], label="failed writes")
    ax.plot(t, [s.store_leader_changes for s in samples], label="store leader changes")
    ax.plot(t, [s.store_term_bumps for s in samples], label="store Raft term rises")
    _finish(ax, "churn and leader changes (counts)", result)


def plot(result: SoakResult, path: Path) -> None:
    """Eight panels over time: database sizes, Raft log files, revisions, API p99 per verb,
    RSS, CPU and fds per component, writes/s."""
    plt = pyplot()
    t = [s.t_s / 60 for s in result.samples]
    fig, axes = plt.subplots(2, 4, figsize=(22, 9))
    _store_panels(axes[0], result, t)
    _process_panels(axes[1], result, t, plt.get_cmap("tab20").colors)
    o = result.options
    title = (
        f"k8semu bench soak: {o.write_rate:g} writes/s for {format_ms(int(o.duration * 1000))};"
        f" {result.config}; verdict {'PASS' if result.passed else 'FAIL'}"
    )
    save_figure(fig, path, title=title, fontsize=10, dpi=90)


def _member(s: IntervalSample, name: str) -> MemberSample:
    return next((m for m in s.members if m.name == name), MemberSample(name=name))


def _leader_value(s: IntervalSample, attr: str) -> float:
    leader = next((m for m in s.members if m.is_leader), None)
    return float(getattr(leader, attr)) if leader else float("nan")


def _comp_value(s: IntervalSample, name: str, attr: str) -> float:
    c = next((c for c in s.components if c.name == name and c.pid), None)
    return float(getattr(c, attr)) if c else float("nan")


def _finish(ax: Any, title: str, result: SoakResult) -> None:
    ax.axvline(result.options.warmup / 60, color="grey", linestyle="--", linewidth=1)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("minutes")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, loc="upper left")


def to_json(result: SoakResult, env: Mapping[str, Any]) -> dict[str, Any]:
    doc = dataclasses.asdict(result)
    doc["passed"] = result.passed
    for s, raw in zip(result.samples, doc["samples"], strict=True):
        raw["db_file_max"] = s.db_file_max
        raw["compact_revision"] = s.compact_revision
        raw["revision"] = s.revision
    return {"environment": dict(env), "result": doc}


def progress_line(s: IntervalSample) -> str:
    lat = s.latency
    p99 = " ".join(f"{v} {lat[v].p99_ms:.0f}" for v in VERBS if v in lat and lat[v].count)
    rss = sum(c.rss_mb for c in s.components)
    return (
        f"[{s.index:>3}] {s.t_s:7.0f} s  writes/s {s.write_rate:6.1f} (errors {s.write_errors})"
        f"  p99 ms: {p99}  db file max {s.db_file_max / 2**20:.2f} MB  rev {s.revision:,}"
        f" compacted {s.compact_revision:,}  leader changes {s.store_leader_changes}"
        f" (term +{s.store_term_bumps})  RSS total {rss:.0f} MB"
    )

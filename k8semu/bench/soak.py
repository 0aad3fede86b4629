"""A long run under steady churn that watches for what grows: ``k8semu bench soak``.

This module owns ``k8semu bench soak``. It starts the default cluster's topology (3 store
replicas, an API server, a scheduler, a controller manager, 3 process-runtime workers with
proxies, the DNS add-on, the emulator's default timings, compaction on: ``COMPACTION_SETTINGS``)
on free ports (``k8semu.bench._clusterrun``), or the ``--config`` given, and from one client
process:

1. keeps a churn workload going at ``--write-rate`` API writes/s on an absolute schedule
   (``MIX``: ConfigMaps created, patched and deleted; bare pods created and deleted;
   Deployments scaled and rolled), every object in one namespace and every pool bounded, so
   a cluster that cleans up after itself holds a steady number of objects;
2. every ``--interval`` ("a minute"; 1m by default) records one sample: per store member its
   ``Maintenance.Status`` (dbSize, dbSizeInUse, revision, raftTerm, leader), its compaction
   revision and the bytes of its data files; store leader changes and the control plane's
   Lease transitions so far (``_clusterrun.LeaderWatch``); the API latency percentiles per
   verb; RSS, CPU and open file descriptors of every component process (from /proc);
3. judges the samples after ``--warmup`` (``verdict``) and exits 1 when something grew
   without bound.

This module sets the run up and paces it; the churn is ``_soakworkload``'s, the measuring
``_soaksampling``'s, the verdict and the report ``_soakreport``'s (their public names are
re-exported here).

The compaction revision is not in etcd's Status. The soak finds it by bisection with
serializable Ranges at old revisions of a key that does not exist: etcd (and k8semu's store)
answer a Range below the compaction revision with OUT_OF_RANGE "required revision has been
compacted", and at or above it with an empty answer; about log2(revision) cheap reads per
member and interval, the same on a real etcd. 0 means never compacted.

Output: Markdown tables on stdout (one row per interval, then the verdict), the same rows on
stderr as they come, ``--json FILE``, ``--plot FILE.png``. Bounded by ``--duration``; traffic
stays on 127/8; it signals nothing (``k8semu down`` stops the cluster).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import math
import os
import random
import secrets
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped, unused-ignore]
import grpc.aio  # type: ignore[import-untyped, unused-ignore]
import yaml

from k8semu import log as logging_setup
from k8semu.bench._clusterrun import (
    BenchCluster,
    ClusterLayout,
    LeaderWatch,
    TimedClient,
    bench_config,
    leader_logs,
    merge_config,
)
from k8semu.bench._common import (
    BenchError,
    argument_parser,
    cancel,
    environment,
    options_from_args,
    positive_float,
    positive_int,
    require_matplotlib,
    say,
    write_json,
)
from k8semu.bench._soakreport import (
    Check,
    SoakResult,
    plot,
    progress_line,
    render,
    to_json,
    verdict,
)
from k8semu.bench._soaksampling import (
    ComponentSample,
    IntervalSample,
    MemberSample,
    ProcessSampler,
    StoreSampler,
    VerbLatency,
    compaction_revision,
    data_file_sizes,
    verb_latencies,
)
from k8semu.bench._soakworkload import MIX, Churn, Limits, SoakOptions
from k8semu.client import Client, ClientError
from k8semu.cluster.config import parse_config
from k8semu.cluster.errors import ClusterConfigError, ClusterError
from k8semu.cluster.state import ComponentRecord, read_state
from k8semu.durations import parse_ms

__all__ = [
    "COMPACTION_SETTINGS",
    "MIX",
    "Check",
    "ComponentSample",
    "IntervalSample",
    "Limits",
    "MemberSample",
    "SoakOptions",
    "SoakResult",
    "VerbLatency",
    "compaction_revision",
    "data_file_sizes",
    "default_layout",
    "main",
    "plot",
    "render",
    "run",
    "soak",
    "to_json",
    "verdict",
]


# -- the run -----------------------------------------------------------------------------------


@dataclass
class _Soak:
    """One soak on a started cluster: the churn's writers on one absolute schedule (write k is
    due at start + k / rate, at most ``opts.writers`` at once), a reader, an RSS-peak poller,
    and one ``IntervalSample`` per interval into ``result.samples``."""

    churn: Churn
    client: TimedClient
    state_dir: Path
    opts: SoakOptions
    result: SoakResult
    procs: ProcessSampler = field(default_factory=ProcessSampler, init=False)

    def __post_init__(self) -> None:
        # Re-read every interval: a restarted component has a new pid.
        self.components: list[ComponentRecord] = read_state(self.state_dir).components
        self.procs.sample(self.components)  # CPU baseline
        self.writes = self.errors = 0
        self.start = time.perf_counter() + 0.01
        self.end = self.start + self.opts.duration
        self._due = iter(range(math.ceil(self.opts.duration * self.opts.write_rate)))

    async def writer(self) -> None:
        perf, rate = time.perf_counter, self.opts.write_rate
        for k in self._due:
            due = self.start + k / rate
            if due >= self.end:
                return
            delay = due - perf()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self.churn.step()
                self.writes += 1
            except ClientError as exc:
                self.errors += 1
                self.result.last_error = str(exc)

    async def reader(self) -> None:
        k = 0
        while time.perf_counter() < self.end:
            k += 1
            with contextlib.suppress(ClientError):
                await self.churn.read(k)
            await asyncio.sleep(self.opts.read_every)

    async def peaks(self) -> None:
        while True:
            self.procs.poll_peak(self.components)
            await asyncio.sleep(min(5.0, self.opts.interval / 4))

    async def sample(
        self, index: int, leaders: LeaderWatch, stores: StoreSampler, last: tuple[int, int]
    ) -> IntervalSample:
        """The sample at the end of interval ``index``; ``last``: the writes and errors
        counted at the end of the one before."""
        t = time.perf_counter() - self.start
        latencies, errors = self.client.take()
        self.components = read_state(self.state_dir).components
        comps, restarted = self.procs.sample(self.components)
        sample = IntervalSample(
            index=index,
            t_s=round(t, 2),
            writes=self.writes - last[0],
            write_errors=self.errors - last[1],
            latency=verb_latencies(latencies, errors),
            members=await stores.sample(),
            components=comps,
            store_leader_changes=leaders.store_leader_changes,
            store_term_bumps=leaders.store_term_bumps,
            lease_changes=leaders.lease_changes,
            became_leader=dict(leaders.became_leader),
            restarts=restarted,
            objects=self.churn.pools(),
        )
        sample.write_rate = round(sample.writes / self.opts.interval, 2)
        return sample

    async def intervals(
        self, leaders: LeaderWatch, stores: StoreSampler, say: Callable[[str], None]
    ) -> None:
        """A sample at the end of every whole interval of the run."""
        n = math.floor(self.opts.duration / self.opts.interval + 1e-9)
        last = (0, 0)
        for i in range(1, n + 1):
            await asyncio.sleep(max(0.0, self.start + i * self.opts.interval - time.perf_counter()))
            sample = await self.sample(i, leaders, stores, last)
            last = (self.writes, self.errors)
            self.result.samples.append(sample)
            if self.opts.progress:
                say(progress_line(sample))


async def soak(
    api_servers: Sequence[str],
    state_dir: Path,
    opts: SoakOptions,
    result: SoakResult,
    *,
    say: Callable[[str], None] = say,
) -> None:
    """Run the churn for ``opts.duration`` and fill ``result.samples`` (not the verdict)."""
    state = read_state(state_dir)
    members = [(m[0], m[1]) for m in state.store_members]
    data_dirs = {
        c.name.removeprefix("store-"): c.data_dir
        for c in state.components
        if c.kind in ("store", "etcd")
    }
    rng = random.Random(opts.seed or secrets.randbits(32))
    stores = StoreSampler(members, data_dirs)
    async with Client(list(api_servers)) as raw:
        client = TimedClient(raw)
        churn = Churn(client, f"soak-{secrets.token_hex(3)}", opts, rng)
        await churn.setup()
        client.take()  # the set-up is not part of the first interval
        run = _Soak(churn, client, state_dir, opts, result)
        log_paths = leader_logs(run.components)
        async with LeaderWatch(members, api_servers, interval=1.0, log_paths=log_paths) as leaders:
            loop = asyncio.get_running_loop()
            tasks = [loop.create_task(run.writer()) for _ in range(opts.writers)]
            tasks.append(loop.create_task(run.reader()))
            tasks.append(loop.create_task(run.peaks()))
            try:
                await run.intervals(leaders, stores, say)
            finally:
                await cancel(*tasks)
                await stores.close()
        result.writes, result.write_errors = run.writes, run.errors
        result.seconds = time.perf_counter() - run.start


def default_layout(opts: SoakOptions) -> ClusterLayout:
    """The default cluster's topology and timings on free ports (see the module doc), with
    compaction on (``compaction_overrides``)."""
    layout = ClusterLayout(
        name="soak",
        store_replicas=3,
        real_nodes=3,
        runtime="process",
        proxies=True,
        addons=("dns",),
        timings={},
        ready_timeout_s=opts.ready_timeout,
    )
    return dataclasses.replace(layout, overrides=compaction_overrides(layout))


# Compaction as issue 10 has it: the API servers compact to what the history was one interval
# ago (kube-apiserver's --etcd-compaction-interval), the store auto-compacts as a safety net
# (etcd's --auto-compaction-*). Both are on by default in the cluster config; the soak says so
# explicitly, so a changed default does not change what it measures. A setting the config does
# not know (a build from before compaction) is left out: the soak then shows the growth.
COMPACTION_SETTINGS: tuple[dict[str, Any], ...] = (
    {"timings": {"etcdCompactionInterval": "1m"}},
    {"store": {"autoCompactionMode": "periodic", "autoCompactionRetention": "10m"}},
)


def compaction_overrides(layout: ClusterLayout) -> dict[str, Any]:
    """The COMPACTION_SETTINGS this build's cluster config accepts, merged."""
    out: dict[str, Any] = {}
    base = bench_config(layout)
    for setting in COMPACTION_SETTINGS:
        try:
            parse_config(yaml.safe_dump(merge_config(base, setting)))
        except ClusterConfigError:
            continue
        out = merge_config(out, setting)
    return out


def run(
    opts: SoakOptions,
    *,
    config: Path | None = None,
    layout: ClusterLayout | None = None,
    workdir: Path | None = None,
    keep: bool = False,
) -> SoakResult:
    """Start the cluster (``config``, else ``layout``, else ``default_layout``), soak, stop it,
    judge."""
    result = SoakResult(options=opts)
    if config is None:
        layout = layout or default_layout(opts)
        result.config = (
            f"generated: {layout.store_replicas} store replicas, 1 API server, 1 scheduler,"
            f" 1 controller manager, {layout.real_nodes} {layout.runtime}-runtime nodes"
            + (f", {layout.hollow_nodes} hollow nodes" if layout.hollow_nodes else "")
            + (f", add-ons {','.join(layout.addons)}" if layout.addons else "")
        )
    else:
        layout = None
        result.config = str(config)
    result.load_before = os.getloadavg()
    try:
        with BenchCluster(layout, config=config, workdir=workdir, keep=keep, say=say) as c:
            c.start()
            result.cluster_up_s = c.up_seconds
            asyncio.run(soak(c.api_servers, c.state_dir, opts, result))
            result.checks = verdict(
                result.samples, warmup=opts.warmup, limits=opts.limits, write_rate=opts.write_rate
            )
            if not result.passed:
                c.failed = True  # keep the logs and data
    except (BenchError, ClusterError, ClientError, OSError, grpc.aio.AioRpcError) as exc:
        result.error = str(exc)
        say(f"failed: {exc}")
    result.load_after = os.getloadavg()
    return result


# -- command line ------------------------------------------------------------------------------


def _duration(text: str) -> float:
    try:
        ms = parse_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if ms <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return ms / 1000


def _non_negative_duration(text: str) -> float:
    try:
        return parse_ms(text) / 1000
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    d = SoakOptions()
    p = argument_parser(
        "k8semu bench soak",
        (
            "Soak: the default cluster under a steady churn of API writes; per interval the"
            " store's database size, compaction, leader changes, API latency, and RSS, CPU and"
            " open fds of every component. Exits 1 on unbounded growth."
        ),
    )
    p.add_argument("--duration", type=_duration, default="30m", help="how long to churn")
    p.add_argument("--write-rate", type=positive_float, default=d.write_rate, help="writes/s")
    p.add_argument(
        "--interval", type=_duration, default="1m", help="one sample (table row) every this"
    )
    p.add_argument(
        "--warmup",
        type=_non_negative_duration,
        default="5m",
        help="not judged before this; the sample at it is the baseline",
    )
    p.add_argument("--writers", type=positive_int, default=d.writers, help="concurrent writes")
    p.add_argument("--seed", type=int, default=0, help="of the churn's choices (0: random)")
    p.add_argument(
        "--config",
        type=Path,
        help="cluster config to start (default: the default cluster on free ports)",
    )
    p.add_argument("--ready-timeout", type=positive_float, default=d.ready_timeout)
    p.add_argument("--workdir", type=Path, help="put the cluster dir under this dir")
    p.add_argument("--keep", action="store_true", help="keep the cluster's logs and data")
    p.add_argument("--no-progress", action="store_true", help="no row on stderr per interval")
    p.add_argument("--json", type=Path, help="also write the samples and verdict to this file")
    p.add_argument("--plot", type=Path, help="also draw the samples to this PNG")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``k8semu bench soak``: exit status 1 on unbounded growth or a failed run."""
    parser = build_parser()
    args = parser.parse_args(argv)
    opts = options_from_args(SoakOptions, args, progress=not args.no_progress)
    try:
        opts.check()
    except ValueError as exc:
        parser.error(str(exc))
    if args.plot is not None and not require_matplotlib():
        return 2
    if args.config is not None and not args.config.is_file():
        parser.error(f"--config: no such file: {args.config}")
    # Only warnings, on stderr: the client's retries are not the report.
    logging_setup.configure("bench", level="warning")
    env = environment(args.workdir, False)
    result = run(opts, config=args.config, workdir=args.workdir, keep=args.keep)
    print(render(result, env))
    write_json(args.json, to_json(result, env), what="samples")
    if args.plot is not None and result.samples:
        plot(result, args.plot)
        say(f"plot written to {args.plot}")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())

"""`k8semu chaos`: start a cluster, break it at random (reproducibly, from --seed) while a
workload runs, and check what must hold. See docs/chaos.md.

    k8semu chaos -f cluster_configs/local.yaml --duration 60s --seed 7 \\
        --faults kill,pause,restart,partition --targets store,apiserver,scheduler
    k8semu chaos --cleanup     # remove partition rules and cgroups a crashed run left

Without -f, the cluster is the default one's shape (3 store replicas, one of each
control-plane component, 3 process-runtime workers) on free ports and address ranges of its
own, so a chaos run never collides with a cluster already running here.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import yaml

from k8semu import durations
from k8semu import log as logging_setup
from k8semu.bench._clusterrun import ClusterLayout, bench_config
from k8semu.chaos import netfilter
from k8semu.chaos.plan import FAULTS, TARGET_KINDS, PlanSettings
from k8semu.chaos.runner import ChaosError, ChaosOptions, ChaosRun, write_report
from k8semu.cli import _serving


def _list(text: str, allowed: Sequence[str], flag: str) -> tuple[str, ...]:
    items = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(
            f"{flag}: unknown {', '.join(bad) or '(empty)'}; choose from {','.join(allowed)}"
        )
    return items


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="k8semu chaos",
        description="Inject seeded faults into a cluster while a workload runs; check the "
        "store history, Deployment convergence and Service availability.",
    )
    p.add_argument("-f", "--config", type=Path, help="cluster config (default: the built-in one)")
    p.add_argument("--duration", default="60s", help="how long faults are injected (60s)")
    p.add_argument("--seed", type=int, default=7, help="the fault plan's seed (7)")
    p.add_argument("--interval", default="2s", help="mean time between faults (2s)")
    p.add_argument(
        "--faults",
        help=f"comma list from {','.join(FAULTS)} (default: all of them; partition only"
        " where the machine can make partitions: root, nft, cgroup v2)",
    )
    p.add_argument("--targets", default=",".join(TARGET_KINDS), help="component kinds to hit (all)")
    p.add_argument(
        "--converge-timeout", default="60s", help="Deployments must be ready within this (60s)"
    )
    p.add_argument(
        "--min-availability",
        type=float,
        default=0.0,
        help="fail when availability during majority-keeping faults is below this (0..1)",
    )
    p.add_argument("--state-dir", type=Path, help="the cluster's state dir (default: a temp dir)")
    p.add_argument("--report", type=Path, help="write the JSON report here")
    p.add_argument("--keep", action="store_true", help="leave the cluster running afterwards")
    p.add_argument("--log-level", default="warning")
    p.add_argument(
        "--cleanup",
        action="store_true",
        help="remove the partition rules (nft tables k8semu_chaos_*) and cgroups left by chaos"
        " runs that are no longer running, then exit",
    )
    return p


def _cleanup() -> int:
    try:
        removed = netfilter.cleanup()
    except netfilter.NetfilterError as exc:
        print(f"k8semu chaos --cleanup: {exc}", file=sys.stderr)
        return 1
    for item in removed:
        print(f"removed {item}")
    if not removed:
        print("nothing left behind by earlier chaos runs")
    return 0


def _default_config(state_dir: Path) -> Path:
    """The default cluster's shape on free ports, node IPs and address ranges of its own."""
    layout = ClusterLayout(name="chaos", real_nodes=3, runtime="process", ready_timeout_s=180)
    path = state_dir / "chaos-cluster.yaml"
    path.write_text(yaml.safe_dump(bench_config(layout)), encoding="utf-8")
    return path


class _Terminated(Exception):
    """SIGTERM outside the run's event loop (the run itself turns it into a cancellation)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


def main(argv: Sequence[str]) -> int:
    # Until the run's loop takes SIGTERM over, it unwinds like an exception, so the partition
    # probe and the run's set-up remove what they made (the default action would not).
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return _main(argv)
    except _Terminated:
        print("k8semu chaos: interrupted by SIGTERM", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: Sequence[str]) -> int:
    parser = _parser()
    ns = parser.parse_args(list(argv))
    logging_setup.configure("chaos", level=ns.log_level, fmt="console")
    if ns.cleanup:
        return _cleanup()
    try:
        if ns.faults is None:
            faults = tuple(FAULTS)
            if netfilter.unsupported_reason() is not None:
                faults = tuple(f for f in FAULTS if f != "partition")
        else:
            faults = _list(ns.faults, FAULTS, "--faults")
            if "partition" in faults and (why := netfilter.unsupported_reason()) is not None:
                raise ValueError(f"--faults partition: not possible on this machine: {why}")
        kinds = _list(ns.targets, TARGET_KINDS, "--targets")
        settings = PlanSettings(
            duration=durations.parse_ms(ns.duration) / 1000,
            interval=durations.parse_ms(ns.interval) / 1000,
            faults=faults,
            kinds=kinds,
        )
        if not 0 <= ns.min_availability <= 1:
            raise ValueError("--min-availability: must be between 0 and 1")
        converge = durations.parse_ms(ns.converge_timeout) / 1000
    except (argparse.ArgumentTypeError, ValueError) as exc:
        print(f"k8semu chaos: {exc}", file=sys.stderr)
        return 2
    tmp = None
    state_dir = ns.state_dir
    if state_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="k8semu-chaos-"))
        state_dir = tmp
    state_dir.mkdir(parents=True, exist_ok=True)
    config = ns.config if ns.config is not None else _default_config(state_dir)
    if "partition" in faults:
        # What a crashed earlier run left behind would only confuse this one's figures.
        for item in netfilter.cleanup():
            print(f"k8semu chaos: removed {item} (left by a run that is gone)", file=sys.stderr)
    options = ChaosOptions(
        config=config,
        state_dir=state_dir,
        seed=ns.seed,
        plan=settings,
        converge_timeout=converge,
        min_availability=ns.min_availability,
        keep=ns.keep,
    )
    _serving.install_event_loop()
    ok = False
    try:
        report = asyncio.run(ChaosRun(options).run())
        ok = report.ok
    except ChaosError as exc:
        print(f"k8semu chaos: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("k8semu chaos: interrupted; partitions healed, cluster stopped", file=sys.stderr)
        return 130
    finally:
        # A temp state dir goes only after a clean run: after a failure its logs (up.log and
        # logs/<component>.log) are what explains it.
        if tmp is not None and not ns.keep and ok:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp is not None and not ns.keep:
            print(f"k8semu chaos: state and logs kept in {tmp}", file=sys.stderr)
    print(report.summary())
    if ns.report is not None:
        write_report(report, ns.report)
    return 0 if report.ok else 1

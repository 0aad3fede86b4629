"""`k8semu chaos`: start a cluster, break it at random (reproducibly, from --seed) while a
workload runs, and check what must hold. See docs/chaos.md.

    k8semu chaos -f cluster_configs/local.yaml --duration 60s --seed 7 \\
        --faults kill,pause,restart --targets store,apiserver,scheduler
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from k8semu import durations
from k8semu import log as logging_setup
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
        default="kill,pause,restart",
        help=f"comma list from {','.join(FAULTS)} (default kill,pause,restart)",
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
    return p


def main(argv: Sequence[str]) -> int:
    parser = _parser()
    ns = parser.parse_args(list(argv))
    try:
        faults = _list(ns.faults, FAULTS, "--faults")
        kinds = _list(ns.targets, TARGET_KINDS, "--targets")
        if "partition" in faults:
            raise ValueError(
                "--faults partition: needs the cluster's hosts in network namespaces"
                " (a multi-host config); a single-host run supports kill,pause,restart"
            )
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
    logging_setup.configure("chaos", level=ns.log_level, fmt="console")
    tmp = None
    state_dir = ns.state_dir
    if state_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="k8semu-chaos-")
        state_dir = Path(tmp.name)
    options = ChaosOptions(
        config=ns.config,
        state_dir=state_dir,
        seed=ns.seed,
        plan=settings,
        converge_timeout=converge,
        min_availability=ns.min_availability,
        keep=ns.keep,
    )
    _serving.install_event_loop()
    try:
        report = asyncio.run(ChaosRun(options).run())
    except ChaosError as exc:
        print(f"k8semu chaos: {exc}", file=sys.stderr)
        return 1
    finally:
        if tmp is not None and not ns.keep:
            tmp.cleanup()
    print(report.summary())
    if ns.report is not None:
        write_report(report, ns.report)
    return 0 if report.ok else 1

#!/usr/bin/env python3
"""A rolling SIGTERM drill of two API servers under write load, measured from the clients.

A 1-replica `k8semu store`, two `k8semu apiserver` processes on free loopback ports, and
`--writers` tasks sharing one k8semu.client.Client over both servers, each looping delete,
create, update and patch of its own ConfigMaps. Every `--every` seconds one API server gets
SIGTERM, is waited for, and is started again (`--rounds` times over both). Prints the calls
made, the failed ones (their first errors), latency percentiles and the slowest SIGTERM exit.

Usage: scripts/drill_apiserver_sigterm.py [--writers 3] [--rounds 2] [--every 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

from k8semu import log
from k8semu.client import Client, ClientError, NotFound
from k8semu.cluster.component import APIServerProcess
from k8semu.cluster.processes import K8semuStoreCluster
from k8semu.pb.api.v1 import core_pb2

T = TypeVar("T")
NAMESPACE = "drill"


async def drill(servers: list[APIServerProcess], writers: int, rounds: int, every: float) -> str:
    latencies: list[float] = []
    failures: list[str] = []
    done = asyncio.Event()

    async def timed(call: Awaitable[T]) -> T:
        began = time.monotonic()
        try:
            return await call
        finally:
            latencies.append(time.monotonic() - began)

    async with Client([s.address for s in servers]) as client:
        ns = core_pb2.Namespace()
        ns.metadata.name = NAMESPACE
        with contextlib.suppress(ClientError):
            await client.create(ns)

        async def writer(w: int) -> None:
            i = 0
            while not done.is_set():
                name = f"w{w}-{i % 5}"
                cm = core_pb2.ConfigMap()
                cm.metadata.name = name
                cm.metadata.namespace = NAMESPACE
                try:
                    with contextlib.suppress(NotFound):
                        await timed(client.delete(core_pb2.ConfigMap, name, namespace=NAMESPACE))
                    got = await timed(client.create(cm))
                    got.data["n"] = str(i)
                    await timed(client.update(got))
                    patch = {"data": {"p": str(i)}}
                    await timed(client.patch(core_pb2.ConfigMap, name, patch, namespace=NAMESPACE))
                except ClientError as exc:
                    failures.append(repr(exc))
                i += 1

        tasks = [asyncio.create_task(writer(w)) for w in range(writers)]
        exits: list[float] = []
        try:
            for server in servers * rounds:
                await asyncio.sleep(every)
                assert server.proc is not None
                began = time.monotonic()
                server.proc.terminate()
                await asyncio.to_thread(server.proc.wait, 15)
                exits.append(time.monotonic() - began)
                server.start()
                await asyncio.to_thread(server.wait_serving)
            await asyncio.sleep(every)
        finally:
            done.set()
            await asyncio.gather(*tasks)
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000

    return (
        f"calls={len(latencies)} failed={len(failures)} p50={pct(0.5):.0f}ms"
        f" p99={pct(0.99):.0f}ms max={latencies[-1] * 1000:.0f}ms"
        f" sigterms={len(exits)} slowest-exit={max(exits):.2f}s"
        + (f" first-failures={failures[:3]}" if failures else "")
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--writers", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2, help="SIGTERMs of each API server")
    p.add_argument("--every", type=float, default=2.0, help="seconds between SIGTERMs")
    ns = p.parse_args()
    log.configure("drill", level="warning")  # the client's fail-over lines are not the result
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        with K8semuStoreCluster(base / "store", 1) as store:
            store.start()
            store.wait_ready(timeout=60)
            servers = [
                APIServerProcess(
                    store.endpoints,
                    base / f"apiserver-{i}.log",
                    ["--bookmark-interval", "0.5", "--log-level", "warning"],
                )
                for i in range(2)
            ]
            try:
                for server in servers:
                    server.wait_serving()
                print(asyncio.run(drill(servers, ns.writers, ns.rounds, ns.every)))
            finally:
                for server in servers:
                    server.close()


if __name__ == "__main__":
    main()

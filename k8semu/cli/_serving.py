"""How every long-running component runs as a process: its event loop, one serve loop and its
exit code. The six component commands (store, apiserver, scheduler, controller-manager,
kubelet, proxy) differ only in how they build their component from flags.

    main(argv) -> config from flags (a bad one: exit 2, see `usage_error`)
               -> run(command, main_coroutine)          the event loop and the exit code
                    -> serve(component, grace=...)       start, wait, stop

`serve` owns SIGTERM/SIGINT from before the start, so a start that waits (for a store, an
API server, synced caches) ends on a signal too. It must not know what a component does: a
component's own rules for a graceful stop (leadership hand-over, Lease release, draining
calls) live in its `stop(grace)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

# A graceful stop gives calls in flight this long unless the component has a flag for it
# (the API server's --shutdown-grace-period).
STOP_GRACE = 1.0
_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Kubernetes components serve /metrics on their HTTPS port; ours speak gRPC there, so the
# metrics get a plain-HTTP listener of their own, on this flag (the store: etcd's
# --listen-metrics-urls).
METRICS_FLAG = "--metrics-address"


class Component(Protocol):
    """What `serve` runs: the store replica, API server, scheduler, controller manager,
    kubelet and proxy classes (in-process users call the same two methods)."""

    async def start(self) -> None:
        """Begin serving. May wait (for a store, an API server); it may be cancelled."""

    async def stop(self, grace: float) -> None:
        """Stop serving and release what `start` took. Work in flight gets at most `grace`
        seconds; 0 stops now (after a failed or cancelled start, or a failure). Safe to call
        after a start that failed or was cancelled half way."""


class ComponentFailed(Exception):
    """The component reported a failure while serving; it was stopped (crash-only: a part
    whose log or state failed must not keep serving)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"stopped: {cause!r}")
        self.cause = cause


def install_event_loop() -> None:
    """uvloop where it is installed (design decision 7), unless K8SEMU_NO_UVLOOP is set."""
    if os.environ.get("K8SEMU_NO_UVLOOP"):
        return
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


async def serve(
    component: Component,
    *,
    grace: float,
    failure: Callable[[], Awaitable[BaseException]] | None = None,
    metrics: str = "",
    metrics_flag: str = METRICS_FLAG,
) -> None:
    """Start `component`, serve until SIGTERM/SIGINT, then `stop(grace)`.

    `metrics` (HOST:PORT, from `metrics_flag`) serves the process's Prometheus registry on
    `/metrics` from before the start to after the stop: an address it cannot bind fails
    before the component starts, naming the flag. Empty: no listener.

    A start that raises: `stop(0)`, and the error goes on. A signal during the start cancels
    it: `stop(0)`, and return as after any signal. `failure`, called once started, is awaited
    alongside the signals: when it returns an error first, `stop(0)` and ComponentFailed.
    """
    if metrics:
        from k8semu import metrics as metrics_http  # prometheus_client: only when serving

        listener = await metrics_http.serve(metrics, flag=metrics_flag)
        try:
            await _serve(component, grace=grace, failure=failure)
        finally:
            await listener.stop()
    else:
        await _serve(component, grace=grace, failure=failure)


async def _serve(
    component: Component,
    *,
    grace: float,
    failure: Callable[[], Awaitable[BaseException]] | None,
) -> None:
    signalled = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _SIGNALS:
        loop.add_signal_handler(sig, signalled.set)
    try:
        try:
            started = await _unless_signalled(component.start(), signalled)
        except BaseException:
            await component.stop(0)
            raise
        if not started:
            await component.stop(0)
            return
        if failure is not None:
            failed = asyncio.ensure_future(failure())
            if await _unless_signalled(failed, signalled):
                await component.stop(0)
                raise ComponentFailed(failed.result())
        await signalled.wait()
        await component.stop(grace)
    finally:
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)


async def _unless_signalled(work: Awaitable[Any], signalled: asyncio.Event) -> bool:
    """Await `work` unless a signal comes first: True when it ended (its error raised),
    False when the signal came first (then `work` is cancelled)."""
    task = asyncio.ensure_future(work)
    waiting = asyncio.ensure_future(signalled.wait())
    try:
        await asyncio.wait((task, waiting), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        waiting.cancel()
    if task.done():
        task.result()
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


def usage_error(command: str, exc: BaseException) -> int:
    """A flag or config that cannot be used: one line naming it, exit code 2."""
    print(f"k8semu {command}: {exc}", file=sys.stderr)
    return 2


def run(
    command: str,
    main: Callable[[], Coroutine[Any, Any, None]],
    *,
    uvloop: bool = True,
    errors: tuple[type[BaseException], ...] = (),
) -> int:
    """Run `main` on a fresh event loop (uvloop unless `uvloop` is False); the exit code.

    0 after a signal; 1, with one line on stderr, when the component could not start (an
    address it cannot bind, an OSError, one of `errors`) or failed while serving.
    """
    from k8semu.transport import AddressError  # gRPC is imported when a component runs

    ended: tuple[type[BaseException], ...] = (ComponentFailed, AddressError, OSError, *errors)
    if uvloop:
        install_event_loop()
    try:
        asyncio.run(main())
    except ended as exc:
        print(f"k8semu {command}: {exc}", file=sys.stderr)
        return 1
    return 0

"""`eventually`: the async poll-with-a-deadline the real-process tests wait with (the suites
never sleep a fixed time).

It owns only the polling loop; what a test waits for is the test's business. A test package
whose waits need other defaults binds its own `Eventually(...)` in its conftest.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# A deadline bounds a wait for what must happen; it is no timing goal (those are benchmarks).
# make test runs three workers beside real clusters on two cores, near its end with every
# worker busy: multi-process convergences that take seconds alone have taken several times
# that there, so a wait gives a minute unless a test says otherwise.
DEADLINE = 60.0
INTERVAL = 0.05


@dataclass(frozen=True)
class Eventually:
    """Polls a check until it returns something truthy, which it returns; the check may be
    sync or return an awaitable. After `timeout` seconds without that, AssertionError naming
    `what`. Exceptions of the `retry_on` types count as false (the last one is in the error);
    any other exception ends the wait at once.
    """

    timeout: float = DEADLINE
    interval: float = INTERVAL
    retry_on: tuple[type[Exception], ...] = ()

    async def __call__(
        self, check: Callable[[], object], timeout: float | None = None, what: str = ""
    ) -> Any:
        timeout = self.timeout if timeout is None else timeout
        end = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            try:
                result = check()
                if inspect.isawaitable(result):
                    result = await result
            except self.retry_on as exc:
                result, last = None, exc
            if result:
                return result
            if time.monotonic() > end:
                error = f" (last error: {last!r})" if self.retry_on else ""
                raise AssertionError(f"not true within {timeout}s: {what}{error}")
            await asyncio.sleep(self.interval)


eventually = Eventually()

"""The in-process tunnel tests run on asyncio's loop and on uvloop (the proxy's loop)."""

from __future__ import annotations

import asyncio
from typing import Any


def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Any]:
    if not item.nodeid.split("::")[0].endswith("test_tunnel.py"):
        return {"asyncio": asyncio.new_event_loop}
    import uvloop

    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}

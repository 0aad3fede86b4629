"""Structured logging for every k8semu process: one structlog setup, called once at start-up.

Every line carries the component and node name. Components get loggers with
`get_logger(__name__)` and never print(); `configure()` belongs to process entry points.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog

Format = Literal["console", "json"]


def configure(
    component: str, *, node: str = "", level: str = "info", fmt: Format = "console"
) -> None:
    """Route structlog (and stdlib logging from grpc/aiosqlite) to stderr in one format."""
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"--log-level: unknown level {level!r}")
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(component=component, **({"node": node} if node else {}))
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)


def get_logger(name: str) -> Any:
    """A bound logger; `name` is the module, kept as the `logger` field."""
    return structlog.get_logger(logger_name=name)

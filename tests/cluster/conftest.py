"""Fixtures of the cluster verbs' tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import stop_recorded


@pytest.fixture
def cleanup() -> Iterator[list[Path]]:
    """State dirs whose recorded processes are stopped by pid at the end, whatever happened."""
    dirs: list[Path] = []
    yield dirs
    stop_recorded(dirs)

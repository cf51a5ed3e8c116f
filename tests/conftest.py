"""Fixtures every test directory may use."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest


@pytest.fixture
def cleanup() -> Iterator[contextlib.ExitStack]:
    """Processes and servers a test starts go in here and are stopped whatever happens."""
    with contextlib.ExitStack() as stack:
        yield stack

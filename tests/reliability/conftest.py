"""Fixtures of the reliability suite: scales, and a server of the test's own to restart.

The short scenarios run by default; ``-m soak`` (``scripts/soak``) runs the long ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mongoqueue.embedded import EmbeddedServer


@pytest.fixture
def ledger_dir(tmp_path: Path) -> Path:
    path = tmp_path / "ledger"
    path.mkdir()
    return path


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """An embedded server with its data on disk, that the test may stop and start again."""
    prefer_rust = os.environ.get("MONGOQUEUE_TEST_SERVER", "auto") != "python"
    server = EmbeddedServer(tmp_path / "own-server", prefer_rust=prefer_rust)
    server.start()
    try:
        yield server
    finally:
        server.close()

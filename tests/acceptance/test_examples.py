"""The examples run: the shop script, and the shop's own tests with mongoqueue.testing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "examples" / "shop"


def _env(uri: str) -> dict[str, str]:
    return dict(os.environ, MONGODB_URI=uri, PYTHONUNBUFFERED="1")


def test_shop_script_enqueues_runs_and_prints_results(mongodb_uri: str) -> None:
    done = subprocess.run(
        [sys.executable, "main.py"],
        cwd=SHOP,
        env=_env(mongodb_uri),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    assert "welcome: {'sent': True, 'to': 'ada@example.com'}" in done.stdout
    assert "'orders': 2" in done.stdout
    assert "shipped: o1" in done.stdout


def test_shop_tests_pass_with_the_testing_plugin(mongodb_uri: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q"],
        cwd=SHOP,
        env=_env(mongodb_uri),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


def test_testing_plugin_starts_an_embedded_server_without_mongodb_uri() -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("MONGODB_URI", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "test_tasks.py::test_welcome_email"],
        cwd=SHOP,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout

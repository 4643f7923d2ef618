"""Acceptance fixtures: run ``python -m mongoqueue`` (the CLI and workers) as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo.collection import Collection

ROOT = Path(__file__).resolve().parents[2]

#: What a CLI call returns: (exit code, stdout, stderr).
Result = tuple[int, str, str]


def cli_command(uri: str, collection: Collection[Any], *args: str) -> list[str]:
    return [
        sys.executable, "-m", "mongoqueue", "--uri", uri, "--db", collection.database.name,
        "--collection", collection.name, *args,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MONGODB_URI", None)  # the tests pass --uri explicitly
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def log(collection: Collection[Any]) -> Iterator[Collection[Any]]:
    """Where the test handlers record each delivery (see handlers.py)."""
    log = collection.database[collection.name + "_log"]
    yield log
    log.drop()


@pytest.fixture
def run_cli(mongodb_uri: str, collection: Collection[Any]) -> Callable[..., Result]:
    """Run one CLI command to completion on the test's collection."""

    def run(*args: str, input: str | None = None, timeout: float = 60) -> Result:
        done = subprocess.run(
            cli_command(mongodb_uri, collection, *args),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env=_env(),
        )
        return done.returncode, done.stdout, done.stderr

    return run


class WorkerProcess:
    """A ``mongoqueue worker`` process; its output goes to a file."""

    def __init__(self, command: list[str], output: Path) -> None:
        self.output = output
        with open(output, "wb") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=_env()
            )

    @property
    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait(self, timeout: float = 60) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"worker still running after {timeout}s:\n{self.text}") from None


@pytest.fixture
def start_worker(
    mongodb_uri: str, collection: Collection[Any], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``mongoqueue worker HANDLER ARGS...``; killed at the end of the test if still alive."""
    workers: list[WorkerProcess] = []

    def start(handler: str, *args: str) -> WorkerProcess:
        command = cli_command(
            mongodb_uri, collection, "worker", f"tests.acceptance.handlers:{handler}", *args
        )
        worker = WorkerProcess(command, tmp_path / f"worker-{len(workers) + 1}.log")
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()

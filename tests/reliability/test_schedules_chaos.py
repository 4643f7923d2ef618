"""Schedules under chaos: one job per tick while workers die and clocks lie.

Several ``mongoqueue worker tests.reliability.schedule_app:app`` processes all
evaluate a schedule that fires every second. One runs with its wall clock five
minutes ahead (libfaketime: ``FAKETIME="+300"``), and a chaos loop SIGKILLs a
random worker every ~1.2 s and starts a replacement, so at least one worker is
always up. A second run steps the *server's* clock back (libfaketime reading an
offset file, as in ``test_clock_steps.py``) while the workers run. Over each run,
every tick between the first and the last job has exactly one job: none twice,
none missed. Figures are printed (``-s``) and appended to ``$RELIABILITY_FIGURES``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from tests.reliability.test_clock_steps import _libfaketime, stepping_server  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 4
SECONDS = 14.0  # chaos window
KILL_EVERY = 1.2


@pytest.fixture
def db(client: MongoClient[dict[str, Any]]) -> Iterator[Database[dict[str, Any]]]:
    name = f"schedchaos_{uuid.uuid4().hex[:12]}"
    yield client[name]
    client.drop_database(name)


class Workers:
    def __init__(self, uri: str, db_name: str, log_dir: Path) -> None:
        self.env = dict(os.environ, SCHED_URI=uri, SCHED_DB=db_name, PYTHONUNBUFFERED="1")
        self.log_dir = log_dir
        self.procs: list[tuple[subprocess.Popen[bytes], bool]] = []

    def start(self, skewed: bool = False) -> None:
        env = dict(self.env)
        if skewed:
            library = _libfaketime()
            assert library is not None
            env.update(LD_PRELOAD=library, FAKETIME="+300", FAKETIME_DONT_FAKE_MONOTONIC="1")
        path = self.log_dir / f"worker-{len(self.procs)}{'-skewed' if skewed else ''}.log"
        with open(path, "wb") as log:
            command = [
                sys.executable, "-m", "mongoqueue", "worker",
                "tests.reliability.schedule_app:app", "--grace", "5",
            ]  # fmt: skip
            proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
        self.procs.append((proc, skewed))

    @property
    def alive(self) -> list[tuple[subprocess.Popen[bytes], bool]]:
        return [(p, s) for p, s in self.procs if p.poll() is None]

    def stop(self) -> None:
        for proc, _ in self.alive:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def fired_by_skewed(self) -> int:
        return sum(
            (self.log_dir / name).read_text(errors="replace").count("fired tick")
            for name in os.listdir(self.log_dir)
            if name.endswith("-skewed.log")
        )


def run_chaos(
    uri: str, db: Database[Any], log_dir: Path, during: Callable[[float], None] | None = None
) -> dict[str, Any]:
    rng = random.Random(13)
    workers = Workers(uri, db.name, log_dir)
    for index in range(WORKERS):
        workers.start(skewed=index == 0)
    ticks = db.ticks
    deadline = time.monotonic() + 60
    while ticks.count_documents({}) == 0:  # every worker is importing the app
        assert time.monotonic() < deadline, "no tick fired"
        time.sleep(0.05)
    kills = 0
    started = time.monotonic()
    next_kill = started + KILL_EVERY
    try:
        while (now := time.monotonic()) < started + SECONDS:
            if during is not None:
                during(now - started)
            if now >= next_kill and len(workers.alive) >= 2:
                proc, skewed = rng.choice(workers.alive)
                proc.kill()
                proc.wait()
                kills += 1
                workers.start(skewed=skewed)  # a replacement, as a supervisor would
                next_kill = now + KILL_EVERY
            time.sleep(0.05)
    finally:
        workers.stop()
    times = [doc["payload"]["fire_time"] for doc in ticks.find({}, {"payload.fire_time": 1})]
    counts = Counter(times)
    first, last = min(times), max(times)
    expected = {
        first + timedelta(seconds=n) for n in range(int((last - first).total_seconds()) + 1)
    }
    figures = {
        "ticks": len(expected),
        "jobs": len(times),
        "workers": WORKERS,
        "kills": kills,
        "duplicates": sum(n - 1 for n in counts.values() if n > 1),
        "missed": len(expected - set(counts)),
        "fired_by_skewed_worker": workers.fired_by_skewed(),
    }
    line = "schedules chaos: " + ", ".join(f"{k} {v}" for k, v in figures.items())
    print(line)
    target = os.environ.get("RELIABILITY_FIGURES")
    if target:
        with open(target, "a") as out:
            out.write(line + "\n")
    return figures


def test_one_job_per_tick_with_killed_and_skewed_workers(
    mongodb_uri: str, db: Database[dict[str, Any]], tmp_path: Path
) -> None:
    if _libfaketime() is None:
        pytest.skip("libfaketime is not installed (scripts/test installs it: apt-get faketime)")
    figures = run_chaos(mongodb_uri, db, tmp_path)
    assert figures["duplicates"] == 0, figures
    assert figures["missed"] == 0, figures
    assert figures["ticks"] >= SECONDS - 2, figures
    assert figures["kills"] >= 8, figures
    # The worker five minutes ahead took part (its wall clock is never read).
    assert figures["fired_by_skewed_worker"] >= 1, figures


def test_one_job_per_tick_while_the_server_clock_steps(
    stepping_server: tuple[str, Path],  # noqa: F811
    tmp_path: Path,
) -> None:
    uri, offset = stepping_server
    client: MongoClient[dict[str, Any]] = MongoClient(uri)
    db = client["schedsteps"]
    steps: list[float] = []

    def step(elapsed: float) -> None:
        # Back 2.5 s at 3 s, 6.5 s and 10 s into the window (cumulative).
        for at in (3.0, 6.5, 10.0):
            if elapsed >= at and at not in steps:
                steps.append(at)
                offset.write_text(f"{-2.5 * len(steps):+.1f}\n")

    try:
        figures = run_chaos(uri, db, tmp_path, during=step)
    finally:
        client.close()
    assert len(steps) == 3
    assert figures["duplicates"] == 0, figures
    assert figures["missed"] == 0, figures
    assert figures["ticks"] >= SECONDS - 10, figures

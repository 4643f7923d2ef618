"""Killed workers: a chaos loop SIGKILLs random workers mid-job and starts new ones."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from pymongo.collection import Collection

from tests.helpers import wait_for
from tests.reliability.tooling import (
    Figures,
    Scale,
    WorkerPool,
    assert_clean,
    check,
    put_jobs,
    settled,
)

SHORT = Scale(jobs=40, workers=3, faults=6, seconds=30)
SOAK = Scale(jobs=400, workers=4, faults=80, seconds=300)

#: Handlers sleep 0.3-0.6 s; a worker is killed only within 0.15 s of starting its
#: job, so it is surely mid-job (not between jobs, where a claim could be unlogged).
JOB_SECONDS = 0.6
KILL_WITHIN = 0.15


def run_killed_workers(
    uri: str, collection: Collection[Any], ledger_dir: Path, scale: Scale, seed: int
) -> tuple[Figures, WorkerPool]:
    rng = random.Random(seed)
    ids = put_jobs(collection, scale.jobs, sleep=JOB_SECONDS, seed=seed)
    pool = WorkerPool(uri, collection, ledger_dir, timeout=2.0)
    started_at = time.monotonic()
    for _ in range(scale.workers):
        pool.start()
    kills = 0
    deadline = time.monotonic() + scale.seconds
    while kills < scale.faults and time.monotonic() < deadline and not settled(collection):
        now = time.monotonic()
        mid_job = [
            proc
            for proc in pool.alive
            if now - pool.open_starts().get(proc.pid, -1e9) < KILL_WITHIN
        ]
        if not mid_job:
            time.sleep(0.01)
            continue
        pool.kill(rng.choice(mid_job))
        kills += 1
        pool.start()  # a replacement, as a supervisor would
    wait_for(lambda: settled(collection), timeout=120, interval=0.1)
    codes = pool.stop()
    assert all(code == 0 for code in codes), (codes, pool.logs())
    figures = check(
        "killed workers",
        pool,
        ids,
        {"SIGKILL mid-job": kills},
        started_at,
        exact_attempts=True,
    )
    return figures, pool


def test_killed_workers(mongodb_uri, collection, ledger_dir) -> None:
    figures, pool = run_killed_workers(mongodb_uri, collection, ledger_dir, SHORT, seed=7)
    assert_clean(figures, pool)
    assert figures.faults["SIGKILL mid-job"] >= 3  # the chaos really happened
    assert figures.deliveries > figures.jobs  # killed jobs were delivered again


@pytest.mark.soak
def test_killed_workers_soak(mongodb_uri, collection, ledger_dir) -> None:
    figures, pool = run_killed_workers(mongodb_uri, collection, ledger_dir, SOAK, seed=11)
    assert_clean(figures, pool)

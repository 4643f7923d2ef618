"""Server restart: the server is stopped and started again (same port, same data) under load.

The workers are not told: they see ``QueueUnavailable``, back off (bounded) and
carry on once the server answers again. A job whose handler returned while the
server was down could not be completed; its lease expires and it runs again
(at-least-once), and so does a claim whose reply was lost in the cut.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from mongoqueue import NO_BACKOFF, MongoQueue, QueueUnavailable
from mongoqueue.embedded import EmbeddedServer
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

SHORT = Scale(jobs=40, workers=3, faults=2, seconds=60)
SOAK = Scale(jobs=600, workers=4, faults=12, seconds=400)

#: Workers give up on an operation after this long without a server...
SERVER_TIMEOUT = 1.5
#: ...and the lease outlasts the longest outage, so no running handler loses its job.
LEASE = 8.0


def run_server_restarts(
    server: EmbeddedServer, ledger_dir: Path, scale: Scale, seed: int, *, kill: bool
) -> tuple[Figures, WorkerPool, MongoClient[dict[str, Any]]]:
    rng = random.Random(seed)
    client: MongoClient[dict[str, Any]] = MongoClient(server.uri, serverSelectionTimeoutMS=5000)
    try:
        collection = client["reliability"]["jobs"]
        ids = put_jobs(collection, scale.jobs, sleep=0.4, seed=seed)
        pool = WorkerPool(
            server.uri,
            collection,
            ledger_dir,
            timeout=LEASE,
            concurrency=2,
            server_timeout=SERVER_TIMEOUT,
        )
        started_at = time.monotonic()
        for _ in range(scale.workers):
            pool.start()
        restarts = 0
        deadline = time.monotonic() + scale.seconds
        while restarts < scale.faults and time.monotonic() < deadline and not settled(collection):
            # Let every worker get going (a worker that cannot reach the server when it
            # starts exits with code 3, by design), then cut the server mid-job.
            wait_for(
                lambda: (
                    len(list(ledger_dir.glob("*.jsonl"))) >= scale.workers or settled(collection)
                ),
                timeout=60,
            )
            wait_for(lambda: pool.open_starts() or settled(collection), timeout=60, interval=0.01)
            server.stop(kill=kill)
            # Down for a while: every other time longer than the workers' server selection
            # timeout, so they see QueueUnavailable and back off; else pymongo rides it out.
            long = restarts % 2 == 1
            time.sleep(rng.uniform(SERVER_TIMEOUT + 0.5, SERVER_TIMEOUT + 1.5) if long else 0.5)
            server.start()  # same port, same data directory
            restarts += 1
            time.sleep(rng.uniform(1.0, 3.0))
        wait_for(lambda: settled(collection), timeout=120, interval=0.2)
        codes = pool.stop()
        assert all(code == 0 for code in codes), (codes, pool.logs())
        assert all(proc.pid not in pool.killed for proc in pool.procs)  # no worker died
        fault = "server SIGKILL + restart" if kill else "server stop + restart"
        faults = {fault: restarts}
        figures = check("server restart", pool, ids, faults, started_at, exact_attempts=False)
    except BaseException:
        client.close()
        raise
    return figures, pool, client


def test_server_restart(own_server, ledger_dir) -> None:
    figures, pool, client = run_server_restarts(own_server, ledger_dir, SHORT, seed=3, kill=False)
    try:
        assert_clean(figures, pool)
        logs = pool.logs()
        # The workers did see the server go and come back: a claim, a heartbeat or a
        # completion failed and was tried again.
        assert any(seen in logs for seen in ("retrying in", "will retry", "trying again in"))
    finally:
        client.close()


@pytest.mark.soak
def test_server_restart_soak(own_server, ledger_dir) -> None:
    figures, pool, client = run_server_restarts(own_server, ledger_dir, SOAK, seed=5, kill=False)
    client.close()
    assert_clean(figures, pool)


def test_a_claim_made_before_the_server_went_down_comes_back(own_server) -> None:
    """A claim the consumer never learned of (its process lost it) is delivered again.

    The consumer claims, the server is stopped and started again, the consumer's
    handle is gone (as if the reply had been lost): the job is still leased on
    disk and comes back to another consumer once the lease expires, with the
    lost delivery counted as an attempt.
    """
    client: MongoClient[dict[str, Any]] = MongoClient(own_server.uri, serverSelectionTimeoutMS=500)
    try:
        collection = client["reliability"]["restart"]
        first = MongoQueue(collection, "first", timeout=5, retry=NO_BACKOFF)
        job_id = first.put({"n": 1})
        assert first.next() is not None  # claimed; we drop the handle: its reply "was lost"
        own_server.stop()
        with pytest.raises(QueueUnavailable, match="lease expires"):
            first.next()
        own_server.start()
        second = MongoQueue(collection, "second", timeout=2, retry=NO_BACKOFF)
        assert second.next() is None  # the lease survived the restart (data on disk)
        again = wait_for(second.next, timeout=30)
        assert (again.id, again.attempts, again.payload) == (job_id, 1, {"n": 1})
        again.complete()
        assert second.stats()["total"] == 0
    finally:
        client.close()

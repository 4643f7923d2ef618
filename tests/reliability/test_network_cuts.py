"""Network cuts: workers reach the server through a proxy that cuts, delays and loses replies."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from mongoqueue import NO_BACKOFF, MongoQueue, QueueUnavailable
from mongoqueue.embedded import EmbeddedServer
from tests.helpers import wait_for
from tests.reliability.proxy import ChaosProxy
from tests.reliability.tooling import (
    Figures,
    Scale,
    WorkerPool,
    assert_clean,
    check,
    put_jobs,
    settled,
)

SHORT = Scale(jobs=40, workers=3, faults=20, seconds=25)
SOAK = Scale(jobs=300, workers=4, faults=400, seconds=400)

#: Longer than any fault lasts, so no running handler loses its lease to a fault.
LEASE = 6.0


FAULTS = ("cut", "delay", "lost reply", "refuse")


def _inject(proxy: ChaosProxy, rng: random.Random, counts: dict[str, int]) -> None:
    # Round-robin over the kinds, so each one happens.
    fault = FAULTS[sum(counts.values()) % len(FAULTS)]
    if fault == "cut":  # every open connection dropped mid-operation
        proxy.cut()
    elif fault == "delay":  # every chunk held back up to 150 ms, for a second
        proxy.delay = 0.15
        time.sleep(0.6)
        proxy.delay = 0.0
    elif fault == "lost reply":  # requests reach the server, replies never come back
        proxy.swallow = True
        time.sleep(rng.uniform(0.1, 0.5))
        proxy.cut()
        proxy.swallow = False
    else:  # open connections cut, new ones closed at once, for a while
        proxy.refuse = True
        proxy.cut()
        time.sleep(rng.uniform(0.2, 1.0))
        proxy.refuse = False
    counts[fault] = counts.get(fault, 0) + 1


def run_network_cuts(
    server: EmbeddedServer, ledger_dir: Path, scale: Scale, seed: int
) -> tuple[Figures, WorkerPool, ChaosProxy]:
    rng = random.Random(seed)
    client: MongoClient[dict[str, Any]] = MongoClient(server.uri)
    collection = client["reliability"]["jobs"]
    ids = put_jobs(collection, scale.jobs, sleep=0.6, seed=seed)
    proxy = ChaosProxy(server.port or 0, seed=seed)
    pool = WorkerPool(proxy.uri(), collection, ledger_dir, timeout=LEASE, concurrency=2)
    started_at = time.monotonic()
    counts: dict[str, int] = {}
    try:
        for _ in range(scale.workers):
            pool.start()
        # Faults begin once every worker runs a job: a worker that cannot reach the
        # server when it starts exits with code 3, by design (its supervisor restarts it).
        wait_for(lambda: len(list(ledger_dir.glob("*.jsonl"))) >= scale.workers, timeout=60)
        deadline = time.monotonic() + scale.seconds
        while (
            sum(counts.values()) < scale.faults
            and time.monotonic() < deadline
            and not settled(collection)
        ):
            time.sleep(rng.uniform(0.05, 0.3))
            _inject(proxy, rng, counts)
        wait_for(lambda: settled(collection), timeout=120, interval=0.2)
        codes = pool.stop()
        assert all(code == 0 for code in codes), (codes, pool.logs())
        counts["connections cut"] = proxy.cuts
        counts["replies dropped"] = proxy.dropped_replies
        figures = check("network cuts", pool, ids, counts, started_at, exact_attempts=False)
    finally:
        proxy.close()
        client.close()
    return figures, pool, proxy


def _assert_network_figures(figures: Figures, pool: WorkerPool, proxy: ChaosProxy) -> None:
    assert_clean(figures, pool)
    # Attempts beyond the deliveries seen need a claim whose reply was lost.
    assert figures.extra_attempts <= proxy.dropped_replies, figures


def test_network_cuts(own_server, ledger_dir) -> None:
    figures, pool, proxy = run_network_cuts(own_server, ledger_dir, SHORT, seed=21)
    _assert_network_figures(figures, pool, proxy)
    assert proxy.cuts >= 5  # connections really were cut mid-flight


@pytest.mark.soak
def test_network_cuts_soak(own_server, ledger_dir) -> None:
    figures, pool, proxy = run_network_cuts(own_server, ledger_dir, SOAK, seed=23)
    _assert_network_figures(figures, pool, proxy)


def test_a_claim_whose_reply_was_lost_comes_back_after_its_lease(own_server) -> None:
    """The claim happens on the server, its reply never arrives: at-least-once.

    The consumer gets ``QueueUnavailable``; the job stays leased to it (though it
    has no handle) until the lease expires, then another consumer gets it with
    the lost delivery counted as one attempt.
    """
    direct: MongoClient[dict[str, Any]] = MongoClient(own_server.uri)
    try:
        _lost_reply(own_server, direct)
    finally:
        direct.close()


def _lost_reply(own_server: EmbeddedServer, direct: MongoClient[dict[str, Any]]) -> None:
    collection = direct["reliability"]["lost_reply"]
    owner = MongoQueue(collection, "owner", timeout=3, retry=NO_BACKOFF)
    job_id = owner.put({"n": 1})
    owner.ensure_indexes()
    with ChaosProxy(own_server.port or 0) as proxy:
        cut_off: MongoClient[dict[str, Any]] = MongoClient(
            proxy.uri(), serverSelectionTimeoutMS=1500, socketTimeoutMS=500
        )
        try:
            consumer = MongoQueue(
                cut_off["reliability"]["lost_reply"], "cut-off", timeout=3, retry=NO_BACKOFF
            )
            consumer.counts()  # connected, indexes known, clock anchored
            consumer._indexes_ready = True
            proxy.swallow = True
            stop = threading.Event()
            cutter = threading.Thread(target=lambda: [proxy.cut() for _ in iter(
                lambda: stop.wait(0.2), True)], daemon=True)  # fmt: skip
            cutter.start()
            try:
                with pytest.raises(QueueUnavailable, match="lease expires"):
                    consumer.next()
            finally:
                stop.set()
                cutter.join()
            assert proxy.dropped_replies >= 1
        finally:
            cut_off.close()
    doc = collection.find_one({"_id": job_id})
    assert doc["locked_by"] == "cut-off"  # claimed on the server; nobody holds a handle
    assert owner.next() is None  # not before the lease ends
    again = wait_for(owner.next, timeout=30)
    assert (again.id, again.attempts) == (job_id, 1)  # the lost delivery counted once
    again.complete()

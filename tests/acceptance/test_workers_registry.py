"""``mongoqueue worker`` processes in the workers registry, listed by ``mongoqueue workers``."""

from __future__ import annotations

import json
import signal

from mongoqueue import MongoQueue
from mongoqueue.presence import read_activity
from mongoqueue.registry import WORKERS_COLLECTION
from tests.helpers import wait_for


def _workers(run_cli, collection) -> list[dict]:
    code, out, err = run_cli("workers", "--queue", collection.name, "--json")
    assert code == 0, err
    return json.loads(out)


def test_workers_are_listed_shown_dead_when_killed_and_gone_when_stopped(
    run_cli, start_worker, collection, log
) -> None:
    producer = MongoQueue(collection, "producer")
    job_id = producer.put({"sleep": 60})
    options = ("--timeout", "30", "--heartbeat", "0.5", "--grace", "0.2")
    sync = start_worker("record", "--concurrency", "2", *options)
    aio = start_worker("arecord", "--concurrency", "3", *options)
    pids = {sync.process.pid, aio.process.pid}

    def both_listed_and_holding() -> list[dict] | None:
        rows = _workers(run_cli, collection)
        ok = {r["pid"] for r in rows} == pids and any(r["jobs"] for r in rows)
        return rows if ok else None

    rows = wait_for(both_listed_and_holding, timeout=30, interval=0.2)
    for row in rows:
        assert row["state"] == "alive"
        assert row["queues"] == [collection.name]
        assert row["heartbeat_age_seconds"] < 30
        assert row["id"].startswith(row["consumer_id"] + "#")
    by_pid = {r["pid"]: r for r in rows}
    assert by_pid[sync.process.pid]["concurrency"] == 2
    assert by_pid[sync.process.pid]["kind"] == "Worker"
    assert by_pid[aio.process.pid]["kind"] == "AsyncWorker"
    (holder,) = [r for r in rows if r["jobs"]]
    assert holder["jobs"] == [{"$oid": str(job_id)}]
    assert collection.find_one({"_id": job_id})["locked_by"] == holder["consumer_id"]

    code, table, err = run_cli("workers", "--queue", collection.name)
    assert code == 0, err
    for pid in pids:
        assert str(pid) in table
    assert table.count("alive") == 2

    # kill -9 the holder: no goodbye; within a few heartbeats it is listed as dead,
    # long before its job's 30 s lease runs out.
    killed = sync if holder["pid"] == sync.process.pid else aio
    survivor = aio if killed is sync else sync
    killed.process.kill()
    killed.process.wait()

    def killed_is_dead() -> dict | None:
        row = next(
            (r for r in _workers(run_cli, collection) if r["pid"] == killed.process.pid), None
        )
        return row if row and row["state"] == "dead" else None

    dead = wait_for(killed_is_dead, timeout=30, interval=0.2)
    assert dead["heartbeat_age_seconds"] > 1.5
    assert isinstance(collection.find_one({"_id": job_id})["lease_token"], str)  # still held
    code, table, _ = run_cli("workers", "--queue", collection.name)
    assert "dead" in table

    # A stopped worker removes its entry and says what it did, in jobs.
    survivor.process.send_signal(signal.SIGTERM)
    assert survivor.wait() == 0, survivor.text
    assert [r["pid"] for r in _workers(run_cli, collection)] == [killed.process.pid]
    assert "stopped: 0 jobs completed, 0 jobs failed (final)" in survivor.text
    collection.database[WORKERS_COLLECTION].delete_many({"queues": collection.name})


def test_a_burst_worker_records_what_it_did(run_cli, start_worker, collection, log) -> None:
    producer = MongoQueue(collection, "producer")
    producer.put_many([{"n": n} for n in range(5)])
    producer.put({"n": "bad"}, max_attempts=2)
    # No backoff: burst exits as soon as nothing is due, and a job in backoff is not due.
    worker = start_worker("fail_bad", "--burst", "--retry-initial", "0")
    assert worker.wait() == 0, worker.text
    assert (
        "stopped: 5 jobs completed, 1 job failed (final), 1 attempt failed and retried, "
        "0 jobs released, 0 leases lost"
    ) in worker.text
    assert "attempt 1 failed after" in worker.text
    assert "will be retried" in worker.text
    assert "failed (final, attempt 2)" in worker.text
    rows = read_activity(collection.database, collection.name, 5)
    assert sum(c["completed"] for _, c in rows) == 5
    assert sum(c["failed"] for _, c in rows) == 1
    assert sum(c["retried"] for _, c in rows) == 1
    assert _workers(run_cli, collection) == []

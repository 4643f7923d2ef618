"""``mongoqueue worker`` processes: delays, backoff, dedup, signals, heartbeats, waiting."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest

import mongoqueue.queue
from mongoqueue import MongoQueue, RetryPolicy
from tests.acceptance.conftest import ROOT, cli_command
from tests.helpers import wait_for

#: A claim may see a job as due up to one round trip before the server's clock
#: reaches its time (the clock estimate is an upper bound; see clock.py).
CLOCK_SLACK = timedelta(milliseconds=100)

#: The same handler as a function (run by Worker) and a coroutine function (AsyncWorker).
BOTH_WORKERS = pytest.mark.parametrize("record", ["record", "arecord"])


def _held(collection):
    return collection.find_one({"lease_token": {"$type": "string"}})


def test_delayed_job_is_not_delivered_early(run_cli, start_worker, collection, log) -> None:
    assert run_cli("put", '{"n": "later"}', "--delay", "2")[0] == 0
    assert run_cli("put", '{"n": "now"}')[0] == 0
    due = collection.find_one({"payload.n": "later"})["scheduled_at"]
    # Not --burst: burst exits as soon as nothing is due, before the delayed job is.
    worker = start_worker("record")
    wait_for(lambda: collection.count_documents({}) == 0, timeout=30)
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.text
    runs = list(log.find().sort("_id", 1))
    assert [run["payload"]["n"] for run in runs] == ["now", "later"]
    assert runs[1]["locked_at"] >= due - CLOCK_SLACK
    assert collection.count_documents({}) == 0


def test_backoff_schedule(start_worker, collection, log) -> None:
    policy = RetryPolicy(initial=0.5, multiplier=2, maximum=60, jitter=False)
    MongoQueue(collection, "producer").put({"n": 1}, max_attempts=3, retry=policy)
    # Not --burst: burst exits as soon as nothing is due, i.e. during the first backoff.
    worker = start_worker("fail")
    wait_for(lambda: collection.find_one({"state": "failed"}), timeout=30)
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.text
    claims = [run["locked_at"] for run in log.find().sort("_id", 1)]
    assert len(claims) == 3
    for failures, (before, after) in enumerate(itertools.pairwise(claims), 1):
        assert after - before >= policy.delay(failures, jitter=1.0) - CLOCK_SLACK
    job = collection.find_one()
    assert job["state"] == "failed"
    assert job["attempts"] == 3
    assert "Traceback" in job["last_error"]
    assert "RuntimeError: handler failed on purpose" in job["last_error"]


def test_dedup_under_concurrent_puts(mongodb_uri, collection) -> None:
    keys = [f"key-{i}" for i in range(15)]
    script = (
        "import sys, time\n"
        "from pymongo import MongoClient\n"
        "from mongoqueue import MongoQueue\n"
        "uri, db, coll, start = sys.argv[1:5]\n"
        "queue = MongoQueue(MongoClient(uri)[db][coll], 'p')\n"
        "queue.ensure_indexes(); queue.size()\n"
        "time.sleep(max(0, float(start) - time.time()))\n"
        "for key in sys.argv[5:]:\n"
        "    print(queue.put({'key': key}, key=key))\n"
    )
    start = str(time.time() + 2)
    args = [mongodb_uri, collection.database.name, collection.name, start, *keys]
    procs = [
        subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [proc.communicate(timeout=60)[0].split() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert all(out == outputs[0] for out in outputs)  # every process got the same ids
    assert len(set(outputs[0])) == len(keys)
    assert collection.count_documents({}) == len(keys)


def test_concurrent_cli_puts_with_one_key(mongodb_uri, collection) -> None:
    command = cli_command(mongodb_uri, collection, "put", '{"report": 42}', "--key", "r-42")
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(3)
    ]
    ids = {proc.communicate(timeout=60)[0].strip() for proc in procs}
    assert all(proc.returncode == 0 for proc in procs)
    assert len(ids) == 1
    assert collection.count_documents({}) == 1


@BOTH_WORKERS
def test_sigterm_lets_the_running_job_finish(record, start_worker, collection, log) -> None:
    MongoQueue(collection, "producer").put({"sleep": 1.0})
    worker = start_worker(record, "--grace", "30")
    wait_for(lambda: log.count_documents({}))  # running, not just held (prefetch)
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.text
    assert collection.count_documents({}) == 0  # completed
    assert log.count_documents({}) == 1
    assert "waiting up to 30.0s for 1 running job(s)" in worker.text


@BOTH_WORKERS
def test_sigterm_releases_the_job_after_the_grace_period(
    record, start_worker, collection, log
) -> None:
    queue = MongoQueue(collection, "test")
    queue.put({"sleep": 60})
    worker = start_worker(record, "--grace", "0.3")
    wait_for(lambda: log.count_documents({}))  # running, not just held (prefetch)
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.text
    assert "released after the grace period" in worker.text
    job = queue.next()  # back in the queue at once
    assert job is not None
    assert job.attempts == 0


@BOTH_WORKERS
def test_second_signal_exits_at_once(record, start_worker, collection, log) -> None:
    queue = MongoQueue(collection, "test", timeout=30)
    queue.put({"sleep": 60})
    worker = start_worker(record, "--grace", "60", "--timeout", "1")
    wait_for(lambda: log.count_documents({}))  # running, not just held (prefetch)
    worker.process.send_signal(signal.SIGTERM)
    wait_for(lambda: "send it again to exit at once" in worker.text)
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait() == 128 + signal.SIGTERM
    job = queue.next(wait=20)  # its lease expires and it comes back
    assert job is not None
    assert job.attempts == 1


def test_heartbeats_keep_a_long_job_from_being_delivered_twice(
    start_worker, collection, log
) -> None:
    queue = MongoQueue(collection, "rival", timeout=1.5)
    queue.put({"sleep": 4})
    worker = start_worker("record", "--timeout", "1.5", "--burst")
    first = wait_for(lambda: _held(collection))
    # The lease is 1.5 s and the job takes 4 s: only heartbeats keep it held.
    while collection.count_documents({}) > 0:
        assert queue.next() is None
        time.sleep(0.05)
    assert worker.wait() == 0, worker.text
    assert log.count_documents({}) == 1
    assert first["locked_by"] != "rival"


def test_hard_limit_abandons_a_hung_handler(run_cli, start_worker, collection, log) -> None:
    assert run_cli("put", '{"sleep": 600}', "--priority", "1", "--max-attempts", "1")[0] == 0
    assert run_cli("put", '{"n": 2}')[0] == 0
    worker = start_worker("record", "--hard-limit", "1", "--burst")
    assert worker.wait() == 0, worker.text
    hung = collection.find_one()
    assert hung["payload"] == {"sleep": 600}
    assert hung["state"] == "failed"
    assert "hard limit" in hung["last_error"]
    assert log.count_documents({"payload.n": 2}) == 1  # the worker moved on


def test_next_wait_returns_promptly_after_a_put(run_cli, collection, monkeypatch) -> None:
    recheck = 30.0
    # Without a wake-up the consumer would re-check only after `recheck` seconds.
    monkeypatch.setattr(mongoqueue.waiting, "RECHECK_SECONDS", recheck)
    monkeypatch.setattr(mongoqueue.waiting, "EMPTY_RECHECK_SECONDS", recheck)
    queue = MongoQueue(collection, "waiter")
    queue.ensure_indexes()
    result = {}

    def consume() -> None:
        start = time.monotonic()
        result["job"] = queue.next(wait=recheck)
        result["seconds"] = time.monotonic() - start

    consumer = threading.Thread(target=consume)
    consumer.start()
    assert run_cli("put", '{"wake": "up"}')[0] == 0
    consumer.join(timeout=recheck + 10)
    assert result["job"] is not None
    assert result["job"].payload == {"wake": "up"}
    assert result["seconds"] < recheck / 2


def test_a_coroutine_handler_runs_on_the_async_worker(start_worker, collection, log) -> None:
    producer = MongoQueue(collection, "producer")
    producer.put_many([{"n": n} for n in range(4)])
    worker = start_worker("arecord", "--burst", "--concurrency", "4")
    assert worker.wait() == 0, worker.text
    assert collection.count_documents({}) == 0
    assert sorted(run["payload"]["n"] for run in log.find({"worker_kind": "async"})) == [0, 1, 2, 3]
    assert "concurrency 4" in worker.text

    producer.put({"n": "bad"}, max_attempts=1)
    worker = start_worker("afail", "--burst")
    assert worker.wait() == 0, worker.text
    failed = collection.find_one()
    assert failed["state"] == "failed"
    assert "in afail" in failed["last_error"]
    assert "RuntimeError: handler failed on purpose" in failed["last_error"]
    assert "failed (final, attempt 1) after" in worker.text


def test_a_worker_stopped_past_its_lease_reports_the_job_lost(
    start_worker, collection, log
) -> None:
    """SIGSTOP a worker mid-job past its lease, let another consumer take and complete
    the job, SIGCONT: the worker reports the job lost, not completed."""
    job_id = MongoQueue(collection, "producer").put({"sleep": 5})  # outlives the stop
    worker = start_worker("record", "--timeout", "1.5")
    wait_for(lambda: log.find_one({"job_id": job_id}), timeout=30)
    worker.process.send_signal(signal.SIGSTOP)
    try:
        rival = MongoQueue(collection, "rival", timeout=30)
        taken = wait_for(rival.next, timeout=10)  # once the stopped worker's lease ends
        assert taken.id == job_id
        taken.complete()
    finally:
        worker.process.send_signal(signal.SIGCONT)
    wait_for(lambda: "its lease was lost" in worker.text or "cannot" in worker.text, timeout=20)
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait() == 0, worker.text
    assert "0 jobs completed" in worker.text, worker.text
    assert "1 lease lost" in worker.text, worker.text
    assert "completed in" not in worker.text

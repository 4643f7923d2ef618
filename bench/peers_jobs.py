"""One system's side of the peers benchmark: enqueue, work, count (run by bench/peers.py).

Usage (from bench/peers.py, in the venv that has the system installed)::

    python bench/peers_jobs.py SYSTEM enqueue|work|count --jobs N --concurrency C \
        --sleep S --url URL

``work`` runs ONE worker in this process, in burst mode (it stops once the queue
is empty), and prints one JSON line: ``start`` (wall clock, taken right before
the worker is created, after the imports), ``end`` (right after it returned)
and ``ran`` (handler calls seen in this process, or null where the handler runs
in a forked child). Only the standard library is imported at module level: the
same file serves mongoqueue's venv and the peers' venv. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import sys
import threading
import time
from typing import Any

RAN = 0
_LOCK = threading.Lock()
SLEEP = float(os.environ.get("PEERS_SLEEP", "0"))


def _count() -> None:
    global RAN
    with _LOCK:
        RAN += 1


# --------------------------------------------------------------------------- handlers
# A job's handler: a no-op, or a 20 ms wait (time.sleep / asyncio.sleep) when
# PEERS_SLEEP is set. Module-level so that RQ and the mongoqueue CLI import them.


def mq_job(job: Any) -> None:
    if SLEEP:
        time.sleep(SLEEP)
    _count()


async def mq_async_job(job: Any) -> None:
    if SLEEP:
        await asyncio.sleep(SLEEP)
    _count()


def rq_job(n: int) -> None:
    if SLEEP:
        time.sleep(SLEEP)
    _count()


async def async_job(ctx: Any, n: int = 0) -> None:  # arq, saq (ctx first)
    if SLEEP:
        await asyncio.sleep(SLEEP)
    _count()


# The mongoqueue CLI worker imports this module to load mq_job: its start is the
# import (right before the worker starts), its end the interpreter's exit.
_CLI_REPORT = os.environ.get("PEERS_CLI_REPORT")
if _CLI_REPORT:
    _cli_start = time.time()

    def _write_cli_report() -> None:
        with open(_CLI_REPORT, "w") as f:
            json.dump({"start": _cli_start, "end": time.time(), "ran": RAN}, f)

    atexit.register(_write_cli_report)


# --------------------------------------------------------------------------- mongoqueue

DB = "mongoqueue_peers"
TIMEOUT = 300  # lease seconds: none expires during a run
#: How long an idle worker waits for a job before it checks whether the queue is
#: empty (burst): short, like arq's poll_delay and SAQ's dequeue_timeout below.
IDLE_WAIT = 0.05


def _mq_collection(url: str) -> Any:
    from pymongo import MongoClient

    return MongoClient(url)[DB]["jobs"]


def mq_enqueue(a: argparse.Namespace) -> None:
    from measure import fill, raw_fill

    c = _mq_collection(a.url)
    (raw_fill if a.system == "raw" else fill)(c, a.jobs)


def mq_count(a: argparse.Namespace) -> dict[str, int]:
    c = _mq_collection(a.url)
    left = c.count_documents({})
    return {"left": left, "done": a.jobs - left}


def mq_work(a: argparse.Namespace) -> None:
    from mongoqueue import MongoQueue

    c = _mq_collection(a.url)
    start = time.time()
    from mongoqueue.worker import Worker

    q = MongoQueue(c, f"bench-{os.getpid()}", timeout=TIMEOUT)
    Worker(
        q, mq_job, concurrency=a.concurrency, burst=True, handle_signals=False, idle_wait=IDLE_WAIT
    ).run()
    report(start)


def mq_async_work(a: argparse.Namespace) -> None:
    from pymongo import AsyncMongoClient

    from mongoqueue import AsyncMongoQueue
    from mongoqueue.aio_worker import AsyncWorker

    async def main() -> None:
        client: Any = AsyncMongoClient(a.url)
        q = AsyncMongoQueue(client[DB]["jobs"], f"bench-{os.getpid()}", timeout=TIMEOUT)
        worker = AsyncWorker(
            q,
            mq_async_job,
            concurrency=a.concurrency,
            burst=True,
            handle_signals=False,
            idle_wait=IDLE_WAIT,
        )
        await worker.run()
        await client.close()

    start = time.time()
    asyncio.run(main())
    report(start)


def raw_work(a: argparse.Namespace) -> None:
    """The bare pymongo loop: claim (find_one_and_update) + fenced delete_one, per thread."""
    from measure import RawConsumer

    c = _mq_collection(a.url)
    consumer = RawConsumer(c)
    start = time.time()

    def loop() -> None:
        while (claimed := consumer.claim()) is not None:
            if SLEEP:
                time.sleep(SLEEP)
            consumer.ack(claimed)
            _count()

    threads = [threading.Thread(target=loop) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report(start)


# --------------------------------------------------------------------------- arq


def _arq_settings(url: str) -> Any:
    from arq.connections import RedisSettings

    return RedisSettings.from_dsn(url)


def arq_enqueue(a: argparse.Namespace) -> None:
    from arq import create_pool

    async def main() -> None:
        pool = await create_pool(_arq_settings(a.url))
        for first in range(0, a.jobs, 500):
            last = min(a.jobs, first + 500)
            await asyncio.gather(*(pool.enqueue_job("async_job", n) for n in range(first, last)))
        await pool.aclose()

    asyncio.run(main())


def arq_count(a: argparse.Namespace) -> dict[str, int]:
    import redis

    r = redis.Redis.from_url(a.url)
    left = int(r.zcard("arq:queue"))
    done = sum(1 for _ in r.scan_iter("arq:result:*", count=1000))
    return {"left": left, "done": done}


def arq_work(a: argparse.Namespace) -> None:
    from arq.worker import Worker, func

    async def main() -> None:
        w = Worker(
            functions=[func(async_job, name="async_job")],
            redis_settings=_arq_settings(a.url),
            burst=True,
            max_jobs=a.concurrency,
            poll_delay=0.01,
            handle_signals=False,
        )
        await w.main()
        await w.close()

    start = time.time()
    asyncio.run(main())
    report(start)


# --------------------------------------------------------------------------- RQ


def rq_enqueue(a: argparse.Namespace) -> None:
    import redis
    from rq import Queue

    q = Queue("bench", connection=redis.Redis.from_url(a.url))
    for first in range(0, a.jobs, 1000):
        last = min(a.jobs, first + 1000)
        q.enqueue_many(
            [
                Queue.prepare_data("peers_jobs.rq_job", args=(n,), result_ttl=3600)
                for n in range(first, last)
            ]
        )


def rq_count(a: argparse.Namespace) -> dict[str, int]:
    import redis
    from rq import Queue

    q = Queue("bench", connection=redis.Redis.from_url(a.url))
    return {"left": len(q) + q.started_job_registry.count, "done": q.finished_job_registry.count}


def rq_work(a: argparse.Namespace) -> None:
    import redis
    from rq import Queue, SimpleWorker, Worker

    conn = redis.Redis.from_url(a.url)
    start = time.time()
    kind = SimpleWorker if a.system == "rq-simple" else Worker
    w = kind([Queue("bench", connection=conn)], connection=conn)
    w.work(burst=True, logging_level="WARNING")
    report(start, ran=RAN if kind is SimpleWorker else None)


# --------------------------------------------------------------------------- SAQ


def saq_enqueue(a: argparse.Namespace) -> None:
    from saq import Queue

    async def main() -> None:
        q = Queue.from_url(a.url)
        await q.connect()
        for first in range(0, a.jobs, 500):
            last = min(a.jobs, first + 500)
            await asyncio.gather(*(q.enqueue("async_job", n=n) for n in range(first, last)))
        await q.disconnect()

    asyncio.run(main())


def saq_count(a: argparse.Namespace) -> dict[str, int]:
    from saq import Queue

    async def main() -> dict[str, int]:
        q = Queue.from_url(a.url)
        await q.connect()
        left = await q.count("incomplete")
        await q.disconnect()
        return {"left": left, "done": a.jobs - left}

    return asyncio.run(main())


def saq_work(a: argparse.Namespace) -> None:
    from saq import Queue, Worker

    async def main() -> None:
        q = Queue.from_url(a.url)
        await q.connect()
        w = Worker(
            q,
            [("async_job", async_job)],
            concurrency=a.concurrency,
            burst=True,
            dequeue_timeout=0.05,
        )
        w.SIGNALS = []
        await w.start()
        await q.disconnect()

    start = time.time()
    asyncio.run(main())
    report(start)


# --------------------------------------------------------------------------- procrastinate


def _procrastinate_app(url: str) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
    app.task(name="async_job")(_procrastinate_job)
    return app


async def _procrastinate_job(n: int = 0) -> None:
    if SLEEP:
        await asyncio.sleep(SLEEP)
    _count()


def procrastinate_enqueue(a: argparse.Namespace) -> None:
    app = _procrastinate_app(a.url)

    async def main() -> None:
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            task = app.tasks["async_job"]
            for first in range(0, a.jobs, 1000):
                last = min(a.jobs, first + 1000)
                await task.batch_defer_async(*({"n": n} for n in range(first, last)))

    asyncio.run(main())


def procrastinate_count(a: argparse.Namespace) -> dict[str, int]:
    import psycopg

    with psycopg.connect(a.url) as conn:
        rows = dict(conn.execute("SELECT status, count(*) FROM procrastinate_jobs GROUP BY 1"))
    return {"left": rows.get("todo", 0) + rows.get("doing", 0), "done": rows.get("succeeded", 0)}


def procrastinate_work(a: argparse.Namespace) -> None:
    app = _procrastinate_app(a.url)

    async def main() -> None:
        async with app.open_async():
            await app.run_worker_async(
                concurrency=a.concurrency, wait=False, install_signal_handlers=False
            )

    start = time.time()
    asyncio.run(main())
    report(start)


# --------------------------------------------------------------------------- main


def report(start: float, *, ran: int | None = -1) -> None:
    end = time.time()
    print(json.dumps({"start": start, "end": end, "ran": RAN if ran == -1 else ran}), flush=True)


ACTIONS: dict[str, dict[str, Any]] = {
    "mq-worker": {"enqueue": mq_enqueue, "work": mq_work, "count": mq_count},
    "mq-async": {"enqueue": mq_enqueue, "work": mq_async_work, "count": mq_count},
    "mq-cli": {"enqueue": mq_enqueue, "count": mq_count},  # work: `mongoqueue worker`
    "raw": {"enqueue": mq_enqueue, "work": raw_work, "count": mq_count},
    "arq": {"enqueue": arq_enqueue, "work": arq_work, "count": arq_count},
    "rq-simple": {"enqueue": rq_enqueue, "work": rq_work, "count": rq_count},
    "rq-fork": {"enqueue": rq_enqueue, "work": rq_work, "count": rq_count},
    "saq": {"enqueue": saq_enqueue, "work": saq_work, "count": saq_count},
    "procrastinate": {
        "enqueue": procrastinate_enqueue,
        "work": procrastinate_work,
        "count": procrastinate_count,
    },
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("system", choices=sorted(ACTIONS))
    p.add_argument("action", choices=["enqueue", "work", "count"])
    p.add_argument("--jobs", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--url", required=True)
    a = p.parse_args()
    result = ACTIONS[a.system][a.action](a)
    if a.action == "count":
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    # Run everything from the module ``peers_jobs`` (not ``__main__``), so that the
    # handlers RQ and the CLI import by name are these very functions and counters.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import peers_jobs

    peers_jobs.main()

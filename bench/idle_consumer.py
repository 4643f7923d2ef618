"""An idle consumer, run as its own process by ``cost_rows.idle``: what waiting costs.

Usage: ``python bench/idle_consumer.py URI DB COLLECTION MODE IDLE_SECONDS JOBS CONSUMERS``
(MODE ``stream`` or ``polling``). It imports whichever ``mongoqueue`` comes first
on ``sys.path``, so the bench runs the same script on the current sources and on
those of an earlier revision (``PYTHONPATH``). Each of CONSUMERS threads loops
``next(wait=1.0)`` (the worker's idle wait) with its own queue object on one
client whose CommandListener counts every command. After IDLE_SECONDS it prints
one JSON line (commands sent while idle), then claims JOBS jobs put by the bench,
each payload carrying ``t`` (the producer's ``time.time()`` before its put), and
prints a second JSON line: the put -> claim latencies, and the time of every claim
command sent after the idle phase (for the claims each put triggers).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from pymongo import MongoClient, monitoring

from mongoqueue import MongoQueue


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.names: list[tuple[float, str]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        with self.lock:
            self.names.append((time.time(), event.command_name))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def main() -> None:
    uri, db, name, mode, idle_s, jobs_s, consumers_s = sys.argv[1:8]
    idle, jobs, consumers = float(idle_s), int(jobs_s), int(consumers_s)
    listener = Commands()
    client: MongoClient[dict[str, Any]] = MongoClient(uri, event_listeners=[listener])
    queues = [MongoQueue(client[db][name], f"idle-{i}") for i in range(consumers)]
    queues[0].ensure_indexes()
    for q in queues:
        q._change_streams = mode == "stream"
    latencies: list[float] = []
    lock = threading.Lock()
    stop = threading.Event()

    def consume(q: MongoQueue) -> None:
        while not stop.is_set():
            job = q.next(wait=1.0)
            if job is None:
                continue
            seconds = time.time() - job.payload["t"]
            job.complete()
            with lock:
                latencies.append(seconds)
                if len(latencies) >= jobs:
                    stop.set()

    # Warm up: connections, the clock anchor, the first claims and streams.
    threads = [threading.Thread(target=consume, args=(q,)) for q in queues]
    for t in threads:
        t.start()
    time.sleep(2.0)
    with listener.lock:
        listener.names.clear()
    time.sleep(idle)
    with listener.lock:
        sent = [n for _, n in listener.names]
        listener.names.clear()
    counts: dict[str, int] = {}
    for n in sent:
        counts[n] = counts.get(n, 0) + 1
    print(json.dumps({"idle_seconds": idle, "commands": len(sent), "by_name": counts}), flush=True)
    stop.wait(timeout=120)
    for t in threads:
        t.join(timeout=10)
    claims = [t for t, n in listener.names if n == "findAndModify"]
    print(json.dumps({"latencies": latencies, "claims": claims}), flush=True)
    client.close()


if __name__ == "__main__":
    main()

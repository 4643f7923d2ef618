"""The dashboard's job lists on a large queue: ``explain`` of the exact finds it sends.

Fills a queue with N jobs (default 1,000,000; ``--jobs``), holds some and fails
some, then replays the dashboard's list queries (``mongoqueue.dashboard.queries``)
for the first page and for a deep page (a keyset cursor near the end), and prints
the plan, keys and documents examined, and the time of each, side by side with
the ``skip()`` a page-number list would send for the same deep page.

Run: ``.venv/bin/python -m bench.dashboard_lists --uri mongodb://... [--jobs N]``
(without ``--uri``, an embedded server is started).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import pymongo

from bench.measure import explain, fill, queue
from mongoqueue.dashboard import queries
from mongoqueue.embedded import EmbeddedServer

PAGE = 25


def row(label: str, database: Any, name: str, query: dict[str, Any], sort: list, skip: int = 0):
    command: dict[str, Any] = {"find": name, "filter": query, "sort": dict(sort), "limit": PAGE + 1}
    if skip:
        command["skip"] = skip
    plan = explain(database, [("find", command)])
    started = time.perf_counter()
    list(database[name].find(query, sort=sort, skip=skip, limit=PAGE + 1))
    ms = (time.perf_counter() - started) * 1000
    print(
        f"| {label} | {' <- '.join(plan.stages)} | {plan.index or '-'} | {plan.keys_examined} "
        f"| {plan.docs_examined} | {ms:.1f} ms |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--uri")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    args = parser.parse_args()
    server = None
    uri = args.uri
    if uri is None:
        server = EmbeddedServer(prefer_rust=True)
        uri = server.start()
    try:
        database = pymongo.MongoClient(uri)["mongoqueue_bench_dashboard"]
        database.drop_collection("jobs")
        collection = database["jobs"]
        started = time.perf_counter()
        fill(collection, args.jobs)
        consumer = queue(collection, "bench-worker")
        for n in range(100):  # 100 held, 20 of them failed
            job = consumer.next()
            assert job is not None
            if n < 20:
                job.error("boom")
        print(f"filled {args.jobs:,} jobs in {time.perf_counter() - started:.1f} s\n")
        print("| list | plan | index | keys examined | docs examined | time |")
        print("|---|---|---|---|---|---|")
        now = consumer._now()
        for state in ("waiting", "running", "failed", "all"):
            query, sort = queries.job_filter(queries.Filters(state=state), now)
            row(f"{state}, first page", database, "jobs", query, sort)
        query, sort = queries.job_filter(queries.Filters(state="waiting"), now)
        deep = args.jobs - 1000
        last = collection.find(query, sort=sort, skip=deep, limit=1, projection=dict(sort))[0]
        cursor = queries.decode_cursor(queries.encode_cursor(last, sort), sort)
        keyset = {"$and": [query, queries._keyset(sort, cursor, True)]}
        row(f"waiting, keyset page after job {deep:,}", database, "jobs", keyset, sort)
        row(f"waiting, skip({deep:,}) (not used)", database, "jobs", query, sort, skip=deep)
        text = queries.job_filter(queries.Filters(state="failed", error="boom"), now)
        row("failed, error text 'boom'", database, "jobs", *text)
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()

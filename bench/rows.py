"""The rows of the benchmark table: each function measures one comparison side by side."""

from __future__ import annotations

import multiprocessing
import random
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import consumer
import original
from measure import (
    PUT_MANY_CHUNK,
    RawConsumer,
    Row,
    count,
    explain_claim,
    fill,
    interleaved,
    ms,
    ours_claim_and_complete,
    payload,
    percentile,
    queue,
    rate,
    raw_document,
    raw_fill,
)
from pymongo import MongoClient
from pymongo.collection import Collection

from mongoqueue import operations as ops

SPAWN = multiprocessing.get_context("spawn")


@dataclass
class Sizes:
    claim_depth: int
    claims: int
    put_loop: int
    put_many: int
    batch_n: int
    batch_jobs: int
    process_jobs: int
    depth_claims: dict[int, int]  # queue depth -> claims timed there
    original_depth: int
    original_claims: int
    latency_samples: int
    rss_jobs: int


# The SecantusDB servers read every matching document on each claim (see the
# depth rows), so claims cost more the deeper the queue: the rows that are not
# about depth keep their queues at about a thousand jobs.
QUICK = Sizes(
    claim_depth=1_000,
    claims=300,
    put_loop=1_000,
    put_many=20_000,
    batch_n=100,
    batch_jobs=1_000,
    process_jobs=1_000,
    depth_claims={1_000: 100, 10_000: 20, 100_000: 5},
    original_depth=10_000,
    original_claims=50,
    latency_samples=20,
    rss_jobs=5_000,
)
FULL = Sizes(
    claim_depth=1_000,
    claims=3_000,
    put_loop=5_000,
    put_many=100_000,
    batch_n=100,
    batch_jobs=3_000,
    process_jobs=3_000,
    depth_claims={1_000: 300, 10_000: 100, 100_000: 20, 1_000_000: 5},
    original_depth=10_000,
    original_claims=300,
    latency_samples=100,
    rss_jobs=50_000,
)


@dataclass
class Bench:
    client: MongoClient[dict[str, Any]]
    uri: str
    database_name: str
    sizes: Sizes

    @property
    def database(self) -> Any:
        return self.client[self.database_name]

    def collection(self, label: str) -> Collection[dict[str, Any]]:
        name = f"{label}_{uuid.uuid4().hex[:8]}"
        return self.database[name]

    def drop(self, *collections: Collection[Any]) -> None:
        for c in collections:
            c.drop()

    def log(self, message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- rows


def claim_vs_raw(b: Bench) -> list[Row]:
    s = b.sizes
    b.log(f"claim + complete vs raw pymongo: {s.claims} each at {s.claim_depth:,} queued")
    ours_c, raw_c, pipe_c = b.collection("ours"), b.collection("raw"), b.collection("rawpipe")
    # The depth stays at claim_depth: each slice of at most 100 claims is put back after it.
    fill(ours_c, s.claim_depth + 50)
    raw_fill(raw_c, s.claim_depth + 50)
    raw_fill(pipe_c, s.claim_depth + 50)
    q, raw, pipe = queue(ours_c), RawConsumer(raw_c), RawConsumer(pipe_c, pipeline=True)
    for _ in range(50):  # warm up: connections, clock sync, server caches
        ours_claim_and_complete(q)
        raw.claim_and_ack()
        pipe.claim_and_ack()
    added = dict.fromkeys(("ours", "raw", "pipe"), s.claim_depth + 50)

    def refill(name: str, n: int) -> None:
        if name == "ours":
            fill(ours_c, n, added[name])
        else:
            raw_fill(raw_c if name == "raw" else pipe_c, n, added[name])
        added[name] += n

    rates = interleaved(
        {
            "ours": lambda: ours_claim_and_complete(q),
            "raw": raw.claim_and_ack,
            "pipe": pipe.claim_and_ack,
        },
        s.claims,
        rounds=max(5, s.claims // 100),
        refill=refill,
    )
    b.drop(ours_c, raw_c, pipe_c)
    ratio = rates["ours"] / rates["raw"]
    return [
        Row(
            f"claim + complete, 1 consumer, {count(s.claim_depth)} queued",
            rate(rates["ours"]),
            f"raw pymongo {rate(rates['raw'])}",
            ratio,
            ">= 0.9x",
            ratio >= 0.9,
            cause=(
                f"bare pymongo sending our claim pipeline runs at "
                f"{rates['pipe'] / rates['raw']:.2f}x bare pymongo's $set claim"
            ),
        ),
        Row(
            "  (diagnostic) raw pymongo sending our claim pipeline",
            rate(rates["pipe"]),
            f"raw pymongo {rate(rates['raw'])}",
            rates["pipe"] / rates["raw"],
            "-",
            None,
        ),
    ]


def put_many_vs_put(b: Bench) -> list[Row]:
    s = b.sizes
    b.log(f"put_many ({s.put_many:,} jobs) vs put() loop ({s.put_loop:,} jobs) vs insert_many")
    loop_c, many_c, raw_c = b.collection("put"), b.collection("putmany"), b.collection("rawput")
    loop_q, many_q = queue(loop_c), queue(many_c)
    for q in (loop_q, many_q):
        q.ensure_indexes()
        q.put(payload(-1))
    raw_c.create_indexes(ops.indexes())
    rounds = 5
    done = {"loop": 0, "many": 0, "raw": 0}
    spent = {"loop": 0.0, "many": 0.0, "raw": 0.0}
    now = datetime.now(timezone.utc)
    for r in range(rounds):
        n = s.put_loop * (r + 1) // rounds - done["loop"]
        start = time.perf_counter()
        for i in range(n):
            loop_q.put(payload(done["loop"] + i))
        spent["loop"] += time.perf_counter() - start
        done["loop"] += n
        for name in ("many", "raw"):
            m = s.put_many * (r + 1) // rounds - done[name]
            first, last = done[name], done[name] + m
            start = time.perf_counter()
            for chunk in range(first, last, PUT_MANY_CHUNK):
                numbers = range(chunk, min(last, chunk + PUT_MANY_CHUNK))
                if name == "many":
                    many_q.put_many([payload(i) for i in numbers])
                else:
                    raw_c.insert_many([raw_document(i, now) for i in numbers])
            spent[name] += time.perf_counter() - start
            done[name] += m
    b.drop(loop_c, many_c, raw_c)
    loop_rate, many_rate, raw_rate = (done[k] / spent[k] for k in ("loop", "many", "raw"))
    ratio = many_rate / loop_rate
    return [
        Row(
            f"put_many ({PUT_MANY_CHUNK:,} per call) jobs/s",
            rate(many_rate),
            f"put() loop {rate(loop_rate)}",
            ratio,
            ">= 10x",
            ratio >= 10,
            cause=(
                f"bare insert_many reaches {raw_rate / loop_rate:.1f}x the put() loop on this "
                f"server, and put_many runs at {many_rate / raw_rate:.2f}x bare insert_many "
                "(the rest is the id, the payload's BSON snapshot and the job document)"
            ),
        ),
        Row(
            f"  (server) raw insert_many ({PUT_MANY_CHUNK:,} per call) docs/s",
            rate(raw_rate, "docs/s"),
            f"put() loop {rate(loop_rate)}",
            raw_rate / loop_rate,
            "-",
            None,
            [
                f"put_many {rate(many_rate)} = {many_rate / raw_rate:.2f}x bare insert_many of "
                f"equally shaped documents ({rate(raw_rate, 'docs/s')})"
            ],
        ),
    ]


def batch_vs_single(b: Bench) -> list[Row]:
    s = b.sizes
    n = s.batch_n
    b.log(f"next_batch({n}) + complete vs next() + complete: {s.batch_jobs:,} jobs each")
    rounds = 5
    per_round = max(n, s.batch_jobs // rounds // n * n)
    single_c, batch_c = b.collection("single"), b.collection("batch")
    fill(single_c, rounds * per_round + 20)
    fill(batch_c, rounds * per_round + n)
    single_q, batch_q = queue(single_c), queue(batch_c)
    for _ in range(20):
        ours_claim_and_complete(single_q)
    for job in batch_q.next_batch(n):
        job.complete()
    single_claim = single_total = batch_claim = batch_total = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(per_round):
            t0 = time.perf_counter()
            job = single_q.next()
            single_claim += time.perf_counter() - t0
            assert job is not None
            job.complete()
        single_total += time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(per_round // n):
            t0 = time.perf_counter()
            jobs = batch_q.next_batch(n)
            batch_claim += time.perf_counter() - t0
            assert len(jobs) == n
            for job in jobs:
                job.complete()
        batch_total += time.perf_counter() - start
    b.drop(single_c, batch_c)
    jobs = rounds * per_round
    total_ratio = single_total / batch_total
    claim_ratio = single_claim / batch_claim
    return [
        Row(
            f"next_batch({n}) + complete each, jobs/s",
            rate(jobs / batch_total),
            f"next() + complete {rate(jobs / single_total)}",
            total_ratio,
            ">= 3x",
            total_ratio >= 3,
        ),
        Row(
            f"  next_batch({n}) alone, claims/s",
            rate(jobs / batch_claim, "claims/s"),
            f"next() alone {rate(jobs / single_claim, 'claims/s')}",
            claim_ratio,
            ">= 3x",
            claim_ratio >= 3,
        ),
    ]


def processes(b: Bench) -> list[Row]:
    s = b.sizes
    rows: list[Row] = []
    base_rate = 0.0
    for workers in (1, 2, 4):
        b.log(f"{workers} consumer process(es) draining {s.process_jobs:,} jobs")
        c = b.collection(f"procs{workers}")
        fill(c, s.process_jobs)
        start_barrier = SPAWN.Barrier(workers + 1)
        results = SPAWN.Queue()
        procs = [
            SPAWN.Process(
                target=consumer.drain,
                args=(b.uri, b.database_name, c.name, start_barrier, results),
            )
            for _ in range(workers)
        ]
        for p in procs:
            p.start()
        start_barrier.wait(timeout=120)
        began = time.perf_counter()
        outcomes = [results.get(timeout=1800) for _ in procs]
        elapsed = time.perf_counter() - began
        for p in procs:
            p.join(timeout=60)
        seen = [n for numbers, _ in outcomes for n in numbers]
        duplicates = len(seen) - len(set(seen))
        lost = s.process_jobs - len(set(seen))
        remaining = c.count_documents({})
        b.drop(c)
        aggregate = len(seen) / elapsed
        if workers == 1:
            base_rate = aggregate
        split = "/".join(str(len(numbers)) for numbers, _ in outcomes)
        rows.append(
            Row(
                f"{workers} consumer process{'es' if workers > 1 else ''}, aggregate jobs/s",
                rate(aggregate),
                f"1 consumer {rate(base_rate)}",
                aggregate / base_rate,
                "duplicates = 0",
                duplicates == 0 and lost == 0 and remaining == 0,
                [
                    f"{workers} process(es): {duplicates} duplicates, {lost} lost, "
                    f"{remaining} left in the queue; jobs per process {split}"
                ],
            )
        )
    return rows


def depth(b: Bench, *, target: bool = True) -> list[Row]:
    s = b.sizes
    rows: list[Row] = []
    base = raw_base = 0.0
    first = min(s.depth_claims)
    for d, claims in sorted(s.depth_claims.items()):
        label = count(d)
        b.log(f"claim rate at {d:,} queued ({claims} claims, ours and raw pymongo)")
        ours_c, raw_c = b.collection(f"depth{d}"), b.collection(f"rawdepth{d}")
        filled = time.perf_counter()
        fill(ours_c, d + claims + 5)
        filled = time.perf_counter() - filled
        raw_fill(raw_c, d + claims + 5)
        q, raw = queue(ours_c), RawConsumer(raw_c)
        for _ in range(2):
            ours_claim_and_complete(q)
            raw.claim_and_ack()
        plan = explain_claim(
            b.database, ours_c.name, ops.claim_filter(q._now()), q._config.claim_update("explain")
        )
        probe = time.perf_counter()
        for _ in range(3):
            list(ours_c.find({}, {"_id": 1}, limit=1))
        probe = (time.perf_counter() - probe) / 3
        ours_s = raw_s = 0.0
        for _ in range(claims):
            t0 = time.perf_counter()
            job = q.next()
            ours_s += time.perf_counter() - t0
            assert job is not None
            job.complete()
            t0 = time.perf_counter()
            claimed = raw.claim()
            raw_s += time.perf_counter() - t0
            assert claimed is not None
            raw.ack(claimed)
        b.drop(ours_c, raw_c)
        ours_rate, raw_rate = claims / ours_s, claims / raw_s
        if d == first:
            base, raw_base = ours_rate, raw_rate
        ratio = ours_rate / base
        gated = target and d >= 100_000
        rows.append(
            Row(
                f"claim rate at {label} queued, plan: "
                + ("one IXSCAN, no SORT" if plan.single_ixscan else "NOT one IXSCAN"),
                rate(ours_rate, "claims/s"),
                f"ours at {count(first)} {rate(base, 'claims/s')}",
                ratio,
                ">= 0.8x" if gated else "-",
                (ratio >= 0.8 and plan.single_ixscan) if gated else None,
                [
                    f"{label} queued (filled in {filled:.1f} s): {plan.describe()}; "
                    f"a bare find({{}}).limit(1) takes {ms(probe)} here"
                ],
                cause=(
                    f"the server: bare pymongo's claim falls alike, to {raw_rate / raw_base:.2f}x "
                    f"of its rate at {count(first)}, and ours runs at {ours_rate / raw_rate:.2f}x "
                    "bare pymongo at this depth"
                ),
            )
        )
        if d != first:
            rows.append(
                Row(
                    f"  (server) raw pymongo claim at {label} queued",
                    rate(raw_rate, "claims/s"),
                    f"raw at {count(first)} {rate(raw_base, 'claims/s')}",
                    raw_rate / raw_base,
                    "-",
                    None,
                    [
                        f"{label} queued: ours {rate(ours_rate, 'claims/s')} = "
                        f"{ours_rate / raw_rate:.2f}x raw pymongo's {rate(raw_rate, 'claims/s')}"
                    ],
                )
            )
    return rows


def versus_original(b: Bench) -> list[Row]:
    s = b.sizes
    d = s.original_depth
    b.log(f"mongoqueue 0.7.2 vs ours: {s.original_claims} claims each at {d:,} queued")
    legacy = original.load()
    ours_c, old_c, raw_c = b.collection("ours"), b.collection("orig"), b.collection("raw")
    total = d + s.original_claims + 10
    fill(ours_c, total)
    raw_fill(raw_c, total)
    for first in range(0, total, 10_000):
        old_c.insert_many(
            [
                original.original_job_document(payload(n))
                for n in range(first, min(total, first + 10_000))
            ]
        )
    q, raw = queue(ours_c), RawConsumer(raw_c)
    old = legacy.MongoQueue(original.LegacyCollection(old_c), "orig", timeout=300)

    def old_claim_and_complete() -> None:
        job = old.next()
        if job is None:
            raise RuntimeError("0.7.2's queue ran out of jobs")
        job.complete()

    for _ in range(5):
        ours_claim_and_complete(q)
        old_claim_and_complete()
        raw.claim_and_ack()
    plan = explain_claim(
        b.database,
        old_c.name,
        {"locked_by": None, "locked_at": None, "attempts": {"$lt": 3}},
        {"$set": {"attempts": 1, "locked_by": "explain"}},
    )
    rates = interleaved(
        {
            "ours": lambda: ours_claim_and_complete(q),
            "old": old_claim_and_complete,
            "raw": raw.claim_and_ack,
        },
        s.original_claims,
    )
    b.drop(ours_c, old_c, raw_c)
    ratio = rates["ours"] / rates["old"]
    return [
        Row(
            f"claim + complete at {count(d)} queued vs the original",
            rate(rates["ours"]),
            f"mongoqueue 0.7.2 {rate(rates['old'])}",
            ratio,
            ">= 10x",
            ratio >= 10,
            [f"mongoqueue 0.7.2's claim at {d:,} queued (it creates no index): {plan.describe()}"],
            cause=(
                f"the server: an indexed claim in bare pymongo runs at "
                f"{rates['raw'] / rates['old']:.2f}x the original's unindexed scan and sort, "
                f"and ours at {rates['ours'] / rates['raw']:.2f}x bare pymongo"
            ),
        ),
        Row(
            f"  (server) raw pymongo indexed claim + ack at {count(d)} queued",
            rate(rates["raw"]),
            f"mongoqueue 0.7.2 {rate(rates['old'])}",
            rates["raw"] / rates["old"],
            "-",
            None,
        ),
    ]


def latency(b: Bench) -> list[Row]:
    s = b.sizes
    results: dict[str, list[float]] = {}
    for mode in ("change stream", "polling"):
        b.log(f"put -> handler start, next(wait=) with {mode}: {s.latency_samples} jobs")
        c = b.collection("latency")
        producer = queue(c, "producer")
        producer.ensure_indexes()
        ready, out = SPAWN.Event(), SPAWN.Queue()
        p = SPAWN.Process(
            target=consumer.wait_for_jobs,
            args=(b.uri, b.database_name, c.name, mode == "polling", s.latency_samples, ready, out),
        )
        p.start()
        ready.wait(timeout=60)
        time.sleep(0.5)  # let the consumer block in next(wait=)
        gaps = random.Random(4)
        for _ in range(s.latency_samples):
            time.sleep(gaps.uniform(0.05, 0.3))
            producer.put({"t": time.time()})
        results[mode] = out.get(timeout=120)
        p.join(timeout=60)
        b.drop(c)
    stream, polled = results["change stream"], results["polling"]
    p50, p95 = percentile(stream, 50), percentile(stream, 95)
    q50, q95 = percentile(polled, 50), percentile(polled, 95)
    tasks = task_result_latencies(b)
    t50, t95 = percentile(tasks, 50), percentile(tasks, 95)
    task_row = Row(
        "enqueue -> result(), task on an app worker, p50",
        ms(t50),
        f"next(wait=) wake-up {ms(p50)}",
        t50 / p50,
        "<= 2x next(wait=) p50",
        t50 <= 2 * p50 and len(tasks) == s.latency_samples,
        [
            f"task round trip over {len(tasks)} calls at random 50-300 ms gaps: "
            f"task.enqueue() then handle.result() (woken by a change stream on the job) "
            f"while an App worker in another process waits on a database change stream: "
            f"p50 {ms(t50)}, p95 {ms(t95)}; ratio column: task round trip / next(wait=) "
            "wake-up p50 (the round trip adds the worker's claim, the completion and "
            "the result's wake-up to one wake-up)"
        ],
    )
    return [
        Row(
            "put -> handler start, next(wait=), p50",
            ms(p50),
            f"polling fallback {ms(q50)}",
            q50 / p50,
            "p50 <= 50 ms",
            p50 <= 0.050 and len(stream) == s.latency_samples,
            [
                f"latency over {len(stream)} jobs put at random 50-300 ms gaps: change stream "
                f"p50 {ms(p50)}, p95 {ms(p95)}; polling fallback (50 ms doubling to 1 s) "
                f"p50 {ms(q50)}, p95 {ms(q95)} (ratio column: polling / change stream)"
            ],
        ),
        Row(
            "put -> handler start, next(wait=), p95",
            ms(p95),
            f"polling fallback {ms(q95)}",
            q95 / p95,
            "-",
            None,
        ),
        task_row,
    ]


def task_result_latencies(b: Bench) -> list[float]:
    """Seconds from ``task.enqueue()`` to ``handle.result()`` returning, per call."""
    from mongoqueue import App

    s = b.sizes
    b.log(f"enqueue -> result(), app worker: {s.latency_samples} tasks")
    c = b.collection("task_latency")
    app = App(b.database, consumer_id="bench-producer")

    @app.task(name="noop", queue=c.name)
    def noop(t: float) -> float:
        return t

    app.queue(c.name).ensure_indexes()
    ready, stop = SPAWN.Event(), SPAWN.Event()
    p = SPAWN.Process(
        target=consumer.task_worker, args=(b.uri, b.database_name, c.name, ready, stop)
    )
    p.start()
    latencies: list[float] = []
    try:
        ready.wait(timeout=60)
        time.sleep(0.5)  # let the worker block in its wait
        gaps = random.Random(5)
        for _ in range(s.latency_samples):
            time.sleep(gaps.uniform(0.05, 0.3))
            began = time.perf_counter()
            noop.enqueue(time.time()).result(timeout=30)
            latencies.append(time.perf_counter() - began)
    finally:
        stop.set()
        p.join(timeout=60)
        b.drop(c)
    return latencies


def _rss_run(b: Bench, target: Any, label: str, first: int) -> tuple[int, dict[int, int]]:
    """Run ``target`` (a consumer in its own process) over ``rss_jobs`` jobs; its RSS."""
    s = b.sizes
    c = b.collection(label)
    producer = queue(c, "producer")
    producer.ensure_indexes()
    put = 0
    out = SPAWN.Queue()
    p = SPAWN.Process(
        target=target, args=(b.uri, b.database_name, c.name, [first, s.rss_jobs], out)
    )
    p.start()
    # Top the queue up in steps of 500 so that it stays shallow (claims stay fast).
    while put < s.rss_jobs and p.is_alive():
        if c.count_documents({}) < 500:
            step = min(500, s.rss_jobs - put)
            producer.put_many(payload(n) for n in range(put, put + step))
            put += step
        else:
            time.sleep(0.05)
    done, rss = out.get(timeout=1800)
    p.join(timeout=60)
    b.drop(c)
    return done, rss


def memory(b: Bench) -> list[Row]:
    s = b.sizes
    first = 1_000
    rows = []
    for label, target, what in (
        ("rss", consumer.memory, "consumer loop (next(wait=)) RSS"),
        ("worker-rss", consumer.worker_memory, "Worker (concurrency 4) RSS"),
    ):
        b.log(f"{what} after {first:,} and {s.rss_jobs:,} jobs")
        done, rss = _rss_run(b, target, label, first)
        growth = (rss[s.rss_jobs] - rss[first]) / 2**20
        rows.append(
            Row(
                f"{what}, {count(first)} -> {count(s.rss_jobs)} jobs",
                f"{rss[s.rss_jobs] / 2**20:,.1f} MB",
                f"after {count(first)} jobs {rss[first] / 2**20:,.1f} MB",
                rss[s.rss_jobs] / rss[first],
                "growth < 10 MB",
                growth < 10,
                [f"{what}: {done:,} jobs, RSS {growth:+.2f} MB"],
            )
        )
    return rows

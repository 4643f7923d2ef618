"""Rows of issue 10's cost section: claim cost with a busy head, and idle cost.

* ``claim_cost``: the four situations where the previous claim index examined
  one key per job ahead of the claimable one. The exact ``findAndModify`` a claim
  sends is captured with a CommandListener and replayed under ``explain``
  (executionStats); "before" replays it, with the previous sort, on a copy of the
  same jobs carrying only the previous claim index.
* ``idle``: an idle consumer's commands per minute, the claims one put triggers
  among 8 idle consumers, and put -> claim latency, for the current sources and
  for those of ``BEFORE_REV`` (extracted with ``git archive`` into bench/.work/),
  each run by ``idle_consumer.py`` in its own process, side by side.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from measure import Row, explain, ms, percentile
from pymongo import ASCENDING, DESCENDING, IndexModel, MongoClient, monitoring

from mongoqueue import MongoQueue, RetryPolicy

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: The revision before the claim index and idle changes (issue 10): the "before" column.
BEFORE_REV = "6e65c84"
WORK = HERE / ".work"

#: The claim index and sort of BEFORE_REV.
OLD_CLAIM_INDEX = IndexModel(
    [
        ("state", ASCENDING),
        ("priority", DESCENDING),
        ("scheduled_at", ASCENDING),
        ("_id", ASCENDING),
        ("visible_at", ASCENDING),
    ],
    name="mongoqueue_claim",
)
OLD_CLAIM_SORT = {"priority": -1, "scheduled_at": 1, "_id": 1}
N = 1000
KEY_BOUND = 4


class Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _held(q: MongoQueue) -> None:
    q.put_many([{"n": i} for i in range(N)])
    q.next_batch(N)


def _backing_off(q: MongoQueue) -> None:
    q.put_many([{"n": i} for i in range(N)])
    for job in q.next_batch(N):
        job.error("downstream outage")


def _delayed_p5(q: MongoQueue) -> None:
    q.put_many([{"n": i} for i in range(N)], priority=5, delay=3600)


def _delayed(q: MongoQueue) -> None:
    q.put_many([{"n": i} for i in range(N)], delay=3600)


#: label, how to build it, whether a due job follows
SITUATIONS = [
    ("1000 held ahead of a due job", _held, True),
    ("1000 backing off ahead of a due job", _backing_off, True),
    ("1000 delayed at priority 5, one due at 0", _delayed_p5, True),
    ("empty claim over 1000 delayed", _delayed, False),
]


def claim_cost(b: Any) -> list[Row]:
    rows = []
    listener = Commands()
    client: MongoClient[dict[str, Any]] = MongoClient(b.uri, event_listeners=[listener])
    try:
        for label, build, due in SITUATIONS:
            b.log(f"claim cost: {label}")
            c = client[b.database_name][b.collection("cost").name]
            q = MongoQueue(c, "bench", timeout=3600, retry=RetryPolicy(initial=3600, jitter=False))
            build(q)
            if due:  # the first claim is replayed; the second due job is still there
                q.put({"due": 1})
                q.put({"due": 2})
            listener.sent.clear()
            q.next()
            claim = [cmd for cmd in listener.sent if "findAndModify" in cmd][-1]
            keep = {"findAndModify", "query", "sort", "update", "new", "fields"}
            command = {k: v for k, v in claim.items() if k in keep}
            after = explain(c.database, [("findAndModify", command)])
            old = c.database[c.name + "_old"]
            old.create_indexes([OLD_CLAIM_INDEX])
            old.insert_many(c.find())
            before_cmd = {**command, "findAndModify": old.name, "sort": OLD_CLAIM_SORT}
            before = explain(c.database, [("findAndModify", before_cmd)])
            ka, kb = after.keys_examined or 0, before.keys_examined or 0
            rows.append(
                Row(
                    f"claim keys examined: {label}",
                    f"{ka} keys",
                    f"previous index {kb} keys",
                    kb / ka if ka else None,
                    f"<= {KEY_BOUND} keys, one IXSCAN",
                    ka <= KEY_BOUND and after.single_ixscan,
                    [
                        f"{label}: now {after.describe()}; before {before.describe()}",
                    ],
                )
            )
            b.drop(c, old)
    finally:
        client.close()
    return rows


def _before_sources(b: Any) -> Path | None:
    """The sources of BEFORE_REV, extracted once into bench/.work/ (None without git)."""
    target = WORK / f"before-{BEFORE_REV}"
    if (target / "src" / "mongoqueue").is_dir():
        return target / "src"
    target.mkdir(parents=True, exist_ok=True)
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", BEFORE_REV, "src/mongoqueue"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        b.log(f"cannot extract {BEFORE_REV}: {exc}")
        return None
    return target / "src"


def _run(
    b: Any, sources: Path | None, mode: str, idle: float, jobs: int, consumers: int
) -> tuple[dict[str, Any], list[float], list[float], list[float]] | None:
    """One idle_consumer.py process; (idle report, latencies, claim times, put times)."""
    c = b.collection("idle")
    env = dict(os.environ)
    if sources is not None:
        env["PYTHONPATH"] = f"{sources}{os.pathsep}{env.get('PYTHONPATH', '')}"
    args = [b.uri, b.database_name, c.name, mode, str(idle), str(jobs), str(consumers)]
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "idle_consumer.py"), *args],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(HERE),
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if not first:
            return None
        report = json.loads(first)
        producer = MongoQueue(c, "producer")
        gaps = random.Random(10)
        puts = []
        for _ in range(jobs):
            time.sleep(gaps.uniform(1.2, 1.6) if consumers > 1 else gaps.uniform(0.05, 0.3))
            puts.append(time.time())
            producer.put({"t": time.time()})
        second = json.loads(proc.stdout.readline() or "{}")
        proc.wait(timeout=60)
        return report, second.get("latencies", []), second.get("claims", []), puts
    finally:
        if proc.poll() is None:
            proc.kill()
        b.drop(c)


def _claims_per_put(claims: list[float], puts: list[float], window: float = 0.25) -> float:
    return sum(sum(1 for t in claims if p <= t <= p + window) for p in puts) / max(1, len(puts))


def idle(b: Any) -> list[Row]:
    idle_seconds = 10.0 if b.sizes.claims <= 300 else 30.0
    jobs = 20
    before_src = _before_sources(b)
    now_src = ROOT / "src"
    out: dict[tuple[str, str], Any] = {}
    for mode in ("stream", "polling"):
        for side, src in (("now", now_src), ("before", before_src)):
            if side == "before" and src is None:
                continue
            b.log(f"idle consumer ({mode}, {side}): {idle_seconds:.0f} s idle, {jobs} jobs")
            out[(mode, side)] = _run(b, src, mode, idle_seconds, jobs, 1)
    b.log("8 idle consumers, one put at a time (change streams): now and before")
    herd = {
        side: _run(b, src, "stream", 3.0, 6, 8)
        for side, src in (("now", now_src), ("before", before_src))
        if src is not None
    }
    rows = []
    for mode, label in (("stream", "change stream"), ("polling", "polling (standalone)")):
        now, before = out.get((mode, "now")), out.get((mode, "before"))
        if now is None:
            continue
        per_min = now[0]["commands"] * 60 / now[0]["idle_seconds"]
        was = None if before is None else before[0]["commands"] * 60 / before[0]["idle_seconds"]
        rows.append(
            Row(
                f"idle consumer, {label}: commands per minute",
                f"{per_min:.0f}",
                "-" if was is None else f"{BEFORE_REV}: {was:.0f}",
                None if not was or not per_min else was / per_min,
                "-",
                None,
                [
                    f"idle {label}, next(wait=1.0) in a loop on an empty queue: now "
                    f"{now[0]['by_name']}"
                    + ("" if before is None else f"; {BEFORE_REV} {before[0]['by_name']}")
                    + f" over {idle_seconds:.0f} s"
                ],
            )
        )
        if now[1]:
            p50 = percentile(now[1], 50)
            was50 = percentile(before[1], 50) if before is not None and before[1] else None
            rows.append(
                Row(
                    f"put -> claim p50, one idle consumer, {label}",
                    ms(p50),
                    "-" if was50 is None else f"{BEFORE_REV}: {ms(was50)}",
                    None if was50 is None else was50 / p50,
                    "p50 <= 50 ms" if mode == "stream" else "-",
                    p50 <= 0.050 if mode == "stream" else None,
                    [
                        f"{label}: {len(now[1])} jobs put at random 50-300 ms gaps, p50 "
                        f"{ms(p50)}, p95 {ms(percentile(now[1], 95))}"
                    ],
                )
            )
    if "now" in herd and herd["now"] is not None:
        _, _, claims, puts = herd["now"]
        per_put = _claims_per_put(claims, puts)
        was_run = herd.get("before")
        was = None if was_run is None else _claims_per_put(was_run[2], was_run[3])
        rows.append(
            Row(
                "claims per put, 8 idle consumers (change stream)",
                f"{per_put:.1f}",
                "-" if was is None else f"{BEFORE_REV}: {was:.1f}",
                None if not was or not per_put else was / per_put,
                "-",
                None,
                [
                    "claims sent within 250 ms after each put, averaged over "
                    f"{len(puts)} puts 1.2-1.6 s apart"
                ],
            )
        )
    return rows

"""Shared helpers of the benchmark: job documents, filling, timing, explain, results."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.database import Database

from mongoqueue import MongoQueue
from mongoqueue import operations as ops

#: Lease of every queue in the benchmark (long: no lease expires during a run).
LEASE_SECONDS = 300
#: Payloads are put in calls of this many (a producer batching its writes).
PUT_MANY_CHUNK = 1_000


def payload(n: int) -> dict[str, Any]:
    """A small, realistic job payload; ``n`` identifies the job."""
    return {"n": n, "task": "resize", "args": {"image": f"img-{n}.png", "width": 640}}


def queue(collection: Collection[Any], consumer_id: str = "bench") -> MongoQueue:
    return MongoQueue(collection, consumer_id, timeout=LEASE_SECONDS)


def fill(collection: Collection[Any], count: int, start: int = 0) -> None:
    """Put ``count`` jobs with ``put_many`` (creating the queue's indexes)."""
    producer = queue(collection, "producer")
    producer.ensure_indexes()
    for first in range(start, start + count, 10_000):
        last = min(start + count, first + 10_000)
        producer.put_many(payload(n) for n in range(first, last))


# --------------------------------------------------------------------------- raw pymongo


def raw_document(n: int, now: datetime) -> dict[str, Any]:
    """A job document with the same fields as ours, built by hand."""
    return {
        "_id": ObjectId(),
        "payload": payload(n),
        "state": "ready",
        "priority": 0,
        "scheduled_at": now,
        "visible_at": now,
        "attempts": 0,
        "lease_token": None,
        "locked_by": None,
        "locked_at": None,
        "lease_expires_at": None,
        "progress": None,
        "last_error": None,
        "created_at": now,
    }


def raw_fill(collection: Collection[Any], count: int, start: int = 0) -> None:
    """``count`` raw documents, with exactly the queue's indexes (equally indexed)."""
    collection.create_indexes(ops.indexes())
    now = datetime.now(timezone.utc)
    for first in range(start, start + count, 10_000):
        last = min(start + count, first + 10_000)
        collection.insert_many([raw_document(n, now) for n in range(first, last)])


class RawConsumer:
    """The ceiling: a claim and an ack in bare pymongo, the same two round trips as ours.

    The claim is one ``find_one_and_update`` with the same filter, sort and index
    as ours, setting the lease fields with a plain ``$set`` of client-side times;
    the ack is one ``delete_one`` fenced on the token. With ``pipeline=True`` it
    sends our exact claim update pipeline instead, which separates the server's
    cost of that pipeline from our client-side cost.
    """

    def __init__(self, collection: Collection[Any], *, pipeline: bool = False) -> None:
        self.collection = collection
        self._pipeline = queue(collection, "raw")._config if pipeline else None

    def claim(self) -> tuple[Any, str] | None:
        token = str(ObjectId())
        now = datetime.now(timezone.utc)
        update: Any
        if self._pipeline is not None:
            update = self._pipeline.claim_update(token)
        else:
            until = now + timedelta(seconds=LEASE_SECONDS)
            update = {
                "$set": {
                    "lease_token": token,
                    "locked_by": "raw",
                    "locked_at": now,
                    "lease_expires_at": until,
                    "visible_at": until,
                }
            }
        doc = self.collection.find_one_and_update(
            {"state": "ready", "visible_at": {"$lte": now}},
            update,
            sort=ops.CLAIM_SORT,
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else (doc["_id"], token)

    def ack(self, claimed: tuple[Any, str]) -> None:
        self.collection.delete_one({"_id": claimed[0], "lease_token": claimed[1]})

    def claim_and_ack(self) -> None:
        claimed = self.claim()
        if claimed is None:
            raise RuntimeError("the raw collection ran out of jobs")
        self.ack(claimed)


def ours_claim_and_complete(q: MongoQueue) -> None:
    job = q.next()
    if job is None:
        raise RuntimeError("the queue ran out of jobs")
    job.complete()


# --------------------------------------------------------------------------- timing


def interleaved(
    contenders: dict[str, Callable[[], None]],
    count: int,
    rounds: int = 5,
    refill: Callable[[str, int], None] | None = None,
) -> dict[str, float]:
    """Operations per second of each contender, run in alternating rounds.

    Each contender runs ``count`` times in total, in ``rounds`` slices taken in
    turn, so that a slow patch of the machine hits them all alike. After each
    slice, untimed, ``refill(name, n)`` may put back the ``n`` jobs it consumed.
    """
    elapsed = dict.fromkeys(contenders, 0.0)
    done = dict.fromkeys(contenders, 0)
    for r in range(rounds):
        for name, operation in contenders.items():
            n = count * (r + 1) // rounds - done[name]
            start = time.perf_counter()
            for _ in range(n):
                operation()
            elapsed[name] += time.perf_counter() - start
            done[name] += n
            if refill is not None:
                refill(name, n)
    return {name: done[name] / elapsed[name] for name in contenders}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(p) - 1]


# --------------------------------------------------------------------------- explain


@dataclass
class Plan:
    stages: list[str]
    index: str | None
    keys_examined: int | None
    docs_examined: int | None
    returned: int | None
    command: str

    @property
    def single_ixscan(self) -> bool:
        return (
            self.stages.count("IXSCAN") == 1
            and "SORT" not in self.stages
            and ("COLLSCAN" not in self.stages)
        )

    def describe(self) -> str:
        return (
            f"{' <- '.join(self.stages) or '?'}"
            f"{f' on {self.index}' if self.index else ''}; "
            f"keys examined {self.keys_examined}, docs examined {self.docs_examined}, "
            f"returned {self.returned} (explain of {self.command})"
        )


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "stage" in node:
            yield node
        for key in ("queryPlan", "inputStage", "inputStages", "executionStages", "shards"):
            child = node.get(key)
            if isinstance(child, list):
                for item in child:
                    yield from _walk(item)
            elif child is not None:
                yield from _walk(child)


def explain_claim(
    database: Database[Any], collection: str, query: dict[str, Any], update: Any
) -> Plan:
    """``explain`` (executionStats) of a claim; falls back to the equivalent find.

    secantusd-rs cannot explain a filter with ``$$NOW`` ("undefined variable"),
    although it runs it: then the claim is explained without its ``$expr`` (a
    residual check on the fetched document, which does not change the index walk).
    """
    sort = dict(ops.CLAIM_SORT)
    variants = [("", query)]
    if "$expr" in query:
        variants.append((" without $expr", {k: v for k, v in query.items() if k != "$expr"}))
    commands: list[tuple[str, dict[str, Any]]] = []
    for note, q in variants:
        commands += [
            (
                f"findAndModify{note}",
                {"findAndModify": collection, "query": q, "sort": sort, "update": update},
            ),
            (f"find{note}", {"find": collection, "filter": q, "sort": sort, "limit": 1}),
        ]
    return explain(database, commands)


def explain(database: Database[Any], commands: list[tuple[str, dict[str, Any]]]) -> Plan:
    error: Exception | None = None
    for name, command in commands:
        try:
            reply = database.command({"explain": command, "verbosity": "executionStats"})
        except Exception as exc:  # the server may not explain this command
            error = exc
            continue
        planner = reply.get("queryPlanner", {})
        stages = [node["stage"] for node in _walk(planner.get("winningPlan", {}))]
        index = next(
            (
                node.get("indexName")
                for node in _walk(planner.get("winningPlan", {}))
                if node["stage"] == "IXSCAN"
            ),
            None,
        )
        stats = reply.get("executionStats", {})
        return Plan(
            stages=stages,
            index=index,
            keys_examined=stats.get("totalKeysExamined"),
            docs_examined=stats.get("totalDocsExamined"),
            returned=stats.get("nReturned"),
            command=name,
        )
    raise RuntimeError(f"the server explains neither findAndModify nor find: {error}")


# --------------------------------------------------------------------------- results


@dataclass
class Row:
    """One line of the table: our figure, what it is compared with, the target."""

    measure: str
    ours: str
    baseline: str
    ratio: float | None
    target: str
    met: bool | None  # None: informational, or not measured
    notes: list[str] = field(default_factory=list)
    cause: str = ""  # where a target is missed: what the side-by-side figures show

    @property
    def result(self) -> str:
        if self.met is None:
            return "-"
        return "met" if self.met else "MISSED"


def rate(value: float, unit: str = "jobs/s") -> str:
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.1f} {unit}"


def count(n: int) -> str:
    """1_000_000 -> "1M", 10_000 -> "10k", 100 -> "100"."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return f"{n:,}"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"

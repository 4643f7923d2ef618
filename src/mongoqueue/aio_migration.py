"""The asyncio twin of :mod:`mongoqueue.migration` (the same steps, awaited).

``migrate(collection, timeout=300, max_attempts=3)`` (also
``MongoQueue.migrate()``, ``mongoqueue migrate``; ``aio_migration.migrate`` for
asyncio): what each old document becomes, and why no job is lost or duplicated,
is in :mod:`mongoqueue.migration_operations`. The steps:

1. **Survey**: classify every old-format document. If any cannot be
   classified, raise ``MigrationRefused`` before writing anything.
2. **Convert**, page by page in ``_id`` order: one atomic update per document,
   filtered on its old shape. Documents that changed meanwhile (a 0.7 consumer
   still running) are looked at again in another pass.
3. **Survey again** and report the counts before and after.

Run it with the old consumers stopped. It is idempotent: a second run finds
nothing to convert, and an interrupted run resumes where it stopped.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from . import migration_operations as mops
from .errors import driver_errors
from .migration_operations import MigrationReport

__all__ = ["MigrationReport", "migrate"]


async def _survey(
    collection: AsyncCollection[Any], max_attempts: int
) -> tuple[dict[str, int], mops.Survey]:
    survey = mops.Survey(max_attempts)
    async for doc in await collection.aggregate(mops.survey_pipeline()):
        survey.add(doc)
    current = await collection.count_documents({"state": {"$exists": True}})
    total = await collection.count_documents({})
    return survey.finish(current, total), survey


async def _convert_pass(
    collection: AsyncCollection[Any],
    max_attempts: int,
    lease_ms: int,
    budget: int | None,
    batch_size: int,
) -> dict[str, int]:
    """One pass over the old documents in ``_id`` order; counts converted by kind."""
    converted = dict.fromkeys(mops.KINDS, 0)
    last_id: Any = None
    while budget is None or budget > 0:
        size = batch_size if budget is None else min(batch_size, budget)
        match = None if last_id is None else mops.after_filter(last_id)
        cursor = await collection.aggregate(mops.survey_pipeline(match, size))
        batch = mops.Batch([doc async for doc in cursor], max_attempts, lease_ms)
        if batch.last_id is None:
            break
        last_id = batch.last_id
        for kind, requests in batch.requests.items():
            if requests:
                result = await collection.bulk_write(requests, ordered=False)
                converted[kind] += result.modified_count
                if budget is not None:
                    budget -= len(requests)
    return converted


async def migrate(
    collection: AsyncCollection[Any],
    *,
    timeout: float | timedelta = 300,
    max_attempts: int = 3,
    limit: int | None = None,
    dry_run: bool = False,
    batch_size: int = 500,
) -> MigrationReport:
    """Convert the mongoqueue 0.7 documents of ``collection`` to current jobs.

    ``timeout`` and ``max_attempts`` are the queue's (the 0.7 defaults): a job
    with ``max_attempts`` attempts becomes failed, and one held by an old
    consumer gets a lease of ``timeout`` seconds from now. ``limit`` converts at
    most that many documents (run again for the rest); ``dry_run`` only
    surveys. Raises ``MigrationRefused`` (nothing written) when some document
    cannot be classified, and ``MigrationError`` when documents kept changing.
    """
    lease_ms, max_attempts, limit, batch_size = mops.check_migration_arguments(
        timeout, max_attempts, limit, batch_size
    )
    name = collection.full_name
    converted = dict.fromkeys(mops.KINDS, 0)
    with driver_errors():
        before, survey = await _survey(collection, max_attempts)
        if before["unclassifiable"]:
            raise mops.refusal(name, before["unclassifiable"], survey.examples)
        if dry_run:
            return MigrationReport(name, before, converted, before, dry_run=True)
        for _ in range(mops.MAX_PASSES):
            budget = None if limit is None else limit - sum(converted.values())
            done = await _convert_pass(collection, max_attempts, lease_ms, budget, batch_size)
            converted = {kind: converted[kind] + done[kind] for kind in mops.KINDS}
            if limit is not None and sum(converted.values()) >= limit:
                break
            if await collection.find_one(mops.OLD_FORMAT, {"_id": 1}) is None:
                break
        after, survey = await _survey(collection, max_attempts)
    report = MigrationReport(name, before, converted, after)
    if after["unclassifiable"]:
        raise mops.refusal(name, after["unclassifiable"], survey.examples)
    if not report.complete and (limit is None or sum(converted.values()) < limit):
        raise mops.incomplete(name, after["total"] - after["current"], sum(converted.values()))
    return report

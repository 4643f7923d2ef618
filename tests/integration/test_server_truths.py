"""Issue 10's correctness items, on a real server: what a queue promises whatever the
client believes (its clock estimate, its read preference, the ids and options it is given).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pymongo.errors
import pytest
from bson.codec_options import TypeEncoder, TypeRegistry
from pymongo import AsyncMongoClient, MongoClient, ReadPreference, monitoring

from mongoqueue import NO_BACKOFF, InvalidPayload, LeaseLost, MongoQueue, QueueUnavailable
from mongoqueue.aio import AsyncMongoQueue
from mongoqueue.clock import ServerClock
from tests.helpers import expire_lease_of, wait_for
from tests.twins import Blocking


def _target(queue: Any) -> Any:
    """The queue object itself (the async twin is wrapped in ``tests.twins.Blocking``)."""
    return getattr(queue, "_target", queue)


def _run_ahead(queue: Any, seconds: float) -> None:
    """Make ``queue``'s estimate of the server's clock run ``seconds`` ahead of it."""
    _target(queue)._clock = ServerClock(monotonic=lambda: time.monotonic() + seconds)


# ---------------------------------------------------------------- item 2: server-side expiry


def test_an_estimate_running_ahead_takes_no_live_lease(
    api: Any, collection: Any, server_clock_checks: None
) -> None:
    """A consumer whose clock estimate is 10 s ahead (a server clock stepped back, a
    failover to a primary that is behind) sees every 5 s lease as expired: the server's
    own clock refuses the takeover, counts no attempt, and the holder keeps its lease."""
    holder = api.queue("holder", timeout=5, retry=NO_BACKOFF)
    holder.put({"n": 1})
    job = holder.next()
    assert job is not None
    ahead = api.queue("ahead", timeout=5, retry=NO_BACKOFF)
    _run_ahead(ahead, 10)
    assert ahead.next() is None
    assert ahead.next_batch(10) == []
    assert ahead.repair() == 0
    stored = collection.find_one({"_id": job.id})
    assert stored["attempts"] == 0
    assert stored["locked_by"] == "holder"
    job.heartbeat()  # still the holder's: no LeaseLost
    job.complete()
    assert collection.count_documents({}) == 0


def test_a_lease_that_ended_on_the_server_is_taken_over(api: Any, collection: Any) -> None:
    """The server-side check admits a lease once it has ended on the server's clock."""
    holder = api.queue("holder", timeout=0.3, retry=NO_BACKOFF)
    holder.put({"n": 1})
    job = holder.next()
    other = api.queue("other", timeout=30, retry=NO_BACKOFF)
    taken = wait_for(lambda: other.next(), timeout=10)
    assert taken.id == job.id
    assert taken.attempts == 1
    with pytest.raises(LeaseLost):
        job.heartbeat()
    taken.complete()


# ---------------------------------------------------------------- item 3: clock estimate


def test_a_job_put_after_a_re_anchor_is_never_claimed_before_one_put_before(
    mongodb_uri: str, collection: Any
) -> None:
    """The first anchor of a cold client pays for server selection and the handshake;
    a re-anchor on the warm connection must not move the estimate back."""
    for _ in range(10):
        with MongoClient(mongodb_uri) as client:  # a cold client each time
            queue = MongoQueue(
                client[collection.database.name][collection.name], "c", retry=NO_BACKOFF
            )
            before = queue.put({"n": "before"})
            queue._clock._refresh = 0  # the next put re-anchors
            after = queue.put({"n": "after"})
            first, second = queue.next(), queue.next()
            assert (first.id, second.id) == (before, after)
            first.complete()
            second.complete()


def test_claims_refresh_the_estimate(api: Any) -> None:
    """A claim's ``locked_at`` ($$NOW) narrows the estimate without another hello."""
    queue = api.queue("c", retry=NO_BACKOFF)
    queue.put({"n": 1})
    clock = _target(queue)._clock
    # An anchor 5 s wide (as a slow first round trip would give): its upper bound is loose.
    clock._upper += timedelta(seconds=5)
    assert clock.spread > timedelta(seconds=5)
    job = queue.next()
    assert job is not None
    assert clock.spread < timedelta(seconds=1)  # narrowed by the claim's locked_at
    job.complete()


# ---------------------------------------------------------------- item 4: next_batch


def test_next_batch_goes_past_expired_leases_and_counts_them(api: Any, collection: Any) -> None:
    first = api.queue("first", timeout=30, retry=NO_BACKOFF)
    for n in range(3):
        first.put({"n": n})
    held = first.next_batch(3)
    assert len(held) == 3
    for job in held:
        expire_lease_of(collection, job.id)
    for n in range(3, 5):
        first.put({"n": n})
    second = api.queue("second", timeout=30, retry=NO_BACKOFF)
    batch = second.next_batch(5)
    assert sorted(job.payload["n"] for job in batch) == [0, 1, 2, 3, 4]
    assert second.events.lease_expiries == 3
    assert sorted(job.attempts for job in batch) == [0, 0, 1, 1, 1]
    for job in batch:
        job.complete()


def _lose_update_reply(api: Any, queue: Any, monkeypatch: pytest.MonkeyPatch, apply: bool) -> None:
    """The batch update raises a network error after the server applied it (or before)."""
    collection = _target(queue).collection
    real = collection.update_many
    lost = pymongo.errors.AutoReconnect("connection closed before the reply (injected)")
    if api.kind == "sync":

        def update_many(*args: Any, **kwargs: Any) -> Any:
            if apply:
                real(*args, **kwargs)
            raise lost

    else:

        async def update_many(*args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
            if apply:
                await real(*args, **kwargs)
            raise lost

    monkeypatch.setattr(collection, "update_many", update_many)


def test_next_batch_recovers_the_jobs_of_a_lost_reply(
    api: Any, collection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = api.queue("c", timeout=30, retry=NO_BACKOFF)
    for n in range(4):
        queue.put({"n": n})
    _lose_update_reply(api, queue, monkeypatch, apply=True)
    batch = queue.next_batch(4)
    assert [job.payload["n"] for job in batch] == [0, 1, 2, 3]
    for job in batch:
        job.complete()  # each handle holds its job's lease
    assert collection.count_documents({}) == 0


def test_next_batch_raises_when_the_update_never_ran(
    api: Any, collection: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = api.queue("c", timeout=30, retry=NO_BACKOFF)
    queue.put({"n": 1})
    _lose_update_reply(api, queue, monkeypatch, apply=False)
    with pytest.raises(QueueUnavailable):
        queue.next_batch(4)
    assert collection.count_documents({"lease_token": None}) == 1


# ---------------------------------------------------------------- item 5: read preference


class _ReadPreferences(monitoring.CommandListener):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "endSessions":  # the driver's own, when the client closes
            return
        mode = event.command.get("$readPreference", {}).get("mode", "primary")
        self.seen.append((event.command_name, mode))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _exercise(queue: Any, raw: Any) -> None:
    """Every public call of the queue that reads."""
    queue.put({"n": 1}, key="k")
    queue.put({"n": 2}, key="k")  # the key lookup
    queue.put({"n": 3}, max_attempts=1)
    batch = queue.next_batch(5)
    assert len(batch) == 2
    queue.get(batch[0].id)
    batch[1].error("boom")
    assert len(queue.failed()) == 1
    assert queue.requeue() == 1
    queue.stats()
    queue.size()
    stale = batch[0]
    # Another holder's token: the fenced complete() matches nothing and looks the job up.
    raw.update_one({"_id": stale.id}, {"$set": {"lease_token": "taken-over"}})
    with pytest.raises(LeaseLost):
        stale.complete()  # looks the job up to explain


def _discovering(uri: str) -> str:
    """``uri`` without ``directConnection=true``: on a direct connection pymongo sends
    ``primaryPreferred`` whatever the read preference, which would hide the difference."""
    uri = re.sub(r"directConnection=true&?", "", uri, flags=re.IGNORECASE)
    return uri.rstrip("?&")


def _check_topology(client: MongoClient[Any]) -> None:
    client.admin.command("ping")
    if client.topology_description.topology_type_name == "Single":
        pytest.skip("needs a replica set (a single server gets primaryPreferred whatever)")


def _primary_modes(listener: _ReadPreferences, collection: Any) -> set[str]:
    """The modes pymongo sends for a primary read on this topology (a direct connection
    sends ``primaryPreferred``), plus ``primary`` for commands that name none (writes)."""
    listener.seen.clear()
    collection.with_options(read_preference=ReadPreference.PRIMARY).find_one({})
    return {"primary", *(mode for _, mode in listener.seen)}


def test_reads_go_to_the_primary_whatever_the_read_preference(
    mongodb_uri: str, collection: Any
) -> None:
    listener = _ReadPreferences()
    with MongoClient(
        _discovering(mongodb_uri), readPreference="secondaryPreferred", event_listeners=[listener]
    ) as client:
        _check_topology(client)
        jobs = client[collection.database.name][collection.name]
        primary = _primary_modes(listener, jobs)
        listener.seen.clear()
        _exercise(MongoQueue(jobs, "c"), collection)
    assert len(listener.seen) > 10
    assert [seen for seen in listener.seen if seen[1] not in primary] == []


def test_async_reads_go_to_the_primary_whatever_the_read_preference(
    mongodb_uri: str, collection: Any
) -> None:
    listener = _ReadPreferences()
    with MongoClient(
        _discovering(mongodb_uri), readPreference="secondaryPreferred", event_listeners=[listener]
    ) as sync:
        _check_topology(sync)
        primary = _primary_modes(listener, sync[collection.database.name][collection.name])
    listener.seen.clear()
    loop = asyncio.new_event_loop()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        _discovering(mongodb_uri), readPreference="secondaryPreferred", event_listeners=[listener]
    )
    try:
        queue = AsyncMongoQueue(client[collection.database.name][collection.name], "c")
        _exercise(Blocking(queue, loop), collection)
    finally:
        loop.run_until_complete(client.close())
        loop.close()
    assert len(listener.seen) > 10
    assert [seen for seen in listener.seen if seen[1] not in primary] == []


# ---------------------------------------------------------------- items 6, 7: ids from outside


def test_cancel_never_reads_an_operator_document(api: Any, collection: Any) -> None:
    queue = api.queue("c", retry=NO_BACKOFF)
    queue.put({"n": 1})
    queue.put({"n": 2})
    assert queue.cancel({"$ne": None}) is False
    assert queue.cancel({"$exists": True}) is False
    assert collection.count_documents({}) == 2


def test_string_ids_name_their_object_ids(api: Any, collection: Any) -> None:
    queue = api.queue("c", max_attempts=1, retry=NO_BACKOFF)
    waiting = queue.put({"n": 1})
    assert queue.get(str(waiting)).id == waiting
    assert queue.cancel(str(waiting)) is True
    failing = queue.put({"n": 2})
    queue.next().error("boom")
    assert queue.get(str(failing)).state == "failed"
    assert queue.requeue(str(failing)) == 1
    assert queue.get(failing).attempts == 0
    # Other ids keep working, as values.
    assert queue.get(failing).id == failing
    assert queue.get("not-an-object-id") is None
    assert queue.cancel(12345) is False


# ---------------------------------------------------------------- item 8: requeue count


def test_requeue_counts_what_it_requeued_when_a_key_collides(api: Any, collection: Any) -> None:
    queue = api.queue("c", max_attempts=1, retry=NO_BACKOFF)
    for n in range(7):
        queue.put({"n": n}, key=f"k{n}")
    # Failed as error() leaves them, written directly: secantusd-rs keeps a job that
    # failed in the partial key index (README, "The test server").
    collection.update_many({}, {"$set": {"state": "failed", "attempts": 1}})
    collection.drop_index("mongoqueue_key")
    _target(queue)._indexes_ready = False
    taken = queue.put({"n": "new"}, key="k3")  # a ready job now holds k3
    assert collection.count_documents({"key": "k3"}) == 2
    assert queue.requeue() == 6
    assert collection.count_documents({"state": "ready"}) == 7  # 6 requeued + the new one
    assert collection.find_one({"state": "failed"})["key"] == "k3"
    assert queue.get(taken).payload == {"n": "new"}


# ---------------------------------------------------------------- item 10: codec options


def test_a_uuid_payload_with_the_standard_representation(mongodb_uri: str, collection: Any) -> None:
    value = uuid.uuid4()
    with MongoClient(mongodb_uri, uuidRepresentation="standard") as client:
        queue = MongoQueue(client[collection.database.name][collection.name], "c")
        queue.put({"id": value})
        assert queue.next().payload == {"id": value}


def test_async_a_uuid_payload_with_the_standard_representation(
    mongodb_uri: str, collection: Any
) -> None:
    value = uuid.uuid4()

    async def scenario() -> Any:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            mongodb_uri, uuidRepresentation="standard"
        )
        try:
            queue = AsyncMongoQueue(client[collection.database.name][collection.name], "c")
            await queue.put({"id": value})
            job = await queue.next()
            return job.payload
        finally:
            await client.close()

    assert asyncio.run(scenario()) == {"id": value}


class _DecimalEncoder(TypeEncoder):
    python_type = Decimal

    def transform_python(self, value: Any) -> Any:
        return str(value)


def test_a_type_registry_encoder_is_used_as_insert_one_would(
    mongodb_uri: str, collection: Any
) -> None:
    codec = collection.codec_options.with_options(type_registry=TypeRegistry([_DecimalEncoder()]))
    jobs = collection.with_options(codec_options=codec)
    queue = MongoQueue(jobs, "c")
    queue.put({"price": Decimal("1.10")})
    assert queue.next().payload == {"price": "1.10"}


def test_a_uuid_without_a_representation_is_refused_clearly(queue: MongoQueue) -> None:
    with pytest.raises(InvalidPayload, match="uuid"):
        queue.put({"id": uuid.uuid4()})

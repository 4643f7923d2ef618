"""clear() drops the collection: a consumer blocked in ``next(wait=)`` survives it.

On a replica set the waiting consumer watches a change stream on the
collection; dropping the collection invalidates that stream. The consumer must
keep waiting and get the job put after the clear.
"""

from __future__ import annotations

import threading

from mongoqueue import MongoQueue


def test_a_waiting_consumer_gets_a_job_put_after_a_clear(collection) -> None:
    producer = MongoQueue(collection, "producer")
    consumer = MongoQueue(collection, "consumer")
    producer.put({"n": 0})
    assert consumer.next().payload == {"n": 0}  # indexes made, clock anchored
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(consumer.next(wait=20)))
    waiter.start()
    try:
        # Let it open its stream (or start polling); it waits up to 20 s for a job.
        waiter.join(1.0)
        assert waiter.is_alive()
        producer.clear()
        producer.put({"n": 1})
    finally:
        waiter.join(30)
    assert not waiter.is_alive()
    assert len(got) == 1
    assert got[0] is not None
    assert got[0].payload == {"n": 1}

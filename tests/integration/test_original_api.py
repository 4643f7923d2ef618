"""The original mongoqueue README's examples, unchanged apart from the client class.

Each runs against MongoQueue and, through the ``api`` fixture, AsyncMongoQueue.
"""

from __future__ import annotations

import pytest

from mongoqueue import NO_BACKOFF, LeaseLost


@pytest.fixture
def queue(api):
    """The sync or the async queue, with no retry backoff."""
    return api.queue("consumer-1", timeout=30, max_attempts=3, retry=NO_BACKOFF)


def test_readme_example(api, collection) -> None:
    queue = api.queue(consumer_id="consumer-1", timeout=300, max_attempts=3)
    queue.put({"foobar": 1})
    queue.put({"foobar": 0}, priority=1)

    job = queue.next()
    assert api.is_job(job)
    assert job.payload == {"foobar": 0}  # higher priority first
    job.complete()

    job = queue.next()
    assert job is not None
    assert job.payload == {"foobar": 1}
    with job as data:
        assert data["payload"] == {"foobar": 1}
    assert queue.size() == 0
    assert queue.next() is None


def test_context_manager_completes_on_success(queue) -> None:
    queue.put({"n": 1})
    with queue.next() as data:
        assert data["payload"] == {"n": 1}
    assert queue.stats()["total"] == 0


def test_context_manager_records_traceback_and_propagates(queue) -> None:
    job_id = queue.put({"n": 1})
    with pytest.raises(ZeroDivisionError), queue.next() as data:  # noqa: PT012
        assert data["payload"] == {"n": 1}
        1 / 0  # noqa: B018
    job = queue.get(job_id)
    assert job is not None
    assert job.attempts == 1
    assert job.state == "waiting"
    assert "ZeroDivisionError" in job.last_error
    assert "Traceback" in job.last_error


def test_context_manager_releases_on_keyboard_interrupt(queue) -> None:
    job_id = queue.put({"n": 1})
    with pytest.raises(KeyboardInterrupt), queue.next():
        raise KeyboardInterrupt
    job = queue.get(job_id)
    assert job.attempts == 0
    assert job.state == "waiting"


def test_job_control_methods(queue) -> None:
    queue.put({"a": 1})
    job = queue.next()
    job.progress(3)
    assert job.progress_count == 3
    job.error("message")
    assert job.attempts == 1
    assert job.last_error == "message"
    job = queue.next()
    assert job.attempts == 1
    job.release()
    job = queue.next()
    assert job.attempts == 1  # release does not count as a failure
    job.complete()
    assert queue.size() == 0


def test_original_accessors(queue) -> None:
    job_id = queue.put({"x": 1}, priority=7)
    job = queue.next()
    assert job.job_id == job_id == job.id
    assert job.priority == 7
    assert job.attempts == 0
    assert job.locked_by == "consumer-1"
    assert job.locked_at is not None
    assert job.last_error is None


def test_finished_handle_cannot_act_again(queue) -> None:
    queue.put({"a": 1})
    job = queue.next()
    assert job.complete()["payload"] == {"a": 1}
    assert job.complete() is None  # a second complete() does nothing, as in 0.7.2
    for action in (job.release, lambda: job.error("x"), lambda: job.progress(1)):
        with pytest.raises(LeaseLost, match="already"):
            action()
    queue.put({"a": 2})
    released = queue.next()
    released.release()
    with pytest.raises(LeaseLost, match="already"):
        released.complete()  # the job is back in the queue: it was not completed


def test_stats_keys(queue) -> None:
    stats = queue.stats()
    assert {"available", "locked", "errors", "total"} <= stats.keys()
    assert stats["total"] == 0


def test_clear_keeps_the_queue_usable(queue) -> None:
    queue.put({"a": 1})
    queue.put({"a": 2})
    assert queue.clear() is None  # drops the collection, as 0.7.2 did
    assert queue.size() == 0
    queue.put({"a": 3})
    assert queue.next().payload == {"a": 3}


def test_drop_max_attempts_is_purge_failed(api, collection) -> None:
    queue = api.queue("c", timeout=30, max_attempts=1)
    queue.put({"a": 1})
    queue.next().error("boom")
    assert queue.drop_max_attempts() == 1
    assert queue.stats()["total"] == 0

"""A Hypothesis state machine: the real queue against a small model of our rules.

The model is of the queue's rules (priority, then the time a job became due,
attempts, leases, failure),
not of MongoDB: every step runs on the real server.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule

from mongoqueue import NO_BACKOFF, Job, LeaseLost, MongoQueue
from tests.helpers import expire_lease

MAX_ATTEMPTS = 3


#: How far apart (seconds, on this test's clock) two jobs must have become due
#: for the model to insist on their order. A job put as due now is stamped with a
#: lower bound of the server's time (its clock estimate's spread, about a
#: millisecond here), while a failure is stamped with the server's own time, so a
#: job put right after another one failed may come before it.
ORDER_TOLERANCE = 0.05


@dataclass
class ModelJob:
    seq: int
    priority: int
    scheduled: float  # when it was put (on this test's monotonic clock)
    due: tuple[int, float]  # its place among its priority: (0 = expired lease, time)
    state: str = "waiting"  # waiting | running | failed
    attempts: int = 0
    holder: Any = None  # the Job handle that holds it
    expired: bool = False


@dataclass
class Model:
    jobs: dict[Any, ModelJob] = field(default_factory=dict)

    def next(self, now: float) -> list[Any]:
        """The ids our rules may deliver next (recording expiries met on the way).

        Claims take the highest priority first, then the job that became due
        first: an expired lease (recorded as a failed delivery, which puts the
        job back as due ``now``), then waiting jobs by the time they became due
        (put, retried, or put back by ``release()`` at its put time). Jobs that
        became due within ``ORDER_TOLERANCE`` of the first are all acceptable.
        """
        while True:
            eligible = [
                (job_id, job)
                for job_id, job in self.jobs.items()
                if job.state == "waiting" or (job.state == "running" and job.expired)
            ]
            if not eligible:
                return []
            eligible.sort(key=lambda item: (-item[1].priority, item[1].due))
            head = eligible[0][1]
            if head.state == "running":  # an expired lease counts as a failed delivery
                head.attempts += 1
                head.holder, head.expired = None, False
                head.state = "failed" if head.attempts >= MAX_ATTEMPTS else "waiting"
                head.due = (1, now)
                continue
            return [
                job_id
                for job_id, job in eligible
                if job.priority == head.priority
                and job.due[0] == head.due[0]
                and job.due[1] - head.due[1] <= ORDER_TOLERANCE
            ]


#: The session's client, set by the test (Hypothesis introspects class attributes).
_CLIENT: list[Any] = []


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.collection = _CLIENT[0]["mongoqueue_tests"][f"sm_{uuid.uuid4().hex[:12]}"]
        self.queue = MongoQueue(
            self.collection, "sm", timeout=60, max_attempts=MAX_ATTEMPTS, retry=NO_BACKOFF
        )
        self.model = Model()
        self.seq = 0
        self.completed: list[Job] = []  # handles that completed their job

    handles = Bundle("handles")

    @rule(priority=st.integers(-2, 2))
    def put(self, priority: int) -> None:
        at = time.monotonic()
        job_id = self.queue.put({"seq": self.seq}, priority=priority)
        self.model.jobs[job_id] = ModelJob(self.seq, priority, at, (1, at))
        self.seq += 1

    @rule(target=handles)
    def next(self) -> Job:
        job = self.queue.next()
        expected = self.model.next(time.monotonic())
        if not expected:
            assert job is None
            return None  # type: ignore[return-value]
        assert job is not None
        assert job.id in expected
        model = self.model.jobs[job.id]
        assert job.attempts == model.attempts
        model.state, model.holder = "running", job
        return job

    def _holds(self, handle: Job | None) -> ModelJob | None:
        if handle is None:
            return None
        model = self.model.jobs.get(handle.id)
        return model if model is not None and model.holder is handle else None

    def _act(self, handle: Job | None, action: str) -> ModelJob | None:
        """Run ``action`` on the handle; it must succeed exactly when the model says so."""
        if handle is None:
            return None
        model = self._holds(handle)
        if model is None and action == "complete" and any(h is handle for h in self.completed):
            assert handle.complete() is None  # completing twice does nothing, as in 0.7.2
            return None
        if model is None:
            with pytest.raises(LeaseLost):
                getattr(handle, action)()
            return None
        getattr(handle, action)()
        model.holder, model.expired = None, False
        return model

    @rule(handle=handles)
    def complete(self, handle: Job | None) -> None:
        if self._act(handle, "complete") is not None:
            del self.model.jobs[handle.id]
            self.completed.append(handle)

    @rule(handle=handles)
    def error(self, handle: Job | None) -> None:
        model = self._act(handle, "error")
        if model is not None:
            model.attempts += 1
            model.state = "failed" if model.attempts >= MAX_ATTEMPTS else "waiting"
            model.due = (1, time.monotonic())  # due again now: behind the jobs due before

    @rule(handle=handles)
    def release(self, handle: Job | None) -> None:
        model = self._act(handle, "release")
        if model is not None:
            model.state = "waiting"
            model.due = (1, model.scheduled)  # back to its place

    @rule(handle=handles)
    def lease_expires(self, handle: Job | None) -> None:
        model = self._holds(handle)
        if model is not None and not model.expired:
            expire_lease(self.queue, handle)
            model.expired = True
            model.due = (0, time.monotonic())

    @invariant()
    def counts_match(self) -> None:
        states = [job.state for job in self.model.jobs.values()]
        counts = self.queue.counts()
        assert counts["waiting"] == states.count("waiting")
        assert counts["delayed"] == 0  # no backoff here
        assert counts["running"] == states.count("running")
        assert counts["lease_expired"] == sum(job.expired for job in self.model.jobs.values())
        assert counts["failed"] == states.count("failed")
        assert counts["total"] == len(states)
        assert self.queue.stats() == {
            "available": states.count("waiting"),
            "locked": states.count("running"),
            "errors": states.count("failed"),
            "total": len(states),
        }
        assert self.queue.size() == len(states)  # failed jobs included, as in 0.7.2

    def teardown(self) -> None:
        attempts = {j.id: j.attempts for j in map(self.queue.get, self.model.jobs)}
        assert attempts == {i: m.attempts for i, m in self.model.jobs.items()}
        self.collection.drop()


def test_queue_follows_the_model(client) -> None:
    _CLIENT[:] = [client]
    runner = QueueMachine.TestCase
    runner.settings = settings(
        max_examples=40,
        stateful_step_count=30,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    runner("runTest").runTest()

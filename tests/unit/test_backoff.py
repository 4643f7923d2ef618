"""The retry backoff: the policy's formula, and the server expression that evaluates it.

``ops.backoff_ms`` is evaluated here by a tiny interpreter of the aggregation
operators it uses, so the document the server runs is checked against
``RetryPolicy.delay`` without a server (integration tests check the server).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mongoqueue import InvalidArgument, RetryPolicy
from mongoqueue import operations as ops


def evaluate(expr: Any, doc: dict[str, Any]) -> Any:
    """Evaluate the aggregation operators ``backoff_ms`` uses, on ``doc``."""
    if isinstance(expr, str) and expr.startswith("$"):
        value: Any = doc
        for part in expr[1:].split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return value
    if not isinstance(expr, dict):
        return expr
    ((op, args),) = expr.items()
    if op == "$toLong":
        return math.trunc(evaluate(args, doc))
    values = [evaluate(arg, doc) for arg in args]
    if op == "$ifNull":
        return values[0] if values[0] is not None else values[1]
    if op == "$cond":
        return values[1] if values[0] else values[2]
    operators = {
        "$max": max,
        "$min": min,
        "$multiply": math.prod,
        "$subtract": lambda v: v[0] - v[1],
        "$pow": lambda v: v[0] ** v[1],
    }
    fn = operators[op]
    return fn(values) if op in ("$multiply", "$subtract", "$pow") else fn(*values)


policies = st.builds(
    RetryPolicy,
    initial=st.floats(0, 100),
    maximum=st.floats(100, 1000),
    minimum=st.floats(0, 10),
    multiplier=st.floats(1, 4),
    jitter=st.booleans(),
)


def test_exponential_schedule_without_jitter() -> None:
    policy = RetryPolicy(initial=1, maximum=10, multiplier=2, jitter=False)
    delays = [policy.delay(n, policy.draw_jitter()).total_seconds() for n in range(1, 7)]
    assert delays == [1, 2, 4, 8, 10, 10]


def test_minimum_is_a_floor_even_with_jitter() -> None:
    policy = RetryPolicy(initial=1, maximum=10, minimum=0.5)
    assert policy.delay(1, jitter=0.0) == timedelta(seconds=0.5)
    assert policy.delay(3, jitter=0.5) == timedelta(seconds=2)


@given(policies, st.integers(1, 30), st.floats(0, 1, exclude_max=True))
def test_full_jitter_stays_within_its_bounds(policy: RetryPolicy, failures: int, j: float) -> None:
    cap = min(policy.maximum, policy.initial * policy.multiplier ** (failures - 1))
    delay = policy.delay(failures, j if policy.jitter else 1.0).total_seconds()
    assert policy.minimum <= delay + 1e-6  # timedelta keeps microseconds
    assert delay <= max(policy.minimum, cap) + 1e-6


@given(policies, st.integers(1, 30), st.floats(0, 1, exclude_max=True))
def test_server_expression_matches_the_policy(policy: RetryPolicy, failures: int, j: float) -> None:
    jitter = j if policy.jitter else 1.0
    ms = evaluate(ops.backoff_ms(policy, jitter), {"attempts": failures})
    # The job document stores the settings in whole milliseconds.
    stored = ops.retry_document(policy)
    in_ms = RetryPolicy(
        initial=stored["initial_ms"] / 1000,
        maximum=stored["maximum_ms"] / 1000,
        minimum=stored["minimum_ms"] / 1000,
        multiplier=policy.multiplier,
        jitter=policy.jitter,
    )
    expected = in_ms.delay(failures, jitter) / timedelta(milliseconds=1)
    assert abs(ms - expected) <= 1  # truncated to whole milliseconds


def test_a_jobs_own_policy_wins() -> None:
    queue_policy = RetryPolicy(initial=1, maximum=10, jitter=False)
    own = ops.retry_document(RetryPolicy(initial=60, maximum=600, jitter=False))
    ms = evaluate(ops.backoff_ms(queue_policy, 1.0), {"attempts": 2, "retry": own})
    assert ms == 120_000


@pytest.mark.parametrize(
    "kwargs",
    [{"initial": -1}, {"multiplier": 0.5}, {"minimum": 20, "maximum": 10}],
)
def test_bad_policies_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidArgument):
        RetryPolicy(**kwargs)

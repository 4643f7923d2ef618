"""Unit tests of the input bounds and the id filter added with the reliability suite."""

from __future__ import annotations

import pytest

from mongoqueue import NO_BACKOFF, InvalidArgument
from mongoqueue import operations as ops
from mongoqueue._core import MAX_ERROR_CHARS, QueueCore
from mongoqueue.validation import INT64_MAX, MAX_SECONDS, check_positive_int, check_seconds


def test_by_id_compares_with_eq() -> None:
    assert ops.by_id({"$ne": None}) == {"_id": {"$eq": {"$ne": None}}}
    assert ops.failed_filter(5) == {"state": "failed", "_id": {"$eq": 5}}


def test_seconds_are_bounded() -> None:
    assert check_seconds("delay", MAX_SECONDS, allow_zero=True) == MAX_SECONDS
    with pytest.raises(InvalidArgument, match=r"delay must be at most .* \(100 years\)"):
        check_seconds("delay", MAX_SECONDS + 1, allow_zero=True)


def test_counts_fit_in_64_bits() -> None:
    assert check_positive_int("max_attempts", INT64_MAX) == INT64_MAX
    with pytest.raises(InvalidArgument, match="max_attempts must fit in a signed 64-bit"):
        check_positive_int("max_attempts", INT64_MAX + 1)


def test_long_error_messages_keep_their_start_and_end() -> None:
    core = QueueCore("c", 30, 3, NO_BACKOFF)
    message = "head" + "x" * (3 * MAX_ERROR_CHARS) + "tail"
    update = str(core._error_update(message))
    assert "head" in update
    assert "tail" in update
    assert "characters cut" in update
    assert len(update) < 2 * MAX_ERROR_CHARS
    assert "short message" in str(core._error_update("short message"))
    with pytest.raises(InvalidArgument, match="count must fit"):
        core._progress_update(2**64)


def test_payloads_nested_past_mongodb_limit_are_refused() -> None:
    from mongoqueue import InvalidPayload
    from mongoqueue.validation import MAX_PAYLOAD_DEPTH, encode_payload

    def nested(depth: int) -> dict[str, object]:
        doc: dict[str, object] = {"leaf": 1}
        for _ in range(depth - 1):
            doc = {"d": doc}
        return doc

    encode_payload(nested(MAX_PAYLOAD_DEPTH), 16 * 1024 * 1024)
    encode_payload({"a": [[[1]]] * 3}, 16 * 1024 * 1024)
    for depth in (MAX_PAYLOAD_DEPTH + 1, 181, 900):
        with pytest.raises(InvalidPayload, match="nested more than 98 levels"):
            encode_payload(nested(depth), 16 * 1024 * 1024)
    with pytest.raises(InvalidPayload, match="nested more than"):
        encode_payload({"a": nested(MAX_PAYLOAD_DEPTH)}, 16 * 1024 * 1024)

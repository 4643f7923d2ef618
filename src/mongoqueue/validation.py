"""Checks of user input, done before anything is sent to the server.

Pure functions: each returns the value normalised, or raises an error of ours
that says what was wrong and what to do. Nothing here performs I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import bson
from bson.codec_options import DEFAULT_CODEC_OPTIONS, CodecOptions
from bson.raw_bson import RawBSONDocument

from .errors import (
    InvalidArgument,
    InvalidArgumentType,
    InvalidPayload,
    NotBSON,
    PayloadTooLarge,
)

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

#: Room kept for the queue's own fields next to the payload in one document.
METADATA_ALLOWANCE = 2048

#: Longest duration accepted (100 years): a lease, delay or backoff added to the
#: server's time must stay a date that MongoDB and Python can both represent.
MAX_SECONDS = 100 * 365 * 24 * 3600
#: MongoDB's maximum document size, used until the server reports its own.
DEFAULT_MAX_DOCUMENT_BYTES = 16 * 1024 * 1024


def check_seconds(name: str, value: object, *, allow_zero: bool) -> float:
    """A finite, non-negative number of seconds (``timedelta`` accepted)."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentType(
            f"{name} must be a number of seconds or a timedelta, got {type(value).__name__}"
        )
    seconds = float(value)
    if not math.isfinite(seconds):
        raise InvalidArgument(f"{name} must be finite, got {value!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidArgument(f"{name} must be {bound} seconds, got {value!r}")
    if seconds > MAX_SECONDS:
        raise InvalidArgument(
            f"{name} must be at most {MAX_SECONDS} seconds (100 years), got {value!r}"
        )
    return seconds


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentType(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise InvalidArgument(f"{name} must be >= 1, got {value!r}")
    if value > INT64_MAX:
        raise InvalidArgument(f"{name} must fit in a signed 64-bit integer, got {value}")
    return value


def check_consumer_id(value: object) -> str | int:
    """A str naming the consumer, or an int (0.7.2 took any value; ints are kept as ints)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not INT64_MIN <= value <= INT64_MAX:
            raise InvalidArgument(f"consumer_id must fit in a signed 64-bit integer, got {value}")
        return value
    if not isinstance(value, str):
        raise InvalidArgumentType(
            f"consumer_id must be a str (or an int), got {type(value).__name__}"
        )
    if not value.strip():
        raise InvalidArgument("consumer_id must be a non-empty string naming this consumer")
    return value


def check_priority(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentType(
            f"priority must be an int (higher runs first), got {type(value).__name__}"
        )
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidArgument(f"priority must fit in a signed 64-bit integer, got {value}")
    return value


def check_key(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgumentType(f"key must be a str, got {type(value).__name__}")
    if not value:
        raise InvalidArgument("key must be a non-empty string (or None for no deduplication)")
    return value


def check_run_at(value: object) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidArgumentType(f"run_at must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidArgument(
            "run_at must be timezone-aware (for example datetime.now(timezone.utc)); "
            "a naive datetime is ambiguous"
        )
    return value.astimezone(timezone.utc)


def check_delay(delay: object, run_at: object) -> tuple[float, datetime | None]:
    """``(delay_seconds, run_at_utc)``; at most one of ``delay`` and ``run_at``."""
    if delay is not None and run_at is not None:
        raise InvalidArgument("give either delay or run_at, not both")
    seconds = 0.0 if delay is None else check_seconds("delay", delay, allow_zero=True)
    return seconds, (None if run_at is None else check_run_at(run_at))


def _check_keys(doc: Mapping[Any, Any], path: str) -> None:
    where = path or "the top level"
    for key, value in doc.items():
        if not isinstance(key, str):
            raise InvalidPayload(
                f"payload key {key!r} at {where} is a {type(key).__name__}; "
                "MongoDB documents need string keys"
            )
        if key.startswith("$") or "." in key or "\x00" in key:
            raise InvalidPayload(
                f"payload key {key!r} at {where} is not allowed: keys may not start "
                "with '$' or contain '.' or NUL; rename it"
            )
        _check_value(value, f"{path}.{key}" if path else key)


def _check_value(value: object, path: str) -> None:
    if isinstance(value, RawBSONDocument):
        return
    if isinstance(value, Mapping):
        _check_keys(value, path)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_value(item, f"{path}[{i}]")


#: Deepest payload accepted: MongoDB refuses documents nested more than 100 levels,
#: and the job document wraps the payload in one more.
MAX_PAYLOAD_DEPTH = 98


#: Each nesting level takes at least 7 bytes of BSON (type, empty key, size, end), so
#: an encoded payload shorter than this cannot be nested too deeply.
_SHALLOW_BELOW_BYTES = 7 * MAX_PAYLOAD_DEPTH + 5


def _too_deep(payload: Mapping[str, Any], encoded_size: int) -> bool:
    """True if documents and arrays nest more than MAX_PAYLOAD_DEPTH levels (no recursion)."""
    if encoded_size < _SHALLOW_BELOW_BYTES:
        return False  # the common case: no walk at all
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_PAYLOAD_DEPTH:
            return True
        children = value.values() if isinstance(value, Mapping) else value
        for child in children:
            if isinstance(child, (Mapping, list, tuple)) and not isinstance(child, RawBSONDocument):
                stack.append((child, depth + 1))
    return False


def encode_payload(
    payload: object,
    max_document_bytes: int,
    codec_options: CodecOptions[Any] = DEFAULT_CODEC_OPTIONS,
) -> RawBSONDocument:
    """Validate ``payload`` and return an immutable BSON snapshot of it.

    The snapshot is what gets stored, so later changes to the caller's dict do
    not reach the job. It is encoded with ``codec_options``, the collection's own
    (its ``uuid_representation``, ``type_registry``...), so ``put`` accepts what
    ``insert_one`` on that collection would store.
    """
    if not isinstance(payload, Mapping):
        raise InvalidArgumentType(
            f"payload must be a mapping such as a dict, got {type(payload).__name__}"
        )
    # The C encoder checks the keys ('$', '.', NUL, non-str) in the same pass
    # (check_keys); only a rejected payload is walked in Python, to name the key.
    try:
        data = (
            payload.raw
            if isinstance(payload, RawBSONDocument)
            else bson.encode(payload, check_keys=True, codec_options=codec_options)
        )
    except bson.errors.InvalidDocument as exc:
        try:
            _check_keys(payload, "")
        except RecursionError as deep:
            raise InvalidPayload("payload is nested too deeply to store") from deep
        raise InvalidPayload(f"payload cannot be stored as BSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidPayload("payload is nested too deeply to store") from exc
    except OverflowError as exc:
        raise InvalidPayload(f"payload cannot be stored as BSON: {exc}") from exc
    except ValueError as exc:
        # bson refuses a native uuid.UUID unless the collection's codec options
        # name a uuid_representation.
        raise InvalidPayload(
            f"payload cannot be stored as BSON with the collection's codec options: {exc}"
        ) from exc
    if not isinstance(payload, RawBSONDocument) and _too_deep(payload, len(data)):
        raise InvalidPayload(
            f"payload is nested more than {MAX_PAYLOAD_DEPTH} levels deep; MongoDB stores "
            "documents up to 100 levels (the job document adds one): flatten it"
        )
    limit = max_document_bytes - METADATA_ALLOWANCE
    if len(data) > limit:
        raise PayloadTooLarge(
            f"payload is {len(data):,} bytes encoded; MongoDB's document limit is "
            f"{max_document_bytes:,} bytes ({max_document_bytes // (1024 * 1024)} MiB) and the "
            f"queue keeps {METADATA_ALLOWANCE:,} bytes of it for its own fields. "
            "Store large data elsewhere (GridFS, object storage) and put a reference."
        )
    return RawBSONDocument(data)


def check_bson_value(what: str, value: object) -> None:
    """Refuse ``value`` unless BSON can store it (``what`` names it in the error).

    BSON stores dates, ObjectId, bytes, Decimal128, numbers, strings, booleans,
    None, lists and documents with string keys; anything else (a set, a custom
    object, a ``decimal.Decimal``) gets an error naming the value's place.
    """
    try:
        bson.encode({"v": value}, check_keys=True)
    except bson.errors.InvalidDocument as exc:
        raise NotBSON(
            f"{what} cannot be stored as BSON: {exc}. Pass BSON types (str, int, float, "
            "bool, None, datetime, ObjectId, bytes, Decimal128, lists and dicts with str keys)"
        ) from exc
    except (RecursionError, OverflowError) as exc:
        raise InvalidPayload(f"{what} cannot be stored as BSON: {exc}") from exc

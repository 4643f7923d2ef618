"""Partitioned queues (``partitions=P``): the pure documents and decisions, no I/O.

A queue declared with ``partitions=P`` (P > 1) stores each job with a
``partition`` field in ``0..P-1``: ``hash(key) mod P`` for a job with a
deduplication key (a stable hash: the first 8 bytes of BLAKE2b of the key's
UTF-8, never Python's salted ``hash()``), so one key always lands in one
partition and the unique key index keeps deduplication global; otherwise the
partitions are dealt round-robin from a random start, which spreads them evenly.

Every index of a partitioned queue but ``_id_`` and the TTL index (MongoDB
allows only single-field TTL indexes) starts with ``partition``, and every
operation on one job names its partition by equality, so on a collection
sharded on ``{partition: 1}`` a mongos sends it to exactly one shard (see
docs/guides/sharding.md). The count of partitions is recorded once per queue in
the database's ``mongoqueue_meta`` collection (``_id`` = the queue collection's
name); a queue object configured with another count refuses to start.

``partitions=1`` (the default) is the unpartitioned queue, exactly as before: no
``partition`` field, the original indexes, no record.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from typing import Any

from pymongo import ASCENDING, IndexModel

from . import operations as ops
from .errors import InvalidArgument, InvalidArgumentType, PartitionMismatch

Doc = dict[str, Any]

#: The field each job of a partitioned queue carries.
PARTITION = "partition"

#: The collection (in the queue's database) holding one record per partitioned queue.
META_COLLECTION = "mongoqueue_meta"

#: At most this many partitions (each is a range of the shard key, a claim head).
MAX_PARTITIONS = 4096

#: The claim of a partitioned queue probes this many times for another partition
#: with a due job before it gives up (each probe is one read of the claim index).
MAX_PROBES = 3


def check_partitions(value: object) -> int:
    """``partitions=``: an int from 1 to ``MAX_PARTITIONS``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentType(f"partitions must be an int, got {type(value).__name__}")
    if not 1 <= value <= MAX_PARTITIONS:
        raise InvalidArgument(
            f"partitions must be between 1 and {MAX_PARTITIONS}, got {value} "
            "(1, the default, is an unpartitioned queue)"
        )
    return value


def stable_hash(text: str) -> int:
    """The first 8 bytes of BLAKE2b of ``text`` (UTF-8), as an unsigned int: the same
    in every process, Python version and machine."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def partition_of_key(key: str, partitions: int) -> int:
    """The partition of every job with deduplication ``key``."""
    return stable_hash(key) % partitions


def home_partition(consumer_id: str | int, partitions: int) -> int:
    """The partition a consumer claims from first (spread by its id)."""
    return stable_hash(f"consumer:{consumer_id}") % partitions


class Dealer:
    """Partitions for jobs without a key: round-robin from a random start."""

    def __init__(self, partitions: int, rng: random.Random | None = None) -> None:
        self._partitions = partitions
        self._next = (rng or random.Random()).randrange(partitions)

    def deal(self) -> int:
        partition = self._next
        self._next = (partition + 1) % self._partitions
        return partition


# --------------------------------------------------------------------------- indexes


def _prefixed(model: IndexModel, name: str) -> IndexModel:
    document = dict(model.document)
    keys = [(PARTITION, ASCENDING), *document.pop("key").items()]
    document.pop("name")
    return IndexModel(keys, name=name, **document)


#: The claim index of a partitioned queue: ``partition`` by equality, then the
#: unpartitioned claim index (state, priority desc, visible_at, _id).
CLAIM_INDEX = _prefixed(ops.CLAIM_INDEX, "mongoqueue_p_claim")
#: Unique on (partition, key) among ready jobs: as global as ``key`` alone, since
#: a key always maps to one partition; a unique index on a sharded collection must
#: start with the shard key.
KEY_INDEX = _prefixed(ops.KEY_INDEX, "mongoqueue_p_key")
LEASE_INDEX = _prefixed(ops.LEASE_INDEX, "mongoqueue_p_lease")
#: The TTL index stays single-field (MongoDB's rule for TTL indexes); the server
#: sweeps it on each shard by itself, no query of ours uses it.
EXPIRE_INDEX = ops.EXPIRE_INDEX

INDEXES = (CLAIM_INDEX, KEY_INDEX, LEASE_INDEX, EXPIRE_INDEX)

#: Index names a partitioned queue's counts walk, by the unpartitioned index's name.
_HINTS = {
    str(ops.CLAIM_INDEX.document["name"]): str(CLAIM_INDEX.document["name"]),
    str(ops.LEASE_INDEX.document["name"]): str(LEASE_INDEX.document["name"]),
    ops.TOTAL_HINT: ops.TOTAL_HINT,
}


def indexes(partitions: int) -> list[IndexModel]:
    """The indexes of a queue with ``partitions`` partitions."""
    return ops.indexes() if partitions == 1 else list(INDEXES)


# --------------------------------------------------------------------------- filters


def in_partition(query: Mapping[str, Any], partition: int) -> Doc:
    """``query`` narrowed to one partition, by equality (a targeted operation)."""
    return {PARTITION: partition, **query}


def across(query: Mapping[str, Any], partitions: int) -> Doc:
    """``query`` over every partition, as a ``$in`` the partitioned indexes serve:
    one seek per partition instead of a walk of the whole index."""
    if not query:
        return {}
    return {PARTITION: {"$in": list(range(partitions))}, **query}


def count_hint(query: Doc) -> str:
    """The index a count of ``query`` (a counting filter, before ``across``) walks."""
    return _HINTS[ops.count_hint(query)]


def probe_ranges(partitions: int, start: int) -> list[list[int]]:
    """The partitions a probe reads, in order: ``start..P-1``, then ``0..start-1``.

    Each is one ``$in`` read without sort, so the server returns the first due job
    of the lowest partition of the range: a random ``start`` spreads the consumers.
    """
    first = list(range(start, partitions))
    rest = list(range(start))
    return [r for r in (first, rest) if r]


def probe_filter(claim: Mapping[str, Any], candidates: list[int]) -> Doc:
    return {PARTITION: {"$in": candidates}, **claim}


# --------------------------------------------------------------------------- record


def meta_document(collection_name: str, partitions: int) -> Doc:
    """The record of a partitioned queue's count, inserted at its first use."""
    return {"_id": collection_name, "partitions": partitions}


def recorded_partitions(record: Mapping[str, Any] | None) -> int:
    """The count of partitions a record says (1: no record, an unpartitioned queue).

    For tools that open any queue (the CLI, the dashboard): they take the count
    the queue has instead of being told it.
    """
    if record is None:
        return 1
    return check_partitions(record.get("partitions"))


def check_record(collection_name: str, partitions: int, record: Mapping[str, Any] | None) -> None:
    """Refuse a queue whose ``partitions`` differs from the collection's recorded count."""
    recorded = 1 if record is None else record.get("partitions")
    if recorded != partitions:
        raise PartitionMismatch(
            f"queue {collection_name} was created with partitions={recorded} (recorded in "
            f"{META_COLLECTION}), this queue object was given partitions={partitions}; "
            f"configure every producer and consumer with partitions={recorded}, or migrate "
            "the queue to the new count (docs/guides/sharding.md, 'Changing the count')"
        )


def unpartitioned_jobs_error(collection_name: str, partitions: int) -> PartitionMismatch:
    return PartitionMismatch(
        f"queue {collection_name} holds jobs without a partition (an unpartitioned queue), "
        f"this queue object was given partitions={partitions}; use partitions=1, or migrate "
        "the queue (docs/guides/sharding.md, 'Changing the count')"
    )


#: Jobs of an unpartitioned queue (no ``partition`` field).
UNPARTITIONED = {PARTITION: {"$exists": False}}

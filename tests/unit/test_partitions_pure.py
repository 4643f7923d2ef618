"""The pure documents and decisions of partitioned queues (no server)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timezone

import pytest

from mongoqueue import MongoQueueError
from mongoqueue import operations as ops
from mongoqueue import partitions as parts


def test_the_hash_is_stable_across_processes_and_versions() -> None:
    # BLAKE2b-64 of "invoice-42": a fixed value, unlike Python's salted hash(). Every
    # producer in every version must agree, or deduplication stops being global.
    assert parts.stable_hash("invoice-42") == 0xE1D3A92C8D322BA9
    assert parts.partition_of_key("invoice-42", 64) == parts.stable_hash("invoice-42") % 64


def test_keys_map_to_one_partition_and_spread() -> None:
    counts = Counter(parts.partition_of_key(f"key-{n}", 16) for n in range(16_000))
    assert set(counts) == set(range(16))
    assert min(counts.values()) > 800  # roughly 1000 each
    assert parts.partition_of_key("k", 16) == parts.partition_of_key("k", 16)


def test_the_dealer_deals_round_robin_from_a_random_start() -> None:
    dealer = parts.Dealer(4, random.Random(1))
    dealt = [dealer.deal() for _ in range(8)]
    assert sorted(dealt[:4]) == [0, 1, 2, 3]
    assert dealt[:4] == dealt[4:]
    starts = {parts.Dealer(8, random.Random(seed)).deal() for seed in range(50)}
    assert len(starts) > 1


def test_every_index_but_the_ttl_one_starts_with_the_partition() -> None:
    for model in parts.indexes(8):
        keys = list(model.document["key"])
        if model.document.get("expireAfterSeconds") is not None:
            assert keys == ["expire_at"]
        else:
            assert keys[0] == "partition"
            assert model.document["name"].startswith("mongoqueue_p_")
    claim = parts.CLAIM_INDEX.document
    assert list(claim["key"].items()) == [
        ("partition", 1),
        *ops.CLAIM_INDEX.document["key"].items(),
    ]
    key = parts.KEY_INDEX.document
    assert key["unique"]
    assert key["partialFilterExpression"] == ops.KEY_INDEX.document["partialFilterExpression"]
    assert parts.indexes(1) == ops.indexes()  # unpartitioned: the original indexes


def test_filters_name_the_partition_by_equality() -> None:
    held = parts.in_partition(ops.held("id", "tok"), 3)
    assert held == {"partition": 3, "_id": "id", "lease_token": "tok"}
    assert next(iter(held)) == "partition"
    across = parts.across({"state": "failed"}, 3)
    assert across == {"partition": {"$in": [0, 1, 2]}, "state": "failed"}
    assert parts.across({}, 3) == {}  # the total walks _id_
    claim = ops.claim_filter(datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert parts.probe_filter(claim, [2, 3])["partition"] == {"$in": [2, 3]}


def test_count_hints_name_the_partitioned_indexes() -> None:
    assert parts.count_hint({"state": "ready"}) == "mongoqueue_p_claim"
    assert parts.count_hint(ops.held_filter()) == "mongoqueue_p_lease"
    assert parts.count_hint({}) == "_id_"


def test_probes_cover_every_partition_once_from_the_start() -> None:
    assert parts.probe_ranges(5, 2) == [[2, 3, 4], [0, 1]]
    assert parts.probe_ranges(5, 0) == [[0, 1, 2, 3, 4]]
    assert parts.probe_ranges(1, 0) == [[0]]


def test_home_partitions_differ_by_consumer() -> None:
    homes = {parts.home_partition(f"worker-{n}", 64) for n in range(32)}
    assert len(homes) > 16


def test_a_record_with_another_count_is_refused_with_what_to_do() -> None:
    parts.check_record("db.jobs", 8, {"_id": "jobs", "partitions": 8})
    parts.check_record("db.jobs", 1, None)
    with pytest.raises(MongoQueueError, match=r"partitions=8.*partitions=4.*migrate"):
        parts.check_record("db.jobs", 4, {"_id": "jobs", "partitions": 8})
    with pytest.raises(MongoQueueError, match=r"partitions=1.*given partitions=4"):
        parts.check_record("db.jobs", 4, None)
    assert parts.meta_document("jobs", 8) == {"_id": "jobs", "partitions": 8}


@pytest.mark.parametrize("bad", [0, -3, parts.MAX_PARTITIONS + 1])
def test_partition_counts_out_of_range(bad: int) -> None:
    with pytest.raises(MongoQueueError, match="between 1 and"):
        parts.check_partitions(bad)


@pytest.mark.parametrize("bad", ["8", 8.0, True, None])
def test_partition_counts_of_another_type(bad: object) -> None:
    with pytest.raises(MongoQueueError, match="must be an int"):
        parts.check_partitions(bad)

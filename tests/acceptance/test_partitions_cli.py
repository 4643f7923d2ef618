"""The CLI and the dashboard's queue discovery on a partitioned queue: they take
the count the queue recorded instead of being told it."""

from __future__ import annotations

import json

from bson import ObjectId

from mongoqueue import MongoQueue
from mongoqueue import partitions as parts
from mongoqueue.dashboard.app import find_queues


def test_the_cli_works_on_a_partitioned_queue(run_cli, collection) -> None:
    try:
        queue = MongoQueue(collection, "producer", partitions=4)
        queue.put({"n": 0})
        code, out, err = run_cli("put", '{"n": 1}', "--key", "k")
        assert code == 0, err
        put = collection.find_one({"_id": ObjectId(out.strip())})
        assert put["partition"] == parts.partition_of_key("k", 4)
        code, out, err = run_cli("stats", "--json")
        assert code == 0, err
        assert json.loads(out)["waiting"] == 2
        code, out, err = run_cli("cancel", str(put["_id"]))
        assert code == 0, err
        assert collection.count_documents({}) == 1
        assert collection.name in find_queues(collection.database)
    finally:
        collection.database[parts.META_COLLECTION].delete_one({"_id": collection.name})

"""``mongoqueue migrate`` and the other commands on a mongoqueue 0.7 collection."""

from __future__ import annotations

import json

from tests import legacy07


def test_commands_on_a_07_queue_say_to_migrate_and_migrate_converts_it(run_cli, collection) -> None:
    for n in range(3):
        legacy07.put(collection, {"n": n}, priority=n)
    legacy07.next_job(collection, "old")
    code, _, err = run_cli("stats")
    assert code == 1
    assert "holds 3 documents written by mongoqueue 0.7" in err
    assert "mongoqueue migrate" in err

    code, out, err = run_cli("migrate", "--dry-run", "--json")
    assert code == 0, err
    dry = json.loads(out)
    assert dry["dry_run"] is True
    assert dry["before"]["waiting"] == 2
    assert dry["before"]["running"] == 1
    assert collection.count_documents({"state": {"$exists": True}}) == 0  # nothing written

    code, out, err = run_cli("migrate", "--timeout", "60")
    assert code == 0, err
    assert "0.7 waiting" in out
    assert "current jobs" in out
    code, out, _ = run_cli("migrate", "--json")  # again: nothing left to do
    report = json.loads(out)
    assert report["converted"] == {"waiting": 0, "failed": 0, "running": 0}
    assert report["after"]["current"] == 3
    code, out, _ = run_cli("stats", "--json")
    assert code == 0
    assert json.loads(out)["total"] == 3


def test_migrate_refuses_documents_it_cannot_classify(run_cli, collection) -> None:
    legacy07.put(collection, {"n": 1})
    collection.insert_one({"something": "else"})
    code, _, err = run_cli("migrate")
    assert code == 1
    assert "refusing to migrate" in err
    assert "nothing was written" in err
    assert collection.count_documents({"state": {"$exists": True}}) == 0

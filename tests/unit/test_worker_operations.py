"""Operation documents added for the worker and the CLI."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from mongoqueue import InvalidArgument
from mongoqueue import operations as ops

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)


def test_heartbeat_extends_the_lease_and_keeps_the_progress_count() -> None:
    (stage,) = ops.heartbeat_update(30_000)
    fields = stage["$set"]
    assert set(fields) == {"lease_expires_at", "visible_at"}
    assert fields["lease_expires_at"] == fields["visible_at"]
    assert "$$NOW" in str(fields["visible_at"])
    assert "30000" in str(fields["visible_at"])


def test_heartbeat_is_fenced_like_every_held_operation() -> None:
    assert ops.held("id", "token") == {"_id": "id", "lease_token": "token"}


def test_state_filters() -> None:
    assert ops.state_filter("all", NOW) == {}
    assert ops.state_filter("failed", NOW) == {"state": "failed"}
    # Listings page in claim order on the claim index: every state filter names `state`.
    held = {"state": "ready", "lease_token": {"$type": "string"}}
    assert ops.state_filter("running", NOW) == held
    assert ops.state_filter("lease_expired", NOW) == {**held, "lease_expires_at": {"$lte": NOW}}
    assert ops.state_filter("completed", NOW) == {"state": "completed"}
    assert ops.state_filter("cancelled", NOW) == {"state": "cancelled"}
    waiting = ops.state_filter("waiting", NOW)
    delayed = ops.state_filter("delayed", NOW)
    assert waiting["visible_at"] == {"$lte": NOW}
    assert delayed["visible_at"] == {"$gt": NOW}
    for filt in (waiting, delayed):
        assert filt["state"] == "ready"
        assert filt["lease_token"] == {"$not": {"$type": "string"}}


def test_old_state_names_are_aliases() -> None:
    assert ops.state_filter("available", NOW) == ops.state_filter("waiting", NOW)
    assert ops.state_filter("locked", NOW) == ops.state_filter("running", NOW)
    assert ops.state_filter("expired", NOW) == ops.state_filter("lease_expired", NOW)
    assert ops.list_state("available") == "waiting"
    assert set(ops.LIST_STATES) == {*ops.COUNT_KEYS} - {"total"} | {"all"}


def test_unknown_state_is_an_error() -> None:
    with pytest.raises(InvalidArgument, match="one of waiting, delayed, running, lease_expired"):
        ops.state_filter("sideways", NOW)

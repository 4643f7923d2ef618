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
    assert ops.state_filter("running", NOW) == {
        "state": "ready",
        "lease_token": {"$type": "string"},
    }
    available = ops.state_filter("available", NOW)
    delayed = ops.state_filter("delayed", NOW)
    assert available["visible_at"] == {"$lte": NOW}
    assert delayed["visible_at"] == {"$gt": NOW}
    for filt in (available, delayed):
        assert filt["state"] == "ready"
        assert filt["lease_token"] == {"$not": {"$type": "string"}}


def test_unknown_state_is_an_error() -> None:
    with pytest.raises(InvalidArgument, match="one of waiting, delayed, running, lease_expired"):
        ops.state_filter("sideways", NOW)

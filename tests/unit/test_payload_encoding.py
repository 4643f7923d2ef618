"""encode_payload: the C encoder checks keys; a rejected payload still names its key."""

from __future__ import annotations

import bson
import pytest
from bson.raw_bson import RawBSONDocument

from mongoqueue.errors import InvalidPayload
from mongoqueue.validation import DEFAULT_MAX_DOCUMENT_BYTES, encode_payload


def encode(payload: object) -> RawBSONDocument:
    return encode_payload(payload, DEFAULT_MAX_DOCUMENT_BYTES)


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({"$set": 1}, "'$set' at the top level"),
        ({"a": {"$b": 1}}, "'$b' at a "),
        ({"a": [{"x.y": 1}]}, "'x.y' at a[0] "),
        ({"a": ({"$z": 1},)}, "'$z' at a[0] "),
        ({"a": [[{"b.c": 1}]]}, "'b.c' at a[0][0] "),
        ({"a\x00b": 1}, "'a\\x00b' at the top level"),
    ],
)
def test_bad_key_is_named(payload: dict[str, object], where: str) -> None:
    with pytest.raises(InvalidPayload, match="is not allowed") as info:
        encode(payload)
    assert where in str(info.value)


@pytest.mark.parametrize("payload", [{1: "x"}, {"a": {2: "y"}}])
def test_non_string_key_is_named(payload: dict[object, object]) -> None:
    with pytest.raises(InvalidPayload, match="is a int; MongoDB documents need string keys"):
        encode(payload)


def test_unencodable_value() -> None:
    with pytest.raises(InvalidPayload, match="cannot be stored as BSON"):
        encode({"a": object()})


def test_too_deep() -> None:
    payload: dict[str, object] = {}
    node = payload
    for _ in range(5_000):
        node["a"] = {}
        node = node["a"]  # type: ignore[assignment]
    with pytest.raises(InvalidPayload, match="nested too deeply"):
        encode(payload)


def test_good_payload_round_trips() -> None:
    payload = {"a": 1, "nested": {"b": [1, {"c": "d"}]}, "dollar$inside": True}
    assert bson.decode(encode(payload).raw) == payload


def test_raw_documents_are_stored_as_given() -> None:
    raw = RawBSONDocument(bson.encode({"a": 1}))
    assert encode(raw).raw == raw.raw
    nested = {"inner": RawBSONDocument(bson.encode({"$x": 1}))}
    assert bson.decode(encode(nested).raw) == {"inner": {"$x": 1}}


def test_depth_limit_holds_for_the_smallest_encodings() -> None:
    """The size shortcut never lets a too-deep payload through: empty keys, no values."""
    from mongoqueue.validation import MAX_PAYLOAD_DEPTH

    def nested(levels: int) -> dict[str, object]:
        doc: dict[str, object] = {}
        for _ in range(levels - 1):
            doc = {"": doc}
        return doc

    encode(nested(MAX_PAYLOAD_DEPTH))
    with pytest.raises(InvalidPayload, match="nested more than 98 levels"):
        encode(nested(MAX_PAYLOAD_DEPTH + 1))
    with pytest.raises(InvalidPayload, match="nested more than 98 levels"):
        encode({"a": [[nested(MAX_PAYLOAD_DEPTH - 2)]]})

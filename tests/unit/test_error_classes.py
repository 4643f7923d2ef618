"""Every driver error class is classified transient or permanent, and re-raised as ours.

The exceptions are pymongo's own, built with their real constructors (message,
code, server reply with ``errorLabels``), the way pymongo builds them from a reply.
"""

from __future__ import annotations

import pickle

import pytest
from pymongo import errors as pe

from mongoqueue import (
    InvalidArgument,
    MongoQueueError,
    OperationFailed,
    PayloadTooLarge,
    QueueUnavailable,
)
from mongoqueue.errors import PERMANENT, TRANSIENT, classify, driver_errors, from_driver


def failure(code: int, *labels: str, cls: type[pe.OperationFailure] = pe.OperationFailure):
    reply = {"ok": 0, "errmsg": f"error {code}", "code": code}
    if labels:
        reply["errorLabels"] = list(labels)
    return cls(f"error {code}", code, reply)


TRANSIENT_CASES = {
    "AutoReconnect": pe.AutoReconnect("connection closed"),
    "NetworkTimeout": pe.NetworkTimeout("timed out"),
    "ServerSelectionTimeoutError": pe.ServerSelectionTimeoutError("no servers"),
    "WaitQueueTimeoutError": pe.WaitQueueTimeoutError("pool full"),
    "NotPrimaryError": pe.NotPrimaryError("not primary", {"ok": 0, "code": 10107}),
    "ExecutionTimeout": pe.ExecutionTimeout("operation exceeded time limit", 50, {"code": 50}),
    "NotWritablePrimary 10107": failure(10107),
    "NotPrimaryNoSecondaryOk 13435": failure(13435),
    "NotPrimaryOrSecondary 13436": failure(13436),
    "InterruptedAtShutdown 11600": failure(11600),
    "InterruptedDueToReplStateChange 11602": failure(11602),
    "ShutdownInProgress 91": failure(91),
    "PrimarySteppedDown 189": failure(189),
    "HostNotFound 7": failure(7),
    "HostUnreachable 6": failure(6),
    "ExceededTimeLimit 262": failure(262),
    "MaxTimeMSExpired 50": failure(50),
    "RetryableWriteError label on any code": failure(12345, "RetryableWriteError"),
    "TransientTransactionError label": failure(112, "TransientTransactionError"),
    "SystemOverloadedError label": failure(462, "SystemOverloadedError", "RetryableError"),
    "WriteConcernError wtimeout 64": pe.WriteConcernError(
        "waiting for replication timed out",
        64,
        {"code": 64, "errmsg": "waiting for replication timed out", "errInfo": {"wtimeout": True}},
    ),
    "WTimeoutError": pe.WTimeoutError(
        "waiting for replication timed out", 64, {"code": 64, "errInfo": {"wtimeout": True}}
    ),
    "WriteConcernError shutdown 91": pe.WriteConcernError(
        "shutting down", 91, {"code": 91, "errmsg": "shutting down"}
    ),
    "WriteConcernError with errInfo.wtimeout, other code": pe.WriteConcernError(
        "timed out", 100000, {"code": 100000, "errInfo": {"wtimeout": True}}
    ),
}

PERMANENT_CASES = {
    "Unauthorized 13": failure(13),
    "BadValue 2": failure(2),
    "CommandNotFound 59": failure(59),
    "WriteError 121 (validation)": failure(121, cls=pe.WriteError),
    "DuplicateKeyError": failure(11000, cls=pe.DuplicateKeyError),
    "UnsatisfiableWriteConcern 100": pe.WriteConcernError(
        "Not enough data-bearing nodes", 100, {"code": 100, "errmsg": "Not enough nodes"}
    ),
    "CursorNotFound 43": failure(43, cls=pe.CursorNotFound),
    "NoWritesPerformed label alone": failure(2, "NoWritesPerformed"),
    "ConfigurationError": pe.ConfigurationError("bad option"),
    "InvalidOperation": pe.InvalidOperation("cannot use a closed client"),
    "ProtocolError": pe.ProtocolError("bad message"),
    "BulkWriteError": pe.BulkWriteError({"writeErrors": [{"code": 11000}], "nInserted": 0}),
}


@pytest.mark.parametrize("exc", TRANSIENT_CASES.values(), ids=TRANSIENT_CASES.keys())
def test_transient_errors_become_queue_unavailable(exc: pe.PyMongoError) -> None:
    assert classify(exc) == TRANSIENT
    with pytest.raises(QueueUnavailable) as caught, driver_errors():
        raise exc
    assert caught.value.__cause__ is exc
    assert isinstance(caught.value, MongoQueueError)
    assert type(exc).__name__ in str(caught.value)


@pytest.mark.parametrize("exc", PERMANENT_CASES.values(), ids=PERMANENT_CASES.keys())
def test_permanent_errors_become_operation_failed(exc: pe.PyMongoError) -> None:
    assert classify(exc) == PERMANENT
    with pytest.raises(OperationFailed) as caught, driver_errors():
        raise exc
    assert caught.value.__cause__ is exc
    assert not isinstance(caught.value, QueueUnavailable)


def test_code_and_labels_are_kept() -> None:
    error = from_driver(failure(91, "RetryableWriteError", "NoWritesPerformed"))
    assert isinstance(error, QueueUnavailable)
    assert error.code == 91
    assert error.labels == ("NoWritesPerformed", "RetryableWriteError")
    assert "code 91" in str(error)
    assert "full error" not in str(error)  # the driver's whole reply is left out
    permanent = from_driver(failure(13))
    assert isinstance(permanent, OperationFailed)
    assert (permanent.code, permanent.labels) == (13, ())
    network = from_driver(pe.AutoReconnect("connection closed"))
    assert (network.code, network.labels) == (None, ())


def test_the_precise_errors_stay_precise() -> None:
    assert isinstance(from_driver(pe.DocumentTooLarge("too big")), PayloadTooLarge)
    bad_name = from_driver(failure(73))
    assert isinstance(bad_name, InvalidArgument)
    assert "choose another name" in str(bad_name)


def test_a_timeout_the_driver_marks_as_such_is_transient() -> None:
    class Timeout(pe.PyMongoError):  # the shape of CSOT's timeouts: exc.timeout is True
        @property
        def timeout(self) -> bool:
            return True

    assert classify(Timeout("timed out")) == TRANSIENT


def test_non_driver_errors_are_not_ours_to_classify() -> None:
    assert classify(ValueError("x")) is None
    with pytest.raises(ValueError, match=r"^not a driver error$"), driver_errors():
        raise ValueError("not a driver error")


def test_every_driver_error_class_is_classified() -> None:
    """Each PyMongoError subclass pymongo defines gets an answer (no class left out)."""

    def subclasses(cls: type) -> set[type]:
        found = set(cls.__subclasses__())
        for sub in list(found):
            found |= subclasses(sub)
        return found

    for cls in subclasses(pe.PyMongoError) | {pe.PyMongoError}:
        if cls.__name__.startswith("_"):
            continue
        try:
            exc = cls("probe")
        except (TypeError, AttributeError):
            continue  # needs more arguments: built above with its real constructor
        assert classify(exc) in (TRANSIENT, PERMANENT)
        wrapped = from_driver(exc)
        assert isinstance(wrapped, MongoQueueError)
        pickle.loads(pickle.dumps(wrapped))  # our errors cross process boundaries

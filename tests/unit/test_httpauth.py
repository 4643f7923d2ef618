"""mongoqueue.httpauth without a server: header parsing, passwords, loopback, refusal."""

from __future__ import annotations

from base64 import b64encode

import pytest

from mongoqueue import InvalidArgument, MongoQueueError
from mongoqueue.httpauth import (
    AuthenticationRequired,
    BasicAuth,
    PortInUse,
    TrustedProxy,
    basic_credentials,
    is_loopback,
    read_password,
    require_auth,
)


def header(text: str) -> str:
    return "Basic " + b64encode(text.encode()).decode()


def test_basic_credentials() -> None:
    assert basic_credentials(header("ada:s3cr:et")) == ("ada", "s3cr:et")
    assert basic_credentials("basic " + b64encode(b"ada:x").decode()) == ("ada", "x")
    for bad in (None, "", "Bearer abc", "Basic !!!", header("no-colon"), "Basic " + "YQ"):
        assert basic_credentials(bad) is None, bad


def test_check_needs_both_user_and_password() -> None:
    auth = BasicAuth("pw", "ada")
    assert auth.check(header("ada:pw"))
    assert not auth.check(header("ada:pW"))
    assert not auth.check(header("bob:pw"))
    assert not auth.check(None)
    assert "pw" not in repr(auth)


def test_read_password(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MQ_TEST_PASSWORD", "from-env")
    assert read_password(env="MQ_TEST_PASSWORD") == "from-env"
    path = tmp_path / "password"
    path.write_text("from-file\n")
    assert read_password(file=path) == "from-file"
    monkeypatch.setenv("MQ_TEST_EMPTY", "")
    with pytest.raises(InvalidArgument, match="MQ_TEST_EMPTY is not set or empty"):
        read_password(env="MQ_TEST_EMPTY")
    with pytest.raises(InvalidArgument, match="cannot read the password file"):
        read_password(file=tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(InvalidArgument, match="is empty"):
        read_password(file=tmp_path / "empty")
    with pytest.raises(InvalidArgument):
        BasicAuth("")


def test_loopback() -> None:
    for host in ("127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "", "10.0.0.1", "192.0.2.7"):
        assert not is_loopback(host), host


def test_require_auth() -> None:
    require_auth("127.0.0.1", None, "x", "fix")
    require_auth("0.0.0.0", BasicAuth("pw"), "x", "fix")
    with pytest.raises(AuthenticationRequired, match=r"refusing to serve x on 0\.0\.0\.0.*fix"):
        require_auth("0.0.0.0", None, "x", "fix")
    assert issubclass(AuthenticationRequired, MongoQueueError)
    assert issubclass(PortInUse, MongoQueueError)


def test_trusted_proxy_addresses() -> None:
    proxy = TrustedProxy(("10.0.0.0/24", "::1"))
    assert proxy.trusts("10.0.0.7")
    assert proxy.trusts("::1")
    assert not proxy.trusts("10.0.1.7")
    assert not proxy.trusts(None)
    assert not proxy.trusts("testclient")
    with pytest.raises(InvalidArgument, match="--trusted-proxy"):
        TrustedProxy(("proxy.example",))

"""Who may look at the dashboard and the metrics: HTTP basic or a trusted proxy (no I/O).

Shared by the dashboard (extra ``dashboard``) and a worker's metrics server
(extra ``metrics``); it needs neither.

- :class:`BasicAuth`: a user name and a password, read by :func:`read_password`
  from an environment variable or a file (never from the command line, where
  ``ps`` would show it). Both are compared in constant time
  (:func:`hmac.compare_digest`).
- :class:`TrustedProxy`: an authenticating reverse proxy (oauth2-proxy, an
  ingress with SSO...) in front; requests must come from one of its addresses
  and carry the user name in a header the proxy sets (``X-Forwarded-User`` by
  default). Requests from any other address are refused, so the header cannot
  be forged by a client that reaches the port directly.

A server that would listen on anything but a loopback address refuses to start
without one of them (:func:`require_auth`).
"""

from __future__ import annotations

import base64
import binascii
import errno
import hmac
import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InvalidArgument, MongoQueueError

__all__ = [
    "DEFAULT_USER",
    "AuthenticationRequired",
    "BasicAuth",
    "PortInUse",
    "TrustedProxy",
    "basic_credentials",
    "bind",
    "is_loopback",
    "read_password",
    "require_auth",
]

#: The user name of HTTP basic authentication when none is given.
DEFAULT_USER = "mongoqueue"


class AuthenticationRequired(InvalidArgument):
    """A server would listen beyond loopback without an authentication setting."""


class PortInUse(MongoQueueError):
    """The address a server should listen on is already taken."""


@dataclass(frozen=True)
class BasicAuth:
    """HTTP basic authentication with one user name and password."""

    password: str = field(repr=False)
    user: str = DEFAULT_USER
    realm: str = "mongoqueue"

    def __post_init__(self) -> None:
        if not self.password:
            raise InvalidArgument("the password of HTTP basic authentication is empty")
        if not self.user or ":" in self.user:
            raise InvalidArgument(f"invalid user name {self.user!r}: not empty, no ':'")

    def check(self, authorization: str | None) -> bool:
        """True when an ``Authorization`` header carries this user and password."""
        given = basic_credentials(authorization)
        if given is None:
            return False
        user_ok = hmac.compare_digest(given[0].encode(), self.user.encode())
        password_ok = hmac.compare_digest(given[1].encode(), self.password.encode())
        return user_ok and password_ok

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` header of a 401 answer."""
        return f'Basic realm="{self.realm}", charset="UTF-8"'


@dataclass(frozen=True)
class TrustedProxy:
    """Requests authenticated by a reverse proxy at one of ``addresses``."""

    addresses: tuple[str, ...]
    user_header: str = "X-Forwarded-User"

    def __post_init__(self) -> None:
        if not self.addresses:
            raise InvalidArgument("a trusted proxy needs at least one address")
        for address in self.addresses:
            try:
                ipaddress.ip_network(address, strict=False)
            except ValueError:
                raise InvalidArgument(
                    f"--trusted-proxy takes an IP address or network, got {address!r}"
                ) from None

    def trusts(self, peer: str | None) -> bool:
        """True when the connection comes from one of the proxy's addresses."""
        if peer is None:
            return False
        try:
            ip = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(a, strict=False) for a in self.addresses)


Auth = BasicAuth | TrustedProxy


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """``(user, password)`` of a ``Basic`` Authorization header (RFC 7617), else None."""
    if not authorization:
        return None
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


def read_password(*, env: str | None = None, file: str | os.PathLike[str] | None = None) -> str:
    """The password in environment variable ``env`` or in ``file`` (one trailing newline cut)."""
    if (env is None) == (file is None):
        raise InvalidArgument("give the password's environment variable or its file (one)")
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise InvalidArgument(f"environment variable {env} is not set or empty")
        return value
    assert file is not None
    try:
        text = Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidArgument(f"cannot read the password file {file}: {exc.strerror}") from exc
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise InvalidArgument(f"the password file {file} is empty")
    return text


def is_loopback(host: str) -> bool:
    """True when every address ``host`` resolves to is a loopback address."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    if host == "":
        return False  # all interfaces
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def require_auth(host: str, auth: Auth | None, what: str, how: str) -> None:
    """Refuse to serve ``what`` beyond loopback without ``auth``; ``how`` says the fix."""
    if auth is None and not is_loopback(host):
        raise AuthenticationRequired(
            f"refusing to serve {what} on {host} without authentication: anyone who can reach "
            f"the port could use it. {how}"
        )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``; :class:`PortInUse` when it is taken."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise InvalidArgument(f"cannot listen on {host}: {exc}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"port {port} on {host} is already in use: stop what listens there or "
                "choose another port"
            ) from exc
        raise InvalidArgument(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.set_inheritable(True)
    return sock

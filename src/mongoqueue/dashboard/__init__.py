"""The web dashboard (extra ``dashboard``): ``mongoqueue dashboard`` or :func:`run`.

See :mod:`mongoqueue.dashboard.app` for the pages and actions. Two ways to serve it:

- on its own, with :func:`run` (what ``mongoqueue dashboard`` does): on loopback by
  default; on any other address only with ``auth`` (:class:`~mongoqueue.httpauth.BasicAuth`
  or :class:`~mongoqueue.httpauth.TrustedProxy`), else it raises
  :class:`~mongoqueue.httpauth.AuthenticationRequired`;
- inside your Starlette or FastAPI application, behind its own authentication:
  ``app.mount("/queues-admin", create_app(db))``.
"""

from __future__ import annotations

from typing import Any

try:
    import jinja2  # noqa: F401
    import prometheus_client  # noqa: F401
    import starlette  # noqa: F401
    import uvicorn
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "the dashboard needs the 'dashboard' extra: pip install 'mongoqueue[dashboard]'"
    ) from exc

from pymongo.database import Database

from ..httpauth import BasicAuth, TrustedProxy, bind, require_auth
from .app import create_app

__all__ = ["create_app", "run"]


def run(
    db: Database[Any],
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    allow_actions: bool = False,
    sample_interval: float = 5.0,
    window: float = 900.0,
    log_level: str = "info",
    auth: BasicAuth | TrustedProxy | None = None,
    root_path: str = "",
) -> None:
    """Serve the dashboard for the queues of ``db`` until interrupted.

    Raises :class:`~mongoqueue.httpauth.AuthenticationRequired` for a non-loopback
    ``host`` without ``auth``, and :class:`~mongoqueue.httpauth.PortInUse` when the
    port is taken. ``root_path`` is the path a proxy serves the dashboard under.
    """
    require_auth(
        host,
        auth,
        "the dashboard",
        "Set a password (--password-env VAR or --password-file PATH) or put it behind an "
        "authenticating proxy (--trusted-proxy ADDRESS).",
    )
    sock = bind(host, port)
    app = create_app(
        db,
        allow_actions=allow_actions,
        sample_interval=sample_interval,
        window=window,
        auth=auth,
    )
    config = uvicorn.Config(
        app,
        log_level=log_level,
        root_path=root_path,
        # The client address must be the TCP peer: a trusted proxy is recognised by it.
        proxy_headers=False,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()

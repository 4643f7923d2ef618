"""The web dashboard (extra ``dashboard``): ``mongoqueue dashboard`` or :func:`run`.

See :mod:`mongoqueue.dashboard.app` for the pages and actions.
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
) -> None:
    """Serve the dashboard for the queues of ``db`` until interrupted."""
    app = create_app(
        db, allow_actions=allow_actions, sample_interval=sample_interval, window=window
    )
    uvicorn.run(app, host=host, port=port, log_level=log_level)

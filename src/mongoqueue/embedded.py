"""An embedded MongoDB-compatible server for demos and tests (extra ``embedded``).

Starts SecantusDB (PyPI ``secantusdb``; MongoDB wire protocol over WiredTiger)
as a child process on a free port of 127.0.0.1, with its data in a directory of
yours or a temporary one. It prefers the fast Rust server ``secantusd-rs`` when
asked and installed (``MONGOQUEUE_SECANTUSD_RS`` may name its path), and falls
back to the Python server that the ``embedded`` extra installs.

Not for production: point mongoqueue at a real MongoDB there.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import pymongo
import pymongo.errors

from .errors import MongoQueueError

__all__ = ["EmbeddedServer", "EmbeddedServerError", "find_rust_server"]

START_TIMEOUT_SECONDS = 60.0


class EmbeddedServerError(MongoQueueError):
    """The embedded server could not be started."""


def find_rust_server() -> str | None:
    """Path of ``secantusd-rs``: ``$MONGOQUEUE_SECANTUSD_RS``, else on PATH, else None."""
    explicit = os.environ.get("MONGOQUEUE_SECANTUSD_RS")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("secantusd-rs")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedServer:
    """A SecantusDB server process; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        prefer_rust: bool = False,
        port: int | None = None,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._temp_dir: tempfile.TemporaryDirectory[str] | None = None
        self._rust = find_rust_server() if prefer_rust else None
        self.port = port
        self._log_path = Path(log_path) if log_path is not None else None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def kind(self) -> str:
        """``"rust"`` (secantusd-rs) or ``"python"`` (secantusd-py)."""
        return "rust" if self._rust else "python"

    @property
    def uri(self) -> str:
        if self.port is None:
            raise EmbeddedServerError("the embedded server has not been started")
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            raise EmbeddedServerError("the embedded server has not been started")
        return self._data_dir

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def _command(self, port: int, data_dir: Path) -> list[str]:
        args = ["--host", "127.0.0.1", "--port", str(port), "--storage-path", str(data_dir)]
        if self._rust:
            return [self._rust, *args]
        try:
            import secantus  # noqa: F401
        except ImportError as exc:
            raise EmbeddedServerError(
                "the embedded server needs the 'embedded' extra: pip install 'mongoqueue[embedded]'"
            ) from exc
        launcher = "import sys; from secantus.cli import main; sys.exit(main())"
        return [sys.executable, "-c", launcher, *args]

    def start(self) -> str:
        """Start the server and wait until it answers a ping; return its URI."""
        if self._process is not None:
            return self.uri
        if self._data_dir is None:
            self._temp_dir = tempfile.TemporaryDirectory(prefix="mongoqueue-embedded-")
            self._data_dir = Path(self._temp_dir.name)
        self._data_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = _free_port()
        log = self._log_path or (self._data_dir / "server.log")
        with open(log, "ab") as out:
            self._process = subprocess.Popen(
                self._command(self.port, self._data_dir),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self._data_dir,
            )
        self._wait_until_ready(log)
        return self.uri

    def _wait_until_ready(self, log: Path) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
            self.uri, serverSelectionTimeoutMS=250, connectTimeoutMS=250
        )
        try:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    tail = log.read_text(errors="replace")[-2000:]
                    raise EmbeddedServerError(
                        f"the embedded {self.kind} server exited with code "
                        f"{self._process.returncode}; its log ends:\n{tail}"
                    )
                try:
                    client.admin.command("ping")
                    return
                except pymongo.errors.ConnectionFailure:
                    time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise EmbeddedServerError(
            f"the embedded server did not answer within {START_TIMEOUT_SECONDS:.0f}s (log: {log})"
        )

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL with ``kill=True``); keep the data dir."""
        process, self._process = self._process, None
        if process is None:
            return
        if kill:
            process.kill()
        else:
            process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)

    def close(self) -> None:
        """Stop the server and delete a temporary data directory."""
        self.stop()
        if self._temp_dir is not None:
            self._temp_dir.cleanup()
            self._temp_dir = None
            self._data_dir = None

    def __enter__(self) -> EmbeddedServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

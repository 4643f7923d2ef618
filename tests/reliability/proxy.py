"""A small fault-injecting TCP proxy for the tests (127.0.0.1 only, threads, bounded).

``ChaosProxy(target_port)`` listens on a free port of 127.0.0.1 and forwards each
connection to the target. While it runs, a test can:

* ``cut()``: close every open connection at once, whatever is in flight;
* ``delay = seconds``: hold each chunk back by a random time up to that;
* ``swallow = True``: forward requests but drop the replies (a reply lost in a
  cut: the server did the work, the client never hears of it); ``cut()`` after;
* ``refuse = True``: accept new connections and close them at once;
* ``inject(command, reply, ...)``: answer matching commands with an error reply of
  the test's choosing (``{ok: 0, code: 91, errorLabels: [...]}``), without
  forwarding them (the server never sees them) or after forwarding them (the
  server did the work: a ``writeConcernError`` merged into its real reply).
  ``injected`` counts the replies rewritten.

The proxy reads the wire protocol's message frames (each starts with its
length), so a rewritten reply replaces exactly one message; only ``OP_MSG``
commands are matched (pymongo 4 sends nothing else without compression).

``dropped_replies`` counts connections cut while a request had been forwarded
and its reply not (wholly) returned: an upper bound of the operations whose
effect the client cannot know, such as a claim whose reply was lost.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import bson

OP_MSG = 2013

MAX_CONNECTIONS = 256
CHUNK = 65536


class _Link:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.in_flight = False  # request bytes forwarded, no reply bytes since
        self.closed = False
        self.buffers: dict[int, bytearray] = {id(client): bytearray(), id(server): bytearray()}
        #: request id -> reply fields to merge into the server's reply to it
        self.rewrite: dict[int, dict[str, Any]] = {}


@dataclass
class _Rule:
    command: str
    reply: dict[str, Any]
    times: int
    forward: bool
    when: Callable[[Mapping[str, Any]], bool] | None


def _frames(buffer: bytearray) -> list[bytes]:
    """Take the complete messages off the front of ``buffer``."""
    frames = []
    while len(buffer) >= 4:
        (length,) = struct.unpack_from("<i", buffer)
        if len(buffer) < length:
            break
        frames.append(bytes(buffer[:length]))
        del buffer[:length]
    return frames


def _command(frame: bytes) -> dict[str, Any] | None:
    """The body (section 0) of an OP_MSG, or None."""
    _, _, _, opcode = struct.unpack_from("<iiii", frame)
    if opcode != OP_MSG:
        return None
    offset = 20  # header, then flagBits
    while offset < len(frame):
        kind = frame[offset]
        offset += 1
        (size,) = struct.unpack_from("<i", frame, offset)
        if kind == 0:
            return bson.decode(frame[offset : offset + size])
        offset += size
    return None


def _op_msg(response_to: int, body: Mapping[str, Any]) -> bytes:
    payload = struct.pack("<I", 0) + b"\x00" + bson.encode(body)
    return (
        struct.pack(
            "<iiii", 16 + len(payload), 0x7AB0_0000 + response_to % 1000, response_to, OP_MSG
        )
        + payload
    )


class ChaosProxy:
    def __init__(self, target_port: int, *, seed: int = 0) -> None:
        self.target = ("127.0.0.1", target_port)
        self._rng = random.Random(seed)
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.delay = 0.0
        self.swallow = False
        self.refuse = False
        self.connections = 0
        self.cuts = 0
        self.dropped_replies = 0
        self.injected = 0
        self._rules: list[_Rule] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, name="chaos-proxy", daemon=True)
        self._acceptor.start()

    def uri(self, **options: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"directConnection": "true", **options}.items())
        return f"mongodb://127.0.0.1:{self.port}/?{query}"

    # ------------------------------------------------------------------ faults

    def cut(self) -> int:
        """Close every open connection; returns how many were cut."""
        with self._lock:
            links = list(self._links)
        for link in links:
            self._close(link, cut=True)
        return len(links)

    def inject(
        self,
        command: str,
        reply: Mapping[str, Any],
        *,
        times: int = 1,
        forward: bool = False,
        when: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> None:
        """Answer the next ``times`` commands named ``command`` (and matching ``when``,
        given the command's body) with ``reply``: instead of forwarding them, or
        (``forward=True``) merged into the server's own reply."""
        with self._lock:
            self._rules.append(_Rule(command, dict(reply), times, forward, when))

    def clear_injections(self) -> None:
        with self._lock:
            self._rules.clear()

    def _match(self, body: Mapping[str, Any]) -> _Rule | None:
        name = next(iter(body), None)
        with self._lock:
            for rule in self._rules:
                if (
                    rule.times > 0
                    and rule.command == name
                    and (rule.when is None or rule.when(body))
                ):
                    rule.times -= 1
                    self.injected += 1
                    return rule
        return None

    def _from_client(self, link: _Link, frame: bytes) -> None:
        body = _command(frame) if self._rules else None
        rule = None if body is None else self._match(body)
        (request_id,) = struct.unpack_from("<i", frame, 4)
        if rule is not None and not rule.forward:
            link.client.sendall(_op_msg(request_id, rule.reply))
            return
        if rule is not None:
            link.rewrite[request_id] = rule.reply
        link.in_flight = True
        link.server.sendall(frame)

    def _from_server(self, link: _Link, frame: bytes) -> None:
        (response_to,) = struct.unpack_from("<i", frame, 8)
        extra = link.rewrite.pop(response_to, None)
        if extra is not None:
            body = _command(frame)
            if body is not None:
                frame = _op_msg(response_to, {**body, **extra})
        if not self.swallow:
            link.in_flight = False
            link.client.sendall(frame)

    # ------------------------------------------------------------------ plumbing

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            with self._lock:
                full = len(self._links) >= MAX_CONNECTIONS
            if self.refuse or full:
                client.close()
                continue
            try:
                server = socket.create_connection(self.target, timeout=2)
            except OSError:
                client.close()
                continue
            link = _Link(client, server)
            with self._lock:
                if self._stopping.is_set():
                    client.close()
                    server.close()
                    return
                self._links.add(link)
                self.connections += 1
                # Finished pump threads are forgotten so the list stays bounded.
                self._threads = [t for t in self._threads if t.is_alive()]
                thread = threading.Thread(target=self._pump, args=(link,), daemon=True)
                self._threads.append(thread)
            thread.start()

    def _pump(self, link: _Link) -> None:
        selector = selectors.DefaultSelector()
        try:
            link.client.setblocking(True)
            link.server.setblocking(True)
            selector.register(link.client, selectors.EVENT_READ, link.server)
            selector.register(link.server, selectors.EVENT_READ, link.client)
            while not link.closed and not self._stopping.is_set():
                for key, _ in selector.select(timeout=0.2):
                    source: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = source.recv(CHUNK)
                    if not data:
                        self._close(link, cut=False)
                        return
                    if self.delay:
                        time.sleep(self._rng.uniform(0, self.delay))
                    buffer = link.buffers[id(source)]
                    buffer += data
                    for frame in _frames(buffer):
                        if source is link.client:
                            self._from_client(link, frame)
                        else:
                            self._from_server(link, frame)
        except OSError:
            pass
        finally:
            # Always close both ends (also when the proxy stops), or the sockets leak.
            self._close(link, cut=False)
            selector.close()

    def _close(self, link: _Link, *, cut: bool) -> None:
        with self._lock:
            if link.closed:
                return
            link.closed = True
            self._links.discard(link)
            if cut:
                self.cuts += 1
                if link.in_flight:
                    self.dropped_replies += 1
        for sock in (link.client, link.server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._stopping.set()
        self._listener.close()
        self.cut()
        self._acceptor.join(timeout=5)
        for thread in list(self._threads):
            thread.join(timeout=5)

    def __enter__(self) -> ChaosProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

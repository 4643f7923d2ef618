"""A small fault-injecting TCP proxy for the tests (127.0.0.1 only, threads, bounded).

``ChaosProxy(target_port)`` listens on a free port of 127.0.0.1 and forwards each
connection to the target. While it runs, a test can:

* ``cut()``: close every open connection at once, whatever is in flight;
* ``delay = seconds``: hold each chunk back by a random time up to that;
* ``swallow = True``: forward requests but drop the replies (a reply lost in a
  cut: the server did the work, the client never hears of it); ``cut()`` after;
* ``refuse = True``: accept new connections and close them at once.

``dropped_replies`` counts connections cut while a request had been forwarded
and its reply not (wholly) returned: an upper bound of the operations whose
effect the client cannot know, such as a claim whose reply was lost.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import threading
import time

MAX_CONNECTIONS = 256
CHUNK = 65536


class _Link:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.in_flight = False  # request bytes forwarded, no reply bytes since
        self.closed = False


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
                    if source is link.client:
                        link.in_flight = True
                        key.data.sendall(data)
                    elif not self.swallow:
                        link.in_flight = False
                        key.data.sendall(data)
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

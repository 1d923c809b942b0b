"""A fault-injecting TCP proxy on 127.0.0.1, put in front of moto or mlflow to fake a flaky network.

Each new connection gets the next fault from a queue, then the default behaviour once the queue is empty:
- "reset": accept and close at once with an RST (the peer sees "connection reset by peer");
- "delay": hold the connection `delay` seconds before relaying anything (a slow or overloaded server);
- "hang": accept and never answer (a blackholed endpoint: only the client's timeout ends it);
- "http503": read the request and answer `503 Service Unavailable` (a proxy or server in trouble);
- "relay": pass bytes both ways unchanged.
`cut()` also resets every live connection, so pooled keep-alive connections fail on their next use.
`down()` is the server gone, as a stopped process leaves it for a client: nothing listens on the port any more
(a new connection is refused, ECONNREFUSED) and every open connection is dropped; the port stays reserved
(bound, not listening) until `up()` listens on it again.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Literal

Fault = Literal["reset", "delay", "hang", "http503", "relay"]
_RESPONSE_503 = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class FaultProxy:
    def __init__(self, target_port: int, delay: float = 3.0) -> None:
        self.target = ("127.0.0.1", target_port)
        self.delay = delay
        self.default: Fault = "relay"
        self.queue: deque[Fault] = deque()
        self.seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.listening = False

    def __enter__(self) -> FaultProxy:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        _close(self._server)
        self.cut()

    def up(self) -> None:
        """Listen (again) on the same port."""
        if not self.listening:
            self._server.listen()
            self.listening = True
            threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def down(self) -> None:
        """The server gone: refuse new connections and reset the open ones (module docstring)."""
        listener, self.listening = self._server, False
        _close(listener)  # shutdown() wakes the accepting thread; the backlog's connections are reset
        self._server = socket.socket()  # bound again at once, never listening: a SYN gets an RST, no one else the port
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", self.port))
        self.cut()

    def fail_next(self, fault: Fault, count: int = 1) -> None:
        """Give the next `count` new connections this fault."""
        with self._lock:
            self.queue.extend([fault] * count)

    def set_default(self, fault: Fault) -> None:
        """What every connection gets once the queue is empty (e.g. "reset": the endpoint is down)."""
        with self._lock:
            self.queue.clear()
            self.default = fault

    def cut(self) -> None:
        """Reset every connection now open through the proxy."""
        with self._lock:
            live, self._live = self._live, set()
        for sock in live:
            _reset(sock)

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                fault = self.queue.popleft() if self.queue else self.default
                self.seen[fault] += 1
            threading.Thread(target=self._handle, args=(client, fault), daemon=True).start()

    def _handle(self, client: socket.socket, fault: Fault) -> None:
        if fault == "reset":
            _reset(client)
            return
        self._track(client)
        if fault == "hang":
            self._stop.wait()
            return
        if fault == "http503":
            with contextlib.suppress(OSError):
                client.recv(65536)
                client.sendall(_RESPONSE_503)
            _close(client)
            return
        if fault == "delay" and self._stop.wait(self.delay):
            return
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            _reset(client)
            return
        upstream.settimeout(None)
        for sock in (client, upstream):  # relay each write at once: Nagle would hold a request's second
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # segment for the peer's delayed ACK (40 ms)
        self._track(upstream)
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        _pump(client, upstream)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._live.add(sock)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            _close(sock)


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(every)

"""A raw HTTP/1.1 server for tests that must see what Envoy sends on the wire and when: it
records, per connection, the request head as soon as it arrives and the body bytes as they come
(UpstreamServer records a request only once it is complete). Behaviour per path prefix is chosen
by the test (answer, hold until released, reset mid-response)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Seen:
    """One request as it arrived: the head (request line and headers) and the body so far."""

    head: bytes = b""
    body: bytearray = field(default_factory=bytearray)
    complete: threading.Event = field(default_factory=threading.Event)
    closed: threading.Event = field(default_factory=threading.Event)

    @property
    def path(self) -> str:
        return self.head.split(b" ", 2)[1].decode() if self.head else ""

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.lower().encode():
                return value.strip().decode("latin-1")
        return None


# What to do with a complete request: return the response bytes, or None to close without one.
Behaviour = Callable[[Seen], bytes | None]


def respond(status: int = 200, body: bytes = b"ok", headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status} X", f"content-length: {len(body)}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class WireServer:
    def __init__(self, behaviour: Behaviour | None = None) -> None:
        self.behaviour = behaviour or (lambda seen: respond(200, b"upstream " + seen.path.encode()))
        self.seen: list[Seen] = []
        self.arrived = threading.Condition()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def __enter__(self) -> WireServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._sock.close()

    def wait_for(self, predicate: Callable[[list[Seen]], Seen | None], timeout: float = 10.0) -> Seen:
        with self.arrived:
            found = predicate(self.seen)
            if found is None:
                self.arrived.wait_for(lambda: predicate(self.seen) is not None, timeout)
                found = predicate(self.seen)
        if found is None:
            raise AssertionError(f"nothing matched; seen: {[s.head[:60] for s in self.seen]}")
        return found

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                seen = Seen(head)
                with self.arrived:
                    self.seen.append(seen)
                    self.arrived.notify_all()
                length = int(seen.header("content-length") or 0)
                seen.body += buffer[:length]
                buffer = buffer[length:]
                try:
                    while len(seen.body) < length:
                        data = conn.recv(65536)
                        if not data:
                            break
                        take = data[: length - len(seen.body)]
                        seen.body += take
                        buffer = data[len(take) :]
                        with self.arrived:
                            self.arrived.notify_all()
                except OSError:
                    pass
                if len(seen.body) < length:
                    seen.closed.set()
                    with self.arrived:
                        self.arrived.notify_all()
                    return
                seen.complete.set()
                with self.arrived:
                    self.arrived.notify_all()
                answer = self.behaviour(seen)
                if answer is None:
                    return
                try:
                    conn.sendall(answer)
                except OSError:
                    return

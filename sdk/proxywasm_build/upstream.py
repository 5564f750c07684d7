"""A tiny recording HTTP/1.1 server on 127.0.0.1, used as Envoy's upstream and as an http_call target.

Every request is recorded (method, path, headers, body). The answer is chosen by a responder
callable; the default echoes the request as JSON so a client behind Envoy can see what the
upstream received.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

__all__ = ["RecordedRequest", "Response", "UpstreamServer", "echo_response"]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the upstream saw it. Header names are kept as sent (Envoy sends lower case)."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """First value of header `name` (case-insensitive), or None."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """All values of header `name` (case-insensitive), in order."""
        lname = name.lower()
        return [value for key, value in self.headers if key.lower() == lname]

    def to_json(self) -> dict[str, object]:
        """JSON-able form, as used by the echo response."""
        return {
            "method": self.method,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers],
            "body": self.body.decode("utf-8", "replace"),
        }


@dataclass(frozen=True)
class Response:
    """What the upstream answers. `content-length` is set from the body, unless `chunked` (then the
    body is one chunk followed by `trailers`). `delay_s` waits before answering; `reset` closes the
    connection without an answer."""

    status: int = 200
    body: bytes = b""
    headers: Sequence[tuple[str, str]] = field(default_factory=tuple)
    chunked: bool = False
    trailers: Sequence[tuple[str, str]] = field(default_factory=tuple)
    delay_s: float = 0.0
    reset: bool = False


Responder = Callable[[RecordedRequest], Response]


def echo_response(request: RecordedRequest) -> Response:
    """Default responder: 200 with the recorded request as a JSON document."""
    body = json.dumps(request.to_json(), sort_keys=True).encode()
    return Response(200, body, (("content-type", "application/json"),))


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so Envoy's connection pool can keep connections alive.
    protocol_version = "HTTP/1.1"
    server: _Server

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline().split(b";")[0].strip()
                size = int(size_line or b"0", 16)
                if size == 0:
                    # Trailers (ignored) end with an empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers=tuple((k, v) for k, v in self.headers.items()),
            body=self._read_body(),
        )
        owner = self.server.owner
        owner._record(request)
        response = owner.responder(request)
        if response.delay_s:
            time.sleep(response.delay_s)
        if response.reset:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(response.status)
        for key, value in response.headers:
            if key.lower() not in ("content-length", "transfer-encoding"):
                self.send_header(key, value)
        if response.chunked:
            self.send_header("transfer-encoding", "chunked")
        elif response.status not in (204, 304):
            self.send_header("content-length", str(len(response.body)))
        self.end_headers()
        if self.command == "HEAD" or response.status in (204, 304):
            return
        if response.chunked:
            if response.body:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(response.body), response.body))
            trailer = "".join(f"{k}: {v}\r\n" for k, v in response.trailers)
            self.wfile.write(b"0\r\n" + trailer.encode("latin-1") + b"\r\n")
        else:
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

    def log_message(self, format: str, *args: object) -> None:
        """Silence the default stderr access log."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: UpstreamServer

    def handle_error(self, request: object, client_address: object) -> None:
        """Envoy resets an upstream stream it no longer needs (a local reply, a body too large):
        that is not an error of this server, so no traceback; anything else is printed as usual."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class UpstreamServer:
    """Threaded recording HTTP server bound to 127.0.0.1:<free port>.

    Use as a context manager. `routes` maps an exact path (without query) to a fixed Response;
    other paths go to `responder` (default: `echo_response`).
    """

    def __init__(
        self,
        responder: Responder | None = None,
        routes: Mapping[str, Response] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self._fallback: Responder = responder or echo_response
        self.routes: dict[str, Response] = dict(routes or {})
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Condition()
        self._server = _Server((host, 0), _Handler)
        self._server.owner = self
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound TCP port."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. http://127.0.0.1:12345."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of all requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        """Forget recorded requests."""
        with self._lock:
            self._requests.clear()

    def responder(self, request: RecordedRequest) -> Response:
        """Pick the response for `request`: a fixed route if one matches, else the fallback."""
        route = self.routes.get(request.path.split("?", 1)[0])
        return route if route is not None else self._fallback(request)

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Block until at least `count` requests were recorded; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"upstream saw {len(self._requests)} requests, wanted {count}")
                self._lock.wait(remaining)
            return list(self._requests)

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()

    def start(self) -> UpstreamServer:
        """Serve in a daemon thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._server.serve_forever, name="upstream", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> UpstreamServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

"""Helpers for the example tests: HTTP requests on fresh connections and wasm log messages."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http.client import HTTPConnection
from typing import TypeVar

from proxywasm_build.envoy import Envoy

T = TypeVar("T")


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def http(
    envoy: Envoy,
    path: str = "/",
    *,
    method: str = "GET",
    headers: Mapping[str, str] | Sequence[tuple[str, str]] = (),
    body: bytes | None = None,
    listener: str = "main",
    chunks: Sequence[bytes] | None = None,
    timeout: float = 15.0,
) -> Reply:
    """One request on a new connection to ``listener``; ``chunks`` sends a chunked body."""
    conn = HTTPConnection("127.0.0.1", envoy.port(listener), timeout=timeout)
    try:
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        if chunks is not None:
            conn.putrequest(method, path)
            for key, value in [*pairs, ("transfer-encoding", "chunked")]:
                conn.putheader(key, value)
            conn.endheaders()
            for chunk in chunks:
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        else:
            conn.request(method, path, body=body, headers=dict(pairs))
        response = conn.getresponse()
        return Reply(response.status, response.getheaders(), response.read())
    finally:
        conn.close()


_WASM_PREFIX = re.compile(r"^wasm log[^:]*: ")


def wasm_messages(envoy: Envoy) -> list[tuple[int, str]]:
    """(thread, message) of every line the wasm modules logged, in order."""
    return [(line.thread, _WASM_PREFIX.sub("", line.message)) for line in envoy.iter_wasm_messages()]


def wait_until(check: Callable[[], T], timeout_s: float = 10.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy (returned); fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s}s (last: {value!r})")
        time.sleep(0.05)


def wait_for_log_since(envoy: Envoy, offset: int, pattern: str, timeout_s: float = 10.0) -> str:
    """Wait until ``pattern`` appears in the log after character ``offset``; returns that text."""
    regex = re.compile(pattern)
    return wait_until(
        lambda: (lambda text: text if regex.search(text) else "")(envoy.log_since(offset)),
        timeout_s,
        f"log pattern {pattern!r}",
    )

"""Differential testing: one scenario, two drivers (real Envoy and proxywasm_host), one Outcome each.

A :class:`Plugin` says what is loaded (module, root id, configuration, callout clusters); a list of
:class:`Call` says what the client sends and what the upstream answers. :class:`EnvoyDriver` runs the
calls through a real Envoy in front of a recording upstream; :class:`HostDriver` runs them through
``Host.request`` with an upstream handler that answers byte for byte what the recording upstream
sends. Both produce an :class:`Outcome` in the same normalised form, and :func:`assert_same` shows a
unified diff when they differ. Real Envoy is the reference.
"""

from __future__ import annotations

import difflib
import http.client
import re
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from proxywasm_build.envoy import (
    Cluster,
    Envoy,
    FailurePolicy,
    WasmPlugin,
    free_port,
    http_bootstrap,
    parse_log,
)
from proxywasm_build.upstream import RecordedRequest, Response, UpstreamServer
from proxywasm_host import RESET, SLOW, UNREACHABLE, Host, Request, Route
from proxywasm_host import Response as HostResponse

Pairs = tuple[tuple[str, str], ...]

AUTHORITY = "example.com"
# The bootstrap node of the differential Envoy: what the host shows by default.
NODE = {"id": "proxywasm-host", "cluster": "proxywasm-host"}
# What http.server's send_response() puts before the responder's headers (Envoy passes both on).
UPSTREAM_SERVER = f"{BaseHTTPRequestHandler.server_version} {BaseHTTPRequestHandler.sys_version}"
UPSTREAM_DATE = "Sun, 29 Nov 2026 00:00:00 GMT"

# Headers whose values differ on every request: compared by name and position only.
MASKED_HEADERS = frozenset({"date", "x-request-id", "x-envoy-upstream-service-time"})
# The same values where a filter copies them into a log line or a header value.
_VOLATILE = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT"), "<date>"),
    (re.compile(r"(x-envoy-upstream-service-time\W+)\d+"), r"\1<ms>"),
]
_LEVELS = ["trace", "debug", "info", "warning", "error", "critical"]
_WASM_LOG = re.compile(r"^wasm log[^:]*: ", re.DOTALL)


def scrub(text: str) -> str:
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text


@dataclass(frozen=True)
class Reply:
    """What an upstream (the route's, or a callout cluster's) answers. ``chunked`` frames the body
    by chunks (with ``trailers``); ``delay_s`` answers late; ``reset`` closes the connection instead."""

    status: int = 200
    headers: Pairs = (("content-type", "text/plain"),)
    body: bytes = b"hello from upstream\n"
    chunked: bool = False
    trailers: Pairs = ()
    delay_s: float = 0.0
    reset: bool = False

    def wire_headers(self, method: str = "GET") -> list[tuple[str, str]]:
        """Headers as the recording upstream sends them: server, date, ours, then the framing."""
        pairs = [("server", UPSTREAM_SERVER), ("date", UPSTREAM_DATE)]
        pairs += [(k, v) for k, v in self.headers if k.lower() not in ("content-length", "transfer-encoding")]
        if self.chunked:
            return [*pairs, ("transfer-encoding", "chunked")]
        if self.status in (204, 304):
            return pairs
        return [*pairs, ("content-length", str(len(self.body)))]

    def for_host(self, method: str = "GET") -> HostResponse:
        """This reply as the host's upstream handler gives it."""
        body = b"" if method == "HEAD" else self.body
        return HostResponse(self.status, self.wire_headers(method), body, list(self.trailers))


@dataclass(frozen=True)
class Call:
    """One client request (sent as written, after ``host: example.com``) and the upstream's answer.
    ``chunked`` sends the body by chunks, with ``trailers``; ``wait_ms`` lets that much time pass
    first (Envoy: a sleep; the host: its clock)."""

    method: str = "GET"
    path: str = "/"
    headers: Pairs = ()
    body: bytes | None = None
    upstream: Reply = field(default_factory=Reply)
    chunked: bool = False
    trailers: Pairs = ()
    wait_ms: int = 0


@dataclass(frozen=True)
class Plugin:
    """One Wasm plugin on the HTTP listener, and the clusters it may call (answered with a fixed Reply)."""

    module: Path
    root_id: str = ""
    name: str = "plugin"
    vm_id: str = "vm"
    config: str | bytes | None = None
    vm_config: str | None = None
    failure_policy: FailurePolicy | None = None
    clusters: Mapping[str, Reply] = field(default_factory=dict)
    unreachable: tuple[str, ...] = ()  # clusters no host of which can be reached
    log_level: str = "info"
    allow_on_headers_stop_iteration: bool | None = None
    reload_backoff_ms: int | None = None
    buffer_limit: int | None = None  # the listener's per_connection_buffer_limit_bytes
    request_trailers: bool = False  # HTTP/1 enable_trailers
    workers: int | None = None  # Envoy's --concurrency and the host's workers (default: 1 and 0)
    routes: tuple[Route, ...] = ()  # before the catch-all route to the upstream


@dataclass
class Seen:
    """A request as an upstream received it (wire form: host header, no pseudo-headers)."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool = True  # False: the stream ended after the headers went up, before the whole body


@dataclass
class Exchange:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    upstream: Seen | None  # None: the upstream was never called
    callouts: list[tuple[str, Seen]]


@dataclass
class Outcome:
    exchanges: list[Exchange]
    logs: list[tuple[str, str]]  # (Envoy level name, message)
    metrics: dict[str, int]  # wasmcustom counters and gauges, cumulative for the plugin

    def render(self) -> list[str]:
        out: list[str] = []
        for i, ex in enumerate(self.exchanges):
            out.append(f"request #{i}: status {ex.status}")
            out += [f"  response header {k}: {v}" for k, v in ex.headers]
            out.append(f"  response body {ex.body!r}")
            if ex.upstream is None or not ex.upstream.complete:
                # Whether Envoy's upstream sees the headers of a request the stream ended early is a race
                # between its upstream connection and the local reply or reset: both count as one outcome.
                out.append("  upstream: not called, or reset before the request was whole")
            else:
                out += _render_seen("upstream", ex.upstream)
            # Callouts in flight together reach their clusters over separate connections, in no fixed order.
            for cluster, seen in sorted(ex.callouts, key=lambda c: (c[0], c[1].path, c[1].method)):
                out += _render_seen(f"callout {cluster}", seen)
        out += [f"log [{level}] {msg}" for level, msg in self.logs]
        out += [f"metric {k} = {v}" for k, v in sorted(self.metrics.items())]
        return out


def _render_seen(what: str, seen: Seen) -> list[str]:
    lines = [f"  {what}: {seen.method} {seen.path}"]
    lines += [f"    header {k}: {v}" for k, v in seen.headers]
    return [*lines, f"    body {seen.body!r}"]


def normalise_headers(pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k.lower(), "<masked>" if k.lower() in MASKED_HEADERS else scrub(v)) for k, v in pairs]


def assert_same(envoy: Outcome, host: Outcome) -> None:
    """Fail with a unified diff (Envoy is the reference) when the outcomes differ."""
    want, got = envoy.render(), host.render()
    if want != got:
        diff = "\n".join(difflib.unified_diff(want, got, "real envoy", "proxywasm_host", lineterm="", n=2))
        raise AssertionError(f"host differs from Envoy:\n{diff}")


# -- real Envoy ---------------------------------------------------------------------------------------
class EnvoyDriver:
    """One Envoy with one plugin in front of a recording upstream (plus one per callout cluster)."""

    def __init__(self, plugin: Plugin) -> None:
        self.plugin = plugin
        self.current = Reply()
        self.upstream = UpstreamServer(responder=lambda _req: _as_response(self.current)).start()
        self.cluster_servers: dict[str, UpstreamServer] = {}
        for name, reply in plugin.clusters.items():
            self.cluster_servers[name] = UpstreamServer(responder=lambda _req, r=reply: _as_response(r)).start()
        wasm = WasmPlugin(
            plugin.module,
            name=plugin.name,
            root_id=plugin.root_id,
            vm_id=plugin.vm_id,
            configuration=plugin.config,
            vm_configuration=plugin.vm_config,
            failure_policy=plugin.failure_policy,
            allow_on_headers_stop_iteration=plugin.allow_on_headers_stop_iteration,
            reload_backoff_ms=plugin.reload_backoff_ms,
        )
        clusters = [Cluster(name, server.port) for name, server in self.cluster_servers.items()]
        clusters += [Cluster(name, free_port(), connect_timeout_s=0.5) for name in plugin.unreachable]
        config = http_bootstrap(
            upstream_port=self.upstream.port, plugins=[wasm], clusters=clusters, node=NODE,
            buffer_limit_bytes=plugin.buffer_limit, request_trailers=plugin.request_trailers,
            routes=[_envoy_route(route) for route in plugin.routes],
        )  # fmt: skip
        self.envoy = Envoy(config, concurrency=plugin.workers or 1, component_log_levels={"wasm": plugin.log_level})
        try:
            self.envoy.start()
        except Exception:
            self.close()
            raise
        self.startup_logs = _wasm_lines(self._settled_log())

    def close(self) -> None:
        self.envoy.stop()
        for server in [self.upstream, *self.cluster_servers.values()]:
            server.stop()

    def _settled_log(self) -> str:
        # Envoy flushes its log file every 50 ms and destroys streams (on_log, on_done) after the
        # reply went out: wait until the file stops growing. A sync point, not an assertion.
        text: str = self.envoy.logs()
        stable_since = time.monotonic()
        while time.monotonic() - stable_since < 0.25:
            time.sleep(0.05)
            now = self.envoy.logs()
            if now != text:
                text, stable_since = now, time.monotonic()
        return text

    def run(self, calls: Sequence[Call]) -> Outcome:
        offset = len(self._settled_log())
        exchanges = [self._one(call) for call in calls]
        logs = _wasm_lines(self._settled_log()[offset:])
        metrics = {k.removeprefix("wasmcustom."): v for k, v in self.envoy.stats(r"^wasmcustom\.").items()}
        return Outcome(exchanges, logs, metrics)

    def _one(self, call: Call) -> Exchange:
        if call.wait_ms:
            time.sleep(call.wait_ms / 1000)
        self.current = call.upstream
        for server in [self.upstream, *self.cluster_servers.values()]:
            server.clear()
        with socket.create_connection(("127.0.0.1", self.envoy.port()), timeout=15) as sock:
            sock.sendall(raw_request(call))
            response = http.client.HTTPResponse(sock, method=call.method)
            try:
                response.begin()
                body = response.read()
                status, headers = response.status, response.getheaders()
            except (http.client.HTTPException, ConnectionError):
                # The stream was reset before the client had a whole response (the host: status 0).
                status, headers, body = 0, [], b""
        seen = self.upstream.requests
        callouts = [(name, _seen(r)) for name, server in self.cluster_servers.items() for r in server.requests]
        return Exchange(status, normalise_headers(headers), body, _seen(seen[0]) if seen else None, callouts)


def _envoy_route(route: Route) -> dict[str, Any]:
    entry: dict[str, Any] = {"match": {"prefix": route.prefix}, "route": {"cluster": "upstream"}}
    if route.name:
        entry["name"] = route.name
    if route.metadata:
        entry["metadata"] = {"filter_metadata": {k: dict(v) for k, v in route.metadata.items()}}
    return entry


def raw_request(call: Call) -> bytes:
    """The request bytes, in one write so Envoy reads it at once, as host.request() delivers it:
    headers exactly in the scenario's order, then the framing last (as the host adds it)."""
    head = [f"{call.method} {call.path} HTTP/1.1", f"host: {AUTHORITY}"]
    head += [f"{k}: {v}" for k, v in call.headers]
    body = call.body or b""
    if call.chunked or call.trailers:
        head.append("transfer-encoding: chunked")
        trailer = "".join(f"{k}: {v}\r\n" for k, v in call.trailers).encode("latin-1")
        body = (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n" + trailer + b"\r\n"
    elif call.body:
        head.append(f"content-length: {len(call.body)}")
    return "\r\n".join([*head, "", ""]).encode("latin-1") + body


def _wasm_lines(text: str) -> list[tuple[str, str]]:
    """The filter's own lines (``wasm log <plugin> <root_id> <vm_id>: msg``), without the prefix."""
    lines = parse_log(text)
    return [(ln.level, scrub(_WASM_LOG.sub("", ln.message))) for ln in lines if _WASM_LOG.match(ln.message)]


def _as_response(reply: Reply) -> Response:
    return Response(reply.status, reply.body, reply.headers, reply.chunked, reply.trailers, reply.delay_s, reply.reset)


def _seen(request: RecordedRequest) -> Seen:
    length = request.header("content-length")
    complete = length is None or not length.isdigit() or len(request.body) == int(length)
    return Seen(request.method, request.path, normalise_headers(request.headers), request.body, complete)


# -- local host ---------------------------------------------------------------------------------------
class HostDriver:
    """The same plugin in proxywasm_host; upstream and callouts answered like the recording servers."""

    def __init__(self, plugin: Plugin, **load_options: Any) -> None:
        self.plugin = plugin
        self.level = _LEVELS.index(plugin.log_level)
        self.callouts: list[tuple[str, Seen]] = []
        clusters: dict[str, Any] = {name: self._cluster_handler(name, reply) for name, reply in plugin.clusters.items()}
        clusters.update({name: UNREACHABLE for name in plugin.unreachable})  # refuses every connection
        options: dict[str, Any] = {"failure_policy": plugin.failure_policy or "FAIL_CLOSED"}
        if plugin.reload_backoff_ms is not None:
            options["reload_backoff_ms"] = plugin.reload_backoff_ms
        if plugin.buffer_limit is not None:
            options["buffer_limit"] = plugin.buffer_limit
        if plugin.workers is not None:
            options["workers"] = plugin.workers
        self.host = Host.load(
            plugin.module,
            root_id=plugin.root_id,
            plugin_name=plugin.name,
            vm_id=plugin.vm_id,
            plugin_config=plugin.config or b"",
            vm_config=plugin.vm_config or b"",
            log_level=self.level,
            clusters=clusters,
            allow_on_headers_stop_iteration=bool(plugin.allow_on_headers_stop_iteration),
            request_trailers=plugin.request_trailers,
            routes=plugin.routes,
            raise_on_mistake=False,  # Envoy only logs them: the logs are compared
            **{**options, **load_options},
        )
        self.startup_logs = [(_LEVELS[lvl], scrub(msg)) for lvl, msg in self.host.logs if lvl >= self.level]

    def _cluster_handler(self, name: str, reply: Reply) -> Any:
        def handle(request: Request) -> Any:
            self.callouts.append((name, _host_seen(request)))
            if reply.reset:
                return RESET
            timeout = request.header("x-envoy-expected-rq-timeout-ms")
            if reply.delay_s and timeout is not None and reply.delay_s * 1000 >= int(timeout):
                return SLOW
            return reply.for_host(request.method)

        return handle

    def run(self, calls: Sequence[Call]) -> Outcome:
        offset = len(self.host.logs)
        exchanges = [self._one(call) for call in calls]
        logs = [(_LEVELS[lvl], scrub(msg)) for lvl, msg in self.host.logs[offset:] if lvl >= self.level]
        envoy = self.host.envoy
        metrics = {**envoy.counters, **envoy.gauges}
        return Outcome(exchanges, logs, metrics)

    def _one(self, call: Call) -> Exchange:
        if call.wait_ms:
            self.host.advance_time(call.wait_ms)
        self.callouts = []
        reply = call.upstream

        def upstream(request: Request) -> HostResponse:
            return reply.for_host(request.method)

        headers = list(call.headers)
        if call.chunked or call.trailers:
            headers.append(("transfer-encoding", "chunked"))
        trailers = list(call.trailers) if call.trailers else None
        resp = self.host.request(call.method, call.path, headers=headers, body=call.body, upstream=upstream,
                                 trailers=trailers, authority=AUTHORITY)  # fmt: skip
        seen = _host_seen(resp.upstream_request) if resp.upstream_request is not None else None
        return Exchange(resp.status, normalise_headers(resp.headers), resp.body, seen, self.callouts)


def _host_seen(request: Request) -> Seen:
    # On the wire HTTP/1 carries :authority as host (in its place) and the rest in the request line.
    headers = [("host" if k == ":authority" else k, v) for k, v in request.headers if k not in _REQUEST_LINE]
    return Seen(request.method, request.path, normalise_headers(headers), request.body, request.complete)


_REQUEST_LINE = frozenset({":method", ":path", ":scheme"})


def check(pair: tuple[EnvoyDriver, HostDriver], *calls: Call) -> None:
    """Run ``calls`` through both and require the same outcome."""
    envoy, host = pair
    assert_same(envoy.run(calls), host.run(calls))


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@contextmanager
def drivers(plugin: Plugin, **load_options: Any) -> Iterator[tuple[EnvoyDriver, HostDriver]]:
    """The plugin in a real Envoy and in the host (``Host.load`` options), one Envoy per plugin."""
    host = HostDriver(plugin, **load_options)
    envoy = EnvoyDriver(plugin)
    try:
        yield envoy, host
    finally:
        envoy.close()

"""telemetry: request metrics with Prometheus labels, W3C trace context, and an access-log line.

- ``telemetry_requests_total{method, route, status_class}`` and the histogram
  ``telemetry_request_duration_ms{route}`` (from the request headers to the end of the stream).
- ``traceparent`` (W3C Trace Context, version 00): a valid one is kept (same trace id and flags)
  with a new span id for this hop; an invalid or missing one starts a new trace (random trace and
  span ids) and drops ``tracestate``.
- One line per request at info level: method, path, status, duration, route, ``x-request-id``,
  trace and span ids.

Label values are bounded: methods outside the standard set count as ``OTHER``, routes are Envoy's
route names (``xds.route_name``, from the configuration), statuses are classes. See README.md.
"""

from __future__ import annotations

import os

import proxywasm
from proxywasm import Action, ConfigError, Counter, Histogram, HttpContext, PluginContext, log, properties

TYPE_CHECKING = False  # typing is not imported at run time: it would cost memory in every VM
if TYPE_CHECKING:
    from typing import Any

    from proxywasm import Headers
    from proxywasm.config import Config

# Declared at module level, so `proxywasm build` writes the stats_tags that make these labels.
requests_total = Counter("telemetry_requests_total", labels=("method", "route", "status_class"))
duration_ms = Histogram("telemetry_request_duration_ms", labels=("route",))

METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"))
_HEX = frozenset("0123456789abcdef")
NS_PER_MS = 1_000_000


def random_hex(nbytes: int) -> str:
    """Random, never all zeros (W3C forbids an all-zero trace or span id). os.urandom is Envoy's
    random source; the ``random`` module's state is frozen in the build's snapshot, the same in
    every VM, so it would repeat ids across workers."""
    while True:
        value = os.urandom(nbytes)
        if any(value):
            return value.hex()


def parse_traceparent(value: str | None) -> tuple[str, str, str] | None:
    """(trace id, parent span id, flags) of a valid ``traceparent``, else ``None``.

    W3C Trace Context: ``VERSION-TRACEID-PARENTID-FLAGS``, lower-case hex, 2-32-16-2 digits;
    version ``ff`` is invalid; version 00 is exactly 55 characters; a later version may append
    ``-...`` fields (ignored here); the trace id and the parent id must not be all zeros."""
    if value is None:
        return None
    value = value.strip()
    if len(value) < 55 or (len(value) > 55 and (value[:2] == "00" or value[55] != "-")):
        return None
    version, trace_id, parent_id, flags = value[:2], value[3:35], value[36:52], value[53:55]
    if value[2] != "-" or value[35] != "-" or value[52] != "-" or version == "ff":
        return None
    if not _HEX.issuperset(version + trace_id + parent_id + flags):
        return None
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return trace_id, parent_id, flags


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status <= 599 else "none"


class RouteSettings:
    """What to do on a route: ``metrics``, ``log``, ``trace`` (the plugin's, or a route's own)."""

    def __init__(self, config: Config, inherit: RouteSettings | None = None) -> None:
        self.metrics: bool = config.boolean("metrics", inherit.metrics if inherit else True)
        self.log: bool = config.boolean("log", inherit.log if inherit else True)
        self.trace: bool = config.boolean("trace", inherit.trace if inherit else True)


class Telemetry(HttpContext):
    plugin: TelemetryPlugin
    settings: RouteSettings | None = None
    status = 0

    def on_request_headers(self, headers: Headers, end_of_stream: bool) -> Action | None:
        plugin = self.plugin
        self.started_ns = proxywasm.now_ns()
        settings = self.settings = plugin.settings_for_route(self.route_config)
        method = headers.get(":method") or ""
        self.method = method if method in METHODS else "OTHER"
        self.path = headers.get(":path") or ""
        self.request_id = headers.get("x-request-id") or "-"
        self.trace_id = self.span_id = self.parent_id = "-"
        if settings.trace:
            incoming = parse_traceparent(headers.get("traceparent"))
            self.span_id = random_hex(8)  # this hop's span
            if incoming is not None:
                self.trace_id, self.parent_id, flags = incoming
            else:
                self.trace_id, flags = random_hex(16), plugin.new_trace_flags
                if "tracestate" in headers:  # it belonged to the trace context we could not read
                    del headers["tracestate"]
            headers["traceparent"] = f"00-{self.trace_id}-{self.span_id}-{flags}"
        return Action.CONTINUE

    def on_response_headers(self, headers: Headers, end_of_stream: bool) -> Action | None:
        status = headers.get(":status") or ""
        self.status = int(status) if status.isdigit() else 0
        return Action.CONTINUE

    def on_log(self) -> None:
        settings = self.settings
        if settings is None:  # the request headers never reached the filter
            return
        plugin = self.plugin
        elapsed_ms = max(proxywasm.now_ns() - self.started_ns, 0) // NS_PER_MS
        status = self.status or properties.response_code() or 0  # no response headers: a reset, or none sent
        route = properties.route_name() or plugin.unnamed_route
        if settings.metrics:
            requests_total.labels(self.method, route, status_class(status)).increment()
            duration_ms.labels(route).record(elapsed_ms)
        if settings.log:
            path = self.path if plugin.log_query else self.path.split("?", 1)[0]
            log.info(
                f"telemetry: {self.method} {path} {status or '-'} {elapsed_ms}ms route={route} "
                f"request_id={self.request_id} trace_id={self.trace_id} span_id={self.span_id} "
                f"parent_id={self.parent_id}"
            )


@proxywasm.register
class TelemetryPlugin(PluginContext):
    http_context = Telemetry

    def __init__(self) -> None:
        self.settings: RouteSettings | None = None
        self.route_settings: dict[int, tuple[dict[str, Any], RouteSettings]] = {}

    def on_configure(self, configuration: bytes) -> bool:
        config = proxywasm.config.parse(configuration)
        settings = RouteSettings(config)
        self.log_query: bool = config.boolean("log_query", False)
        self.new_trace_flags = "01" if config.boolean("sampled", True) else "00"
        self.unnamed_route: str = config.string("unnamed_route", "unnamed", non_empty=True)
        config.done()
        self.settings = settings
        self.route_settings.clear()
        return True

    def settings_for_route(self, route: dict[str, Any]) -> RouteSettings:
        """The route's own ``metrics``/``log``/``trace`` switches (its metadata under the plugin's
        name; ``"disabled": true`` turns all three off), else the plugin's. Parsed once per route."""
        assert self.settings is not None
        if not route:
            return self.settings
        cached = self.route_settings.get(id(route))
        if cached is not None and cached[0] is route:
            return cached[1]
        try:
            config = proxywasm.config.Config(route, f"route {properties.route_name() or '(unnamed)'} metadata")
            if config.boolean("disabled", False):
                chosen = RouteSettings(proxywasm.config.Config({"metrics": False, "log": False, "trace": False}))
            else:
                chosen = RouteSettings(config, inherit=self.settings)
            config.done()
        except ConfigError as err:
            log.error(f"telemetry: {err}; using the plugin's settings on this route")
            chosen = self.settings
        if len(self.route_settings) >= 64:
            self.route_settings.clear()
        self.route_settings[id(route)] = (route, chosen)  # the dict is kept, so its id is not reused
        return chosen

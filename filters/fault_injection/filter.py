"""fault_injection: delays and aborts requests, to test how a service's callers handle timeouts,
errors and retries. Like Envoy's fault filter: by percentage, by request headers
(``x-envoy-fault-abort-request``, ``x-envoy-fault-delay-request``, opt-in) or by route (route
metadata). An abort answers with an HTTP status, or for a gRPC request (``content-type:
application/grpc``) with a gRPC status (HTTP 200, trailers-only).

A delay holds the request (``Action.PAUSE``) and the plugin's tick lets it go at its due time; the
tick runs only while requests are held. Several requests may be held at once; one whose stream
ends while held (the client went away, the caller's route timeout fired) is forgotten. See
README.md.
"""

from __future__ import annotations

import os

import proxywasm
from proxywasm import (
    Action,
    ConfigError,
    Counter,
    Gauge,
    GrpcStatus,
    HttpContext,
    PluginContext,
    UsageError,
    log,
    properties,
)

TYPE_CHECKING = False  # typing is not imported at run time: it would cost memory in every VM
if TYPE_CHECKING:
    from typing import Any

    from proxywasm import Headers
    from proxywasm.config import Config

# Declared at module level, so `proxywasm build` writes the stats_tags that make these labels.
faults_total = Counter("fault_injection_faults_total", labels=("fault", "route"))
skipped_total = Counter("fault_injection_skipped_total", labels=("reason",))
active_delays = Gauge("fault_injection_active_delays")

ABORT_HEADER = "x-envoy-fault-abort-request"
ABORT_GRPC_HEADER = "x-envoy-fault-abort-grpc-request"
ABORT_PERCENTAGE_HEADER = "x-envoy-fault-abort-request-percentage"
DELAY_HEADER = "x-envoy-fault-delay-request"
DELAY_PERCENTAGE_HEADER = "x-envoy-fault-delay-request-percentage"
ATTEMPT_HEADER = "x-envoy-attempt-count"  # set by the caller's router (include_request_attempt_count)
NS_PER_MS = 1_000_000


def draw(percentage: float) -> bool:
    """True for ``percentage`` % of calls (0-100, steps of 0.0001%), from Envoy's random source."""
    if percentage >= 100:
        return True
    return percentage > 0 and int.from_bytes(os.urandom(4), "little") % 1_000_000 < percentage * 10_000


def header_number(headers: Headers, name: str, low: float, high: float) -> float | None:
    """A numeric fault header in [low, high], or ``None`` (absent, or not a number in range)."""
    text = headers.get(name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not low <= value <= high:
        skipped_total.labels("bad_header").increment()
        log.debug(f"fault_injection: ignoring {name}: {text[:40]!r} (want a number from {low} to {high})")
        return None
    return value


class Faults:
    """What to inject: ``abort`` and ``delay`` (either may be absent), of the plugin or a route."""

    def __init__(self, config: Config) -> None:
        self.max_attempt_count: int = config.integer("max_attempt_count", 0, minimum=0)
        self.abort_status: int | None = None
        self.abort_grpc: int | None = None
        self.abort_header = False
        self.abort_percentage = 0.0
        self.body = ""
        abort = config.object("abort", None)
        if abort is not None:
            self.abort_header = abort.boolean("header_abort", False)
            if self.abort_header and ("http_status" in abort or "grpc_status" in abort):
                raise ConfigError(abort.path, "give http_status/grpc_status or header_abort, not both")
            self.abort_status = abort.integer("http_status", None if self.abort_header else 503, minimum=200,
                                              maximum=599)  # fmt: skip
            self.abort_grpc = abort.integer("grpc_status", None, minimum=0, maximum=16)
            self.abort_percentage = abort.number("percentage", 100.0, minimum=0, maximum=100)
            self.body = abort.string("body", "fault filter abort")
            abort.done()
        self.delay_ms: int | None = None
        self.delay_header = False
        self.delay_percentage = 0.0
        self.max_delay_ms = 0
        delay = config.object("delay", None)
        if delay is not None:
            self.delay_header = delay.boolean("header_delay", False)
            if self.delay_header and "fixed_delay" in delay:
                raise ConfigError(delay.path, "give fixed_delay or header_delay, not both")
            self.delay_ms = delay.duration("fixed_delay", None)
            self.delay_percentage = delay.number("percentage", 100.0, minimum=0, maximum=100)
            self.max_delay_ms = delay.duration("max_delay", "60s")
            delay.done()  # first: a misspelt fixed_delay is reported as such, not as missing
            if self.delay_ms is None and not self.delay_header:
                raise delay.error("fixed_delay", "missing: a duration is required (or header_delay: true)")

    def abort_for(self, headers: Headers) -> tuple[int, int | None] | None:
        """(HTTP status, gRPC status or None) when this request is to be aborted."""
        status, grpc = self.abort_status, self.abort_grpc
        percentage = self.abort_percentage
        if self.abort_header:
            asked = header_number(headers, ABORT_HEADER, 200, 599)
            asked_grpc = header_number(headers, ABORT_GRPC_HEADER, 0, 16)
            if asked is None and asked_grpc is None:
                return None
            status = int(asked) if asked is not None else 503
            grpc = int(asked_grpc) if asked_grpc is not None else None
            # The header's percentage, capped at the configured one (as Envoy's fault filter does).
            share = header_number(headers, ABORT_PERCENTAGE_HEADER, 0, 100)
            percentage = min(percentage, share) if share is not None else percentage
        if status is None or not draw(percentage):
            return None
        return status, grpc

    def delay_for(self, headers: Headers) -> int | None:
        """Milliseconds to hold this request, or ``None``."""
        delay_ms, percentage = self.delay_ms, self.delay_percentage
        if self.delay_header:
            asked = header_number(headers, DELAY_HEADER, 0, 1e12)
            if asked is None:
                return None
            delay_ms = min(int(asked), self.max_delay_ms)
            share = header_number(headers, DELAY_PERCENTAGE_HEADER, 0, 100)
            percentage = min(percentage, share) if share is not None else percentage
        if delay_ms is None or not draw(percentage):
            return None
        return delay_ms


class FaultInjection(HttpContext):
    plugin: FaultInjectionPlugin
    abort: tuple[int, int | None] | None = None
    grpc = False
    body = ""
    route = ""

    def on_request_headers(self, headers: Headers, end_of_stream: bool) -> Action | None:
        plugin = self.plugin
        faults = plugin.faults_for_route(self.route_config)
        if faults is None:
            return Action.CONTINUE
        if faults.max_attempt_count:
            attempt = headers.get(ATTEMPT_HEADER, "1") or "1"
            if not attempt.isdigit() or int(attempt) > faults.max_attempt_count:
                return Action.CONTINUE
        delay_ms = faults.delay_for(headers)
        self.abort = faults.abort_for(headers)
        if delay_ms is None and self.abort is None:
            return Action.CONTINUE
        if len(plugin.held) >= plugin.max_active_faults:
            skipped_total.labels("max_active_faults").increment()
            return Action.CONTINUE
        self.grpc = (headers.get("content-type") or "").startswith("application/grpc")
        self.body = faults.body
        self.route = properties.route_name() or "unnamed"
        if delay_ms is not None:
            faults_total.labels("delay", self.route).increment()
            plugin.hold(self, delay_ms)
            return Action.PAUSE
        self.send_abort()
        return Action.PAUSE

    def send_abort(self) -> None:
        assert self.abort is not None
        status, grpc_status = self.abort
        faults_total.labels("abort", self.route).increment()
        if self.grpc and grpc_status is not None:
            # A gRPC status: Envoy answers HTTP 200 with grpc-status and grpc-message (trailers-only).
            self.send_response(200, self.body, grpc_status=GrpcStatus(grpc_status), details="fault_filter_abort")
        else:
            # For a gRPC request Envoy turns the HTTP status into a gRPC status itself (503 -> UNAVAILABLE).
            self.send_response(status, self.body, [("content-type", "text/plain")], details="fault_filter_abort")

    def on_done(self) -> bool:
        self.plugin.release(self)  # a stream that ends while held (a reset) is forgotten
        return True


@proxywasm.register
class FaultInjectionPlugin(PluginContext):
    http_context = FaultInjection

    def __init__(self) -> None:
        self.faults: Faults | None = None
        self.route_faults: dict[int, tuple[dict[str, Any], Faults | None]] = {}
        self.held: dict[int, tuple[int, FaultInjection]] = {}  # context id -> (due ns, stream)
        self.ticking = False

    def on_configure(self, configuration: bytes) -> bool:
        config = proxywasm.config.parse(configuration)
        faults = Faults(config)
        self.max_active_faults: int = config.integer("max_active_faults", 1000, minimum=0)
        self.tick_ms: int = max(config.duration("tick_interval", "10ms"), 1)
        config.done()
        self.faults = faults
        self.route_faults.clear()
        return True

    def faults_for_route(self, route: dict[str, Any]) -> Faults | None:
        """The route's faults (its metadata under the plugin's name: ``abort``/``delay`` replace the
        plugin's, ``"disabled": true`` turns faults off), else the plugin's. Parsed once per route."""
        assert self.faults is not None
        if not route:
            return self.faults
        cached = self.route_faults.get(id(route))
        if cached is not None and cached[0] is route:
            return cached[1]
        chosen: Faults | None
        try:
            config = proxywasm.config.Config(route, f"route {properties.route_name() or '(unnamed)'} metadata")
            chosen = None if config.boolean("disabled", False) else Faults(config)
            config.done()
        except ConfigError as err:
            # Faults are a test tool: a broken route description injects nothing rather than break traffic.
            log.error(f"fault_injection: {err}; injecting no faults on this route")
            chosen = None
        if len(self.route_faults) >= 64:
            self.route_faults.clear()
        self.route_faults[id(route)] = (route, chosen)  # the dict is kept, so its id is not reused
        return chosen

    def hold(self, stream: FaultInjection, delay_ms: int) -> None:
        self.held[stream.context_id] = (proxywasm.now_ns() + delay_ms * NS_PER_MS, stream)
        active_delays.add(1)
        if not self.ticking:  # (re)setting the period while ticking would push the next tick back
            self.ticking = True
            self.set_tick_period(self.tick_ms)

    def release(self, stream: FaultInjection) -> bool:
        if self.held.pop(stream.context_id, None) is None:
            return False
        active_delays.add(-1)
        return True

    def on_tick(self) -> None:
        now = proxywasm.now_ns()
        due = [stream for when, stream in self.held.values() if when <= now]
        for stream in due:
            self.release(stream)
            try:
                if stream.abort is not None:
                    stream.send_abort()  # Envoy's order: the delay, then the abort
                else:
                    stream.resume_request()
            except UsageError as err:  # the stream ended in the meantime, without on_done reaching us
                log.debug(f"fault_injection: held stream went away: {err}")
        if not self.held:
            self.ticking = False
            self.set_tick_period(0)

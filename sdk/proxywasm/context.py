"""The contexts a filter subclasses: one :class:`PluginContext` per plugin (Envoy's root
context), one :class:`HttpContext` per HTTP stream, one :class:`StreamContext` per L4
connection. Override only the callbacks you need: the runtime never enters Python for the rest.
"""

from __future__ import annotations

from . import budget, callouts, hostcalls
from .abi import Action, GrpcStatus, IntConstants, PeerType, StreamType
from .body import Body
from .headers import Headers, request_headers, request_trailers, response_headers, response_trailers

TYPE_CHECKING = False  # typing is not imported at run time: it would cost memory in every VM
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, ClassVar, TypeVar

    T = TypeVar("T")

    from .headers import HeaderValue


class FailurePolicy(IntConstants):
    """What happens to a stream when a callback raises.

    ``FAIL_CLOSED`` (default) answers the request with a 500 local reply (an L4 connection is
    closed); ``FAIL_OPEN`` lets the stream continue as if the callback returned ``CONTINUE``.
    Either way the traceback is logged at error level and the VM keeps serving.
    """

    FAIL_CLOSED = 0
    FAIL_OPEN = 1


class Context:
    """What every context can do. ``context_id`` and ``plugin`` are set by the runtime
    right after the context is created."""

    context_id: int = 0
    plugin: PluginContext

    def _act(self, call: Callable[..., T], *args: Any) -> T:
        """Run a host call on this context, also from another context's callback (e.g. resuming a
        held stream from the plugin's on_tick), then give the running callback its context back."""
        running = hostcalls.effective_context()
        if not self.context_id or self.context_id == running:
            return call(*args)
        hostcalls.set_effective_context(self.context_id)
        try:
            return call(*args)
        finally:
            hostcalls.set_effective_context(running)

    def http_call(
        self,
        cluster: str,
        callback: Callable[[callouts.HttpCallResponse], None],
        *,
        method: str = "GET",
        path: str = "/",
        authority: str | None = None,
        headers: Sequence[tuple[HeaderValue, HeaderValue]] = (),
        body: bytes | str = b"",
        trailers: Sequence[tuple[HeaderValue, HeaderValue]] = (),
        timeout_ms: int = 5000,
    ) -> int:
        """Send an HTTP request to the Envoy cluster ``cluster``; ``callback`` receives the
        :class:`~proxywasm.callouts.HttpCallResponse` (``failed`` is true when Envoy could not get
        a response: reset, timeout, no healthy host). ``authority`` defaults to the cluster name;
        ``content-length`` follows ``body`` (framing headers in ``headers`` are dropped).
        Raises :class:`HostCallError` (BAD_ARGUMENT) for an unknown cluster. Returns the token."""
        return self._act(
            callouts.http_call, self, cluster, callback, method, path, authority, headers, body, trailers, timeout_ms
        )

    def grpc_call(
        self,
        cluster: str,
        service: str,
        method: str,
        message: bytes,
        callback: Callable[[callouts.GrpcCallResponse], None],
        *,
        metadata: Sequence[tuple[HeaderValue, HeaderValue]] = (),
        timeout_ms: int = 5000,
    ) -> int:
        """Unary gRPC call ``service/method`` on ``cluster`` with a serialised request message."""
        return self._act(callouts.grpc_call, self, cluster, service, method, message, callback, metadata, timeout_ms)

    def grpc_stream(
        self,
        cluster: str,
        service: str,
        method: str,
        handler: callouts.GrpcStreamHandler,
        *,
        metadata: Sequence[tuple[HeaderValue, HeaderValue]] = (),
    ) -> callouts.GrpcStream:
        """Open a gRPC stream; ``handler`` receives its metadata, messages and close."""
        return self._act(callouts.grpc_stream, self, cluster, service, method, handler, metadata)


class PluginContext(Context):
    """One per plugin configuration in each VM (Envoy's "root context").

    Set ``http_context`` (or ``stream_context`` for an L4 filter) to the class Envoy should
    instantiate for each stream, or override :meth:`new_http_context`.
    """

    http_context: ClassVar[type[HttpContext] | None] = None
    stream_context: ClassVar[type[StreamContext] | None] = None
    failure_policy: ClassVar[FailurePolicy] = FailurePolicy.FAIL_CLOSED
    cpu_budget_ms: ClassVar[int] = budget.DEFAULT_MS
    """Milliseconds each callback of this plugin and its streams may run before
    :class:`~proxywasm.BudgetExceeded` interrupts it; 0 disables. Read when Envoy creates the
    plugin; the plugin configuration's ``"proxywasm_cpu_budget_ms"`` and the VM's
    ``PROXYWASM_CPU_BUDGET_MS`` take precedence (see :mod:`proxywasm.budget`)."""
    root_id: str = ""

    def on_vm_start(self, vm_configuration: bytes) -> bool:
        """Once per VM, with ``vm_config.configuration``. Return False to fail the VM."""
        return True

    def on_configure(self, configuration: bytes) -> bool:
        """With the plugin's ``configuration``, at start and at every config update.
        Return False (or raise) to make Envoy reject the configuration."""
        return True

    def validate_configuration(self, configuration: bytes) -> bool:
        return True

    def on_tick(self) -> None:
        """Called every :meth:`set_tick_period` milliseconds."""

    def on_queue_ready(self, queue_id: int) -> None:
        """An item was enqueued on a shared queue this VM registered."""

    def on_foreign_function(self, function_id: int, data: bytes) -> None:
        """Envoy called back into the plugin through a foreign function."""

    def on_done(self) -> bool:
        """The plugin is being torn down; return False to finish later with :meth:`done`."""
        return True

    def set_tick_period(self, period_ms: int) -> None:
        """Start (or, with 0, stop) calling :meth:`on_tick` periodically."""
        self._act(hostcalls.set_tick_period_milliseconds, period_ms)

    def done(self) -> None:
        self._act(hostcalls.done)

    def new_http_context(self) -> HttpContext:
        if self.http_context is None:
            raise TypeError(f"{type(self).__name__} sets no http_context: it cannot handle HTTP streams")
        return self.http_context()

    def new_stream_context(self) -> StreamContext:
        if self.stream_context is None:
            raise TypeError(f"{type(self).__name__} sets no stream_context: it cannot handle L4 connections")
        return self.stream_context()


class HttpContext(Context):
    """One per HTTP stream. Each callback returns an :class:`Action` (``None`` means CONTINUE).

    Returning ``Action.PAUSE`` from a headers callback holds the stream until :meth:`resume_request`
    / :meth:`resume_response`; from a body callback it makes Envoy buffer the body, and the next
    call sees all of it.
    """

    request_headers: ClassVar[Headers] = request_headers
    request_trailers: ClassVar[Headers] = request_trailers
    response_headers: ClassVar[Headers] = response_headers
    response_trailers: ClassVar[Headers] = response_trailers

    def on_request_headers(self, headers: Headers, end_of_stream: bool) -> Action | None:
        return Action.CONTINUE

    def on_request_body(self, body: Body, end_of_stream: bool) -> Action | None:
        return Action.CONTINUE

    def on_request_trailers(self, trailers: Headers) -> Action | None:
        return Action.CONTINUE

    def on_response_headers(self, headers: Headers, end_of_stream: bool) -> Action | None:
        return Action.CONTINUE

    def on_response_body(self, body: Body, end_of_stream: bool) -> Action | None:
        return Action.CONTINUE

    def on_response_trailers(self, trailers: Headers) -> Action | None:
        return Action.CONTINUE

    def on_log(self) -> None:
        """After the stream completed, for access logging."""

    def on_done(self) -> bool:
        return True

    def send_response(
        self,
        status: int,
        body: bytes | str = b"",
        headers: Sequence[tuple[HeaderValue, HeaderValue]] = (),
        *,
        details: str = "",
        grpc_status: GrpcStatus | None = None,
    ) -> None:
        """Answer the request from the filter. Envoy sends it after the current callback returns
        (return ``Action.PAUSE``); the response callbacks still run for it."""
        pairs = [(hostcalls.to_bytes(k).lower(), hostcalls.to_bytes(v)) for k, v in headers]
        code = -1 if grpc_status is None else int(grpc_status)
        self._act(hostcalls.send_local_response, status, details, hostcalls.to_bytes(body), pairs, code)

    def resume_request(self) -> None:
        """Let a paused request continue to the upstream (also from another context's callback)."""
        self._act(hostcalls.continue_stream, StreamType.REQUEST)

    def resume_response(self) -> None:
        """Let a paused response continue to the client (also from another context's callback)."""
        self._act(hostcalls.continue_stream, StreamType.RESPONSE)

    def reset(self) -> None:
        """Reset the stream."""
        self._act(hostcalls.close_stream, StreamType.REQUEST)


class StreamContext(Context):
    """One per L4 (TCP) connection of a network filter."""

    def on_new_connection(self) -> Action | None:
        return Action.CONTINUE

    def on_downstream_data(self, data: Body, end_of_stream: bool) -> Action | None:
        return Action.CONTINUE

    def on_upstream_data(self, data: Body, end_of_stream: bool) -> Action | None:
        return Action.CONTINUE

    def on_downstream_close(self, peer: PeerType) -> None:
        pass

    def on_upstream_close(self, peer: PeerType) -> None:
        pass

    def on_log(self) -> None:
        pass

    def on_done(self) -> bool:
        return True

    def resume_downstream(self) -> None:
        self._act(hostcalls.continue_stream, StreamType.DOWNSTREAM)

    def resume_upstream(self) -> None:
        self._act(hostcalls.continue_stream, StreamType.UPSTREAM)

    def close_downstream(self) -> None:
        self._act(hostcalls.close_stream, StreamType.DOWNSTREAM)

    def close_upstream(self) -> None:
        self._act(hostcalls.close_stream, StreamType.UPSTREAM)

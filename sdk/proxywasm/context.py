"""The contexts a filter subclasses: one :class:`PluginContext` per plugin (Envoy's root
context), one :class:`HttpContext` per HTTP stream, one :class:`StreamContext` per L4
connection. Override only the callbacks you need: the runtime never enters Python for the rest.
"""

from __future__ import annotations

from . import budget, callouts, hostcalls, properties
from .abi import Action, GrpcStatus, IntConstants, MapType, PeerType, Status, StreamType
from .body import Body
from .errors import HostCallError, LocalReplyAlreadySent, UsageError
from .headers import Headers, StreamHeaders, running_callback

TYPE_CHECKING = False  # typing is not imported at run time: it would cost memory in every VM
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any, ClassVar, Literal, TypeVar, overload

    T = TypeVar("T")
    from collections.abc import Coroutine

    # What a stream callback returns: an Action (None: CONTINUE), or, from an ``async def``
    # callback, a coroutine whose result is one (the SDK pauses the stream while it waits).
    Verdict = Action | None | Coroutine[Any, Any, Action | None]

    from . import tasks
    from .headers import HeaderValue
else:

    def overload(function: object) -> object:
        return function  # the implementation defined after the overloads replaces them


_raw = hostcalls.raw  # _act asks the runtime for the current context directly (not a host call)
# Plain ints (StreamType.REQUEST is a class attribute behind a metaclass: an unspecialised lookup).
# resume_request/resume_response call the builtin directly when this stream's context is the
# effective one: _act's call(*args, **kwargs) enters the eval loop again (0.3 virtual us a request).
_REQUEST, _RESPONSE = int(StreamType.REQUEST), int(StreamType.RESPONSE)


def _tasks() -> Any:
    from ._dispatch import tasks  # late: _dispatch imports this module

    return tasks()


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
    # Callouts started by the running callback that nothing waits for (see Dispatcher.check_unwaited).
    _unwaited: int = 0
    _unwaited_what: tuple[str, str] = ("", "")  # the last one's (call, cluster): formatted only for a message
    _streams: tasks.StreamState | None = None  # created when a callback of this context awaits
    _awaits = False  # the class has async def stream callbacks (set by _dispatch.mask_of)
    _own_on_done = False  # the class defines on_done (set by _dispatch.mask_of; see tasks._arm)
    _local_reply_sent = False  # an HTTP stream sent a local reply (here too: tasks.py reads it directly)
    # The stream callback that returned PAUSE with callouts to answer (set by Dispatcher.check_unwaited),
    # until the stream is resumed: the check after a callout's callback (Dispatcher.check_held).
    _held_for_callout: str | None = None

    def _act(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a host call on this context, also from another context's callback (e.g. resuming a
        held stream from the plugin's on_tick), then give the running callback its context back."""
        running = _raw.effective_context()
        if not self.context_id or self.context_id == running:
            return call(*args, **kwargs)
        try:
            hostcalls.set_effective_context(self.context_id)
        except HostCallError as err:
            raise UsageError(
                f"{type(self).__name__} (context {self.context_id}) has ended: Envoy deleted it, so nothing can act "
                f"on its stream any more ({err})"
            ) from None
        try:
            return call(*args, **kwargs)
        finally:
            hostcalls.set_effective_context(running)

    @overload
    def http_call(
        self,
        cluster: str,
        callback: None = None,
        *,
        method: str | None = None,
        path: str | None = None,
        authority: str | None = None,
        headers: Sequence[tuple[HeaderValue, HeaderValue]] = (),
        body: bytes | str = b"",
        trailers: Sequence[tuple[HeaderValue, HeaderValue]] = (),
        timeout_ms: int = 5000,
        detach: Literal[False] = False,
    ) -> tasks.HttpCallFuture: ...

    @overload
    def http_call(  # noqa: F811 - overloads for type checkers, then the implementation
        self,
        cluster: str,
        callback: Callable[[callouts.HttpCallResponse], Any] | None = None,
        *,
        method: str | None = None,
        path: str | None = None,
        authority: str | None = None,
        headers: Sequence[tuple[HeaderValue, HeaderValue]] = (),
        body: bytes | str = b"",
        trailers: Sequence[tuple[HeaderValue, HeaderValue]] = (),
        timeout_ms: int = 5000,
        detach: bool = False,
    ) -> int: ...

    def http_call(  # noqa: F811 - overloads for type checkers, then the implementation
        self,
        cluster: str,
        callback: Callable[[callouts.HttpCallResponse], Any] | None = None,
        *,
        method: str | None = None,
        path: str | None = None,
        authority: str | None = None,
        headers: Sequence[tuple[HeaderValue, HeaderValue]] = (),
        body: bytes | str = b"",
        trailers: Sequence[tuple[HeaderValue, HeaderValue]] = (),
        timeout_ms: int = 5000,
        detach: bool = False,
    ) -> int | tasks.HttpCallFuture:
        """Send an HTTP request to the Envoy cluster ``cluster`` (a callout); it leaves at once.

        Two styles:

        - ``response = await self.http_call(cluster, ...)`` in an ``async def`` callback: the
          stream waits (the SDK holds it) until Envoy delivers the answer, an
          :class:`~proxywasm.callouts.HttpCallResponse`.
        - ``self.http_call(cluster, callback, ...)`` returns the token; ``callback(response)`` runs
          when the answer comes. Return ``Action.PAUSE`` from the stream callback and resume the
          stream in ``callback``: a stream callback that returns CONTINUE after starting a callout
          is logged as an author mistake.

        ``detach=True`` fires and forgets: the stream does not wait, no mistake is logged, the answer
        goes to ``callback`` if one is given, else it is dropped; returns the token.

        What Envoy 1.40 delivers: the target's response (any status); on timeout (``timeout_ms``) a
        504 with body ``upstream request timeout``; when the cluster cannot be reached (refused, no
        healthy host, closed before the response headers) a 503 with body ``upstream connect error
        or disconnect/reset before headers. reset reason: ...``; when the exchange breaks after the
        response started, no response at all (a reset): the response's ``failed`` is true and
        ``status`` 0, and an awaited call raises :class:`~proxywasm.errors.CalloutFailed`.

        The request: ``method`` (default GET), ``path`` (default ``/``) and ``authority`` (default
        the cluster's name) win over ``:method``/``:path``/``:authority`` copied in ``headers``,
        which win over the defaults. ``content-length`` follows ``body``; framing headers in
        ``headers`` are dropped. Raises :class:`~proxywasm.errors.HostCallError` (BAD_ARGUMENT) at
        once for a cluster Envoy does not know. Envoy delivers the answer to the plugin's root
        context; the SDK routes it back to this context (and drops it if this stream has ended).
        """
        return self._act(
            callouts.http_call, self, cluster, callback, method, path, authority, headers, body, trailers,
            timeout_ms, detach,
        )  # fmt: skip

    @overload
    def grpc_call(
        self,
        cluster: str,
        service: str,
        method: str,
        message: bytes,
        callback: None = None,
        *,
        metadata: Sequence[tuple[HeaderValue, HeaderValue]] = (),
        timeout_ms: int = 5000,
        detach: Literal[False] = False,
    ) -> tasks.GrpcCallFuture: ...

    @overload
    def grpc_call(  # noqa: F811 - overloads for type checkers, then the implementation
        self,
        cluster: str,
        service: str,
        method: str,
        message: bytes,
        callback: Callable[[callouts.GrpcCallResponse], Any] | None = None,
        *,
        metadata: Sequence[tuple[HeaderValue, HeaderValue]] = (),
        timeout_ms: int = 5000,
        detach: bool = False,
    ) -> int: ...

    def grpc_call(  # noqa: F811 - overloads for type checkers, then the implementation
        self,
        cluster: str,
        service: str,
        method: str,
        message: bytes,
        callback: Callable[[callouts.GrpcCallResponse], Any] | None = None,
        *,
        metadata: Sequence[tuple[HeaderValue, HeaderValue]] = (),
        timeout_ms: int = 5000,
        detach: bool = False,
    ) -> int | tasks.GrpcCallFuture:
        """Unary gRPC call ``service/method`` on ``cluster`` with a serialised request message.

        Like :meth:`http_call`: without ``callback``, ``await`` it for the
        :class:`~proxywasm.callouts.GrpcCallResponse`; with one, the callback receives it. Either
        way the result carries the gRPC status (check ``.ok``): Envoy 1.40 reports a timeout and an
        unreachable cluster as UNAVAILABLE, with its response code details appended to the status
        message (see :class:`~proxywasm.callouts.GrpcCallResponse`), and an await never raises for
        a status. ``detach=True`` fires and forgets.

        ``metadata`` pairs must be what Envoy can send (else ValueError, as for :meth:`http_call`
        headers); the value of a ``-bin`` key may be any bytes (Envoy base64-encodes it)."""
        return self._act(
            callouts.grpc_call, self, cluster, service, method, message, callback, metadata, timeout_ms, detach
        )

    def grpc_stream(
        self,
        cluster: str,
        service: str,
        method: str,
        handler: callouts.GrpcStreamHandler,
        *,
        metadata: Sequence[tuple[HeaderValue, HeaderValue]] = (),
    ) -> callouts.GrpcStream:
        """Open a gRPC stream; ``handler`` receives its metadata, messages and close. The close's
        message carries Envoy's response code details as a call's does (``"via_upstream"`` for a
        stream the server ended with OK and no message); ``metadata`` as for :meth:`grpc_call`."""
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
    _ticking = False  # set_tick_period was called (the dispatcher warns about an on_tick never ticked)

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

    @property
    def plugin_name(self) -> str:
        """The plugin's ``name`` in Envoy's PluginConfig (read from Envoy once)."""
        name: str | None = self.__dict__.get("_plugin_name")
        if name is None:
            name = self._plugin_name = self._act(properties.plugin_name) or ""
        return name

    def set_tick_period(self, period_ms: int) -> None:
        """Start (or, with 0, stop) calling :meth:`on_tick` periodically."""
        self._act(hostcalls.set_tick_period_milliseconds, period_ms)
        self._ticking = True

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


class _MapOfStream:
    """``self.request_headers`` and friends: the stream's map as a :class:`StreamHeaders`, made on
    first use and then kept in the instance (a plain attribute lookup afterwards)."""

    def __init__(self, map_type: MapType) -> None:
        self.map_type = map_type
        self.name = ""
        self.__doc__ = f"The stream's {map_type.name.lower().replace('http_', '').replace('_', ' ')} (a StreamHeaders)."

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:  # help() and pydoc show the class attribute: no host call
        return f"<{self.name}: the stream's map, on an instance>"

    def __get__(self, context: HttpContext | None, owner: type | None = None) -> Headers:
        if context is None:
            return self  # type: ignore[return-value]  # class access (help(), pydoc): the descriptor
        bound = StreamHeaders(self.map_type, context)
        context.__dict__[self.name] = bound
        return bound


class HttpContext(Context):
    """One per HTTP stream. Each callback returns an :class:`Action` (``None`` means CONTINUE).

    Returning ``Action.PAUSE`` from a headers callback holds the stream until :meth:`resume_request`
    / :meth:`resume_response`; from a body callback it makes Envoy buffer the body, and the next
    call sees all of it.

    A stream callback may be ``async def`` and ``await`` callouts (:meth:`http_call`,
    :meth:`grpc_call`), :func:`proxywasm.gather` and the whole body (:meth:`request_body`,
    :meth:`response_body`). If the coroutine finishes without waiting, what it returns is the
    callback's result. If it waits, Envoy is told PAUSE and, when the coroutine finishes: a local
    reply it sent stands; ``None`` / CONTINUE resumes the callback's direction (the request for
    request callbacks, the response for response callbacks); PAUSE keeps it paused (resume it
    yourself); an exception meets the plugin's failure policy (FAIL_OPEN resumes). A stream that
    ends while a coroutine waits closes it: its ``finally`` blocks run, and the answer it waited
    for is dropped when it comes. While a coroutine of one direction waits, the SDK holds that
    direction's body and trailers (Envoy buffers them) without calling ``on_request_body`` /
    ``on_request_trailers`` (or the response ones).
    """

    request_headers: Headers = _MapOfStream(MapType.HTTP_REQUEST_HEADERS)  # type: ignore[assignment]
    request_trailers: Headers = _MapOfStream(MapType.HTTP_REQUEST_TRAILERS)  # type: ignore[assignment]
    response_headers: Headers = _MapOfStream(MapType.HTTP_RESPONSE_HEADERS)  # type: ignore[assignment]
    response_trailers: Headers = _MapOfStream(MapType.HTTP_RESPONSE_TRAILERS)  # type: ignore[assignment]

    #: Set True when the plugin's PluginConfig has ``allow_on_headers_stop_iteration: true``
    #: (Envoy 1.35+). Envoy then turns a headers callback's PAUSE into StopIteration and keeps
    #: delivering the body, so a headers coroutine awaiting :meth:`request_body` holds the headers
    #: too. It must match Envoy's setting: declared True without it, such a request hangs (Envoy
    #: delivers no body while the headers are held).
    allow_on_headers_stop_iteration: ClassVar[bool] = False

    def on_request_headers(self, headers: Headers, end_of_stream: bool) -> Verdict:
        return Action.CONTINUE

    def on_request_body(self, body: Body, end_of_stream: bool) -> Verdict:
        return Action.CONTINUE

    def on_request_trailers(self, trailers: Headers) -> Verdict:
        return Action.CONTINUE

    def on_response_headers(self, headers: Headers, end_of_stream: bool) -> Verdict:
        return Action.CONTINUE

    def on_response_body(self, body: Body, end_of_stream: bool) -> Verdict:
        return Action.CONTINUE

    def on_response_trailers(self, trailers: Headers) -> Verdict:
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
        """Answer the request from the filter (a local reply). Envoy sends it after the current
        callback returns (return ``Action.PAUSE``); the response callbacks still run for it. Once
        the client has the response headers it is too late: Envoy resets the stream instead (the
        client gets a cut response), and from ``on_response_body``/``on_response_trailers`` the SDK
        logs that as an author mistake (use :meth:`reset` to cut a response on purpose).

        One local reply per stream: a second one raises
        :class:`~proxywasm.errors.LocalReplyAlreadySent` (Envoy 1.40 crashes on two in the
        response path), and so does one after the failure policy answered the stream."""
        if self._local_reply_sent:
            raise LocalReplyAlreadySent(
                f"{type(self).__name__}.send_response({status}): this stream already has a local reply; Envoy 1.40 "
                "crashes on a second one, so the SDK refuses it (send one reply, then return Action.PAUSE)"
            )
        pairs = [(hostcalls.to_bytes(k).lower(), hostcalls.to_bytes(v)) for k, v in headers]
        code = -1 if grpc_status is None else int(grpc_status)
        self._check_response_not_sent(status)
        self._act(hostcalls.send_local_response, status, details, hostcalls.to_bytes(body), pairs, code)
        self._local_reply_sent = True

    def _check_response_not_sent(self, status: int) -> None:
        """A local reply from this stream's own response body or trailers callback after Envoy sent
        the response headers to the client: Envoy cannot replace that response and resets the stream
        (the client gets a cut response, never this reply; differential suite). Log it as an author
        mistake (the local host raises it in tests) and let Envoy reset. Envoy holds the response
        headers exactly while they have not gone on (reading them answers BAD_ARGUMENT after), so
        that is the test, made only from those two callbacks (the runtime records which one runs)."""
        callback = running_callback()
        if callback not in ("on_response_body", "on_response_trailers") or _raw.effective_context() != self.context_id:
            return
        try:
            hostcalls.get_map_value(MapType.HTTP_RESPONSE_HEADERS, b":status")
            return
        except HostCallError as err:
            if err.status != Status.BAD_ARGUMENT:
                return
        from ._dispatch import author_mistake  # late: _dispatch imports this module

        author_mistake(
            f"{type(self).__name__}.{callback}: send_response({status}) after Envoy sent the response headers to the "
            "client (on_response_headers returned CONTINUE, or the response was resumed): Envoy cannot replace a "
            "response already started and resets the stream instead, so the client gets a cut response, not this "
            "reply. To answer from the response body, hold the headers: allow_on_headers_stop_iteration: true in "
            "the PluginConfig and on the class, return Action.PAUSE from on_response_headers and decide at the "
            "body's end; to cut the response on purpose, call self.reset()"
        )

    def _send_local_reply(self, status: int, body: bytes, details: str) -> None:
        """The SDK's own local reply (failure policy, body too large), at most one per stream."""
        if not self._local_reply_sent:
            self._local_reply_sent = True
            hostcalls.send_local_response(status, details, body, [(b"content-type", b"text/plain")], -1)

    def resume_request(self) -> None:
        """Let a paused request continue to the upstream (also from another context's callback)."""
        context_id = self.context_id
        if not context_id or context_id == _raw.effective_context():  # the usual case: no _act frame
            _raw.continue_stream(_REQUEST)
        else:
            self._act(hostcalls.continue_stream, StreamType.REQUEST)
        self._held_for_callout = None
        if self._streams is not None:
            _tasks().resumed(self, StreamType.REQUEST)

    def resume_response(self) -> None:
        """Let a paused response continue to the client (also from another context's callback)."""
        context_id = self.context_id
        if not context_id or context_id == _raw.effective_context():  # the usual case: no _act frame
            _raw.continue_stream(_RESPONSE)
        else:
            self._act(hostcalls.continue_stream, StreamType.RESPONSE)
        self._held_for_callout = None
        if self._streams is not None:
            _tasks().resumed(self, StreamType.RESPONSE)

    @property
    def route_config(self) -> dict[str, Any]:
        """Per-route configuration: the matched route's ``metadata.filter_metadata[<plugin name>]``
        as a dict (``{}`` when the route has none). Envoy has no per-route Wasm configuration;
        route metadata is the usual stand-in::

            routes:
            - match: {prefix: "/api"}
              route: {cluster: backend}
              metadata:
                filter_metadata:
                  my-plugin:            # the plugin's name in the Wasm filter's config
                    limit: 10
                    mode: strict

        Read once per stream (from ``on_request_headers`` on: the route is known then) and cached;
        numbers come back as ``int`` when whole, else ``float``. But in an envoy.yaml file Envoy
        1.40's YAML loader keeps only 64-bit integers as numbers: ``1.5``, ``1e3`` or a bigger
        integer there reach the filter as strings (``"1.5"``; seen in its config_dump), so convert
        with ``float()`` where a fraction is allowed. The dict is shared by the route's streams: do
        not change it. See :func:`proxywasm.properties.route_metadata`."""
        config: dict[str, Any] | None = self.__dict__.get("_route_config")
        if config is None:
            path = properties._XDS_ROUTE_METADATA
            if self.context_id and self.context_id != _raw.effective_context():
                raw: bytes | None = self._act(_raw.get_property, path)  # from another context's callback
            else:  # its own callback (the usual case): no frames but this one (each costs ~1 us in Envoy)
                raw = _raw.get_property(path)
            config = self._route_config = properties._for_filter(raw, self.plugin.plugin_name) if raw else {}
        return config

    def request_body(self, max_bytes: int = 1 << 20) -> tasks.Future[bytes]:
        """``body = await self.request_body()``: the whole request body, in a coroutine of a request
        callback (``async def on_request_headers`` ...). The SDK answers Envoy's body callbacks with
        PAUSE (Envoy buffers) until the end of the body (or its trailers), then resumes the coroutine.

        What the upstream sees while the coroutine waits: with Envoy's default, a headers callback
        cannot hold the headers and receive the body (Envoy delivers no body while the headers are
        held), so the SDK lets the request headers go on first: the upstream gets the headers and
        no body until the coroutine finishes (a local reply then resets the upstream request). With
        ``allow_on_headers_stop_iteration`` (see the class attribute) the upstream gets nothing
        until the coroutine finishes.

        Over ``max_bytes`` (default 1 MiB) the SDK answers 413 and raises
        :class:`~proxywasm.errors.BodyTooLarge` in the coroutine. (Envoy's own buffer limit,
        ``per_connection_buffer_limit_bytes``, 1 MiB by default, also answers 413.) Raises
        :class:`~proxywasm.errors.UsageError` outside a request callback's coroutine, or when part
        of the body already went on."""
        body: tasks.Future[bytes] = _tasks().wait_for_body(self, StreamType.REQUEST, max_bytes)
        return body

    def response_body(self, max_bytes: int = 1 << 20) -> tasks.Future[bytes]:
        """``body = await self.response_body()``: the whole response body, in a coroutine of a
        response callback. As :meth:`request_body`; by default the client gets the response headers
        before the coroutine decides (a local reply after that makes Envoy reset the stream). Over
        ``max_bytes`` the SDK answers 500 (or Envoy resets the stream if the client already has the
        headers) and raises :class:`~proxywasm.errors.BodyTooLarge`."""
        body: tasks.Future[bytes] = _tasks().wait_for_body(self, StreamType.RESPONSE, max_bytes)
        return body

    def reset(self) -> None:
        """Reset the stream."""
        self._act(hostcalls.close_stream, StreamType.REQUEST)


class StreamContext(Context):
    """One per L4 (TCP) connection of a network filter."""

    def on_new_connection(self) -> Verdict:
        return Action.CONTINUE

    def on_downstream_data(self, data: Body, end_of_stream: bool) -> Verdict:
        return Action.CONTINUE

    def on_upstream_data(self, data: Body, end_of_stream: bool) -> Verdict:
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

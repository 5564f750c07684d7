"""Routes the runtime's callbacks (context ids and sizes) to the filter's context objects, and
applies the failure policy when a callback raises."""

from __future__ import annotations

from . import callouts, hostcalls, properties
from .abi import Action, BufferType, LogLevel, PeerType, StreamType
from .body import Body
from .context import Context, FailurePolicy, HttpContext, PluginContext, StreamContext
from .headers import request_headers, request_trailers, response_headers, response_trailers

TYPE_CHECKING = False  # typing is not imported at run time: it would cost memory in every VM
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any

# The runtime's callbacks in mask-bit order: keep in sync with CALLBACKS in runtime/callbacks.c.
CALLBACKS = (
    "on_vm_start", "on_configure", "validate_configuration", "on_tick", "on_queue_ready",
    "on_new_connection", "on_downstream_data", "on_upstream_data", "on_downstream_connection_close",
    "on_upstream_connection_close", "on_request_headers", "on_request_body", "on_request_trailers",
    "on_response_headers", "on_response_body", "on_response_trailers", "on_done", "on_log", "on_delete",
    "on_http_call_response", "on_grpc_receive_initial_metadata", "on_grpc_receive",
    "on_grpc_receive_trailing_metadata", "on_grpc_close", "on_foreign_function",
)  # fmt: skip
BIT = {name: 1 << i for i, name in enumerate(CALLBACKS)}

# Callbacks Envoy only makes after the filter asked for them: always routed.
_EVENTS = sum(BIT[n] for n in CALLBACKS if n.startswith(("on_http_call", "on_grpc")))
# Runtime callback -> method of the context class it is routed to, per kind of context.
_ROUTES: dict[type[Context], dict[str, str]] = {
    PluginContext: {
        n: n
        for n in (
            "on_vm_start",
            "on_configure",
            "validate_configuration",
            "on_tick",
            "on_queue_ready",
            "on_foreign_function",
            "on_done",
        )
    },  # fmt: skip
    HttpContext: {
        n: n
        for n in (
            "on_request_headers",
            "on_request_body",
            "on_request_trailers",
            "on_response_headers",
            "on_response_body",
            "on_response_trailers",
            "on_log",
            "on_done",
        )
    },  # fmt: skip
    StreamContext: {
        "on_new_connection": "on_new_connection",
        "on_downstream_data": "on_downstream_data",
        "on_upstream_data": "on_upstream_data",
        "on_downstream_connection_close": "on_downstream_close",
        "on_upstream_connection_close": "on_upstream_close",
        "on_log": "on_log",
        "on_done": "on_done",
    },
}
# Roots always receive configure, so a plugin that defines nothing is still validated.
_ALWAYS = {PluginContext: _EVENTS | BIT["on_configure"], HttpContext: _EVENTS, StreamContext: _EVENTS}
_masks: dict[type, int] = {}


def mask_of(cls: type[Context]) -> int:
    """Bits of the callbacks ``cls`` overrides, plus those every context of its kind receives."""
    mask = _masks.get(cls)
    if mask is None:
        base = next(b for b in _ROUTES if issubclass(cls, b))
        mask = _ALWAYS[base]
        for callback, method in _ROUTES[base].items():
            if getattr(cls, method) is not getattr(base, method):
                mask |= BIT[callback]
        _masks[cls] = mask
    return mask


def format_exception(exc: BaseException) -> str:
    """A traceback without the ``traceback`` module (which would cost memory in every VM)."""
    lines = ["Traceback (most recent call last):"]
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        lines.append(f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}')
        tb = tb.tb_next
    lines.append(f"{type(exc).__qualname__}: {exc}" if str(exc) else type(exc).__qualname__)
    return "\n".join(lines)


class Registry:
    """Plugin classes by root id (``None``: any root id)."""

    def __init__(self) -> None:
        self.plugins: dict[str | None, type[PluginContext]] = {}

    def add(self, plugin: type[PluginContext], root_id: str | None) -> None:
        if root_id in self.plugins:
            raise ValueError(f"a plugin is already registered for root_id {root_id!r}")
        self.plugins[root_id] = plugin

    def lookup(self, root_id: str) -> type[PluginContext] | None:
        found = self.plugins.get(root_id) or self.plugins.get(None)
        if found is None and len(self.plugins) == 1:
            found = next(iter(self.plugins.values()))
        return found


registry = Registry()


class _Unconfigurable(PluginContext):
    """Stands in for a plugin that could not be created, so Envoy rejects the configuration."""

    reason = ""

    def on_configure(self, configuration: bytes) -> bool:
        hostcalls.log(LogLevel.ERROR, self.reason)
        return False


class _UnavailableHttp(HttpContext):
    """Stands in for an HTTP context whose creation raised; applies the failure policy."""

    def on_request_headers(self, headers: Any, end_of_stream: bool) -> Action | None:
        return Action(dispatcher.fail_stream(self))


class _UnavailableStream(StreamContext):
    """Stands in for an L4 context whose creation raised; applies the failure policy."""

    def on_new_connection(self) -> Action | None:
        return Action(dispatcher.fail_stream(self))


class Dispatcher:
    """Every callback catches BaseException: a filter's ``sys.exit()`` must meet the failure
    policy like any error, not escape into the runtime (which would just continue the stream)."""

    def __init__(self) -> None:
        self.contexts: dict[int, Context] = {}

    # ---- errors ----

    def report(self, where: str, exc: BaseException) -> None:
        try:
            hostcalls.log(LogLevel.ERROR, f"proxywasm: exception in {where}\n{format_exception(exc)}")
        except Exception:
            pass

    def fail_stream(self, ctx: Context) -> int:
        """Apply the plugin's failure policy to the stream of ``ctx``; returns the action."""
        policy = getattr(getattr(ctx, "plugin", None), "failure_policy", FailurePolicy.FAIL_CLOSED)
        if policy == FailurePolicy.FAIL_OPEN:
            return Action.CONTINUE
        try:
            if isinstance(ctx, HttpContext):
                hostcalls.send_local_response(
                    500,
                    "wasm_python_exception",
                    b"Internal Server Error\n",
                    [(b"content-type", b"text/plain")],
                    -1,
                )
            else:
                hostcalls.close_stream(StreamType.DOWNSTREAM)
        except Exception as err:
            self.report("failure policy", err)
        return Action.PAUSE

    def _stream_error(self, ctx: Context, where: str, exc: BaseException) -> int:
        self.report(f"{type(ctx).__name__}.{where}", exc)
        return self.fail_stream(ctx)

    # ---- lifecycle ----

    def on_context_create(self, context_id: int, parent_id: int) -> int:
        if parent_id == 0:
            root_id = properties.plugin_root_id()
            plugin = self._new_plugin(root_id)
            plugin.context_id = context_id
            plugin.root_id = root_id
            plugin.plugin = plugin
            self.contexts[context_id] = plugin
            return mask_of(type(plugin))
        parent = self.contexts.get(parent_id)
        is_l4 = isinstance(parent, PluginContext) and parent.stream_context is not None and parent.http_context is None
        ctx: Context
        try:
            if not isinstance(parent, PluginContext):
                raise RuntimeError(f"stream context {context_id} has no plugin context {parent_id}")
            ctx = parent.new_stream_context() if is_l4 else parent.new_http_context()
        except BaseException as exc:
            self.report(f"creating the context for stream {context_id}", exc)
            ctx = _UnavailableStream() if is_l4 else _UnavailableHttp()
        ctx.context_id = context_id
        if isinstance(parent, PluginContext):
            ctx.plugin = parent
        self.contexts[context_id] = ctx
        return mask_of(type(ctx))

    def _new_plugin(self, root_id: str) -> PluginContext:
        cls = registry.lookup(root_id)
        if cls is None:
            known = ", ".join(repr(r) for r in registry.plugins) or "none"
            plugin = _Unconfigurable()
            plugin.reason = f"proxywasm: no plugin registered for root_id {root_id!r} (registered: {known})"
            return plugin
        try:
            return cls()
        except BaseException as exc:
            self.report(f"{cls.__name__}()", exc)
            plugin = _Unconfigurable()
            plugin.reason = f"proxywasm: creating {cls.__name__} failed; see the traceback above"
            return plugin

    def on_vm_start(self, context_id: int, size: int) -> bool:
        plugin = self.contexts[context_id]
        assert isinstance(plugin, PluginContext)
        try:
            return bool(plugin.on_vm_start(hostcalls.get_buffer(BufferType.VM_CONFIGURATION, 0, size)))
        except BaseException as exc:
            self.report(f"{type(plugin).__name__}.on_vm_start", exc)
            return False

    def on_configure(self, context_id: int, size: int) -> bool:
        plugin = self.contexts[context_id]
        assert isinstance(plugin, PluginContext)
        try:
            ok = plugin.on_configure(hostcalls.get_buffer(BufferType.PLUGIN_CONFIGURATION, 0, size) if size else b"")
        except BaseException as exc:
            self.report(f"{type(plugin).__name__}.on_configure (the configuration is rejected)", exc)
            return False
        if not ok:
            hostcalls.log(LogLevel.ERROR, f"proxywasm: {type(plugin).__name__}.on_configure rejected the configuration")
        return bool(ok)

    def validate_configuration(self, context_id: int, size: int) -> bool:
        plugin = self.contexts[context_id]
        assert isinstance(plugin, PluginContext)
        try:
            data = hostcalls.get_buffer(BufferType.PLUGIN_CONFIGURATION, 0, size) if size else b""
            return bool(plugin.validate_configuration(data))
        except BaseException as exc:
            self.report(f"{type(plugin).__name__}.validate_configuration", exc)
            return False

    def _plugin_event(self, context_id: int, method: str, *args: Any) -> None:
        plugin = self.contexts.get(context_id)
        try:
            getattr(plugin, method)(*args)
        except BaseException as exc:
            self.report(f"{type(plugin).__name__}.{method}", exc)

    def on_tick(self, context_id: int) -> None:
        self._plugin_event(context_id, "on_tick")

    def on_queue_ready(self, context_id: int, queue_id: int) -> None:
        self._plugin_event(context_id, "on_queue_ready", queue_id)

    def on_foreign_function(self, context_id: int, function_id: int, size: int) -> None:
        data = hostcalls.get_buffer(BufferType.CALL_DATA, 0, size) if size else b""
        self._plugin_event(context_id, "on_foreign_function", function_id, data)

    def on_done(self, context_id: int) -> bool:
        ctx = self.contexts.get(context_id)
        try:
            return bool(getattr(ctx, "on_done")())  # noqa: B009 - every context kind defines it
        except BaseException as exc:
            self.report(f"{type(ctx).__name__}.on_done", exc)
            return True

    def on_log(self, context_id: int) -> None:
        ctx = self.contexts.get(context_id)
        try:
            getattr(ctx, "on_log")()  # noqa: B009
        except BaseException as exc:
            self.report(f"{type(ctx).__name__}.on_log", exc)

    def on_delete(self, context_id: int) -> None:
        self.contexts.pop(context_id, None)

    # ---- HTTP ----

    def on_request_headers(self, context_id: int, num_headers: int, end_of_stream: int) -> int | None:
        ctx: Any = self.contexts[context_id]
        try:
            return ctx.on_request_headers(request_headers, bool(end_of_stream))  # type: ignore[no-any-return]
        except BaseException as exc:
            return self._stream_error(ctx, "on_request_headers", exc)

    def on_request_body(self, context_id: int, size: int, end_of_stream: int) -> int | None:
        ctx: Any = self.contexts[context_id]
        try:
            body = Body(BufferType.HTTP_REQUEST_BODY, size)
            return ctx.on_request_body(body, bool(end_of_stream))  # type: ignore[no-any-return]
        except BaseException as exc:
            return self._stream_error(ctx, "on_request_body", exc)

    def on_request_trailers(self, context_id: int, num_trailers: int) -> int | None:
        ctx: Any = self.contexts[context_id]
        try:
            return ctx.on_request_trailers(request_trailers)  # type: ignore[no-any-return]
        except BaseException as exc:
            return self._stream_error(ctx, "on_request_trailers", exc)

    def on_response_headers(self, context_id: int, num_headers: int, end_of_stream: int) -> int | None:
        ctx: Any = self.contexts[context_id]
        try:
            return ctx.on_response_headers(response_headers, bool(end_of_stream))  # type: ignore[no-any-return]
        except BaseException as exc:
            return self._stream_error(ctx, "on_response_headers", exc)

    def on_response_body(self, context_id: int, size: int, end_of_stream: int) -> int | None:
        ctx: Any = self.contexts[context_id]
        try:
            body = Body(BufferType.HTTP_RESPONSE_BODY, size)
            return ctx.on_response_body(body, bool(end_of_stream))  # type: ignore[no-any-return]
        except BaseException as exc:
            return self._stream_error(ctx, "on_response_body", exc)

    def on_response_trailers(self, context_id: int, num_trailers: int) -> int | None:
        ctx: Any = self.contexts[context_id]
        try:
            return ctx.on_response_trailers(response_trailers)  # type: ignore[no-any-return]
        except BaseException as exc:
            return self._stream_error(ctx, "on_response_trailers", exc)

    # ---- L4 ----

    def on_new_connection(self, context_id: int) -> int | None:
        ctx: Any = self.contexts[context_id]
        try:
            return ctx.on_new_connection()  # type: ignore[no-any-return]
        except BaseException as exc:
            return self._stream_error(ctx, "on_new_connection", exc)

    def on_downstream_data(self, context_id: int, size: int, end_of_stream: int) -> int | None:
        ctx: Any = self.contexts[context_id]
        try:
            data = Body(BufferType.DOWNSTREAM_DATA, size)
            return ctx.on_downstream_data(data, bool(end_of_stream))  # type: ignore[no-any-return]
        except BaseException as exc:
            return self._stream_error(ctx, "on_downstream_data", exc)

    def on_upstream_data(self, context_id: int, size: int, end_of_stream: int) -> int | None:
        ctx: Any = self.contexts[context_id]
        try:
            data = Body(BufferType.UPSTREAM_DATA, size)
            return ctx.on_upstream_data(data, bool(end_of_stream))  # type: ignore[no-any-return]
        except BaseException as exc:
            return self._stream_error(ctx, "on_upstream_data", exc)

    def on_downstream_connection_close(self, context_id: int, peer: int) -> None:
        ctx: Any = self.contexts.get(context_id)
        try:
            ctx.on_downstream_close(PeerType(peer))
        except BaseException as exc:
            self.report(f"{type(ctx).__name__}.on_downstream_close", exc)

    def on_upstream_connection_close(self, context_id: int, peer: int) -> None:
        ctx: Any = self.contexts.get(context_id)
        try:
            ctx.on_upstream_close(PeerType(peer))
        except BaseException as exc:
            self.report(f"{type(ctx).__name__}.on_upstream_close", exc)

    # ---- callouts ----

    def _callout(self, context_id: int, token: int, deliver: Any, *args: int) -> None:
        owner = callouts.owner(token)
        try:
            if owner is not None and owner.context_id != context_id:
                # Envoy delivers callout answers to the plugin's root context; act on the caller's stream.
                hostcalls.set_effective_context(owner.context_id)
            deliver(token, *args)
        except BaseException as exc:
            name = type(owner).__name__ if owner else "callout"
            self.report(f"{name} callout response", exc)
            if isinstance(owner, (HttpContext, StreamContext)):
                if self.fail_stream(owner) == Action.CONTINUE and isinstance(owner, HttpContext):
                    try:
                        hostcalls.continue_stream(StreamType.REQUEST)
                    except hostcalls.HostCallError as err:
                        self.report("resuming after a failed callout", err)

    def on_http_call_response(self, context_id: int, token: int, headers: int, body: int, trailers: int) -> None:
        self._callout(context_id, token, callouts.deliver_http_response, headers, body, trailers)

    def on_grpc_receive_initial_metadata(self, context_id: int, token: int, count: int) -> None:
        self._callout(context_id, token, callouts.deliver_grpc_initial_metadata, count)

    def on_grpc_receive(self, context_id: int, token: int, size: int) -> None:
        self._callout(context_id, token, callouts.deliver_grpc_message, size)

    def on_grpc_receive_trailing_metadata(self, context_id: int, token: int, count: int) -> None:
        self._callout(context_id, token, callouts.deliver_grpc_trailing_metadata, count)

    def on_grpc_close(self, context_id: int, token: int, status: int) -> None:
        self._callout(context_id, token, callouts.deliver_grpc_close, status)


dispatcher = Dispatcher()

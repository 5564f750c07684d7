"""Routes the runtime's callbacks (context ids and sizes) to the filter's context objects, runs the
coroutines of ``async def`` callbacks (see tasks.py), applies the failure policy when a callback
raises, and reports author mistakes."""

from __future__ import annotations

import sys

from . import abi, callouts, hostcalls, metrics, properties
from .abi import AUTHOR_MISTAKE_PREFIX, Action, BufferType, LogLevel, PeerType, StreamType
from .body import Body
from .context import Context, FailurePolicy, HttpContext, PluginContext, StreamContext
from .errors import SDK_DIR, ConfigError, UsageError
from .headers import request_headers, request_trailers, response_headers, response_trailers

TYPE_CHECKING = False  # typing is not imported at run time: it would cost memory in every VM
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any


def author_mistake(message: str) -> None:
    """Log a mistake in the filter's code, at error level with AUTHOR_MISTAKE_PREFIX."""
    try:
        hostcalls.log(LogLevel.ERROR, AUTHOR_MISTAKE_PREFIX + message)
    except Exception:
        pass


def _unwaited_text(ctx: Context) -> str:
    """The last unwaited callout of ``ctx``, for a message: e.g. "http_call to cluster 'auth'"."""
    call, cluster = ctx._unwaited_what
    return f"{call} to cluster {cluster!r}"


_tasks_module: Any = None  # tasks.py once loaded: an import statement per call costs an import-machinery lookup


def tasks() -> Any:
    """The coroutine driver (tasks.py). It is loaded at build time only for filters that await
    (register() sees an async def, or the filter imports gather/Future): inside Envoy a module not
    loaded at build time does not exist, and sync filters keep the memory."""
    global _tasks_module
    if _tasks_module is None:
        try:
            from . import tasks as module
        except (ImportError, RuntimeError):  # RuntimeError: the served module cannot compile it now either
            raise UsageError(
                "this filter awaits, but proxywasm build saw no async def in its registered classes: define the "
                "async callbacks on the classes given to @proxywasm.register (or import proxywasm.gather at "
                "module level)"
            ) from None
        _tasks_module = module
    return _tasks_module


# The runtime's callbacks in mask-bit order, from the one table (abi.CALLBACKS; runtime/callbacks.c
# follows it, tests/runtime/test_callback_table.py checks).
CALLBACKS = tuple(method for _, method, _, _ in abi.CALLBACKS)
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
# Callbacks that may be ``async def``: HTTP stream callbacks (the stream waits) and plugin events.
_ASYNC_OK = {
    PluginContext: ("on_tick", "on_queue_ready", "on_foreign_function"),
    HttpContext: (
        "on_request_headers",
        "on_request_body",
        "on_request_trailers",
        "on_response_headers",
        "on_response_body",
        "on_response_trailers",
    ),  # fmt: skip
    StreamContext: (),
}
# A class with async request (response) callbacks also receives that direction's body and
# trailers, which the SDK handles while a coroutine waits. on_done, which closes coroutines still
# waiting when the stream ends, is added to a context's mask only while one waits (tasks.py).
_AWAIT_BITS = {
    StreamType.REQUEST: BIT["on_request_body"] | BIT["on_request_trailers"],
    StreamType.RESPONSE: BIT["on_response_body"] | BIT["on_response_trailers"],
}
_CO_COROUTINE, _CO_ASYNC_GENERATOR = 0x80, 0x200
_masks: dict[type, int] = {}


def _code_flags(function: object) -> int:
    return getattr(getattr(function, "__code__", None), "co_flags", 0)


def mask_of(cls: type[Context]) -> int:
    """Bits of the callbacks ``cls`` overrides, plus those every context of its kind receives
    (and, for a class with ``async def`` stream callbacks, the body callbacks the SDK handles)."""
    mask = _masks.get(cls)
    if mask is None:
        base = next(b for b in _ROUTES if issubclass(cls, b))
        mask = _ALWAYS[base]
        awaits = False
        for callback, method in _ROUTES[base].items():
            function = getattr(cls, method)
            if function is not getattr(base, method):
                mask |= BIT[callback]
                if base is HttpContext and _code_flags(function) & _CO_COROUTINE:
                    mask |= _AWAIT_BITS[StreamType.RESPONSE if "response" in method else StreamType.REQUEST]
                    awaits = True
        cls._awaits = awaits
        cls._own_on_done = bool(mask & BIT["on_done"])  # tasks.py adds on_done while coroutines wait
        _masks[cls] = mask
    return mask


def format_exception(exc: BaseException) -> str:
    """A traceback without the ``traceback`` module (which would cost memory in every VM). The
    SDK's frames that led into the filter's code (the dispatcher, the coroutine driver) are left
    out: the traceback starts at the filter's first frame. Frames below it stay, the SDK's too.
    Where the SDK called the standard library itself (no frame of the filter's came first), or
    every frame is the SDK's, all are kept."""
    lines = ["Traceback (most recent call last):"]
    tb: TracebackType | None = exc.__traceback__
    first = tb
    while first is not None and first.tb_frame.f_code.co_filename.startswith(SDK_DIR):
        first = first.tb_next
    if first is not None:
        name = first.tb_frame.f_code.co_filename
        if not (name.startswith("<frozen ") or name.startswith(sys.base_prefix.rstrip("/") + "/")):
            tb = first
    repeats = 0
    while tb is not None:
        code = tb.tb_frame.f_code
        line = f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}'
        tb = tb.tb_next
        if line == lines[-1]:  # a recursion: as CPython's traceback, three lines then a count
            repeats += 1
            if repeats >= 3:
                continue
        elif repeats >= 3:
            lines.append(f"  [Previous line repeated {repeats - 2} more times]")
            repeats = 0
        else:
            repeats = 0
        lines.append(line)
    if repeats >= 3:
        lines.append(f"  [Previous line repeated {repeats - 2} more times]")
    lines.append(f"{type(exc).__qualname__}: {exc}" if str(exc) else type(exc).__qualname__)
    return "\n".join(lines)


def _makes_http_contexts(plugin: type[PluginContext]) -> bool:
    return plugin.http_context is not None or plugin.new_http_context is not PluginContext.new_http_context


def makes_stream_contexts(plugin: type[PluginContext]) -> bool:
    """Whether a plugin's contexts are L4 ones (StreamContexts): it says how to make those
    (``stream_context`` or ``new_stream_context``) and not how to make HTTP contexts. Envoy's
    ``on_context_create`` does not tell which kind a new context is, so a plugin serves one kind
    (as a root context's type does in the Rust SDK); one that says both serves HTTP."""
    stream = plugin.stream_context is not None or plugin.new_stream_context is not PluginContext.new_stream_context
    return stream and not _makes_http_contexts(plugin)


class Registry:
    """Plugin classes by root id (``None``: any root id)."""

    def __init__(self) -> None:
        self.plugins: dict[str | None, type[PluginContext]] = {}

    def add(self, plugin: type[PluginContext], root_id: str | None) -> None:
        if root_id in self.plugins:
            raise ValueError(f"a plugin is already registered for root_id {root_id!r}")
        self.plugins[root_id] = plugin

    def serves(self) -> list[str]:
        """What each registered plugin makes contexts for, as "ROOT:KIND" ("*" for a plugin that
        takes any root id; KIND "http" for HTTP streams, "stream" for L4 connections, "none"), as the
        dispatcher decides it (:func:`makes_stream_contexts`). proxywasm_build.build reads them."""
        pairs = []
        for root_id, plugin in self.plugins.items():
            kind = "stream" if makes_stream_contexts(plugin) else "http" if _makes_http_contexts(plugin) else "none"
            pairs.append(f"{'*' if root_id is None else root_id}:{kind}")
        return pairs

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


async def _probe() -> None:
    pass


_probe_coroutine = _probe()
_COROUTINE = type(_probe_coroutine)  # the type of what calling an ``async def`` returns
_probe_coroutine.close()
del _probe_coroutine
# Plain ints, not the IntEnum members: tasks.py indexes lists with them, which CPython specialises
# only for exact ints.
_REQUEST, _RESPONSE = int(StreamType.REQUEST), int(StreamType.RESPONSE)
_REQUEST_BODY, _RESPONSE_BODY = BufferType.HTTP_REQUEST_BODY, BufferType.HTTP_RESPONSE_BODY
_new_body = object.__new__
_HEADERS, _BODY, _TRAILERS = 0, 1, 2
_FORWARDED = {_REQUEST: "forwarded the request", _RESPONSE: "forwarded the response"}


class Dispatcher:
    """Every callback catches BaseException: a filter's ``sys.exit()`` must meet the failure
    policy like any error, not escape into the runtime (which would just continue the stream)."""

    def __init__(self) -> None:
        self.contexts: dict[int, Context] = {}
        # Plugin classes that make their HTTP contexts from ``http_context`` (new_http_context not
        # overridden): on_context_create instantiates it without the method call.
        self._plain_plugins: set[type] = set()
        self._l4_plugins: set[type] = set()  # plugins whose contexts are L4 ones (makes_stream_contexts)
        self._seeded = False  # random reseeded in this VM (on_context_create)

    # ---- errors and author mistakes ----

    def report(self, where: str, exc: BaseException) -> None:
        prefix = AUTHOR_MISTAKE_PREFIX if isinstance(exc, UsageError) else "proxywasm: "
        if type(exc) is AttributeError and _tasks_module is not None and exc.args:
            if isinstance(getattr(exc, "obj", None), _tasks_module.Future):  # a forgotten await, most often
                exc.args = (f"{exc.args[0]}: it is the awaitable, not its result. Await it first: "
                            "response = await self.http_call(...)",)  # fmt: skip
        try:
            hostcalls.log(LogLevel.ERROR, f"{prefix}exception in {where}\n{format_exception(exc)}")
        except Exception:
            pass

    def fail_stream(self, ctx: Context, encoding: bool = False) -> int:
        """Apply the plugin's failure policy to the stream of ``ctx``; returns the action.
        ``encoding``: the failure happened in a response callback."""
        policy = getattr(getattr(ctx, "plugin", None), "failure_policy", FailurePolicy.FAIL_CLOSED)
        if policy == FailurePolicy.FAIL_OPEN:
            return Action.CONTINUE
        if isinstance(ctx, HttpContext) and ctx._local_reply_sent:
            # The stream already has its answer (one local reply at most: Envoy 1.40 crashes on a
            # second). In the response path that reply is what is passing through: let it go on.
            return Action.CONTINUE if encoding else Action.PAUSE
        try:
            if isinstance(ctx, HttpContext):
                ctx._act(ctx._send_local_reply, 500, b"Internal Server Error\n", "wasm_python_exception")
            else:
                ctx._act(hostcalls.close_stream, StreamType.DOWNSTREAM)
        except Exception as err:
            self.report("failure policy", err)
        return Action.PAUSE

    def stream_error(self, ctx: Context, where: str, exc: BaseException) -> int:
        """Report an exception from the callback ``where`` ("Class.on_response_headers") and apply
        the failure policy."""
        self.report(where, exc)
        return self.fail_stream(ctx, ".on_response_" in where)

    def _stream_error(self, ctx: Context, where: str, exc: BaseException) -> int:
        return self.stream_error(ctx, f"{type(ctx).__name__}.{where}", exc)

    def bad_result(self, context_id: int, callback: str, result: object) -> int:
        """A stream callback returned what Envoy has no status for (the runtime asks only then:
        a bool, a str, an int outside the Action values): name the callback, apply the failure
        policy, and answer Envoy with the policy's action."""
        ctx: Any = self.contexts.get(context_id)
        where = f"{type(ctx).__name__}.{callback}" if ctx is not None else callback
        hint = ""
        if type(result) is bool:
            hint = f" (a bool: Envoy would read {result} as {'PAUSE' if result else 'CONTINUE'})"
        replied = isinstance(ctx, HttpContext) and ctx._local_reply_sent  # fail_stream keeps that reply
        author_mistake(
            f"{where} returned {result!r}{hint}: a stream callback returns an Action (Action.CONTINUE, "
            "Action.PAUSE, ...) or None for CONTINUE; "
            + ("the local reply it sent stands" if replied else "the plugin's failure policy applies")
        )
        if ctx is None:
            return Action.CONTINUE
        return self.fail_stream(ctx, "response" in callback or "upstream" in callback)

    def check_unwaited(self, ctx: Context, where: str, action: Any, *, qualify: bool = False) -> None:
        """A stream callback returned: if it started callouts nothing waits for and let the stream
        go on (CONTINUE), the answers will find the stream gone: an author mistake. ``where`` names
        the callback; ``qualify`` prefixes the context's class (only when there is a mistake to
        report: the usual PAUSE costs no string)."""
        if action is None or action == Action.CONTINUE:
            if qualify:
                where = f"{type(ctx).__name__}.{where}"
            side = "let the connection's data through" if isinstance(ctx, StreamContext) else (
                _FORWARDED[_RESPONSE] if "response" in where else _FORWARDED[_REQUEST])  # fmt: skip
            author_mistake(
                f"{where} started a callout ({_unwaited_text(ctx)}) and returned CONTINUE: Envoy {side} without "
                "waiting for the answer (resuming the stream from the callout's callback then fails). Return "
                "Action.PAUSE and resume from the callback, or await the callout in an async def callback; for a "
                "callout the stream should not wait for, pass detach=True"
            )
        else:
            ctx._held_for_callout = where
        ctx._unwaited = 0

    def check_held(self, ctx: Any) -> None:
        """A callout's callback returned and the stream its callout paused is still held: if no
        callout of it is pending and it has no local reply, nothing will resume it (unless the
        filter does so from another callback later, e.g. on_tick): Envoy would hold the request
        until a timeout, with no log line. Say so."""
        where: str = ctx._held_for_callout
        if not isinstance(ctx, HttpContext) or ctx._local_reply_sent or callouts.pending_for(ctx):
            return
        ctx._held_for_callout = None
        if "." not in where:
            where = f"{type(ctx).__name__}.{where}"
        side = "response" if ".on_response_" in where else "request"
        author_mistake(
            f"{where} paused the {side} for a callout ({_unwaited_text(ctx)}), and the callout's callback returned "
            f"without resuming it: call self.resume_{side}() (or answer with self.send_response(...)) in the "
            f"callback, or Envoy holds the {side} until a timeout"
        )

    @staticmethod
    def _read_environment() -> None:
        """os.environ is what CPython read at build time (nothing): fill it, once per VM, with the
        VM's environment as Envoy gives it (``vm_config.environment_variables``; Istio's
        ``vmConfig.env``). The same mapping object, so ``from os import environ`` sees it too."""
        environ = getattr(sys.modules.get("os"), "environ", None)
        if environ is None:
            return
        for entry in hostcalls.raw.environ():
            name, _, value = entry.partition(b"=")
            if name:
                environ[name.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")

    # ---- lifecycle ----

    def on_context_create(self, context_id: int, parent_id: int) -> int:
        if parent_id == 0:
            if not self._seeded:
                # Once per VM: random's state is the snapshot's, the same in every VM, unless seeded
                # from Envoy's randomness now (os.urandom works here, not at build time).
                self._seeded = True
                generator = sys.modules.get("random")
                if generator is not None:
                    generator.seed()
                self._read_environment()
            root_id = properties.plugin_root_id()
            plugin = self._new_plugin(root_id)
            plugin.context_id = context_id
            plugin.root_id = root_id
            plugin.plugin = plugin
            self.contexts[context_id] = plugin
            if type(plugin).new_http_context is PluginContext.new_http_context:
                self._plain_plugins.add(type(plugin))
            if makes_stream_contexts(type(plugin)):
                self._l4_plugins.add(type(plugin))
            return mask_of(type(plugin))
        parent = self.contexts.get(parent_id)
        ctx: Context
        # A plugin that makes its HTTP contexts from http_context (the usual case): what
        # new_http_context() would do, without the call (this runs once per request).
        http_context = parent.http_context if type(parent) in self._plain_plugins else None  # type: ignore[union-attr]
        is_l4 = http_context is None and type(parent) in self._l4_plugins
        try:
            if http_context is not None:
                ctx = http_context()
            elif not isinstance(parent, PluginContext):
                raise RuntimeError(f"stream context {context_id} has no plugin context {parent_id}")
            else:
                ctx = parent.new_stream_context() if is_l4 else parent.new_http_context()
        except BaseException as exc:
            self.report(f"creating the context for stream {context_id}", exc)
            ctx = _UnavailableStream() if is_l4 else _UnavailableHttp()
        if isinstance(parent, PluginContext):
            ctx.plugin = parent
        ctx.context_id = context_id
        self.contexts[context_id] = ctx
        cls = type(ctx)
        mask = _masks.get(cls)  # mask_of()'s cache, read without the call (this runs once per request)
        return mask if mask is not None else mask_of(cls)

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

    def _verdict(self, plugin: PluginContext, callback: str, result: object) -> bool:
        if result is None:
            author_mistake(
                f"{type(plugin).__name__}.{callback} returned None (return True to accept); Envoy rejects it"
            )
            return False
        if type(result) is _COROUTINE:
            result.close()
            author_mistake(f"{type(plugin).__name__}.{callback} is async def: it must answer at once")
            return False
        return bool(result)

    def on_vm_start(self, context_id: int, size: int) -> bool:
        plugin = self.contexts[context_id]
        assert isinstance(plugin, PluginContext)
        try:
            result = plugin.on_vm_start(hostcalls.get_buffer(BufferType.VM_CONFIGURATION, 0, size))
        except BaseException as exc:
            self.report(f"{type(plugin).__name__}.on_vm_start", exc)
            return False
        return self._verdict(plugin, "on_vm_start", result)

    def on_configure(self, context_id: int, size: int) -> bool:
        plugin = self.contexts[context_id]
        assert isinstance(plugin, PluginContext)
        try:
            metrics.define_pending()
            ok: object = plugin.on_configure(
                hostcalls.get_buffer(BufferType.PLUGIN_CONFIGURATION, 0, size) if size else b""
            )
        except ConfigError as exc:  # the operator's mistake: the key and the problem, no traceback
            hostcalls.log(LogLevel.ERROR, f"proxywasm: configuration rejected: {exc}")
            return False
        except BaseException as exc:
            self.report(f"{type(plugin).__name__}.on_configure (the configuration is rejected)", exc)
            return False
        if ok is None or type(ok) is _COROUTINE:
            return self._verdict(plugin, "on_configure", ok)
        if not ok:
            hostcalls.log(LogLevel.ERROR, f"proxywasm: {type(plugin).__name__}.on_configure rejected the configuration")
        elif not plugin._ticking and type(plugin).on_tick is not PluginContext.on_tick:
            hostcalls.log(
                LogLevel.WARN,
                f"proxywasm: {type(plugin).__name__} defines on_tick, but no tick period was set in on_vm_start or "
                "on_configure: Envoy calls on_tick only after self.set_tick_period(ms)",
            )
        return bool(ok)

    def validate_configuration(self, context_id: int, size: int) -> bool:
        plugin = self.contexts[context_id]
        assert isinstance(plugin, PluginContext)
        try:
            data = hostcalls.get_buffer(BufferType.PLUGIN_CONFIGURATION, 0, size) if size else b""
            result = plugin.validate_configuration(data)
        except BaseException as exc:
            self.report(f"{type(plugin).__name__}.validate_configuration", exc)
            return False
        return self._verdict(plugin, "validate_configuration", result)

    def _plugin_event(self, context_id: int, method: str, *args: Any) -> None:
        plugin = self.contexts.get(context_id)
        where = f"{type(plugin).__name__}.{method}"
        try:
            result = getattr(plugin, method)(*args)
        except BaseException as exc:
            self.report(where, exc)
            return
        if type(result) is _COROUTINE and plugin is not None:
            tasks().start_plain(plugin, result, where, lambda exc: self.report(where, exc))

    def on_tick(self, context_id: int) -> None:
        self._plugin_event(context_id, "on_tick")

    def on_queue_ready(self, context_id: int, queue_id: int) -> None:
        self._plugin_event(context_id, "on_queue_ready", queue_id)

    def on_foreign_function(self, context_id: int, function_id: int, size: int) -> None:
        data = hostcalls.get_buffer(BufferType.CALL_DATA, 0, size) if size else b""
        self._plugin_event(context_id, "on_foreign_function", function_id, data)

    def on_done(self, context_id: int) -> bool:
        ctx = self.contexts.get(context_id)
        if ctx is not None and ctx._streams is not None and ctx._streams.tasks:
            tasks().close_all(ctx)  # the stream ends: waiting coroutines run their finally blocks
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

    def _result(self, ctx: Any, result: Any, where: str, direction: int, kind: int, eos: int) -> Any:
        """What a stream callback returned, for Envoy: a coroutine runs; unwaited callouts are checked."""
        if type(result) is _COROUTINE:
            driver = _tasks_module or tasks()
            return driver.start(ctx, result, where, direction, kind, bool(eos))
        if ctx._unwaited:
            self.check_unwaited(ctx, where, result, qualify=True)
        return result

    def on_request_headers(self, context_id: int, num_headers: int, end_of_stream: int) -> int | None:
        ctx: Any = self.contexts[context_id]
        try:
            result = ctx.on_request_headers(request_headers, end_of_stream != 0)
        except BaseException as exc:
            return self._stream_error(ctx, "on_request_headers", exc)
        if type(result) is _COROUTINE:  # _result(), inlined: an await-style filter's usual start
            return (_tasks_module or tasks()).start(ctx, result, "on_request_headers", _REQUEST, _HEADERS,  # type: ignore[no-any-return]
                                                    end_of_stream != 0)  # fmt: skip
        if ctx._unwaited:
            return self._result(ctx, result, "on_request_headers", _REQUEST, _HEADERS, end_of_stream)  # type: ignore[no-any-return]
        return result  # type: ignore[no-any-return]

    def _body(self, ctx: Any, direction: int, buffer: BufferType, size: int, eos: int, name: str) -> int | None:
        if ctx._awaits:
            held: int | None = tasks().body_event(ctx, direction, size, bool(eos))
            if held is not None:
                return held
        try:
            result = getattr(ctx, name)(Body(buffer, size), bool(eos))
        except BaseException as exc:
            return self._stream_error(ctx, name, exc)
        if type(result) is _COROUTINE or ctx._unwaited:
            result = self._result(ctx, result, name, direction, _BODY, eos)
        if ctx._awaits:
            tasks().body_forwarded(ctx, direction, size, result)
        return result  # type: ignore[no-any-return]

    def on_request_body(self, context_id: int, size: int, end_of_stream: int) -> int | None:
        ctx: Any = self.contexts[context_id]
        if ctx._awaits:
            return self._body(ctx, _REQUEST, _REQUEST_BODY, size, end_of_stream, "on_request_body")
        body = _new_body(Body)  # Body(_REQUEST_BODY, size) without its __init__ frame (100 ns in the VM)
        body.buffer_type = _REQUEST_BODY
        body.size = size
        try:  # _body() without coroutines, inline: Envoy calls it for every chunk of every body
            result = ctx.on_request_body(body, end_of_stream != 0)
        except BaseException as exc:
            return self._stream_error(ctx, "on_request_body", exc)
        if type(result) is _COROUTINE or ctx._unwaited:
            return self._result(ctx, result, "on_request_body", _REQUEST, _BODY, end_of_stream)  # type: ignore[no-any-return]
        return result  # type: ignore[no-any-return]

    def _trailers(self, ctx: Any, direction: int, trailers: Any, name: str) -> int | None:
        if ctx._awaits:
            held: int | None = tasks().trailers_event(ctx, direction)
            if held is not None:
                return held
        try:
            result = getattr(ctx, name)(trailers)
        except BaseException as exc:
            return self._stream_error(ctx, name, exc)
        if type(result) is _COROUTINE or ctx._unwaited:
            return self._result(ctx, result, name, direction, _TRAILERS, 0)  # type: ignore[no-any-return]
        return result  # type: ignore[no-any-return]

    def on_request_trailers(self, context_id: int, num_trailers: int) -> int | None:
        ctx: Any = self.contexts[context_id]
        return self._trailers(ctx, _REQUEST, request_trailers, "on_request_trailers")

    def on_response_headers(self, context_id: int, num_headers: int, end_of_stream: int) -> int | None:
        ctx: Any = self.contexts[context_id]
        try:
            result = ctx.on_response_headers(response_headers, end_of_stream != 0)
        except BaseException as exc:
            return self._stream_error(ctx, "on_response_headers", exc)
        if type(result) is _COROUTINE or ctx._unwaited:
            return self._result(ctx, result, "on_response_headers", _RESPONSE, _HEADERS, end_of_stream)  # type: ignore[no-any-return]
        return result  # type: ignore[no-any-return]

    def on_response_body(self, context_id: int, size: int, end_of_stream: int) -> int | None:
        ctx: Any = self.contexts[context_id]
        if ctx._awaits:
            return self._body(ctx, _RESPONSE, _RESPONSE_BODY, size, end_of_stream, "on_response_body")
        body = _new_body(Body)  # as on_request_body
        body.buffer_type = _RESPONSE_BODY
        body.size = size
        try:
            result = ctx.on_response_body(body, end_of_stream != 0)
        except BaseException as exc:
            return self._stream_error(ctx, "on_response_body", exc)
        if type(result) is _COROUTINE or ctx._unwaited:
            return self._result(ctx, result, "on_response_body", _RESPONSE, _BODY, end_of_stream)  # type: ignore[no-any-return]
        return result  # type: ignore[no-any-return]

    def on_response_trailers(self, context_id: int, num_trailers: int) -> int | None:
        ctx: Any = self.contexts[context_id]
        return self._trailers(ctx, _RESPONSE, response_trailers, "on_response_trailers")

    # ---- L4 ----

    def _l4(self, ctx: Any, where: str, result: Any) -> Any:
        if type(result) is _COROUTINE:  # refused at build time; a class made at run time ends here
            result.close()
            return self._stream_error(ctx, where, UsageError(f"{where} is async def: L4 callbacks cannot await"))
        if ctx._unwaited:
            self.check_unwaited(ctx, where, result, qualify=True)
        return result

    def on_new_connection(self, context_id: int) -> int | None:
        ctx: Any = self.contexts[context_id]
        try:
            result = ctx.on_new_connection()
        except BaseException as exc:
            return self._stream_error(ctx, "on_new_connection", exc)
        return self._l4(ctx, "on_new_connection", result)  # type: ignore[no-any-return]

    def on_downstream_data(self, context_id: int, size: int, end_of_stream: int) -> int | None:
        ctx: Any = self.contexts[context_id]
        try:
            data = Body(BufferType.DOWNSTREAM_DATA, size)
            result = ctx.on_downstream_data(data, bool(end_of_stream))
        except BaseException as exc:
            return self._stream_error(ctx, "on_downstream_data", exc)
        return self._l4(ctx, "on_downstream_data", result)  # type: ignore[no-any-return]

    def on_upstream_data(self, context_id: int, size: int, end_of_stream: int) -> int | None:
        ctx: Any = self.contexts[context_id]
        try:
            data = Body(BufferType.UPSTREAM_DATA, size)
            result = ctx.on_upstream_data(data, bool(end_of_stream))
        except BaseException as exc:
            return self._stream_error(ctx, "on_upstream_data", exc)
        return self._l4(ctx, "on_upstream_data", result)  # type: ignore[no-any-return]

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
        if owner is not None and self.contexts.get(owner.context_id) is not owner:
            # The stream that made the call has ended (Envoy delivers answers to the plugin's root
            # context, also after the stream is gone): drop the answer.
            callouts.forget(token)
            return
        name = type(owner).__name__ if owner else "callout"
        try:
            if owner is not None and owner.context_id != context_id:
                # Envoy delivers callout answers to the plugin's root context; act on the caller's stream.
                hostcalls.set_effective_context(owner.context_id)
            result = deliver(token, *args)
        except BaseException as exc:
            self._callout_error(owner, f"{name} callout response", exc)
            return
        if type(result) is _COROUTINE and owner is not None:
            where = f"{name} callout callback"
            tasks().start_plain(owner, result, where, lambda exc: self._callout_error(owner, where, exc))
        elif owner is not None and owner._held_for_callout is not None:
            self.check_held(owner)

    def _callout_error(self, owner: Context | None, where: str, exc: BaseException) -> None:
        self.report(where, exc)
        if isinstance(owner, (HttpContext, StreamContext)):
            if self.fail_stream(owner) == Action.CONTINUE and isinstance(owner, HttpContext):
                try:
                    owner._act(hostcalls.continue_stream, StreamType.REQUEST)
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

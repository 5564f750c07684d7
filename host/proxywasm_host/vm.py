"""One Wasm VM as Envoy runs it: linking, start-up, the context table and calls into the guest.

Calls follow cpp-host's rules: the current context is set for the duration of a call, effects that
Envoy defers (continue, local reply, callout delivery) run after the outermost call returns, and a trap
marks the VM failed for good.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import wasmtime

from proxywasm.abi import BufferType, LogLevel, MapType, MetricType, Status

from . import properties
from .cache import engine
from .context import Context, HeaderMap, Plugin
from .errors import LoadError, WasmTrap
from .fastfunc import host_func
from .hostcalls import ABI_0_1_0, ABI_0_2_0, ABI_0_2_1, HostCall, lookup
from .memory import GuestMemory
from .typed import TypedFunc, adapt_args
from .world import Envoy

_VALTYPE = {"i": wasmtime.ValType.i32(), "I": wasmtime.ValType.i64()}
_ABI_EXPORTS = {
    "proxy_abi_version_0_2_1": ABI_0_2_1,
    "proxy_abi_version_0_2_0": ABI_0_2_0,
    "proxy_abi_version_0_1_0": ABI_0_1_0,
}


def _type_str(types: list[wasmtime.ValType]) -> str:
    return " ".join(str(t) for t in types) or "void"


@dataclass
class HttpCall:
    """An ``http_call`` in flight; answer it with :meth:`respond`, :meth:`fail` or :meth:`timeout`."""

    vm: Vm
    token: int
    cluster: str
    headers: list[tuple[str, str]]
    body: bytes
    trailers: list[tuple[str, str]]
    timeout_ms: int
    context_id: int
    done: bool = False

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)

    def respond(self, status: int = 200, headers: Any = (), body: bytes | str = b"", trailers: Any = ()) -> None:
        from .messages import pairs_of

        hdrs = HeaderMap([(":status", str(status)), *pairs_of(headers)])
        data = body.encode() if isinstance(body, str) else bytes(body)
        self.vm.deliver_http_response(self, hdrs, data, HeaderMap(pairs_of(trailers)) if trailers else None)

    def timeout(self) -> None:
        """Envoy's async client answers a timed-out call with a local 504."""
        body = b"upstream request timeout"
        self.respond(504, [("content-length", str(len(body))), ("content-type", "text/plain")], body)

    def unreachable(self) -> None:
        """Envoy answers a call to an unreachable cluster with a synthetic 503, not a failure."""
        body = b"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
        self.respond(503, [("content-length", str(len(body))), ("content-type", "text/plain")], body)

    def fail(self) -> None:
        """Connection reset: Envoy calls ``on_http_call_response(token, 0, 0, 0)``."""
        self.vm.deliver_http_failure(self)


@dataclass
class GrpcCallout:
    vm: Vm
    token: int
    cluster: str
    service: str
    method: str
    metadata: list[tuple[str, str]]
    request: bytes | None
    stream: bool
    context_id: int
    sent: list[bytes] = field(default_factory=list)
    local_closed: bool = False
    remote_closed: bool = False
    done: bool = False

    def respond(self, message: bytes | None = b"", status: int = 0, status_message: str = "",
                initial_metadata: Any = (), trailing_metadata: Any = ()) -> None:  # fmt: skip
        """Deliver a reply: unary success -> ``on_grpc_receive``; non-zero status -> ``on_grpc_close``."""
        from .messages import pairs_of

        vm = self.vm
        if self.stream:
            if initial_metadata:
                vm.deliver_grpc(self, "initial", HeaderMap(pairs_of(initial_metadata)))
            if message is not None:
                vm.deliver_grpc(self, "message", message)
            if trailing_metadata:
                vm.deliver_grpc(self, "trailing", HeaderMap(pairs_of(trailing_metadata)))
            self.close(status, status_message)
        elif status == 0 and message is not None:
            vm.deliver_grpc(self, "message", message)
            self.done = True
        else:
            self.close(status, status_message)

    def send(self, message: bytes) -> None:
        """Server-side message on a stream."""
        self.vm.deliver_grpc(self, "message", message)

    def close(self, status: int = 0, message: str = "") -> None:
        self.remote_closed = True
        self.done = True
        self.vm.deliver_grpc(self, "close", (status, message))


class Vm:
    def __init__(
        self,
        module: wasmtime.Module,
        envoy: Envoy,
        *,
        vm_id: str = "",
        vm_config: bytes = b"",
        env: dict[str, str] | None = None,
        clusters: dict[str, Any] | None = None,
        raise_on_trap: bool = True,
    ) -> None:
        self.envoy = envoy
        self.vm_id = vm_id
        self.vm_config = vm_config
        self.env = dict(env or {})
        self.clusters: dict[str, Any] = clusters if clusters is not None else {}
        self.raise_on_trap = raise_on_trap
        self.logs: list[tuple[int, str]] = []
        self.envoy_logs: list[tuple[int, str]] = []
        self.failed = False
        self.fail_reason = ""
        self.contexts: dict[int, Context] = {0: Context(0, 0, "vm")}
        self._ids = itertools.count(1)
        self.current: Context | None = None
        self.effective_id = 0
        self.stop_next_iteration = False
        self._after: list[Callable[[], None]] = []
        self._depth = 0
        self.metric_names: dict[int, str] = {}
        self._metric_next = {MetricType.COUNTER: 0, MetricType.GAUGE: 1, MetricType.HISTOGRAM: 2}
        self._callout_next = {0: 0, 1: 1, 2: 2}
        self.http_calls: dict[int, HttpCall] = {}
        self.grpc_callouts: dict[int, GrpcCallout] = {}
        self.pending_done: set[int] = set()
        self.temp_plugin: Plugin | None = None
        self.property_overrides: dict[tuple[bytes, ...], Any] = {}
        self.abi = self._detect_abi(module)
        self.store = wasmtime.Store(engine())
        self._instance = self._link(module)
        exports = self._instance.exports(self.store)
        memory = exports.get("memory")
        self.mem = GuestMemory(self.store, memory if isinstance(memory, wasmtime.Memory) else None)
        self.exports: dict[str, TypedFunc] = {}
        for exp in module.exports:
            item = exports.get(exp.name)
            if isinstance(item, wasmtime.Func):
                try:
                    self.exports[exp.name] = TypedFunc(self.store, item, exp.name)
                except TypeError:
                    continue
        malloc = self.exports.get("malloc") or self.exports.get("proxy_on_memory_allocate")
        if malloc is None:
            raise LoadError("Wasm module is missing malloc function.")
        self.mem.malloc = malloc
        envoy.vms.append(self)

    # -- loading ------------------------------------------------------------------------------------
    @staticmethod
    def _detect_abi(module: wasmtime.Module) -> str:
        names = {e.name for e in module.exports}
        for export, abi in _ABI_EXPORTS.items():
            if export in names:
                return abi
        raise LoadError("Wasm module is missing the proxy-wasm ABI version or requires an unsupported version.")

    def _link(self, module: wasmtime.Module) -> wasmtime.Instance:
        imports: list[wasmtime.Func] = []
        for imp in module.imports:
            where = f"{imp.module}.{imp.name}"
            ty = imp.type
            call = lookup(self, imp.module, imp.name or "") if isinstance(ty, wasmtime.FuncType) else None
            if call is None or not isinstance(ty, wasmtime.FuncType):
                raise LoadError(f"Failed to load Wasm module due to a missing import: {where}")
            want = (list(ty.params), list(ty.results))
            have = ([_VALTYPE[c] for c in call.params], [_VALTYPE[c] for c in call.results])
            if want != have:
                raise LoadError(
                    f"Failed to load Wasm module due to an import type mismatch: {where}, "
                    f"want: {_type_str(want[0])} -> {_type_str(want[1])}, "
                    f"but host exports: {_type_str(have[0])} -> {_type_str(have[1])}"
                )
            imports.append(host_func(self.store, ty, call.params, bool(call.results), self._bind(call)))
        try:
            return wasmtime.Instance(self.store, module, imports)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise LoadError(f"Failed to create new Wasm instance: {exc}") from exc

    def _bind(self, call: HostCall) -> Callable[..., Any]:
        impl = call.impl

        def invoke(*args: int) -> Any:
            return impl(self, *args)

        return invoke

    # -- logging ------------------------------------------------------------------------------------
    def log(self, level: int, message: str, *, internal: bool = False) -> None:
        if internal:
            self.envoy_logs.append((level, message))
        else:
            self.logs.append((level, message))

    # -- calls into the guest -----------------------------------------------------------------------
    def has(self, name: str) -> bool:
        return name in self.exports

    def call(self, name: str, ctx: Context | None, *args: int) -> int | None:
        """Call export ``name`` with ``ctx`` current. ``None``: the export is absent or the VM failed."""
        func = self.exports.get(name)
        if func is None or self.failed:
            return None
        saved = (self.current, self.effective_id)
        self.current, self.effective_id = ctx, 0
        self._depth += 1
        try:
            return func(*adapt_args(func, args))
        except Exception as exc:
            self.fail(f"Function: {name} failed: {_describe(exc)}")
            if self.raise_on_trap:
                raise WasmTrap(self.fail_reason, self.logs) from exc
            return None
        finally:
            self._depth -= 1
            self.current, self.effective_id = saved
            if self._depth == 0:
                self.run_after_actions()

    def after_call(self, action: Callable[[], None]) -> None:
        if self._depth == 0:
            action()
        else:
            self._after.append(action)

    def run_after_actions(self) -> None:
        self.stop_next_iteration = False
        while self._after and self._depth == 0:
            self._after.pop(0)()

    def fail(self, reason: str) -> None:
        if not self.failed:
            self.failed = True
            self.fail_reason = reason
            self.log(LogLevel.ERROR, reason, internal=True)
            self._after.clear()

    def start(self) -> None:
        """Run the module's start code as cpp-host does: ``_initialize`` then ``main``, or ``_start``."""
        ctx = self.contexts[0]
        if self.has("_initialize"):
            self._start_call("_initialize", ctx)
            if self.has("main"):
                self._start_call("main", ctx, 0, 0)
            elif self.has("__main_void"):
                self._start_call("__main_void", ctx)
        elif self.has("_start"):
            self._start_call("_start", ctx)

    def _start_call(self, name: str, ctx: Context, *args: int) -> None:
        try:
            self.call(name, ctx, *args)
        except WasmTrap as exc:
            raise LoadError(f"Failed to start base Wasm: {exc.reason}", self.logs) from exc
        if self.failed:
            raise LoadError(f"Failed to start base Wasm: {self.fail_reason}", self.logs)

    # -- contexts -----------------------------------------------------------------------------------
    def ctx(self) -> Context:
        """The context host calls act on: the effective one if set and alive, else the current one."""
        if self.effective_id:
            eff = self.contexts.get(self.effective_id)
            if eff is not None:
                return eff
        return self.current if self.current is not None else self.contexts[0]

    def root_of(self, ctx: Context) -> Context:
        if ctx.is_root:
            return ctx
        return self.contexts.get(ctx.parent_id, ctx)

    def new_root(self, plugin: Plugin) -> Context:
        cid = next(self._ids)
        ctx = Context(cid, cid, "root", plugin=plugin)
        self.contexts[cid] = ctx
        return ctx

    def new_stream(self, root: Context, kind: str, stream: Any) -> Context:
        cid = next(self._ids)
        ctx = Context(cid, root.id, kind, plugin=root.plugin, stream=stream)
        self.contexts[cid] = ctx
        return ctx

    def create_in_vm(self, ctx: Context) -> None:
        """``proxy_on_context_create`` once per context (Envoy's ``onCreate``)."""
        if not ctx.created_in_vm and not self.failed:
            self.call("proxy_on_context_create", ctx, ctx.id, 0 if ctx.is_root else ctx.parent_id)
        ctx.created_in_vm = True

    def delete(self, ctx: Context) -> None:
        if ctx.created_in_vm and not self.failed:
            self.call("proxy_on_delete", ctx, ctx.id)
        self.contexts.pop(ctx.id, None)

    def done(self, ctx: Context) -> int:
        root = self.root_of(ctx)
        if root.id not in self.pending_done:
            return Status.NOT_FOUND
        self.pending_done.discard(root.id)
        self.after_call(lambda: self.delete(root))
        return Status.OK

    def configuration_in_scope(self) -> bytes:
        return self.temp_plugin.configuration if self.temp_plugin is not None else self.vm_config

    # -- callbacks driven by the host ----------------------------------------------------------------
    def on_queue_ready(self, context_id: int, token: int) -> None:
        ctx = self.contexts.get(context_id)
        if ctx is not None:
            self.call("proxy_on_queue_ready", ctx, context_id, token)

    def on_tick(self, ctx: Context) -> None:
        self.call("proxy_on_tick", ctx, ctx.id)

    # -- header maps and buffers -----------------------------------------------------------------
    def mutable_map(self, ctx: Context, map_type: int) -> HeaderMap | None:
        if map_type > MapType.HTTP_RESPONSE_TRAILERS:
            return None
        hmap = ctx.maps.get(map_type)
        if hmap is None and map_type in (MapType.HTTP_REQUEST_TRAILERS, MapType.HTTP_RESPONSE_TRAILERS):
            body = BufferType.HTTP_REQUEST_BODY if map_type == MapType.HTTP_REQUEST_TRAILERS else (
                BufferType.HTTP_RESPONSE_BODY)  # fmt: skip
            # Envoy lets a body callback at end of stream add trailers (addDecodedTrailers).
            if ctx.end_of_stream and ctx.buffers.get(body) is not None and ctx.stream is not None:
                hmap = HeaderMap()
                ctx.maps[map_type] = hmap
                ctx.stream.trailers_added(map_type, hmap)
        return hmap

    def const_map(self, ctx: Context, map_type: int) -> HeaderMap | None:
        stream = ctx.stream
        if stream is not None and getattr(stream, "access_log_phase", False) and map_type <= 3:
            return stream.log_map(map_type)  # type: ignore[no-any-return]
        if map_type <= MapType.HTTP_RESPONSE_TRAILERS:
            return ctx.maps.get(map_type)
        return self.root_of(ctx).maps.get(map_type)

    def buffer(self, ctx: Context, buf_type: int) -> bytes | bytearray | None:
        if buf_type == BufferType.VM_CONFIGURATION:
            return self.vm_config
        if buf_type == BufferType.PLUGIN_CONFIGURATION:
            return self.temp_plugin.configuration if self.temp_plugin is not None else None
        if buf_type in (BufferType.HTTP_CALL_RESPONSE_BODY, BufferType.GRPC_RECEIVE_BUFFER):
            data = self.root_of(ctx).buffers.get(buf_type)
            if data is None and buf_type == BufferType.GRPC_RECEIVE_BUFFER:
                return b""  # Envoy hands out an empty buffer here rather than none
            return data
        if buf_type == BufferType.CALL_DATA:
            return ctx.call_data if ctx.call_data is not None else b""
        data = ctx.buffers.get(buf_type)
        return data if data is not None else b""  # Envoy: an empty buffer when no body is in flight

    def mutable_buffer(self, ctx: Context, buf_type: int) -> bytearray | None:
        if buf_type > BufferType.UPSTREAM_DATA:
            return None
        return ctx.buffers.get(buf_type)

    # -- properties ---------------------------------------------------------------------------------
    def get_property(self, ctx: Context, path: bytes) -> tuple[Status, bytes]:
        return properties.lookup(self, ctx, path)

    # -- metrics ------------------------------------------------------------------------------------
    def define_metric(self, kind: MetricType, name: str) -> int:
        self._metric_next[kind] += 4
        metric_id = self._metric_next[kind]
        self.metric_names[metric_id] = name
        self.envoy.define_metric(kind, name)
        return metric_id

    # -- HTTP callouts ------------------------------------------------------------------------------
    def _next_callout(self, kind: int) -> int:
        self._callout_next[kind] += 4
        return self._callout_next[kind] & 0xFFFFFFFF

    def start_http_call(
        self, cluster: str, headers: list[tuple[bytes, bytes]], body: bytes, trailers: list[tuple[bytes, bytes]],
        timeout: int,
    ) -> int:  # fmt: skip
        token = self._next_callout(0)
        hdrs = HeaderMap(headers)
        if body:
            hdrs.replace(b"content-length", str(len(body)).encode())
        # Headers Envoy's async client adds; no x-request-id on callouts.
        hdrs.add(b"x-envoy-internal", b"true")
        if timeout > 0:
            hdrs.add(b"x-envoy-expected-rq-timeout-ms", str(timeout).encode())
        call = HttpCall(self, token, cluster, hdrs.items(), bytes(body), HeaderMap(trailers).items(), timeout,
                        self.root_of(self.ctx()).id)  # fmt: skip
        self.http_calls[token] = call
        return token

    def deliver_http_response(
        self, call: HttpCall, headers: HeaderMap, body: bytes, trailers: HeaderMap | None
    ) -> None:
        if call.done or self.http_calls.pop(call.token, None) is None:
            return
        call.done = True
        root = self.contexts.get(call.context_id)
        if root is None:
            return
        root.maps[MapType.HTTP_CALL_RESPONSE_HEADERS] = headers
        root.maps[MapType.HTTP_CALL_RESPONSE_TRAILERS] = trailers
        root.buffers[BufferType.HTTP_CALL_RESPONSE_BODY] = bytearray(body)
        try:
            self.call("proxy_on_http_call_response", root, root.id, call.token, len(headers), len(body),
                      len(trailers) if trailers is not None else 0)  # fmt: skip
        finally:
            root.maps.pop(MapType.HTTP_CALL_RESPONSE_HEADERS, None)
            root.maps.pop(MapType.HTTP_CALL_RESPONSE_TRAILERS, None)
            root.buffers.pop(BufferType.HTTP_CALL_RESPONSE_BODY, None)

    def deliver_http_failure(self, call: HttpCall) -> None:
        if call.done or self.http_calls.pop(call.token, None) is None:
            return
        call.done = True
        root = self.contexts.get(call.context_id)
        if root is None:
            return
        root.status_code, root.status_message = int(Status.BROKEN_CONNECTION), b"reset"
        try:
            self.call("proxy_on_http_call_response", root, root.id, call.token, 0, 0, 0)
        finally:
            root.status_code, root.status_message = 0, b""

    # -- gRPC ---------------------------------------------------------------------------------------
    def start_grpc(
        self, cluster: str, service: bytes, method: bytes, metadata: list[tuple[bytes, bytes]],
        request: bytes | None, *, stream: bool,
    ) -> int:  # fmt: skip
        token = self._next_callout(2 if stream else 1)
        self.grpc_callouts[token] = GrpcCallout(
            self, token, cluster, service.decode("utf-8", "replace"), method.decode("utf-8", "replace"),
            HeaderMap(metadata).items(), request, stream, self.root_of(self.ctx()).id,
        )  # fmt: skip
        return token

    def grpc_send(self, token: int, message: bytes, end_stream: bool) -> int:
        if token & 3 != 2:
            return Status.BAD_ARGUMENT
        callout = self.grpc_callouts.get(token)
        if callout is None:
            return Status.NOT_FOUND
        callout.sent.append(bytes(message))
        if end_stream:
            callout.local_closed = True
        return Status.OK

    def grpc_finish(self, token: int, *, cancel: bool) -> int:
        kind = token & 3
        if kind not in (1, 2):
            return Status.BAD_ARGUMENT
        callout = self.grpc_callouts.get(token)
        if callout is None:
            return Status.NOT_FOUND
        if kind == 1 or cancel or callout.remote_closed:
            self.grpc_callouts.pop(token, None)
            callout.done = True
        else:
            callout.local_closed = True
        return Status.OK

    def deliver_grpc(self, callout: GrpcCallout, what: str, payload: Any) -> None:
        root = self.contexts.get(callout.context_id)
        if root is None or (callout.token not in self.grpc_callouts):
            return
        tok = callout.token
        if what == "initial":
            root.maps[MapType.GRPC_RECEIVE_INITIAL_METADATA] = payload
            try:
                self.call("proxy_on_grpc_receive_initial_metadata", root, root.id, tok, len(payload))
            finally:
                root.maps.pop(MapType.GRPC_RECEIVE_INITIAL_METADATA, None)
        elif what == "trailing":
            root.maps[MapType.GRPC_RECEIVE_TRAILING_METADATA] = payload
            name = "proxy_on_grpc_receive_trailing_metadata"
            if not self.has(name):
                name = "proxy_on_grpc_trailing_metadata"  # 0.2.0 SDKs (AssemblyScript) use this name
            try:
                self.call(name, root, root.id, tok, len(payload))
            finally:
                root.maps.pop(MapType.GRPC_RECEIVE_TRAILING_METADATA, None)
        elif what == "message":
            root.buffers[BufferType.GRPC_RECEIVE_BUFFER] = bytearray(payload)
            try:
                self.call("proxy_on_grpc_receive", root, root.id, tok, len(payload))
            finally:
                root.buffers.pop(BufferType.GRPC_RECEIVE_BUFFER, None)
                if not callout.stream:
                    self.grpc_callouts.pop(tok, None)
        else:
            status, message = payload
            root.status_code, root.status_message = int(status), message.encode()
            try:
                self.call("proxy_on_grpc_close", root, root.id, tok, int(status))
            finally:
                root.status_code, root.status_message = 0, b""
                if not callout.stream or callout.local_closed:
                    self.grpc_callouts.pop(tok, None)


_V8_TRAP_MESSAGES = {
    wasmtime.TrapCode.UNREACHABLE: "unreachable",
    wasmtime.TrapCode.MEMORY_OUT_OF_BOUNDS: "memory access out of bounds",
    wasmtime.TrapCode.TABLE_OUT_OF_BOUNDS: "table index is out of bounds",
    wasmtime.TrapCode.INDIRECT_CALL_TO_NULL: "null function or function signature mismatch",
    wasmtime.TrapCode.BAD_SIGNATURE: "null function or function signature mismatch",
    wasmtime.TrapCode.INTEGER_OVERFLOW: "divide result unrepresentable",
    wasmtime.TrapCode.INTEGER_DIVISION_BY_ZERO: "divide by zero",
    wasmtime.TrapCode.BAD_CONVERSION_TO_INTEGER: "float unrepresentable in integer range",
    wasmtime.TrapCode.STACK_OVERFLOW: "Maximum call stack size exceeded",
}


def _describe(exc: BaseException) -> str:
    """Word a trap the way Envoy's V8 runtime logs it ("Uncaught RuntimeError: unreachable")."""
    if isinstance(exc, wasmtime.Trap):
        code = exc.trap_code
        text = _V8_TRAP_MESSAGES.get(code) if code is not None else None
        if text is None:
            text = exc.message.strip().splitlines()[0] if exc.message.strip() else "trap"
        return f"Uncaught RuntimeError: {text}"
    if isinstance(exc, wasmtime.WasmtimeError):
        return f"Uncaught RuntimeError: {str(exc).strip().splitlines()[0]}"
    return f"host error {type(exc).__name__}: {exc}"

"""One VM as Envoy runs it: the context table, calls into the guest under cpp-host's rules, the
effects Envoy defers until a call returns, failure, and the deliveries Envoy makes to root contexts
(ticks, queue notifications, callout answers).

cpp-host's rules: the context whose callback runs is current for the duration of the call (host
calls act on it, or on the context made effective with ``proxy_set_effective_context``); effects
such as continuing a stream or sending a local reply are queued and run once the outermost call
returns; a trap marks the VM failed for good.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol

from proxywasm.abi import AUTHOR_MISTAKE_PREFIX, LogLevel, MetricType

from ..errors import AuthorMistake, WasmTrap, hide_host_frames
from .contexts import Context, Plugin
from .http1 import ConnectionPools

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

if TYPE_CHECKING:
    from .callouts import GrpcCallout, HttpCallout
    from .http_filter import HttpFilter
    from .network import Connection
    from .process import Envoy


class GuestTrap(Exception):
    """The guest trapped in export ``function``; the message is worded as Envoy's V8 runtime words it."""

    def __init__(self, message: str, function: str = "") -> None:
        super().__init__(message)
        self.function = function


class Guest(Protocol):
    """A loaded filter: a Wasm module (``proxywasm_host.wasm``) or Python running natively."""

    abi: str  # "0_2_1", "0_2_0" or "0_1_0"

    @property
    def exports(self) -> Mapping[str, Callable[..., int]]:
        """Export name -> callable taking integer arguments (extra ones dropped, missing ones 0),
        returning an integer, raising :class:`GuestTrap`."""
        ...

    def has(self, export: str) -> bool: ...

    def call(self, export: str, *args: int) -> int:
        """Call an export with integer arguments; raises :class:`GuestTrap`."""
        ...

    def start(self) -> None:
        """Run the module's start code (``_initialize``/``main`` or ``_start``); raises :class:`GuestTrap`."""
        ...

    def enter(self) -> None:
        """An outermost call into the guest begins."""
        ...

    def cpu_ns(self) -> int:
        """CPU time the guest has used, as its clocks count it (0: its clocks are Envoy's)."""
        ...


class Vm:
    """A VM's state as Envoy's ``WasmBase`` keeps it. ``guest`` is set by whoever loads the code."""

    def __init__(
        self,
        envoy: Envoy,
        *,
        vm_id: str = "",
        vm_config: bytes = b"",
        env: dict[str, str] | None = None,
        clusters: dict[str, Callable[..., Any] | None] | None = None,
        raise_on_trap: bool = True,
        raise_on_mistake: bool = True,
    ) -> None:
        from .host_functions import HostFunctions

        self.envoy = envoy
        self.vm_id = vm_id
        self.vm_config = vm_config
        self.env = dict(env or {})
        self.clusters: dict[str, Callable[..., Any] | None] = clusters if clusters is not None else {}
        self.raise_on_trap = raise_on_trap
        self.raise_on_mistake = raise_on_mistake
        self._mistakes: list[str] = []  # author-mistake lines logged during the running call
        self._in_after_actions = False  # a call made by an after-call action leaves them to its caller
        self.guest: Guest | None = None
        self.host_functions = HostFunctions(self)
        self.logs: list[tuple[int, str]] = []
        self.envoy_logs: list[tuple[int, str]] = []
        self.failed = False
        self.fail_reason = ""
        self.contexts: dict[int, Context] = {0: Context(0, 0, "vm")}
        self._ids = itertools.count(1)
        self.current: Context | None = None
        self.effective_id = 0
        # Set by proxy_send_local_response: the callback's result becomes "stop" (cpp-host's
        # stopNextIteration); read by the filter before the call's deferred actions run.
        self.stop_next_iteration = False
        self.last_call_stopped = False
        self._after: list[Callable[[], None]] = []
        self._depth = 0
        self.metric_names: dict[int, str] = {}
        self._metric_next = {MetricType.COUNTER: 0, MetricType.GAUGE: 1, MetricType.HISTOGRAM: 2}
        self._callout_next = {0: 0, 1: 1, 2: 2}
        self.http_calls: dict[int, HttpCallout] = {}
        # This worker's idle upstream connections (the host carries them over to a reloaded VM).
        self.pools = ConnectionPools()
        self.grpc_callouts: dict[int, GrpcCallout] = {}
        self.pending_done: set[int] = set()
        self.temp_plugin: Plugin | None = None
        self.property_overrides: dict[tuple[bytes, ...], object] = {}
        envoy.vms.append(self)

    @property
    def abi(self) -> str:
        return self.guest.abi if self.guest is not None else ""

    def cpu_ns(self) -> int:
        """How far the guest's clocks run ahead of Envoy's (see :meth:`Guest.cpu_ns`)."""
        return self.guest.cpu_ns() if self.guest is not None else 0

    # -- logging ------------------------------------------------------------------------------------
    def log(self, level: int, message: str, *, internal: bool = False) -> None:
        """A line the filter logged (or, ``internal``, one Envoy logged about the VM)."""
        (self.envoy_logs if internal else self.logs).append((level, message))
        if not internal and self.raise_on_mistake and message.startswith(AUTHOR_MISTAKE_PREFIX):
            self._mistakes.append(message)

    # -- calls into the guest -----------------------------------------------------------------------
    def has(self, name: str) -> bool:
        return self.guest is not None and self.guest.has(name)

    def call(self, name: str, ctx: Context | None, *args: int) -> int | None:
        """Call export ``name`` with ``ctx`` current. ``None``: the export is absent or the VM failed.
        The effects the call requested run once the outermost call returns."""
        func = self.guest.exports.get(name) if self.guest is not None else None
        if func is None or self.failed:
            if self._depth == 0:
                # A callback the module does not export asks nothing: not even to stop iterating
                # after a local reply that an earlier call sent (cpp-host answers Continue).
                self.last_call_stopped = False
            return None
        saved = (self.current, self.effective_id)
        self.current, self.effective_id = ctx, 0
        if self._depth == 0:
            self.guest.enter()  # type: ignore[union-attr]
        self._depth += 1
        result: int | None = None
        try:
            result = func(*args)
        except GuestTrap as exc:
            self.fail(f"Function: {exc.function or name} failed: {exc}")
            if self.raise_on_trap:
                raise WasmTrap(self.fail_reason, self.logs) from exc
        finally:
            self._depth -= 1
            self.current, self.effective_id = saved
            if self._depth == 0:
                stopped = self.stop_next_iteration
                outer, self._in_after_actions = self._in_after_actions, True
                try:
                    self.run_after_actions()  # may call the guest again (a local reply's callbacks)
                finally:
                    self._in_after_actions = outer
                self.last_call_stopped = stopped  # this call's, not theirs
        # Raised from the call that started it all, after its actions ran: a mistake in
        # on_request_headers is not reported from the failure reply's on_response_headers.
        if self._depth == 0 and self._mistakes and not self._in_after_actions:
            mistakes, self._mistakes = self._mistakes, []
            raise AuthorMistake("\n".join(m.removeprefix(AUTHOR_MISTAKE_PREFIX) for m in mistakes), self.logs)
        return result

    def after_call(self, action: Callable[[], None]) -> None:
        """Defer ``action`` until the running call returns (cpp-host ``addAfterVmCallAction``)."""
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
            for callout in list(self.http_calls.values()):
                callout.cancel()

    def start(self) -> None:
        """Run the guest's start code; a trap fails the VM."""
        assert self.guest is not None
        self.current = self.contexts[0]
        self._depth += 1
        try:
            self.guest.start()
        except GuestTrap as exc:
            self.fail(f"Function: {exc.function or '_start'} failed: {exc}")
        finally:
            self._depth -= 1
            self.current = None
            self.run_after_actions()

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

    def new_stream_context(
        self, root: Context, kind: Literal["http", "tcp"], stream: HttpFilter | Connection
    ) -> Context:
        cid = next(self._ids)
        ctx = Context(cid, root.id, kind, plugin=root.plugin, stream=stream)
        self.contexts[cid] = ctx
        return ctx

    def create_in_vm(self, ctx: Context) -> None:
        """``proxy_on_context_create`` once per context (Envoy's ``onCreate``)."""
        if not ctx.created_in_vm and not self.failed:
            ctx.created_in_vm = True
            self.call("proxy_on_context_create", ctx, ctx.id, 0 if ctx.is_root else ctx.parent_id)

    def delete(self, ctx: Context) -> None:
        if ctx.created_in_vm and not self.failed:
            self.call("proxy_on_delete", ctx, ctx.id)
        if ctx.tick_timer is not None:
            ctx.tick_timer.cancel()
        self.contexts.pop(ctx.id, None)

    def done(self, ctx: Context) -> bool:
        """``proxy_done`` from a root context that answered false to ``proxy_on_done``."""
        root = self.root_of(ctx)
        if root.id not in self.pending_done:
            return False
        self.pending_done.discard(root.id)
        self.after_call(lambda: self.delete(root))
        return True

    def configuration_in_scope(self) -> bytes:
        return self.temp_plugin.configuration if self.temp_plugin is not None else self.vm_config

    # -- deliveries to root contexts ------------------------------------------------------------------
    def set_tick_period(self, root: Context, period_ms: int) -> None:
        """Envoy keys the timer by root context; 0 disables it. The first tick comes one period on."""
        if root.tick_timer is not None:
            root.tick_timer.cancel()
            root.tick_timer = None
        root.tick_period_ms = period_ms
        if period_ms:
            root.tick_timer = self.envoy.schedule(period_ms, lambda: self._tick(root))

    def _tick(self, root: Context) -> None:
        if root.id not in self.contexts or not root.tick_period_ms:
            return
        root.tick_timer = self.envoy.schedule(root.tick_period_ms, lambda: self._tick(root))
        self.on_tick(root)

    def on_tick(self, root: Context) -> None:
        self.call("proxy_on_tick", root, root.id)

    def on_queue_ready(self, context_id: int, token: int) -> None:
        ctx = self.contexts.get(context_id)
        if ctx is not None:
            self.call("proxy_on_queue_ready", ctx, context_id, token)

    # -- ids ------------------------------------------------------------------------------------------
    def next_metric_id(self, kind: MetricType) -> int:
        """Metric ids carry their type in the low two bits, as cpp-host's do."""
        self._metric_next[kind] += 4
        return self._metric_next[kind]

    def next_callout_token(self, kind: int) -> int:
        """Tokens: 0 mod 4 for HTTP calls, 1 for gRPC calls, 2 for gRPC streams (cpp-host)."""
        self._callout_next[kind] += 4
        return self._callout_next[kind] & 0xFFFFFFFF

"""Public API: load a proxy-wasm module as Envoy would and drive it at request or step level."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from proxywasm.abi import LogLevel

from .cache import compile_module, load_path
from .context import Context, HeaderInput, Plugin
from .errors import ConfigureError, LoadError, WasmTrap
from .http import HttpStream, UpstreamHandler, echo_upstream
from .messages import GrpcReply, Request, Response, to_response
from .network import Connection
from .properties import normalize_path
from .vm import GrpcCallout, HttpCall, Vm
from .world import Envoy, ForeignFunction

ConfigInput = bytes | str | dict[str, Any] | list[Any] | None


def _config_bytes(value: ConfigInput) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value).encode()


class Host:
    """One plugin in one Wasm VM inside an emulated Envoy (the ``envoy`` may be shared by several)."""

    def __init__(self, vm: Vm, root: Context, *, fail_open: bool = False, http1: bool = True) -> None:
        self.vm = vm
        # Frame bodies as Envoy's HTTP/1 codec does (see HttpStream._frames).
        self.http1 = http1
        self.fail_reload = False
        self.reload_backoff_ms = 1000
        self.reloads = 0
        self._failed_at_ns: int | None = None
        self._boot: Callable[[], Vm] | None = None
        self.root = root
        self.envoy = vm.envoy
        self.fail_open = fail_open

    # -- loading ------------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        module: str | Path | bytes | bytearray,
        *,
        root_id: str = "",
        plugin_name: str | None = None,
        plugin_config: ConfigInput = b"",
        vm_config: ConfigInput = b"",
        vm_id: str = "",
        env: dict[str, str] | None = None,
        properties: dict[Any, Any] | None = None,
        clusters: dict[str, Callable[..., Any]] | None = None,
        envoy: Envoy | None = None,
        log_level: int = LogLevel.INFO,
        fail_open: bool = False,
        raise_on_trap: bool = True,
        use_cache: bool = True,
        http1: bool = True,
        fail_reload: bool = False,
    ) -> Host:
        """Compile (cached), link, start and configure a module the way Envoy does for a new plugin:
        ``_initialize``, ``proxy_on_context_create(root)``, ``proxy_on_vm_start``, ``proxy_on_configure``.

        ``clusters`` maps cluster names to callout handlers (``None``: calls stay pending for the test);
        ``fail_open`` is Envoy's FAIL_OPEN policy; ``raise_on_trap=False`` turns a trap into the 503 Envoy
        sends instead of a :class:`WasmTrap`; ``fail_reload`` is FAIL_RELOAD (a new VM once
        ``reload_backoff_ms`` of host time passed after a failure); ``http1`` frames bodies like
        Envoy's HTTP/1 codec (the body, then an empty end-of-stream frame).
        """
        try:
            if isinstance(module, (bytes, bytearray)):
                compiled = compile_module(bytes(module), use_cache=use_cache)
            else:
                compiled = load_path(Path(module), use_cache=use_cache)
        except Exception as exc:
            raise LoadError(f"Failed to load Wasm code: {exc}") from exc
        world = envoy if envoy is not None else Envoy(log_level=log_level)
        plugin = Plugin(plugin_name if plugin_name is not None else root_id, root_id,
                        _config_bytes(plugin_config), fail_open)  # fmt: skip
        overrides = {normalize_path(k): v for k, v in (properties or {}).items()}

        def boot() -> Vm:
            vm = Vm(compiled, world, vm_id=vm_id, vm_config=_config_bytes(vm_config), env=env,
                    clusters=clusters, raise_on_trap=raise_on_trap)  # fmt: skip
            vm.property_overrides.update(overrides)
            vm.start()
            return vm

        vm = boot()
        host = cls(vm, vm.new_root(plugin), fail_open=fail_open, http1=http1)
        host.fail_reload = fail_reload
        host._boot = boot
        host._start_root()
        return host

    def _start_root(self) -> None:
        vm, root = self.vm, self.root
        assert root.plugin is not None
        try:
            vm.create_in_vm(root)
            ok = vm.call("proxy_on_vm_start", root, root.id, len(vm.vm_config))
            if ok == 0 or vm.failed:
                raise ConfigureError(f"Failed to start base Wasm: proxy_on_vm_start{_why(vm)}", vm.logs)
            self._configure(root.plugin)
        except WasmTrap as exc:
            raise ConfigureError(exc.reason, vm.logs) from exc

    def reload(self) -> None:
        """A fresh VM for this plugin (Envoy's FAIL_RELOAD): module state starts over, logs carry on."""
        if self._boot is None:
            raise RuntimeError("this Host was not created by Host.load")
        old = self.vm
        vm = self._boot()
        vm.logs, vm.envoy_logs = old.logs, old.envoy_logs
        vm.clusters = old.clusters
        assert self.root.plugin is not None
        self.vm, self.root = vm, vm.new_root(self.root.plugin)
        self.reloads += 1
        self._start_root()

    def _maybe_reload(self) -> None:
        """FAIL_RELOAD: after a back-off on Envoy's clock, the next stream gets a new VM."""
        if not (self.fail_reload and self.vm.failed):
            return
        if self._failed_at_ns is None:
            self._failed_at_ns = self.envoy.monotonic_ns
        if self.envoy.monotonic_ns - self._failed_at_ns >= self.reload_backoff_ms * 1_000_000:
            self._failed_at_ns = None
            self.reload()

    def _configure(self, plugin: Plugin) -> None:
        vm = self.vm
        vm.temp_plugin = plugin
        try:
            ok = vm.call("proxy_on_configure", self.root, self.root.id, len(plugin.configuration))
        finally:
            vm.temp_plugin = None
        if ok == 0 or vm.failed:
            raise ConfigureError(f"Failed to configure base Wasm plugin: proxy_on_configure{_why(vm)}", vm.logs)

    def configure(self, plugin_config: ConfigInput) -> None:
        """Re-run ``proxy_on_configure`` with a new config, as a listener update with the same VM does."""
        assert self.root.plugin is not None
        self.root.plugin.configuration = _config_bytes(plugin_config)
        self._configure(self.root.plugin)

    def validate_configuration(self, plugin_config: ConfigInput) -> bool:
        """``proxy_validate_configuration`` (true when the module does not export it)."""
        if not self.vm.has("proxy_validate_configuration"):
            return True
        assert self.root.plugin is not None
        data = _config_bytes(plugin_config)
        self.vm.temp_plugin = Plugin(self.root.plugin.name, self.root.plugin.root_id, data)
        try:
            return bool(self.vm.call("proxy_validate_configuration", self.root, self.root.id, len(data)))
        finally:
            self.vm.temp_plugin = None

    # -- inspection ---------------------------------------------------------------------------------
    @property
    def logs(self) -> list[tuple[int, str]]:
        """What the filter logged, as (level, message), in order."""
        return self.vm.logs

    @property
    def envoy_logs(self) -> list[tuple[int, str]]:
        """What "Envoy" itself logged about the VM (traps, failures)."""
        return self.vm.envoy_logs

    def log_messages(self, min_level: int = LogLevel.TRACE) -> list[str]:
        return [m for lvl, m in self.vm.logs if lvl >= min_level]

    def clear_logs(self) -> None:
        self.vm.logs.clear()

    def metric(self, name: str) -> int | list[int] | None:
        """A stat by its name, as Envoy exposes Wasm-defined metrics (histograms: recorded values)."""
        return self.envoy.metric(name)

    @property
    def shared_data(self) -> dict[bytes, bytes]:
        return self.envoy.shared_data(self.vm.vm_id)

    @property
    def failed(self) -> bool:
        return self.vm.failed

    @property
    def pending_http_calls(self) -> list[HttpCall]:
        return list(self.vm.http_calls.values())

    @property
    def pending_grpc_calls(self) -> list[GrpcCallout]:
        return [c for c in self.vm.grpc_callouts.values() if not c.done]

    # -- configuration of the emulated Envoy --------------------------------------------------------
    def set_property(self, path: Any, value: Any) -> None:
        """Override an attribute (``None`` makes it NOT_FOUND)."""
        self.vm.property_overrides[normalize_path(path)] = value

    def add_cluster(self, name: str, handler: Callable[..., Any] | None = None) -> None:
        """A cluster for callouts; ``handler=None`` leaves calls pending for the test to answer."""
        self.vm.clusters[name] = handler

    def register_foreign_function(self, name: str, func: ForeignFunction) -> None:
        self.envoy.foreign_functions[name] = func

    def set_log_level(self, level: int) -> None:
        self.envoy.log_level = int(level)

    # -- time ---------------------------------------------------------------------------------------
    def tick(self) -> None:
        """Fire ``proxy_on_tick`` on every root context with a tick period, now."""
        for ctx in list(self.vm.contexts.values()):
            if ctx.is_root and ctx.tick_period_ms:
                ctx.next_tick_ns = self.envoy.monotonic_ns + ctx.tick_period_ms * 1_000_000
                self.vm.on_tick(ctx)

    def advance_time(self, ms: float) -> int:
        """Move the clock forward, firing each tick that falls due on the way. Returns ticks fired."""
        target = self.envoy.monotonic_ns + int(ms * 1_000_000)
        fired = 0
        while True:
            due = [c for c in self.vm.contexts.values() if c.is_root and c.tick_period_ms and c.next_tick_ns <= target]
            if not due:
                break
            ctx = min(due, key=lambda c: c.next_tick_ns)
            self.envoy.advance((ctx.next_tick_ns - self.envoy.monotonic_ns) / 1_000_000)
            ctx.next_tick_ns += ctx.tick_period_ms * 1_000_000
            self.vm.on_tick(ctx)
            fired += 1
        self.envoy.advance((target - self.envoy.monotonic_ns) / 1_000_000)
        return fired

    # -- event loop ---------------------------------------------------------------------------------
    def pump(self) -> bool:
        """Deliver what Envoy's event loop would: queue notifications, then callouts whose cluster
        has a handler. Returns whether anything happened."""
        progressed = False
        if self.envoy.posted:
            self.envoy.run_posted()
            progressed = True
        for call in list(self.vm.http_calls.values()):
            handler = self.vm.clusters.get(call.cluster)
            if handler is None:
                continue
            request = Request(call.header(":method") or "", call.header(":path") or "", call.headers, call.body,
                              call.trailers, call.cluster)  # fmt: skip
            started = time.perf_counter()
            try:
                result = handler(request)
            except Exception:
                call.unreachable()  # a handler that raises stands for an upstream that cannot be reached
                progressed = True
                continue
            if result is None:
                continue
            resp = to_response(result)
            # The async client's router stamps upstream answers as it does on the main route.
            elapsed_ms = int((time.perf_counter() - started) * 1000)
            headers = [*resp.headers, ("x-envoy-upstream-service-time", str(elapsed_ms))]
            call.respond(resp.status, headers, resp.body, resp.trailers)
            progressed = True
        for callout in list(self.vm.grpc_callouts.values()):
            handler = self.vm.clusters.get(callout.cluster)
            if handler is None or callout.done or (callout.stream and not callout.local_closed):
                continue
            reply = handler(callout)
            if reply is None:
                continue
            if isinstance(reply, GrpcReply):
                callout.respond(reply.message, reply.status, reply.status_message, reply.initial_metadata,
                                reply.trailing_metadata)  # fmt: skip
            else:
                callout.respond(bytes(reply))
            progressed = True
        return progressed

    # -- streams --------------------------------------------------------------------------------
    def http_stream(self, **kwargs: Any) -> HttpStream:
        self._maybe_reload()
        return HttpStream(self, **kwargs)

    def connection(self, **kwargs: Any) -> Connection:
        self._maybe_reload()
        return Connection(self, **kwargs)

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        headers: HeaderInput = (),
        body: bytes | str | list[bytes] | None = None,
        trailers: HeaderInput | None = None,
        upstream: UpstreamHandler | None = None,
        authority: str = "example.com",
    ) -> Response:
        """One full HTTP exchange through the filter, the way Envoy's connection manager runs it."""
        stream = self.http_stream()
        return stream.run(method, path, headers, body if not isinstance(body, str) else body.encode(), trailers,
                          upstream or echo_upstream, authority)  # fmt: skip

    def shutdown(self) -> None:
        """VM teardown: ``proxy_on_done`` on the root; if it returns false, wait for ``proxy_done``."""
        root = self.root
        if root.id not in self.vm.contexts or self.vm.failed:
            return
        self.vm.pending_done.add(root.id)
        done = self.vm.call("proxy_on_done", root, root.id)
        if done != 0 and root.id in self.vm.pending_done:
            self.vm.pending_done.discard(root.id)
            self.vm.delete(root)


def _why(vm: Vm) -> str:
    return f" failed: {vm.fail_reason}" if vm.failed else " returned false"


__all__ = ["Host", "Response"]

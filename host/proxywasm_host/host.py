"""Public API: load a proxy-wasm module into an emulated Envoy and drive it at request or step level."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from proxywasm.abi import LogLevel
from proxywasm_build.compiled import CacheLimitError

from .emulator import http1
from .emulator.attributes import normalize_path
from .emulator.callouts import GrpcCallout, HttpCallout
from .emulator.contexts import FAILURE_POLICIES, FailurePolicy, Plugin
from .emulator.filter_manager import DEFAULT_BUFFER_LIMIT
from .emulator.headers import HeaderInput
from .emulator.http import STREAM_IDLE_TIMEOUT_MS, HttpStream, UpstreamHandler, echo_upstream
from .emulator.network import Connection
from .emulator.process import Envoy, ForeignFunction
from .emulator.vm import Vm
from .errors import ConfigureError, LoadError, NotServed, WasmTrap, hide_host_frames
from .messages import CUT_OFF, RESET, SLOW, UNREACHABLE, GrpcReply, Request, Response, Route, Tls, pairs_of, to_response
from .native.guest import NativeGuest
from .wasm.guest import WasmGuest
from .wasm.memory import GuestMemory
from .wasm.module import Compiled, compile_module, load_path

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

ConfigInput = bytes | str | dict[str, Any] | list[Any] | None

#: A cluster's handler: receives the callout's :class:`Request`, returns what the cluster answers
#: (a :class:`Response`, a status, a body, a ``(status, headers, body[, trailers])`` tuple, or
#: :data:`SLOW` / :data:`RESET` / :data:`CUT_OFF` / :data:`UNREACHABLE`), or ``None`` to leave the call pending.
ClusterHandler = Callable[[Request], Any]


def _config_bytes(value: ConfigInput) -> bytes:
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value).encode()


class _Instance:
    """One VM of the plugin (the main thread's or a worker's) with its root context."""

    def __init__(self, vm: Vm, root_id: int, loaded_ns: int) -> None:
        self.vm = vm
        self.root_id = root_id
        self.loaded_ns = loaded_ns


class RawAccess:
    """ABI-level access for testing a module (or an SDK) below the SDK: the guest's memory, and
    calls of any export with a given stream's context current (as Envoy makes them)."""

    def __init__(self, host: Host) -> None:
        self._host = host

    def _instance(self, vm: int | None) -> _Instance:
        return self._host._serving if vm is None else self._host._instances[vm]

    @property
    def memory(self) -> GuestMemory:
        """The serving VM's linear memory (bounds-checked ``read``/``write``/``read_u32``/...)."""
        return self.memory_of(None)

    def memory_of(self, vm: int | None) -> GuestMemory:
        """The linear memory of VM ``vm`` (0: the first; see :attr:`Host.vm_count`)."""
        return self._guest(vm).mem

    def call(
        self, export: str, *args: int, on: HttpStream | Connection | None = None, vm: int | None = None
    ) -> int | None:
        """Call ``export`` with the context of ``on`` (default: the root context) current, in the VM
        serving the next stream or VM number ``vm``. Returns the result, or ``None`` when the export is
        missing or the VM failed."""
        instance = self._instance(vm)
        context_id = on.context_id if on is not None else instance.root_id
        ctx = instance.vm.contexts.get(context_id or 0)
        if ctx is None:
            raise ValueError(f"context {context_id} no longer exists")
        return instance.vm.call(export, ctx, *args)

    def global_value(self, name: str, vm: int | None = None) -> int | float:
        """The current value of the global the module exports as ``name``, in VM ``vm`` (default:
        the serving VM). Raises ``KeyError`` when the module exports no such global, ``TypeError`` in
        native mode."""
        return self._guest(vm).exported_global(name)

    def global_names(self, vm: int | None = None) -> list[str]:
        """The names of the globals the module exports (``TypeError`` in native mode)."""
        return self._guest(vm).exported_globals()

    def _guest(self, vm: int | None) -> WasmGuest:
        guest = self._instance(vm).vm.guest
        if not isinstance(guest, WasmGuest):
            raise TypeError("raw access needs a Wasm module")
        return guest

    def cpu_ns(self, vm: int | None = None) -> int:
        """Virtual CPU time VM ``vm`` (default: the serving VM) has used so far, in nanoseconds: the
        Wasm fuel it burnt at a fixed rate (0 in native mode). The guest's clocks run this far ahead
        of :attr:`Host.envoy`'s, so they advance while it computes, as Envoy's do."""
        return self._instance(vm).vm.cpu_ns()

    @property
    def abi_version(self) -> str:
        """The proxy-wasm ABI the module exports (``"0_2_1"``, ``"0_2_0"`` or ``"0_1_0"``)."""
        return self._host._serving.vm.abi


class Host:
    """One plugin in an emulated Envoy 1.40, serving streams the way Envoy does.

    Create it with :meth:`load`. ``workers=0`` (the default) runs one VM that is configured and
    serves every stream; ``workers=N`` runs Envoy's layout: the main thread's VM (configured, ticked,
    never serving streams) and one VM per worker thread, streams going round-robin to the workers.
    Envoy ticks every VM that set a tick period, so a tick-driven filter sees N + 1 ticks per period
    with ``workers=N``.
    """

    def __init__(self, envoy: Envoy, plugin: Plugin, boot: Callable[[], Vm], workers: int, *, http1: bool,
                 buffer_limit: int, request_trailers: bool, routes: Sequence[Route]) -> None:  # fmt: skip
        self.envoy = envoy
        self.plugin = plugin
        self._boot = boot
        self._http1 = http1
        self._buffer_limit = buffer_limit
        self._request_trailers = request_trailers
        self._routes = tuple(routes)
        self._logs: list[tuple[int, str]] = []
        self._envoy_logs: list[tuple[int, str]] = []
        self._instances: list[_Instance] = []
        self._workers: list[_Instance] = []
        self._next_worker = 0
        self._next_port = 54320  # the client's ephemeral ports: see _client_address
        self.reloads = 0
        self.raw = RawAccess(self)
        self._serves: tuple[str, ...] | None = None  # see _check_served: from the module's record, else asked once
        main = self._start_instance()
        self._instances.append(main)
        if workers:
            for _ in range(workers):
                worker = self._start_instance()
                self._instances.append(worker)
                self._workers.append(worker)
        else:
            self._workers.append(main)

    # -- loading ------------------------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        module: str | Path | bytes | bytearray,
        *,
        mode: Literal["auto", "native", "wasm"] = "auto",
        root_id: str = "",
        plugin_name: str | None = None,
        plugin_config: ConfigInput = b"",
        vm_config: ConfigInput = b"",
        vm_id: str = "",
        env: dict[str, str] | None = None,
        properties: dict[Any, Any] | None = None,
        clusters: dict[str, ClusterHandler | None] | None = None,
        envoy: Envoy | None = None,
        log_level: int = LogLevel.INFO,
        failure_policy: FailurePolicy = "FAIL_CLOSED",
        fail_open: bool = False,
        fail_reload: bool = False,
        reload_backoff_ms: int = 1000,
        allow_on_headers_stop_iteration: bool = False,
        buffer_limit: int = DEFAULT_BUFFER_LIMIT,
        request_trailers: bool = False,
        routes: Sequence[Route] = (),
        workers: int = 0,
        raise_on_trap: bool = True,
        raise_on_mistake: bool = True,
        use_cache: bool = True,
        http1: bool = True,
    ) -> Host:
        """Load a filter and start and configure it the way Envoy does for a new plugin (``_initialize``,
        ``proxy_on_context_create`` (root), ``proxy_on_vm_start``, ``proxy_on_configure``).

        ``module`` is a built module (a ``.wasm`` path or its bytes), or a Python filter's source (a
        ``.py`` file or a package directory). ``mode``: ``"auto"`` runs a source natively and a module
        as Wasm; ``"native"`` runs a source in this process (debuggers and coverage see the filter's
        code; see ``proxywasm_host.native`` for what differs from the VM); ``"wasm"`` builds a source
        with ``proxywasm build`` first (cached by content) and runs the module on wasmtime.

        ``clusters`` maps cluster names to handlers (``None``: calls stay pending for the test to
        answer through :attr:`pending_http_calls`). ``failure_policy`` is the PluginConfig's
        (``fail_open``/``fail_reload`` are shorthands); ``reload_backoff_ms`` its
        ``reload_config.backoff.base_interval``. ``allow_on_headers_stop_iteration``, ``buffer_limit``
        (the listener's ``per_connection_buffer_limit_bytes``) and ``request_trailers`` (HTTP/1
        ``enable_trailers``) mirror the Envoy settings of the same meaning, with Envoy's defaults.
        ``routes`` are matched by path prefix before the catch-all route to the upstream; the filter
        sees the matched route's name and metadata (``xds.route_name``, ``xds.route_metadata``).
        ``raise_on_trap=False`` turns a trap into the 503 Envoy sends instead of a :class:`WasmTrap`.
        ``raise_on_mistake=False`` keeps the SDK's author-mistake log lines as log lines (as Envoy
        does) instead of raising :class:`AuthorMistake` when the callback that logged one returns.
        ``properties`` overrides attributes by path (``"node.id"`` or a tuple; ``None`` removes one).

        Raises :class:`LoadError` (module rejected, start trapped) or :class:`ConfigureError`
        (``proxy_on_vm_start`` or ``proxy_on_configure`` returned false: Envoy rejects the plugin);
        a source in wasm mode raises ``proxywasm_build.bundle.BuildError`` as ``proxywasm build`` does, and a
        bad ``$PROXYWASM_CACHE_MAX_MB`` ``proxywasm_build.compiled.CacheLimitError``.
        """
        policy: FailurePolicy = "FAIL_OPEN" if fail_open else "FAIL_RELOAD" if fail_reload else failure_policy
        if policy not in FAILURE_POLICIES:
            raise ValueError(f"failure_policy must be one of {', '.join(FAILURE_POLICIES)}, not {policy!r}")
        source: Path | None = None
        if not isinstance(module, (bytes, bytearray)) and _is_source(Path(module)):
            source = Path(module)
            if mode == "wasm":
                from proxywasm_build.cache import build_cached

                module, source = build_cached(source), None
        elif mode == "native":
            raise LoadError(f"{module!r} is not a Python filter's source: native mode runs a .py file or a package")
        compiled: Compiled | None = None
        serves: tuple[str, ...] | None = None  # what a module proxywasm build made records (natively: asked later)
        if source is None:
            try:
                if isinstance(module, (bytes, bytearray)):
                    compiled = compile_module(bytes(module), use_cache=use_cache)
                    serves = _module_serves(bytes(module)[-256:], root_id)
                else:
                    compiled = load_path(Path(module), use_cache=use_cache)
                    with Path(module).open("rb") as f:  # only its end: see serves_at_end
                        f.seek(max(0, f.seek(0, 2) - 256))
                        serves = _module_serves(f.read(), root_id)
            except CacheLimitError:
                raise  # the cache's setting, not the module
            except Exception as exc:
                raise LoadError(f"Failed to load Wasm code: {exc}") from exc
        world = envoy if envoy is not None else Envoy(log_level=log_level)
        plugin = Plugin(plugin_name if plugin_name is not None else root_id, root_id, _config_bytes(plugin_config),
                        policy, allow_on_headers_stop_iteration, reload_backoff_ms)  # fmt: skip
        overrides = {normalize_path(k): v for k, v in (properties or {}).items()}
        vm_configuration = _config_bytes(vm_config)
        handlers: dict[str, Any] = dict(clusters or {})

        def boot() -> Vm:
            vm = Vm(world, vm_id=vm_id, vm_config=vm_configuration, env=env, clusters=handlers,
                    raise_on_trap=raise_on_trap, raise_on_mistake=raise_on_mistake)  # fmt: skip
            if compiled is not None:
                vm.guest = WasmGuest(compiled, vm)
            else:
                assert source is not None
                vm.guest = NativeGuest(source, vm)
            vm.property_overrides.update(overrides)
            return vm

        host = cls(world, plugin, boot, workers, http1=http1, buffer_limit=buffer_limit,
                   request_trailers=request_trailers, routes=routes)  # fmt: skip
        host._serves = serves
        return host

    def _start_instance(self) -> _Instance:
        vm = self._boot()
        vm.logs, vm.envoy_logs = self._logs, self._envoy_logs
        vm.start()  # a native guest raises LoadError here, as the build would
        if vm.failed:
            raise LoadError(f"Failed to start base Wasm: {vm.fail_reason}", vm.logs)
        root = vm.new_root(self.plugin)
        try:
            vm.create_in_vm(root)
            ok = vm.call("proxy_on_vm_start", root, root.id, len(vm.vm_config))
            if ok == 0 or vm.failed:
                raise ConfigureError(f"Failed to start base Wasm: proxy_on_vm_start{_why(vm)}", vm.logs)
            self._configure_vm(vm, root.id)
        except WasmTrap as exc:
            raise ConfigureError(exc.reason, vm.logs) from exc
        return _Instance(vm, root.id, self.envoy.monotonic_ns)

    def _configure_vm(self, vm: Vm, root_id: int) -> None:
        vm.temp_plugin = self.plugin
        try:
            ok = vm.call("proxy_on_configure", vm.contexts[root_id], root_id, len(self.plugin.configuration))
        finally:
            vm.temp_plugin = None
        if ok == 0 or vm.failed:
            raise ConfigureError(f"Failed to configure base Wasm plugin: proxy_on_configure{_why(vm)}", vm.logs)

    def configure(self, plugin_config: ConfigInput) -> None:
        """Re-run ``proxy_on_configure`` in every VM with a new configuration, as a listener update
        with the same VM does. Raises :class:`ConfigureError` when the filter rejects it."""
        self.plugin.configuration = _config_bytes(plugin_config)
        for instance in self._instances:
            self._configure_vm(instance.vm, instance.root_id)

    def validate_configuration(self, plugin_config: ConfigInput) -> bool:
        """``proxy_validate_configuration`` (true when the module does not export it)."""
        vm, root_id = self._serving.vm, self._serving.root_id
        if not vm.has("proxy_validate_configuration"):
            return True
        data = _config_bytes(plugin_config)
        vm.temp_plugin = Plugin(self.plugin.name, self.plugin.root_id, data)
        try:
            return bool(vm.call("proxy_validate_configuration", vm.contexts[root_id], root_id, len(data)))
        finally:
            vm.temp_plugin = None

    def reload(self) -> None:
        """A fresh VM for every instance (FAIL_RELOAD does it per worker by itself)."""
        for i, old in enumerate(self._instances):
            new = self._start_instance()
            new.vm.pools = old.vm.pools  # the worker's connection pools outlive its Wasm VM
            self._instances[i] = new
            self._workers = [new if w is old else w for w in self._workers]
        self.reloads += 1

    @property
    def _serving(self) -> _Instance:
        return self._workers[self._next_worker % len(self._workers)]

    def _take_worker(self) -> _Instance:
        """The worker the next stream lands on, reloaded first if FAIL_RELOAD allows it: Envoy
        reloads a failed VM when a stream arrives at least ``reload_backoff_ms`` after the last load."""
        index = self._next_worker % len(self._workers)
        self._next_worker += 1
        instance = self._workers[index]
        if (
            instance.vm.failed
            and self.plugin.failure_policy == "FAIL_RELOAD"
            and self.envoy.monotonic_ns - instance.loaded_ns >= self.plugin.reload_backoff_ms * 1_000_000
        ):
            old = instance
            instance.loaded_ns = self.envoy.monotonic_ns  # Envoy updates the timestamp whatever happens
            try:
                instance = self._start_instance()
            except (LoadError, ConfigureError):
                return old
            instance.vm.pools = old.vm.pools  # the worker's connection pools outlive its Wasm VM
            self._workers[index] = instance
            self._instances = [instance if i is old else i for i in self._instances]
            self.reloads += 1
        return instance

    # -- inspection ---------------------------------------------------------------------------------------
    @property
    def logs(self) -> list[tuple[int, str]]:
        """What the filter logged, as (level, message), in order (all VMs of the plugin)."""
        return self._logs

    @property
    def envoy_logs(self) -> list[tuple[int, str]]:
        """What "Envoy" itself logged about the plugin (traps, failures, refused callouts)."""
        return self._envoy_logs

    def log_messages(self, min_level: int = LogLevel.TRACE) -> list[str]:
        return [m for lvl, m in self._logs if lvl >= min_level]

    def clear_logs(self) -> None:
        self._logs.clear()

    def metric(self, name: str) -> int | list[int] | None:
        """A stat by name (``wasmcustom.`` optional): a counter's or gauge's value, a histogram's
        recorded values, ``None`` if never defined."""
        return self.envoy.metric(name)

    @property
    def metrics(self) -> dict[str, int | list[int]]:
        """Every stat the plugin defined, by name."""
        env = self.envoy
        return {**env.counters, **env.gauges, **{k: list(v) for k, v in env.histograms.items()}}

    @property
    def shared_data(self) -> dict[bytes, bytes]:
        """The shared data of this plugin's ``vm_id`` (key -> value)."""
        return self.envoy.shared_data(self._serving.vm.vm_id)

    def set_shared_data(self, key: str | bytes, value: bytes) -> None:
        """Write shared data as another worker would (unconditionally, a new CAS)."""
        raw = key.encode() if isinstance(key, str) else key
        self.envoy.set_shared(self._serving.vm.vm_id, raw, value)

    @property
    def failed(self) -> bool:
        """The VM serving the next stream has failed (a trap)."""
        return self._serving.vm.failed

    @property
    def fail_reason(self) -> str:
        return self._serving.vm.fail_reason

    @property
    def vm_count(self) -> int:
        return len(self._instances)

    @property
    def pending_http_calls(self) -> list[HttpCallout]:
        """Callouts waiting for an answer, oldest first (answer with ``respond``/``time_out``/...)."""
        return [c for i in self._instances for c in i.vm.http_calls.values() if not c.done and c.refused is None]

    @property
    def pending_grpc_calls(self) -> list[GrpcCallout]:
        return [c for i in self._instances for c in i.vm.grpc_callouts.values() if not c.done]

    # -- configuration of the emulated Envoy ----------------------------------------------------------------
    def set_property(self, path: Any, value: Any) -> None:
        """Override an attribute (``None`` makes it NOT_FOUND)."""
        for instance in self._instances:
            instance.vm.property_overrides[normalize_path(path)] = value

    def add_cluster(self, name: str, handler: ClusterHandler | None = None) -> None:
        """A cluster for callouts; ``handler=None`` leaves calls pending for the test to answer."""
        for instance in self._instances:
            instance.vm.clusters[name] = handler

    def register_foreign_function(self, name: str, func: ForeignFunction) -> None:
        self.envoy.foreign_functions[name] = func

    def set_log_level(self, level: int) -> None:
        self.envoy.log_level = int(level)

    # -- time -----------------------------------------------------------------------------------------------
    def tick(self) -> None:
        """Fire ``proxy_on_tick`` now on every root context with a tick period (every VM)."""
        for instance in self._instances:
            vm = instance.vm
            for ctx in list(vm.contexts.values()):
                if ctx.is_root and ctx.tick_period_ms:
                    vm.set_tick_period(ctx, ctx.tick_period_ms)  # the next tick is one period from now
                    vm.on_tick(ctx)

    def advance_time(self, ms: float) -> int:
        """Move the clock forward, running on the way every timer that falls due at its time: ticks,
        callout timeouts. After each, the event loop runs as it would before the clock moves on:
        posted work, and the answers of clusters with a handler (so a callout a tick starts is
        answered at once unless its handler answers ``SLOW``, and a slow one times out on the way).
        Returns how many timers ran."""

        def settle() -> None:
            while self.pump():
                pass

        return self.envoy.advance(ms, settle)

    # -- the event loop -------------------------------------------------------------------------------------
    def pump(self) -> bool:
        """Run what Envoy's event loop would run next: posted work (queue notifications, upstream
        exchanges), then answers of clusters with a handler. Returns whether anything ran."""
        if self.envoy.run_posted():
            return True  # one round at a time: the caller sees a stream that ended meanwhile
        progressed = False
        for instance in self._instances:
            vm = instance.vm
            for call in list(vm.http_calls.values()):
                if not call.done and not call.slow and call.refused is None and call.cluster in vm.clusters:
                    progressed = self._answer(call, vm.clusters[call.cluster]) or progressed
            for callout in list(vm.grpc_callouts.values()):
                handler = vm.clusters.get(callout.cluster)
                if handler is None or callout.done or callout.slow or callout.refused is not None:
                    continue
                if callout.stream and not callout.local_closed and handler is not UNREACHABLE:
                    continue  # a server answers a stream once it is half-closed; a refused connection at once
                try:
                    reply = handler(callout)
                except ConnectionError:
                    reply = UNREACHABLE
                if reply is None:
                    continue
                if reply is UNREACHABLE:
                    callout.unreachable()
                elif reply is SLOW:
                    callout.slow = True  # only its timeout ends it
                elif isinstance(reply, GrpcReply):
                    callout.reply(reply)
                elif reply is RESET or reply is CUT_OFF:
                    raise TypeError(
                        f"cluster {callout.cluster!r} answered a gRPC call with {reply!r}, which only HTTP callouts "
                        "take: answer a GrpcReply (a status for a failure), SLOW or UNREACHABLE"
                    )
                else:
                    callout.respond(bytes(reply))
                progressed = True
        return progressed

    def wait(self, limit_ms: float = STREAM_IDLE_TIMEOUT_MS) -> bool:
        """Let time pass until the next timer (a tick, a callout's timeout), as it would in Envoy
        while a stream waits: ``False`` when no timer falls due within ``limit_ms``."""
        due = self.envoy.next_due_ns()
        if due is None or due - self.envoy.monotonic_ns > limit_ms * 1_000_000:
            return False
        self.envoy.advance((due - self.envoy.monotonic_ns) / 1_000_000)
        return True

    def _answer(self, call: HttpCallout, handler: Any) -> bool:
        if handler is None:
            return False
        started = time.perf_counter()
        try:
            result = handler(call.request)
        except ConnectionError:
            result = UNREACHABLE
        if result is None:
            return False
        if result is SLOW:
            call.slow = True
            return True
        if result is RESET:
            call.reset()
        elif result is CUT_OFF:
            call.cut_off()
        elif result is UNREACHABLE:
            call.unreachable()
        else:
            resp = to_response(result)
            # The async client's router stamps upstream answers as it does on the main route.
            elapsed_ms = int((time.perf_counter() - started) * 1000)
            headers = [*pairs_of(resp.headers), ("x-envoy-upstream-service-time", str(elapsed_ms))]
            call.respond(resp.status, headers, resp.body, resp.trailers)
        return True

    # -- streams --------------------------------------------------------------------------------------------
    def _client_address(self) -> str:
        """Each new client connection comes from a new ephemeral port, as a real client's do (a
        filter keyed on ``source.address`` sees one client per connection, as in Envoy)."""
        self._next_port += 1
        return f"127.0.0.1:{self._next_port}"

    def http_stream(
        self, *, source: str | None = None, destination: str = "127.0.0.1:10000", tls: Tls | None = None
    ) -> HttpStream:
        """A new HTTP stream on the next worker, to drive step by step. ``source``: the client's
        address (default: 127.0.0.1 and a new port per stream, from 54321 on; ``source.port`` and
        ``source.address`` include it). ``tls``: the downstream connection is TLS (mTLS with a
        client certificate), see :class:`Tls`."""
        self._check_served("http")
        source = source or self._client_address()
        instance = self._take_worker()
        vm = instance.vm
        skip = vm.failed and self.plugin.fail_open  # FAIL_OPEN: Envoy leaves the filter out
        return HttpStream(vm, vm.contexts[instance.root_id], source=source, destination=destination,
                          buffer_limit=self._buffer_limit, request_trailers=self._request_trailers, skip_filter=skip,
                          pump=self.pump, wait=self.wait, routes=self._routes, tls=tls)  # fmt: skip

    def connection(self, *, source: str | None = None, destination: str = "127.0.0.1:10000") -> Connection:
        """A new L4 connection through the plugin's network filter (``source`` as for :meth:`http_stream`)."""
        self._check_served("stream")
        source = source or self._client_address()
        instance = self._take_worker()
        vm = instance.vm
        skip = vm.failed and self.plugin.fail_open
        return Connection(vm, vm.contexts[instance.root_id], source=source, destination=destination,
                          skip_filter=skip)  # fmt: skip

    def _check_served(self, kind: str) -> None:
        """Raise :class:`NotServed` when the filter serves only the other kind of traffic."""
        serves = self._serves
        if serves is None:
            guest = self._serving.vm.guest
            registry = getattr(getattr(guest, "modules", {}).get("proxywasm._dispatch"), "registry", None)
            if registry is None:
                serves = ()
            else:
                from proxywasm_build.build import kinds_for

                serves = kinds_for(tuple(registry.serves()), self.plugin.root_id)
            self._serves = serves  # the registry is fixed once the filter loaded: asked once per host
        if serves and kind not in serves:
            raise NotServed(
                "this filter serves only L4 connections (its plugins make StreamContexts): Envoy runs it as a network "
                "filter, never on an HTTP request; drive it with host.connection()"
                if kind == "http" else
                "this filter serves only HTTP streams (its plugins make HttpContexts): Envoy runs it as an HTTP "
                "filter, never on an L4 connection; drive it with host.request() or host.http_stream()"
            )  # fmt: skip

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
        tls: Tls | None = None,
    ) -> Response:
        """One HTTP/1 exchange through the filter, as Envoy's connection manager runs it: the client
        sends the whole request at once, ``upstream`` answers what the router forwards (default: an
        echo), the event loop runs until the client has its response.

        Raises :class:`StreamStalled` when the filter leaves the stream where Envoy would hang.
        A method Envoy's HTTP/1 codec does not accept (``BREW``, a lower-case ``get``) gets the
        codec's 400 before any filter runs, as in Envoy."""
        if method not in http1.METHODS:
            headers = http1.codec_error_headers(self.envoy.time_ns)
            return Response(400, headers, http1.CODEC_ERROR_BODY, details="http1.codec_error")
        stream = self.http_stream(tls=tls)
        data = body.encode() if isinstance(body, str) else body
        return stream.run(method, path, headers, data, trailers, upstream or echo_upstream, authority)

    def shutdown(self) -> None:
        """VM teardown: ``proxy_on_done`` on each root; one that answers false is deleted when it
        calls ``proxy_done``."""
        for instance in self._instances:
            vm = instance.vm
            root = vm.contexts.get(instance.root_id)
            if root is None or vm.failed:
                continue
            vm.pending_done.add(root.id)
            done = vm.call("proxy_on_done", root, root.id)
            if done != 0 and root.id in vm.pending_done:
                vm.pending_done.discard(root.id)
                vm.delete(root)


def _is_source(path: Path) -> bool:
    return path.suffix == ".py" or (path.is_dir() and (path / "__init__.py").exists())


def _module_serves(tail: bytes, root_id: str) -> tuple[str, ...] | None:
    """What the plugin ``root_id`` selects in a module ``proxywasm build`` made serves (its record,
    at the module's end), or None."""
    from proxywasm_build.build import serves_at_end

    return serves_at_end(tail, root_id)


def _why(vm: Vm) -> str:
    return f" failed: {vm.fail_reason}" if vm.failed else " returned false"


__all__ = ["ClusterHandler", "Host", "RawAccess"]

"""A Python filter running natively in the test process, behind the same :class:`Guest` protocol as
a Wasm module: the emulator calls the SDK's dispatcher directly (what ``sdk/runtime/callbacks.c``
does inside the module), and the SDK's host calls land in the emulator through a Python
``_proxywasm`` (:mod:`.proxywasm_module`).

Each VM gets its own copy of the SDK and of the filter's modules (a VM is a separate interpreter in
Envoy); they are swapped into ``sys.modules`` while that VM's code runs, so several hosts, or
``workers=N``, keep separate state. During a callback the filter's output goes to the host's log
(and on to the real stream, so ``breakpoint()`` works), and imports follow the VM's rules
(:mod:`.imports`). As in the VM: host calls from module-level code answer as at build time
(:class:`.proxywasm_module.AtBuildTime`); ``os.environ`` is the VM's (``Host.load(env=...)``),
empty while the filter loads; ``time.sleep`` and the filter's own ``open`` are refused with the
SDK's messages; source compilation in callbacks is refused (:mod:`.compiler`). Not as in the VM:
``os.listdir`` and other file functions, sockets (the VM's ``socket`` is a stand-in that refuses
to open one; here it is the test process's, which works), threads, and late imports of modules the
test process had already loaded (see :mod:`.imports`); ``os.environ`` and ``os.environb`` are
swapped for the whole process while a callback runs. The Wasm mode is the judge.
"""

from __future__ import annotations

import builtins
import importlib
import io
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import proxywasm
from proxywasm.abi import CALLBACKS, BufferType, LogLevel, loggable

from ..emulator.vm import GuestTrap, Vm
from ..errors import LoadError, hide_host_frames
from .budget import HANG_AFTER_S, NativeBudget
from .compiler import CompilerGuard
from .imports import ImportRules, NoExtensions
from .proxywasm_module import AtBuildTime, ProxyWasmModule

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

_PRIVATE = ("proxywasm", "_proxywasm")
_CONFIGURING = frozenset({"on_vm_start", "on_configure", "validate_configuration"})  # CONFIGURE_FACTOR budgets
_STREAM_CALLBACKS = frozenset(
    method for _, method, _, _ in CALLBACKS if method.startswith(("on_request", "on_response", "on_new_connection",
                                                                  "on_downstream_data", "on_upstream_data"))
)  # fmt: skip


def _private_sdk(name: str) -> bool:
    return name in _PRIVATE or name.startswith("proxywasm.")


class _Tee:
    """A text stream writing each line to the host's log at one level, and through to ``stream``."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, vm: Vm, level: int, stream: Any) -> None:
        self._vm, self._level, self._stream, self._pending = vm, level, stream, ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            *lines, self._pending = self._pending.split("\n")
            for line in lines:
                self._log(line)
        if self._stream is not None:
            self._stream.write(text)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._log(self._pending)
            self._pending = ""
        if self._stream is not None:
            self._stream.flush()

    def _log(self, line: str) -> None:
        """As the VM's stdout logs it (proxywasm.log.LogWriter): text that is not UTF-8 escaped."""
        text = loggable(line)
        self._vm.log(self._level, text if isinstance(text, str) else text.decode())

    def isatty(self) -> bool:
        return bool(self._stream is not None and self._stream.isatty())

    def writable(self) -> bool:
        return True


class _LogHandler(logging.Handler):
    """Routes the ``logging`` module to the host's log during callbacks, as the SDK does in the VM."""

    _LEVELS: ClassVar[dict[int, int]] = {
        logging.DEBUG: LogLevel.DEBUG, logging.INFO: LogLevel.INFO, logging.WARNING: LogLevel.WARN,
        logging.ERROR: LogLevel.ERROR, logging.CRITICAL: LogLevel.CRITICAL,
    }  # fmt: skip

    def __init__(self, vm: Vm) -> None:
        super().__init__()
        self._vm = vm

    def emit(self, record: logging.LogRecord) -> None:
        default = LogLevel.TRACE if record.levelno < logging.DEBUG else LogLevel.ERROR
        self._vm.log(self._LEVELS.get(record.levelno, default), self.format(record))


class NativeGuest:
    """The filter at ``source`` (a ``.py`` file or a package directory) serving one VM."""

    abi = "0_2_1"

    def __init__(self, source: Path, vm: Vm) -> None:
        source = source.resolve()
        if not source.exists():
            raise LoadError(f"{source}: no such file or directory")
        if source.is_dir() and not (source / "__init__.py").exists():
            raise LoadError(f"{source}: a filter directory must be a package (contain __init__.py)")
        if source.is_file() and source.suffix != ".py":
            raise LoadError(f"{source}: a filter is a .py file or a package directory")
        self.source = source
        self.base = source.parent
        self.entry = source.stem if source.is_file() else source.name
        self.vm = vm
        self.budget = NativeBudget(vm.env, vm.log)
        self.api = ProxyWasmModule(vm.host_functions, self.budget)
        self._budgets: dict[int, int] = {}  # context id -> its callbacks' CPU budget (ms), as callbacks.c keeps
        self.rules = ImportRules(self.base)
        self.no_extensions = NoExtensions()
        self.compiler = CompilerGuard(Path(proxywasm.__file__).parent, self.base)
        self.modules: dict[str, ModuleType] = {"_proxywasm": self.api}
        self.environ: dict[str, str] = {}  # os.environ while the filter runs (see _enter)
        self._thread = 0  # the thread of the callback running (see _filter_calls)
        self._masks = self.api.masks  # context id -> callback mask, which the SDK may change
        self._exports: dict[str, Callable[..., int]] = {"proxy_on_context_create": self._on_context_create}
        for bit, (export, method, nargs, fallback) in enumerate(CALLBACKS):
            if export == "proxy_on_delete":
                self._exports[export] = self._on_delete
            else:
                self._exports[export] = self._callback(bit, method, nargs, fallback)

    # -- the Guest protocol ---------------------------------------------------------------------------
    @property
    def exports(self) -> Mapping[str, Callable[..., int]]:
        return self._exports

    def has(self, export: str) -> bool:
        return export in self._exports

    def call(self, export: str, *args: int) -> int:
        return self._exports[export](*args)

    def enter(self) -> None:
        pass  # the budget is armed per callback (see .budget)

    def cpu_ns(self) -> int:
        return 0  # natively the filter sees Envoy's clock; its budget runs on wall time

    def start(self) -> None:
        """What ``proxywasm build`` does at build time: import the filter, check it, hand the
        dispatcher over. Problems are reported as the build reports them (a :class:`LoadError`)."""
        before = set(sys.modules)
        saved = self._enter(loading=True)
        try:
            guard = importlib.import_module("proxywasm._build_guard")
            functions = self.api._f
            self.api._f = AtBuildTime(functions)  # type: ignore[assignment]  # the same calls, answered as at build time
            try:
                with self.rules.recording(), guard.building():
                    __import__(self.entry)
            except Exception as exc:
                if type(exc).__name__ == "CallbackNameError":  # register() named the method's file:line
                    raise LoadError(str(exc)) from None  # as the build words it; the SDK's frames add nothing
                raise LoadError(self._explain(exc)) from exc
            finally:
                self.api._f = functions
            dispatch = importlib.import_module("proxywasm._dispatch")
            if not dispatch.registry.plugins:
                raise LoadError(
                    f"{self.source}: registers no filter: decorate an HttpContext, StreamContext or "
                    "PluginContext subclass with @proxywasm.register"
                )
            self.rules.check_loaded(set(sys.modules) - before)
            sys.modules["proxywasm.metrics"].built()  # as the build: labels seen from here on get a warning
            abcs = sys.modules.get("_collections_abc")
            headers = sys.modules["proxywasm.headers"]
            if abcs is not None:
                abcs.MutableMapping.register(headers.Headers)
            self.api.set_error_type(sys.modules["proxywasm.hostcalls"].HostCallError)
            dispatcher = dispatch.dispatcher
            self.api.set_dispatcher(dispatcher, dispatcher.contexts)
        finally:
            for name in set(sys.modules) - before:
                module = sys.modules[name]
                if _private_sdk(name) or self.rules.is_filter_module(name, module):
                    self.modules[name] = module
            self._leave(saved)

    def _explain(self, exc: BaseException) -> str:
        """'file:line: importing the filter failed: what', pointing into the filter's own files."""
        where = str(self.source)
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if (
                Path(frame.filename).resolve().is_relative_to(self.base)
                and "proxywasm" not in Path(frame.filename).parts
            ):
                where = f"{frame.filename}:{frame.lineno}"
                break
        what = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return f"{where}: importing the filter failed: {what}"

    # -- entering and leaving the VM's world ----------------------------------------------------------
    def _guard(self, real: Callable[..., Any], refusal: str) -> Callable[..., Any]:
        """``real`` (time.sleep, open) as the filter sees it: its own calls get the SDK's refusal
        (``proxywasm.vm.<refusal>``, from this VM's copy of the SDK); any other caller gets ``real``:
        the SDK's and the stdlib's own reads (a traceback's source lines), the test process, a
        debugger at a breakpoint, another thread."""

        def guarded(*args: Any, **kwargs: Any) -> Any:
            if self._filter_calls():
                getattr(importlib.import_module("proxywasm.vm"), refusal)(*args, **kwargs)
            return real(*args, **kwargs)

        return guarded

    def _filter_calls(self) -> bool:
        """Whether the filter's code makes the call being guarded: on the callback's thread, walking
        out from the caller past the stdlib and the SDK, the first frame is of a module the bundle
        would hold (the filter's own, or a dependency it imported while it loaded)."""
        if threading.get_ident() != self._thread:
            return False
        frame: Any = sys._getframe(2)
        while frame is not None:
            top = str(frame.f_globals.get("__name__", "")).partition(".")[0]
            if top != "proxywasm" and top not in sys.stdlib_module_names:
                return top == self.entry or (top in self.rules.recorded and top not in ("proxywasm_host", "_pytest"))
            frame = frame.f_back
        return False

    def _enter(self, *, loading: bool = False) -> dict[str, Any]:
        """Swap this VM's modules into ``sys.modules`` (hiding any other copy of the SDK and the
        filter), route output and logging to the host, apply the import rules."""
        hidden: dict[str, ModuleType | None] = {}
        for name in list(sys.modules):
            if _private_sdk(name) or name == self.entry or name.startswith(self.entry + "."):
                hidden[name] = sys.modules.pop(name)
        for name, module in self.modules.items():
            hidden.setdefault(name, sys.modules.get(name))
            sys.modules[name] = module
        sys.path.insert(0, str(self.base))
        root = logging.getLogger()
        saved: dict[str, Any] = {
            "modules": hidden,
            "stdout": sys.stdout,
            "stderr": sys.stderr,
            "handlers": root.handlers[:],
            "level": root.level,
            "import": builtins.__import__,
        }
        sys.stdout = _Tee(self.vm, LogLevel.INFO, sys.stdout)
        sys.stderr = _Tee(self.vm, LogLevel.ERROR, sys.stderr)
        root.handlers[:] = [_LogHandler(self.vm)]
        root.setLevel(logging.DEBUG)
        # time.sleep and open, for the filter's own calls, as the runtime's bootstrap has them in the VM
        self._thread = threading.get_ident()
        saved["sleep"], saved["open"], saved["io.open"] = time.sleep, builtins.open, io.open
        time.sleep = self._guard(saved["sleep"], "refuse_sleep")
        builtins.open = io.open = self._guard(saved["open"], "refuse_open")
        sys.meta_path.insert(0, self.no_extensions)  # dependencies' C extensions: left out of the bundle
        # The VM's own environment, not the test process's: empty while the filter loads (the build
        # has none), then what the SDK reads from Host.load(env=...) when the VM starts.
        saved["environ"], os.environ = os.environ, self.environ  # type: ignore[assignment]
        environb = {k.encode("utf-8", "surrogateescape"): v.encode("utf-8", "surrogateescape")
                    for k, v in self.environ.items()}  # fmt: skip
        saved["environb"], os.environb = os.environb, environb  # type: ignore[assignment]
        if not loading:
            builtins.__import__ = self.rules.guarded_import(builtins.__import__)
            vm = self.modules.get("proxywasm.vm")
            if not getattr(vm, "_keep_compiler", False):  # the served module has no compiler
                saved["compiler"] = self.compiler.install()
        return saved

    def _leave(self, saved: dict[str, Any]) -> None:
        builtins.__import__ = saved["import"]
        time.sleep, builtins.open, io.open = saved["sleep"], saved["open"], saved["io.open"]
        if self.no_extensions in sys.meta_path:
            sys.meta_path.remove(self.no_extensions)
        os.environ = saved["environ"]  # noqa: B003 - the test process's mapping back (swapped in _enter)
        os.environb = saved["environb"]
        if "compiler" in saved:
            CompilerGuard.uninstall(saved["compiler"])
        for stream in (sys.stdout, sys.stderr):
            if isinstance(stream, _Tee):
                stream.flush()
        sys.stdout, sys.stderr = saved["stdout"], saved["stderr"]
        root = logging.getLogger()
        root.handlers[:] = saved["handlers"]
        root.setLevel(saved["level"])
        try:
            sys.path.remove(str(self.base))
        except ValueError:
            pass
        for name in list(sys.modules):
            if _private_sdk(name) or name in self.modules or name == self.entry or name.startswith(self.entry + "."):
                module = sys.modules.pop(name)
                if name not in self.modules and (_private_sdk(name) or self.rules.is_filter_module(name, module)):
                    self.modules[name] = module  # a module the filter imported late: it stays this VM's
        for name, module in saved["modules"].items():
            if module is not None:
                sys.modules[name] = module

    @contextmanager
    def running(self, callback: str | None = None) -> Iterator[None]:
        """The VM's modules installed while the filter's code runs; ``callback``: the proxy_on_*
        callback it runs for (callbacks.c's current_callback, restored after: Envoy may call in
        during a host call)."""
        saved = self._enter()
        outer = self.api.callback
        if callback is not None:
            self.api.callback = callback
        try:
            yield
        finally:
            self.api.callback = outer
            self._leave(saved)

    # -- callbacks, as runtime/callbacks.c implements them --------------------------------------------
    def _report(self, where: str, exc: BaseException) -> None:
        # The dispatcher handles filter exceptions itself; this is the runtime's last line of defence.
        self.vm.log(LogLevel.ERROR, f"proxywasm runtime: {where} failed: {exc}")

    def _on_context_create(self, context_id: int, parent_id: int = 0, *_: int) -> int:
        api = self.api
        if api.dispatcher is None:
            return 0
        api.effective = context_id
        api.entries += 1
        # A stream context inherits its plugin's budget; a plugin's comes from its class.
        ms = self._budgets[parent_id] if parent_id in self._budgets else self.budget.of_plugin(None)
        with self.running("on_context_create"), self.budget.running(ms, "creating a context", configuring=False):
            try:
                self._masks[context_id] = int(api.dispatcher.on_context_create(context_id, parent_id))
            except BaseException as exc:
                self._report("on_context_create", exc)
            if parent_id == 0 and api.contexts is not None:
                ms = self.budget.of_plugin(api.contexts.get(context_id))
        self._budgets[context_id] = ms
        self._check_hang("creating a context")
        return 0

    def _check_hang(self, callback: str) -> None:
        if self.budget.hung is not None:
            self.budget.hung = None
            raise GuestTrap(
                f"{callback} ran {HANG_AFTER_S:.0f} s without returning: in Envoy it would block its worker thread "
                "for good (the CPU budget is 0, or C code never returned to Python)",
                callback,
            )

    def _callback(self, bit: int, method: str, nargs: int, fallback: int | None) -> Callable[..., int]:
        default = fallback or 0
        flag = 1 << bit
        configuring = method in _CONFIGURING
        stream = method in _STREAM_CALLBACKS

        def export(context_id: int, *args: int) -> int:
            api = self.api
            func = getattr(api.dispatcher, method, None) if api.dispatcher is not None else None
            if method == "on_configure" and context_id in self._budgets and api.contexts is not None:
                # The budget key of the plugin configuration is read before the filter sees it.
                size = args[0] if args else 0
                data = bytes(api.get_buffer_bytes(BufferType.PLUGIN_CONFIGURATION, 0, size)) if size else b""
                ms = self.budget.configure(data, api.contexts.get(context_id))
                if ms is None:
                    return 0
                self._budgets[context_id] = ms
            if func is None or not self._masks.get(context_id, 0) & flag:
                return default
            api.effective = context_id
            api.entries += 1
            result: Any = None
            with self.running(method), self.budget.running(self._budgets.get(context_id, 0), method, configuring):
                try:
                    result = func(context_id, *(list(args[:nargs]) + [0] * (nargs - len(args))))
                except BaseException as exc:
                    self._report("callback", exc)
                    result = self._fail_closed(method) if stream else default
            self._check_hang(method)
            if result is None:
                return default
            if stream and (type(result) is bool or not isinstance(result, int) or not 0 <= result <= 4):
                # callbacks.c's bad_result: what Envoy has no status for goes to the SDK
                try:
                    with self.running(method):
                        return int(api.dispatcher.bad_result(context_id, method, result))
                except BaseException as exc:
                    self._report("callback result", exc)
                    return self._fail_closed(method)
            try:
                return int(result)
            except (TypeError, ValueError) as exc:
                self._report("callback result", exc)
                return default

        return export

    def _fail_closed(self, method: str) -> int:
        """callbacks.c's fail_closed: an exception escaped the SDK's own handling in a stream
        callback: the stream must not go on as if nothing happened."""
        try:
            if method.startswith(("on_request", "on_response")):
                self.api.send_local_response(500, b"wasm_python_runtime_failure", b"Internal Server Error\n", b"", -1)
            else:
                self.api.close_stream(2)  # DOWNSTREAM
        except Exception as exc:
            self._report("failing the stream closed", exc)
        return 1  # PAUSE

    def _on_delete(self, context_id: int, *_: int) -> int:
        api = self.api
        api.effective = context_id
        bit = next(i for i, entry in enumerate(CALLBACKS) if entry[0] == "proxy_on_delete")
        if self._masks.get(context_id, 0) & (1 << bit):
            self._exports_delete(context_id)
        elif api.contexts is not None:
            # Nothing to run in Python: drop the context object (a __del__ of the filter's may still
            # run, under the context's budget, as callbacks.c's proxy_on_delete does it).
            ms = self._budgets.get(context_id, 0)
            with self.running("on_delete"), self.budget.running(ms, "deleting a context", configuring=False):
                api.contexts.pop(context_id, None)
        self._masks.pop(context_id, None)
        self._budgets.pop(context_id, None)
        return 0

    def _exports_delete(self, context_id: int) -> None:
        api = self.api
        api.entries += 1
        ms = self._budgets.get(context_id, 0)
        with self.running("on_delete"), self.budget.running(ms, "on_delete", configuring=False):
            try:
                api.dispatcher.on_delete(context_id)
            except BaseException as exc:
                self._report("callback", exc)
        self._budgets.pop(context_id, None)
        self._check_hang("on_delete")

"""The CPU budget in native mode: what ``sdk/runtime/budget.c`` does inside the VM, for a filter
running in this process.

The configuration is the runtime's (names and defaults from ``proxywasm.budget`` through
``_proxywasm.set_budget``): the plugin configuration's top-level ``"proxywasm_cpu_budget_ms"``,
then the VM environment's ``PROXYWASM_CPU_BUDGET_MS``, then the plugin class's ``cpu_budget_ms``,
then the default; configuring callbacks get ``CONFIGURE_FACTOR`` budgets. A bad value in the
plugin configuration rejects it with the runtime's message.

How it interrupts differs, and says so: the runtime checks the budget at every bytecode boundary
on Envoy's clock; here a watchdog thread measures wall time and raises ``BudgetExceeded`` into
the callback's thread with ``PyThreadState_SetAsyncExc`` (delivered at the next bytecode
boundary). From then on, as in the runtime, every line the filter runs raises it again (a trace
function on the callback's thread, so a loop that catches it still ends; coverage.py does not see
those lines), and the SDK's frames are interrupted too after one more budget. While a debugger
has the callback stopped, its budget does not run. C code is not interrupted here (the runtime
also interrupts the regex engine and big-integer arithmetic). A callback that runs
:data:`HANG_AFTER_S` without returning even so (budget 0, or a long C call) is reported by the
host as a hang: Envoy would block its worker.
"""

from __future__ import annotations

import ctypes
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import hide_host_frames

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

HANG_AFTER_S = 10.0
_RETRY_S = 0.001


class _Drain(BaseException):
    """Replaces an undelivered asynchronous exception when the callback has returned."""


class CallbackHung(BaseException):
    """Raised into a native callback that ran :data:`HANG_AFTER_S` seconds (the host then reports it)."""


class _Settings:
    """What ``_proxywasm.set_budget`` received (see ``proxywasm/budget.py``)."""

    def __init__(self, exception: type[BaseException], default_ms: int, configure_factor: int, config_key: str,
                 env_var: str, memory_default_mb: int, memory_env_var: str, sdk_prefix: str) -> None:  # fmt: skip
        self.exception = exception
        self.default_ms = default_ms
        self.configure_factor = configure_factor
        self.config_key = config_key
        self.env_var = env_var
        self.sdk_prefix = sdk_prefix


def _parse_ms(text: str) -> int | None:
    """budget.c's parse_ms: digits, optionally a fraction of zeros ("50", "50.0"); else None."""
    whole, dot, fraction = text.partition(".")
    if not whole.isdigit() or not whole.isascii() or (dot and fraction.strip("0")):
        return None
    value = int(whole)
    return value if value <= 2**31 - 1 else None


class NativeBudget:
    """One VM's budget configuration and the watchdog that enforces it."""

    def __init__(self, env: dict[str, str], log: Callable[[int, str], None]) -> None:
        self.settings: _Settings | None = None
        self._env = env
        self._log = log
        self._env_ms: int | None = None
        self._env_read = False
        self.hung: str | None = None  # the callback that ran HANG_AFTER_S, until the host reports it

    def set_budget(self, *args: Any) -> None:
        self.settings = _Settings(*args)

    # -- where budgets come from (budget.c's budget_of_plugin and budget_configure) --------------------------
    def _env_budget(self) -> int | None:
        if not self._env_read and self.settings is not None:
            self._env_read = True
            value = self._env.get(self.settings.env_var)
            if value is not None:
                self._env_ms = _parse_ms(value)
                if self._env_ms is None:
                    self._log(4, f"proxywasm: ignoring {self.settings.env_var}={value}: not a number of milliseconds")
        return self._env_ms

    def of_plugin(self, plugin: object | None) -> int:
        settings = self.settings
        if settings is None:
            return 0
        env_ms = self._env_budget()
        if env_ms is not None:
            return env_ms
        if plugin is None:
            return settings.default_ms
        ms = getattr(plugin, "cpu_budget_ms", settings.default_ms)
        if type(ms) is not int or not 0 <= ms <= 2**31 - 1:
            self._log(4, f"proxywasm: {type(plugin).__name__}.cpu_budget_ms must be a non-negative int "
                         f"(milliseconds); using {settings.default_ms} ms")  # fmt: skip
            return settings.default_ms
        return ms

    def configure(self, configuration: bytes, plugin: object | None) -> int | None:
        """The plugin's budget once ``configuration`` applies; None: the configuration is rejected."""
        ms = self.of_plugin(plugin)
        settings = self.settings
        if settings is None or not configuration:
            return ms
        try:
            data = json.loads(configuration)
        except ValueError:
            return ms  # not JSON: the runtime does not look further either
        if not isinstance(data, dict) or settings.config_key not in data:
            return ms
        raw = configuration.decode("utf-8", "replace")
        value = data[settings.config_key]
        text = json.dumps(value) if not isinstance(value, (int, float)) or isinstance(value, bool) else repr(value)
        parsed = _parse_ms(text) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if parsed is None:
            shown = _raw_value(raw, settings.config_key) or text
            self._log(4, f'proxywasm: the plugin configuration\'s "{settings.config_key}" must be a non-negative '
                         f"integer of milliseconds, not {shown[:40]}: the configuration is rejected")  # fmt: skip
            return None
        return parsed

    # -- running a callback under it ------------------------------------------------------------------------
    @contextmanager
    def running(self, ms: int, callback: str, configuring: bool) -> Iterator[None]:
        settings = self.settings
        if settings is not None and ms > 0 and configuring:
            ms *= settings.configure_factor
        watch = _Watch(self, ms if settings is not None else 0, callback, threading.get_ident())
        _watchdog().arm(watch)
        try:
            yield
        finally:
            _watchdog().disarm(watch)
        if watch.hung:
            self.hung = callback


def _raw_value(raw: str, key: str) -> str | None:
    """The value's text as written in the configuration (for the message), if it can be found."""
    start = raw.find(f'"{key}"')
    if start < 0:
        return None
    colon = raw.find(":", start)
    end = min((i for i in (raw.find(",", colon), raw.find("}", colon)) if i >= 0), default=len(raw))
    return raw[colon + 1 : end].strip() or None


class _Watch:
    def __init__(self, budget: NativeBudget, ms: int, callback: str, thread_id: int) -> None:
        self.budget = budget
        self.ms = ms
        self.callback = callback
        self.thread_id = thread_id
        self.started = time.monotonic()
        self.hung = False
        self.injected = False
        self.exceeded: type[BaseException] | None = None  # once the budget ran out
        self.previous_trace: Any = None
        self.tracing = False

    def trace_rest(self) -> None:
        """Called in the callback's thread when BudgetExceeded first reaches it: from now on every
        line of a frame that is neither the SDK's nor the host's raises it again (at the next
        bytecode boundary, as the runtime's checks do), so catching it does not keep a loop going."""
        settings = self.budget.settings
        exceeded = self.exceeded
        if settings is None or exceeded is None or (self.tracing and sys.gettrace() is not None):
            return  # (an exception out of a trace function turns tracing off: then trace again)
        thread_id = ctypes.c_ulong(self.thread_id)
        exception = ctypes.py_object(exceeded)
        spared = (settings.sdk_prefix, _HOST_PREFIX)

        def on_line(frame: Any, event: str, arg: object) -> Any:
            # Raised here, at the line's start (a traceback shows this frame under the filter's line).
            if event == "line":
                _SET_ASYNC_EXC(thread_id, exception)
            return on_line

        def on_call(frame: Any, event: str, arg: object) -> Any:
            # what the filter's frames call, but not the SDK (spared) nor the host's context managers
            if frame.f_code.co_filename.startswith(spared) or frame.f_back is None:
                return None
            return on_line if frame.f_back.f_trace is on_line else None

        if not self.tracing:
            self.previous_trace = sys.gettrace()
        self.tracing = True
        frame: Any = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.startswith(_HOST_PREFIX):  # this module's
            frame = frame.f_back
        while frame is not None and not frame.f_code.co_filename.startswith(spared):  # the filter's frames
            frame.f_trace = on_line
            frame = frame.f_back
        sys.settrace(on_call)

    def untrace(self) -> None:
        if self.tracing:
            self.tracing = False
            sys.settrace(self.previous_trace)


_SET_ASYNC_EXC = ctypes.pythonapi.PyThreadState_SetAsyncExc


def _raise_in(thread_id: int, exc: type[BaseException]) -> None:
    _SET_ASYNC_EXC(ctypes.c_ulong(thread_id), ctypes.py_object(exc))


class _Watchdog(threading.Thread):
    """One daemon thread for the process; it sleeps unless a callback runs long."""

    def __init__(self) -> None:
        super().__init__(name="proxywasm-native-budget", daemon=True)
        self._lock = threading.Condition()
        self._watch: _Watch | None = None

    def arm(self, watch: _Watch) -> None:
        with self._lock:
            if self._watch is None:  # nested callbacks run under the outermost one's budget
                self._watch = watch
                self._lock.notify()

    def watching(self, watch: _Watch) -> bool:
        return self._watch is watch

    def disarm(self, watch: _Watch) -> None:
        """Called by the callback's own thread when the callback returns."""
        with self._lock:
            if self._watch is not watch:
                return
            self._watch = None
            watch.untrace()
            if not watch.injected:
                return
        # An exception raised into the callback but not delivered yet must not hit the host's code
        # after it: replace it by one that is caught right here (clearing it with NULL instead would
        # leave the interpreter's async-exception signal set for good). The watchdog no longer
        # injects: the watch is gone.
        try:
            _raise_in(watch.thread_id, _Drain)
            for _ in range(8):  # delivered after the call returns, or at the backward jump
                pass
        except _Drain:
            pass

    def run(self) -> None:
        while True:
            with self._lock:
                while self._watch is None:
                    self._lock.wait()
                watch = self._watch
                elapsed = time.monotonic() - watch.started
                budget_s = watch.ms / 1000 if watch.ms > 0 else HANG_AFTER_S
                due = budget_s if elapsed < budget_s else elapsed + _RETRY_S
                self._lock.wait(max(0.0, due - elapsed))
                if self._watch is not watch:
                    continue
                self._interrupt(watch, time.monotonic() - watch.started)

    def _interrupt(self, watch: _Watch, elapsed: float) -> None:
        settings = watch.budget.settings
        if elapsed >= HANG_AFTER_S:
            watch.hung = watch.injected = True
            _raise_in(watch.thread_id, CallbackHung)
            watch.started = time.monotonic() - HANG_AFTER_S + 1.0  # again in a second if it is caught
            return
        if settings is None or watch.ms <= 0 or elapsed < watch.ms / 1000:
            return
        frame = sys._current_frames().get(watch.thread_id)
        in_sdk = frame is not None and frame.f_code.co_filename.startswith(settings.sdk_prefix)
        if in_sdk and elapsed < 2 * watch.ms / 1000:
            return  # the SDK's failure handling gets one more budget, as in the runtime
        if frame is not None and frame.f_code.co_filename.startswith(_HOST_PREFIX):
            return  # the host's own code, between callbacks: try again in a millisecond
        if _debugging(frame):
            watch.started = time.monotonic() - elapsed + _RETRY_S  # stopped at a breakpoint: the clock waits
            return
        if watch.exceeded is None:
            watch.exceeded = _exceeded(settings.exception, f"{watch.callback} ran longer than its CPU budget "
                                                           f"of {watch.ms} ms", watch)  # fmt: skip
        watch.injected = True
        _raise_in(watch.thread_id, watch.exceeded)


def _debugging(frame: Any) -> bool:
    """A debugger (pdb, or any bdb-based one) is on the callback's stack."""
    while frame is not None:
        if frame.f_code.co_filename.endswith(("/bdb.py", "/pdb.py")):
            return True
        frame = frame.f_back
    return False


def _exceeded(base: type[BaseException], message: str, watch: _Watch) -> type[BaseException]:
    """An asynchronous exception is raised as a class (instantiated without arguments, in the
    callback's thread): a subclass of the SDK's BudgetExceeded that carries the runtime's message
    and, when first instantiated, makes the rest of the callback's lines raise it too."""

    def init(self: BaseException, *args: object) -> None:
        base.__init__(self, message)
        if threading.get_ident() == watch.thread_id and _watchdog().watching(watch):
            watch.trace_rest()

    return type(base.__name__, (base,), {"__init__": init, "__module__": base.__module__})


_HOST_PREFIX = __file__.rpartition("/")[0].rpartition("/")[0] + "/"  # proxywasm_host's files


_WATCHDOG: _Watchdog | None = None
_WATCHDOG_LOCK = threading.Lock()


def _watchdog() -> _Watchdog:
    global _WATCHDOG
    if _WATCHDOG is None:
        with _WATCHDOG_LOCK:
            if _WATCHDOG is None:
                _WATCHDOG = _Watchdog()
                _WATCHDOG.start()
    return _WATCHDOG

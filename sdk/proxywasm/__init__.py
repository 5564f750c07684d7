"""Write Envoy proxy-wasm filters in Python.

A filter is a module that registers a context class::

    import proxywasm
    from proxywasm import Action, HttpContext

    @proxywasm.register
    class AddHeader(HttpContext):
        def on_request_headers(self, headers, end_of_stream):
            headers["x-hello"] = "world"
            return Action.CONTINUE

``proxywasm build filter.py -o filter.wasm`` turns it into a module Envoy loads.
"""

from __future__ import annotations

from . import budget, hostcalls, log, properties, vm
from .abi import Action, GrpcStatus, LogLevel, PeerType
from .body import Body
from .budget import BudgetExceeded
from .callouts import GrpcCallResponse, GrpcStream, HttpCallResponse
from .context import Context, FailurePolicy, HttpContext, PluginContext, StreamContext
from .errors import (
    BodyTooLarge,
    CallbackNameError,
    CalloutFailed,
    CasMismatch,
    ConfigError,
    HeadersUnavailable,
    HostCallError,
    LocalReplyAlreadySent,
    ProxyWasmError,
    UsageError,
)
from .headers import HeaderPairs, Headers
from .hostcalls import call_foreign_function
from .metrics import Counter, Gauge, Histogram
from .shared import SharedQueue, shared_data

__all__ = [
    "Action", "Body", "BodyTooLarge", "BudgetExceeded", "CallbackNameError", "CalloutFailed", "CasMismatch",
    "ConfigError", "Context", "Counter", "FailurePolicy", "Future", "Gauge", "GrpcCallResponse", "GrpcStatus",
    "GrpcStream", "HeaderPairs", "Headers", "HeadersUnavailable", "Histogram", "HostCallError", "HttpCallResponse",
    "HttpContext", "LocalReplyAlreadySent", "LogLevel", "PeerType", "PluginContext", "ProxyWasmError",
    "SharedQueue", "StreamContext", "UsageError", "budget", "call_foreign_function", "config", "gather", "log",
    "now_ns", "properties", "register", "shared_data", "vm",
]  # fmt: skip

TYPE_CHECKING = False  # typing is not imported at run time: it would cost memory in every VM
if TYPE_CHECKING:
    from typing import Any, TypeVar

    from . import config
    from .tasks import Future, gather

    C = TypeVar("C", bound=Context)


def __getattr__(name: str) -> Any:
    # The coroutine driver loads on first use, at build time: filters that do not await keep the memory.
    if name in ("Future", "gather"):
        from . import tasks

        return getattr(tasks, name)
    if name == "config":  # imports json: only filters that read a JSON configuration pay for it
        # (not "from . import config": that asks this function for "config" again)
        __import__(f"{__name__}.config")
        return globals()["config"]
    raise AttributeError(f"module 'proxywasm' has no attribute {name!r}")


def register(cls: Any = None, /, *, root_id: str | None = None) -> Any:
    """Register a filter (usable as ``@register`` or ``@register(root_id="...")``).

    ``cls`` is a :class:`PluginContext` subclass, or an :class:`HttpContext` / :class:`StreamContext`
    subclass (a plain plugin is made for it). ``root_id`` selects the plugin by the ``root_id`` of
    Envoy's plugin config; ``None`` serves any root id.

    Outside a VM (a test or a tool importing the filter module) the class is checked but not
    registered, so several filters can be imported into one process.

    Raises :class:`CallbackNameError` (so ``proxywasm build`` fails, naming ``file:line``) for a
    method named like a callback that is none (``on_request_header``: did you mean
    ``on_request_headers``?), a callback of another kind of context, or an ``async def`` callback
    where the SDK cannot wait.
    """
    from ._dispatch import registry
    from ._names import check_callback_names

    def add(target: Any) -> Any:
        plugin: type[PluginContext]
        if issubclass(target, PluginContext):
            plugin = target
        elif issubclass(target, HttpContext):
            plugin = type(f"{target.__name__}Plugin", (PluginContext,), {"http_context": target})
        elif issubclass(target, StreamContext):
            plugin = type(f"{target.__name__}Plugin", (PluginContext,), {"stream_context": target})
        else:
            raise TypeError(f"register() takes a context class, not {target!r}")
        for cls in (plugin, plugin.http_context, plugin.stream_context):
            if cls is not None:
                check_callback_names(cls)
                if _awaits(cls):
                    from . import tasks  # noqa: F401 - loaded now, so it exists inside Envoy
        if _reads_config(target):
            __getattr__("config")  # loaded now (at build time), so it exists inside Envoy
        from .hostcalls import OUTSIDE_VM

        if not OUTSIDE_VM:  # a test or a tool importing filters side by side: nothing to serve
            registry.add(plugin, root_id)
        return target

    return add if cls is None else add(cls)


def _awaits(cls: type) -> bool:
    """Whether a class (with its bases) defines an ``async def`` method."""
    return any(
        getattr(getattr(f, "__code__", None), "co_flags", 0) & 0x80 for k in cls.__mro__ for f in vars(k).values()
    )


def _reads_config(target: type) -> bool:
    """Whether code of the module defining ``target`` names ``config`` (``proxywasm.config.parse``,
    ``from proxywasm import config`` inside a function): the lazily loaded module must then be
    loaded at build time. A false positive (``self.config``) only costs the module's memory."""
    module = __import__("sys").modules.get(target.__module__)
    seen: set[int] = set()
    todo: list[Any] = [target, *(vars(module).values() if module is not None else ())]  # target: not bound yet
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, type) and item.__module__ == target.__module__:
            todo.extend(vars(item).values())
        elif isinstance(item, (staticmethod, classmethod, property)):
            todo.extend(f for f in (getattr(item, "__func__", None), getattr(item, "fget", None)) if f is not None)
        else:
            code: Any = getattr(item, "__code__", None) if callable(item) else item
            if type(code) is type(_reads_config.__code__):
                if "config" in code.co_names:
                    return True
                todo.extend(c for c in code.co_consts if type(c) is type(code))
    return False


_raw = hostcalls.raw  # now_ns() calls the host directly: an import per call cost 1.2 us in the VM


def now_ns() -> int:
    """Envoy's wall clock in nanoseconds since the epoch."""
    return _raw.get_current_time_nanoseconds()  # type: ignore[no-any-return]

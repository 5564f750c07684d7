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

from . import budget, log, properties, vm
from .abi import Action, GrpcStatus, LogLevel, PeerType
from .body import Body
from .budget import BudgetExceeded
from .callouts import GrpcCallResponse, GrpcStream, HttpCallResponse
from .context import Context, FailurePolicy, HttpContext, PluginContext, StreamContext
from .headers import Headers
from .hostcalls import HostCallError, call_foreign_function
from .metrics import Counter, Gauge, Histogram
from .shared import CasMismatch, SharedQueue, shared_data

__all__ = [
    "Action", "Body", "BudgetExceeded", "CasMismatch", "Context", "Counter", "FailurePolicy", "Gauge",
    "GrpcCallResponse", "GrpcStatus", "GrpcStream", "Headers", "Histogram", "HostCallError", "HttpCallResponse",
    "HttpContext", "LogLevel", "PeerType", "PluginContext", "SharedQueue", "StreamContext", "budget",
    "call_foreign_function", "log", "now_ns", "properties", "register", "shared_data", "vm",
]  # fmt: skip

TYPE_CHECKING = False  # typing is not imported at run time: it would cost memory in every VM
if TYPE_CHECKING:
    from typing import Any, TypeVar

    C = TypeVar("C", bound=Context)


def register(cls: Any = None, /, *, root_id: str | None = None) -> Any:
    """Register a filter (usable as ``@register`` or ``@register(root_id="...")``).

    ``cls`` is a :class:`PluginContext` subclass, or an :class:`HttpContext` / :class:`StreamContext`
    subclass (a plain plugin is made for it). ``root_id`` selects the plugin by the ``root_id`` of
    Envoy's plugin config; ``None`` serves any root id.
    """
    from ._dispatch import registry

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
        registry.add(plugin, root_id)
        return target

    return add if cls is None else add(cls)


def now_ns() -> int:
    """Envoy's wall clock in nanoseconds since the epoch."""
    from .hostcalls import get_current_time_nanoseconds

    return get_current_time_nanoseconds()

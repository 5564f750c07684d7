"""The plugin configuration and the context records of one VM (Envoy's ``Plugin`` and ``Context``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ..errors import hide_host_frames

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

if TYPE_CHECKING:
    from .headers import HeaderMap
    from .http_filter import HttpFilter
    from .network import Connection
    from .process import Timer

FailurePolicy = Literal["FAIL_CLOSED", "FAIL_OPEN", "FAIL_RELOAD"]
FAILURE_POLICIES: tuple[FailurePolicy, ...] = ("FAIL_CLOSED", "FAIL_OPEN", "FAIL_RELOAD")


@dataclass
class Plugin:
    """``envoy.extensions.wasm.v3.PluginConfig`` as far as a filter can tell.

    ``failure_policy``: what streams get once the VM failed (FAIL_CLOSED: a 503; FAIL_OPEN: the
    filter is skipped; FAIL_RELOAD: a new VM once ``reload_backoff_ms`` passed since the last load).
    ``allow_on_headers_stop_iteration``: PAUSE from a headers callback stops only the headers
    (body callbacks still run) instead of everything.
    """

    name: str
    root_id: str
    configuration: bytes
    failure_policy: FailurePolicy = "FAIL_CLOSED"
    allow_on_headers_stop_iteration: bool = False
    reload_backoff_ms: int = 1000

    @property
    def fail_open(self) -> bool:
        return self.failure_policy == "FAIL_OPEN"


class Context:
    """One proxy-wasm context: the VM context (id 0), a root context (``parent_id == id``), or an HTTP
    stream or L4 connection context (``parent_id`` is its root)."""

    __slots__ = (
        "call_data",
        "callout_response",
        "created_in_vm",
        "grpc_receive",
        "id",
        "is_root",
        "kind",
        "parent_id",
        "plugin",
        "status_code",
        "status_message",
        "stream",
        "tick_period_ms",
        "tick_timer",
    )

    def __init__(
        self,
        context_id: int,
        parent_id: int,
        kind: Literal["vm", "root", "http", "tcp"],
        plugin: Plugin | None = None,
        stream: HttpFilter | Connection | None = None,
    ) -> None:
        self.id = context_id
        self.parent_id = parent_id
        self.kind = kind
        self.is_root = kind in ("root", "vm")
        self.plugin = plugin
        self.stream = stream
        self.created_in_vm = False
        # Root contexts: the tick timer, and what an answer being delivered shows to host calls.
        self.tick_period_ms = 0
        self.tick_timer: Timer | None = None
        self.status_code = 0
        self.status_message = b""
        self.callout_response: tuple[HeaderMap, bytes, HeaderMap | None] | None = None
        self.grpc_receive: dict[int, HeaderMap | bytes] = {}  # MapType / BufferType -> metadata / message
        # Foreign-function arguments while proxy_on_foreign_function runs.
        self.call_data: bytes | None = None

    def __repr__(self) -> str:
        return f"Context({self.id}, {self.kind})"

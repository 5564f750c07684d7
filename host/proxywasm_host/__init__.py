"""proxywasm_host: a local Envoy for proxy-wasm modules, on wasmtime, for pytest.

It loads any proxy-wasm module (ABI 0.2.1, 0.2.0, 0.1.0) and behaves as Envoy 1.40 does; a
differential suite checks that against real Envoy::

    from proxywasm_host import Host

    host = Host.load("filter.wasm", plugin_config={"k": "v"})
    response = host.request("GET", "/", headers=[("x-a", "1")])
    assert response.status == 200

Layers: ``emulator`` holds Envoy's rules over plain values; ``wasm`` adapts a module to it; this
package's top level is the public test API.
"""

from proxywasm.abi import Action, BufferType, LogLevel, MapType, MetricType, PeerType, Status, StreamType

from .emulator.callouts import GrpcCallout, HttpCallout
from .emulator.headers import HeaderMap
from .emulator.http import HttpStream, echo_upstream
from .emulator.network import Connection
from .emulator.process import Envoy
from .errors import (
    AuthorMistake,
    BodyOverrun,
    ConfigureError,
    EnvoyCrash,
    LoadError,
    NotServed,
    ProxyWasmHostError,
    StreamStalled,
    VmFailed,
    WasmTrap,
)
from .host import ClusterHandler, Host, RawAccess
from .messages import CUT_OFF, RESET, SLOW, UNREACHABLE, GrpcReply, Request, Response, Route, Tls

__all__ = [
    "CUT_OFF",
    "RESET",
    "SLOW",
    "UNREACHABLE",
    "Action",
    "AuthorMistake",
    "BodyOverrun",
    "BufferType",
    "ClusterHandler",
    "ConfigureError",
    "Connection",
    "Envoy",
    "EnvoyCrash",
    "GrpcCallout",
    "GrpcReply",
    "HeaderMap",
    "Host",
    "HttpCallout",
    "HttpStream",
    "LoadError",
    "LogLevel",
    "MapType",
    "MetricType",
    "NotServed",
    "PeerType",
    "ProxyWasmHostError",
    "RawAccess",
    "Request",
    "Response",
    "Route",
    "Status",
    "StreamStalled",
    "StreamType",
    "Tls",
    "VmFailed",
    "WasmTrap",
    "echo_upstream",
]

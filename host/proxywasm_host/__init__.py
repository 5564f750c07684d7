"""proxywasm_host: Envoy's side of the proxy-wasm ABI on wasmtime, for testing filters without Envoy.

host = Host.load("filter.wasm", plugin_config={"k": "v"})
resp = host.request("GET", "/", headers=[("x-a", "1")])
"""

from proxywasm.abi import Action, BufferType, LogLevel, MapType, MetricType, PeerType, Status, StreamType

from .context import HeaderMap
from .errors import ConfigureError, LoadError, ProxyWasmHostError, StreamStalled, VmFailed, WasmTrap
from .host import Host
from .http import HttpStream, echo_upstream
from .messages import GrpcReply, Request, Response
from .network import Connection
from .vm import GrpcCallout, HttpCall
from .world import Envoy

__all__ = [
    "Action",
    "BufferType",
    "ConfigureError",
    "Connection",
    "Envoy",
    "GrpcCallout",
    "GrpcReply",
    "HeaderMap",
    "Host",
    "HttpCall",
    "HttpStream",
    "LoadError",
    "LogLevel",
    "MapType",
    "MetricType",
    "PeerType",
    "ProxyWasmHostError",
    "Request",
    "Response",
    "Status",
    "StreamStalled",
    "StreamType",
    "VmFailed",
    "WasmTrap",
    "echo_upstream",
]

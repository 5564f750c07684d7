"""How a gRPC call or stream ends, as the filter reads it: the same filter through real Envoy 1.40
(a grpcio server on 127.0.0.1) and in the local host (cluster handlers doing what that server does),
with the same expectations. Envoy's gRPC client appends its response code details to the status
message ("nope{via_upstream}", "via_upstream" alone), reports a unary call's timeout as UNAVAILABLE
and an unreachable cluster as UNAVAILABLE with the connect error."""

from __future__ import annotations

import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
import wasmtime
import wat

from proxywasm.abi import encode_map
from proxywasm_build.envoy import Cluster, Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer
from proxywasm_host import SLOW, UNREACHABLE, GrpcReply, Host

FILTER = """
import proxywasm
from proxywasm import Action, HttpContext


class Collect:
    def __init__(self, ctx):
        self.ctx, self.parts = ctx, []

    def on_initial_metadata(self, stream, metadata):
        pass

    def on_message(self, stream, data):
        self.parts.append(data.decode())

    def on_trailing_metadata(self, stream, metadata):
        pass

    def on_close(self, stream, status, message):
        self.ctx.send_response(200, f"stream {int(status)}|{message}|{','.join(self.parts)}")


@proxywasm.register
class Outcomes(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        cluster, method = headers[":path"].split("/")[1:3]
        if method.startswith("Stream"):
            stream = self.grpc_stream(cluster, "test.Echo", method, Collect(self))
            stream.send(b"x", end_stream=not method.endswith("Open"))  # StreamOpen: never half-closed
        elif method == "Meta":
            metadata = [(headers["x-meta-name"], bytes.fromhex(headers["x-meta-hex"]))]
            try:
                self.grpc_call(cluster, "test.Echo", method, b"hi", self.on_reply, metadata=metadata)
            except ValueError as err:
                self.send_response(400, str(err))
        else:
            self.grpc_call(cluster, "test.Echo", method, b"hi", self.on_reply, timeout_ms=300)
        return Action.PAUSE

    def on_reply(self, reply):
        self.send_response(200, f"{int(reply.status)}|{reply.message}|{reply.data.decode()}")
"""

REFUSED = (
    "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
    "{upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}}"
)
EXPECTED = {
    "/grpc/Say": "0||echo hi",
    "/grpc/Abort": "7|nope{via_upstream}|",
    "/grpc/Silent": "5|via_upstream|",
    "/grpc/Missing": "12|Method not found!{via_upstream}|",
    # A server that never answers: Envoy's own timeout. (grpcio enforces the grpc-timeout Envoy sends
    # and may answer DEADLINE_EXCEEDED first: "4|Deadline Exceeded{via_upstream}", a race.)
    "/silent/Say": "14|upstream request timeout{response_timeout}|",
    "/dead/Say": f"14|{REFUSED}|",
    "/gone/Say": f"14|{REFUSED}|",  # the host: a handler answering UNREACHABLE, asked once the call is made
    "/grpc/StreamOk": "stream 0|via_upstream|X",
    "/grpc/StreamAbort": "stream 8|late no{via_upstream}|X",
    # A stream to a cluster that refuses the connection ends at once, half-closed or not.
    "/dead/StreamOk": f"stream 14|{REFUSED}|",
    "/dead/StreamOpen": f"stream 14|{REFUSED}|",
}


# ---- the server, as grpcio runs it for Envoy and as the host's cluster handler answers ----


def _abort(request: bytes, context: Any) -> bytes:
    context.abort(grpc.StatusCode.PERMISSION_DENIED, "nope")


def _silent(request: bytes, context: Any) -> bytes:
    context.abort(grpc.StatusCode.NOT_FOUND, "")


def _meta(request: bytes, context: Any) -> bytes:
    return repr([v for k, v in context.invocation_metadata() if k.startswith("x-m")]).encode()


def _stream_ok(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
    for item in requests:
        yield item.upper()


def _stream_abort(requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
    for item in requests:
        yield item.upper()
    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "late no")


def host_server(callout: Any) -> Any:
    """The grpcio server's methods as a host cluster handler."""
    method = callout.method
    if method == "Say":
        return GrpcReply(b"echo " + callout.request)
    if method == "Abort":
        return GrpcReply(None, 7, "nope")
    if method == "Silent":
        return GrpcReply(None, 5, "")
    if method == "Meta":  # grpcio hands a "-bin" value over as bytes, any other as str
        values = [v.encode("latin-1") if k.endswith("-bin") else v for k, v in callout.metadata if k.startswith("x-m")]
        return GrpcReply(repr(values).encode())
    if method == "StreamOk":
        return GrpcReply(b"".join(callout.sent).upper(), 0)
    if method == "StreamAbort":
        return GrpcReply(b"".join(callout.sent).upper(), 8, "late no")
    return GrpcReply(None, 12, "Method not found!")  # what grpcio answers for an unknown method


@pytest.fixture(scope="module")
def grpc_port() -> Iterator[int]:
    identity: Callable[[bytes], bytes] = lambda b: b  # noqa: E731
    unary = {"Abort": _abort, "Silent": _silent, "Meta": _meta, "Say": lambda r, c: b"echo " + r}
    streams = {"StreamOk": _stream_ok, "StreamAbort": _stream_abort}
    handlers = {name: grpc.unary_unary_rpc_method_handler(f, identity, identity) for name, f in unary.items()}
    handlers |= {name: grpc.stream_stream_rpc_method_handler(f, identity, identity) for name, f in streams.items()}
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(None)


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A server that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


@pytest.fixture(scope="module")
def wasm(build_filter: Callable[[str], Path]) -> Path:
    return build_filter(FILTER)


@pytest.fixture(scope="module")
def envoy(wasm: Path, grpc_port: int, silent_port: int) -> Iterator[Envoy]:
    with UpstreamServer() as upstream:
        clusters = [
            Cluster("grpc", grpc_port, http2=True),
            Cluster("dead", 1, http2=True),  # port 1: refused
            Cluster("gone", 1, http2=True),
            Cluster("silent", silent_port, http2=True),
        ]
        config = http_bootstrap(upstream_port=upstream.port, plugins=[WasmPlugin(wasm, name="g")], clusters=clusters)
        with Envoy(config) as running:
            yield running


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code}: {err.read().decode()}"


# Metadata: a "-bin" value is any bytes (Envoy base64-encodes it, the server decodes it); any other
# with a control character Envoy cannot send, so the SDK refuses it at the call (ValueError).
META = {
    ("x-m-bin", "0d0a00ff"): "0||[b'\\r\\n\\x00\\xff']",
    ("x-m", "6f6b"): "0||['ok']",
    ("x-m", "610d0a62"): "the value of gRPC metadata 'x-m' contains a control character",
    ("bad(name", "6f6b"): "'bad(name' is not a valid gRPC metadata name",
}


def _meta_call(run: Callable[[dict[str, str]], str]) -> dict[tuple[str, str], str]:
    seen = {}
    for name, value in META:
        body = run({"x-meta-name": name, "x-meta-hex": value})
        seen[name, value] = body[: len(META[name, value])]  # a refusal's message goes on: compare its start
    return seen


@pytest.mark.parametrize("path", list(EXPECTED))
def test_in_envoy(envoy: Envoy, path: str) -> None:
    assert _get(envoy.url + path) == EXPECTED[path]


@pytest.mark.parametrize("mode", ["wasm", "native"])
def test_in_the_host(wasm: Path, mode: str) -> None:
    source = wasm.parent / wasm.stem / "filter.py" if mode == "native" else wasm
    clusters = {"grpc": host_server, "dead": UNREACHABLE, "gone": lambda callout: UNREACHABLE,
                "silent": lambda callout: SLOW}  # fmt: skip
    host = Host.load(source, mode=mode, clusters=clusters)
    seen = {path: host.request("GET", path).body.decode() for path in EXPECTED}
    assert seen == EXPECTED


def test_metadata_in_envoy(envoy: Envoy) -> None:
    def run(headers: dict[str, str]) -> str:
        request = urllib.request.Request(envoy.url + "/grpc/Meta", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return str(response.read().decode())
        except urllib.error.HTTPError as err:
            return str(err.read().decode())

    assert _meta_call(run) == META


@pytest.mark.parametrize("mode", ["wasm", "native"])
def test_metadata_in_the_host(wasm: Path, mode: str) -> None:
    source = wasm.parent / wasm.stem / "filter.py" if mode == "native" else wasm
    host = Host.load(source, mode=mode, clusters={"grpc": host_server})

    def run(headers: dict[str, str]) -> str:
        return host.request("GET", "/grpc/Meta", headers=list(headers.items())).body.decode()

    assert _meta_call(run) == META


# ---- metadata Envoy cannot send, below the SDK (which refuses it at the call) ----
#
# A module written in WAT calls proxy_grpc_call with the metadata of request N (in order) and
# answers with the outcome as the HTTP status: 500 + the call's status when proxy_grpc_call fails,
# 400 + the gRPC status when the call closes, 200 when the server answers. Envoy 1.40's codec
# refuses a value with a control character and a name that is not a token: on a cold cluster the
# call starts and ends UNAVAILABLE (14); once the cluster's HTTP/2 connection is up,
# proxy_grpc_call itself answers INTERNAL_FAILURE (10). A "-bin" value is any bytes. The module
# exports no response callbacks: Envoy runs its local reply through the missing
# proxy_on_response_headers as Continue (the host once kept the stop flag of the reply's own
# send_local_response for it and stalled the stream).
RAW_METADATA: list[tuple[list[tuple[bytes, bytes]], int]] = [
    ([(b"x-m", b"a\r\nx-evil: 1")], 414),  # cold cluster: refused once the connection is up
    ([(b"x-ok", b"1")], 200),
    ([(b"x-m", b"a\x01b")], 510),  # the connection is up: refused inside the call
    ([(b"bad name", b"1")], 510),
    ([(b"x-m-bin", b"\r\n\x00\xff")], 200),
]


def raw_metadata_module() -> bytes:
    """The WAT module above, with each request's metadata in a data segment of its own."""
    segments, cases, at = [], [], 1024
    strings = {"cluster": b"grpc", "service": b"test.Echo", "method": b"Say", "message": b"hi"}
    where = {}
    for name, data in strings.items():
        where[name] = at
        segments.append(f'(data (i32.const {at}) "{wat.string(data)}")')
        at += 64
    for n, (pairs, _) in enumerate(RAW_METADATA, start=1):
        blob = encode_map(pairs)
        segments.append(f'(data (i32.const {at}) "{wat.string(blob)}")')
        cases.append(f"(if (i32.eq (global.get $n) (i32.const {n})) (then (local.set $p (i32.const {at})) "
                     f"(local.set $s (i32.const {len(blob)}))))")  # fmt: skip
        at += len(blob) + 8
    c, s, m, b = (where[k] for k in ("cluster", "service", "method", "message"))
    text = f"""(module
  (import "env" "proxy_grpc_call"
    (func $grpc_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))
  (memory (export "memory") 1)
  (global $n (mut i32) (i32.const 0))
  (global $stream (mut i32) (i32.const 0))
  (global $heap (mut i32) (i32.const 8192))
  {" ".join(segments)}
  (func (export "proxy_abi_version_0_2_1"))
{wat.MALLOC}
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func $answer (param $status i32)
    (drop (call $effective (global.get $stream)))
    (drop (call $reply (local.get $status) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
                       (i32.const 0) (i32.const 0) (i32.const -1))))
  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    (local $p i32) (local $s i32) (local $rc i32)
    (global.set $stream (local.get $ctx))
    (global.set $n (i32.add (global.get $n) (i32.const 1)))
    {" ".join(cases)}
    (local.set $rc (call $grpc_call (i32.const {c}) (i32.const 4) (i32.const {s}) (i32.const 9) (i32.const {m})
                                    (i32.const 3) (local.get $p) (local.get $s) (i32.const {b}) (i32.const 2)
                                    (i32.const 5000) (i32.const 512)))
    (if (local.get $rc) (then (call $answer (i32.add (i32.const 500) (local.get $rc)))))
    (i32.const 1))
  (func (export "proxy_on_grpc_receive") (param i32 i32 i32) (call $answer (i32.const 200)))
  (func (export "proxy_on_grpc_close") (param i32 i32) (param $status i32)
    (call $answer (i32.add (i32.const 400) (local.get $status)))))"""
    return bytes(wasmtime.wat2wasm(text))


def _statuses(get: Callable[[], int]) -> list[int]:
    return [get() for _ in RAW_METADATA]


def test_raw_metadata_in_envoy(grpc_port: int, tmp_path: Path) -> None:
    module = tmp_path / "raw_metadata.wasm"
    module.write_bytes(raw_metadata_module())
    with UpstreamServer() as upstream:
        config = http_bootstrap(upstream_port=upstream.port, plugins=[WasmPlugin(module, name="raw")],
                                clusters=[Cluster("grpc", grpc_port, http2=True)])  # fmt: skip
        with Envoy(config) as envoy:

            def get() -> int:
                try:
                    with urllib.request.urlopen(envoy.url + "/", timeout=10) as response:
                        return int(response.status)
                except urllib.error.HTTPError as err:
                    return int(err.code)

            assert _statuses(get) == [status for _, status in RAW_METADATA]


def test_raw_metadata_in_the_host() -> None:
    host = Host.load(raw_metadata_module(), clusters={"grpc": host_server})
    assert _statuses(lambda: host.request("GET", "/").status) == [status for _, status in RAW_METADATA]

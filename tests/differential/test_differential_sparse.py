"""Modules that export only some callbacks (hand-written WAT, no SDK): real Envoy vs the host.

Every SDK exports every callback, so a host tested only with SDK modules never runs the path
where Envoy skips a callback the module lacks (cpp-host answers Continue, true or nothing). The
host once kept the stop flag of a local reply sent from a callout's answer for the missing
``proxy_on_response_headers`` and stalled the stream; these cases keep that kind fixed: local
replies from request headers (with PAUSE, and with Continue after the reply) and from callout
answers, resuming from a callout answer, and a response header and a local reply from a module with
no request callbacks at all, none of them exporting
``proxy_on_context_create``, ``proxy_on_vm_start``, ``proxy_on_configure``, ``proxy_on_done`` or
``proxy_on_log``."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime
import wat
from differential import Call, Plugin, Reply, assert_same, drivers

from proxywasm.abi import encode_map

# Linear memory: constant strings from STRINGS on, the callout token at TOKEN, malloc above HEAP.
STRINGS, TOKEN, HEAP = 1024, 512, 8192
DATA = {
    "body": b"denied by wat\n",
    "reply_headers": encode_map([(b"x-why", b"wat")]),
    "callout_headers": encode_map([(b":method", b"GET"), (b":path", b"/auth"), (b":authority", b"svc")]),
    "cluster": b"svc",
    "called": b"called\n",
    "x-wat": b"x-wat",
    "one": b"1",
}
AT: dict[str, tuple[int, int]] = {}
_next = STRINGS
for _name, _data in DATA.items():
    AT[_name] = (_next, len(_data))
    _next += (len(_data) + 7) // 8 * 8


def ptr(name: str) -> str:
    """``(i32.const PTR) (i32.const SIZE)`` of a constant."""
    at, size = AT[name]
    return f"(i32.const {at}) (i32.const {size})"


IMPORTS = """
  (import "env" "proxy_send_local_response" (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call" (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $effective (param i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $continue (param i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_header (param i32 i32 i32 i32 i32) (result i32)))"""

CALLOUT = f"""
  (func (export "proxy_on_request_headers") (param $ctx i32) (param i32 i32) (result i32)
    (global.set $stream (local.get $ctx))
    (drop (call $http_call {ptr("cluster")} {ptr("callout_headers")} (i32.const 0) (i32.const 0)
                           (i32.const 0) (i32.const 0) (i32.const 3000) (i32.const {TOKEN})))
    (i32.const 1))"""

MODULES = {
    # A local reply from the request headers; nothing else exported.
    "reply": f"""
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $reply (i32.const 403) (i32.const 0) (i32.const 0) {ptr("body")} {ptr("reply_headers")}
                       (i32.const -1)))
    (i32.const 1))""",
    # A local reply, then Continue: the reply still wins, the request goes no further.
    "reply_continue": f"""
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $reply (i32.const 403) (i32.const 0) (i32.const 0) {ptr("body")} {ptr("reply_headers")}
                       (i32.const -1)))
    (i32.const 0))""",
    # A local reply from the response headers, from a module with no request callbacks.
    "response_reply": f"""
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $reply (i32.const 503) (i32.const 0) (i32.const 0) {ptr("body")} (i32.const 0) (i32.const 0)
                       (i32.const -1)))
    (i32.const 1))""",
    # A response header, from a module with no request callbacks.
    "response_header": f"""
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add_header (i32.const 2) {ptr("x-wat")} {ptr("one")}))
    (i32.const 0))""",
    # A callout whose answer sends a local reply (the answer comes to the root context).
    "callout_reply": CALLOUT
    + f"""
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
    (drop (call $effective (global.get $stream)))
    (drop (call $reply (i32.const 202) (i32.const 0) (i32.const 0) {ptr("called")} (i32.const 0) (i32.const 0)
                       (i32.const -1))))""",
    # A callout whose answer lets the request go on to the upstream.
    "callout_continue": CALLOUT
    + """
  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
    (drop (call $effective (global.get $stream)))
    (drop (call $continue (i32.const 0))))""",
}


def module(body: str) -> bytes:
    data = "\n".join(f'  (data (i32.const {AT[n][0]}) "{wat.string(d)}")' for n, d in DATA.items())
    text = f"""(module{IMPORTS}
  (memory (export "memory") 1)
  (global $stream (mut i32) (i32.const 0))
  (global $heap (mut i32) (i32.const {HEAP}))
{data}
  (func (export "proxy_abi_version_0_2_1"))
{wat.MALLOC}{body})"""
    return bytes(wasmtime.wat2wasm(text))


# What the client gets from each module, for GET / and POST /items: status, whether the upstream saw it.
EXPECTED = {
    "reply": [(403, False), (403, False)],
    "reply_continue": [(403, False), (403, False)],
    "response_reply": [(503, True), (503, True)],
    "response_header": [(200, True), (200, True)],
    "callout_reply": [(202, False), (202, False)],
    "callout_continue": [(200, True), (200, True)],
}


@pytest.mark.parametrize("name", list(MODULES))
def test_a_module_without_most_callbacks(tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.wasm"
    path.write_bytes(module(MODULES[name]))
    plugin = Plugin(path, name=f"p_{name}", vm_id=f"vm_{name}", clusters={"svc": Reply(200, body=b"ok")})
    calls = (Call("GET", "/"), Call("POST", "/items", body=b"payload"))
    with drivers(plugin) as (envoy, host):
        seen = envoy.run(calls)
        assert_same(seen, host.run(calls))
    assert [(ex.status, ex.upstream is not None) for ex in seen.exchanges] == EXPECTED[name]
    if name == "response_header":
        assert all(("x-wat", "1") in ex.headers for ex in seen.exchanges)

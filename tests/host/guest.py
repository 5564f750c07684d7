"""A WAT "probe" guest for host tests, generated from the host's own registry of imports.

It exports every proxy-wasm callback (each logs its name, records its arguments, runs a test-chosen
action and returns a test-chosen value) and a trampoline ``t_<import>`` for every host function, so a
test can call any host function with any arguments while a given context is current.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import wasmtime
from wat import MALLOC
from wat import string as wat_string

from proxywasm.abi import encode_map
from proxywasm_host.wasm.imports import ABI_0_1_0, ABI_0_2_1, import_table

# Memory layout (addresses in the probe's linear memory).
NAMES = 0
ACTIONS = 1024  # i32 per callback: which canned action to run
RETS = 1280  # i32 per callback: the value to return
ARGS = 1536  # 4 x i32 per callback: last arguments seen
DATA = 2560  # canned strings for the actions
RESULT = 3900  # i32: status returned by the last action's host call
TOKEN = 3904  # i32: token written by http_call / grpc_call / register_shared_queue
SCRATCH = 4096  # free for tests up to HEAP
HEAP = 65536

CALLBACKS: list[tuple[str, int, bool]] = [
    ("proxy_on_context_create", 2, False),
    ("proxy_on_vm_start", 2, True),
    ("proxy_validate_configuration", 2, True),
    ("proxy_on_configure", 2, True),
    ("proxy_on_tick", 1, False),
    ("proxy_on_queue_ready", 2, False),
    ("proxy_on_new_connection", 1, True),
    ("proxy_on_downstream_data", 3, True),
    ("proxy_on_downstream_connection_close", 2, False),
    ("proxy_on_upstream_data", 3, True),
    ("proxy_on_upstream_connection_close", 2, False),
    ("proxy_on_request_headers", 3, True),
    ("proxy_on_request_body", 3, True),
    ("proxy_on_request_trailers", 2, True),
    ("proxy_on_response_headers", 3, True),
    ("proxy_on_response_body", 3, True),
    ("proxy_on_response_trailers", 2, True),
    ("proxy_on_done", 1, True),
    ("proxy_on_log", 1, False),
    ("proxy_on_delete", 1, False),
    ("proxy_on_http_call_response", 5, False),
    ("proxy_on_grpc_receive_initial_metadata", 3, False),
    ("proxy_on_grpc_receive", 3, False),
    ("proxy_on_grpc_receive_trailing_metadata", 3, False),
    ("proxy_on_grpc_close", 3, False),
    ("proxy_on_foreign_function", 3, False),
]
INDEX = {name: i for i, (name, _, _) in enumerate(CALLBACKS)}
DEFAULT_TRUE = {"proxy_on_vm_start", "proxy_validate_configuration", "proxy_on_configure", "proxy_on_done"}


class Act:
    NONE = 0
    LOCAL_REPLY = 1
    CONTINUE_REQUEST = 2
    CONTINUE_RESPONSE = 3
    TRAP = 4
    HTTP_CALL = 5
    TICK_100MS = 6
    DONE = 7
    ADD_REQUEST_HEADER = 8
    CLOSE_REQUEST = 9
    GRPC_CALL = 10
    REGISTER_QUEUE = 11
    ENQUEUE = 12
    REPLACE_BODY = 13
    ADD_RESPONSE_HEADER = 14
    ADD_REQUEST_TRAILER = 15
    # From a root-context callback: make stream 2 effective (as SDKs do), then continue it.
    CONTINUE_STREAM2_REQUEST = 16
    CONTINUE_STREAM2_RESPONSE = 17


@dataclass
class _Str:
    addr: int
    data: bytes


def _strings() -> dict[str, _Str]:
    items = {
        "details": b"denied_by_probe",
        "body": b"denied\n",
        "hdrs": encode_map([(b"x-deny", b"yes")]),
        "cluster": b"cluster",
        "call_hdrs": encode_map([(b":method", b"GET"), (b":path", b"/c"), (b":authority", b"svc")]),
        "ping": b"ping",
        "grpc": b"grpc",
        "svc": b"pkg.Svc",
        "method": b"Do",
        "queue": b"q",
        "item": b"item",
        "changed": b"changed",
        "k_added": b"x-added",
        "v_one": b"1",
        "k_trailer": b"x-trailer",
    }
    out, addr = {}, DATA
    for key, data in items.items():
        out[key] = _Str(addr, data)
        addr += len(data) + 1
    assert addr < RESULT
    return out


def _sig(kinds: str) -> str:
    return " ".join("i32" if c == "i" else "i64" for c in kinds)


def build_wat(
    abi: str = ABI_0_2_1, *, extra: str = "", imports: str = "", start: str = "", false: tuple[str, ...] = ()
) -> str:
    calls = {(imp.module, imp.name): imp for imp in import_table(abi)}
    lines = ["(module"]
    env_names: list[tuple[str, str, str, str]] = []
    for (module, name), call in sorted(calls.items()):
        if module == "wasi_unstable":
            continue
        alias = f"${module}.{name}"
        params = f"(param {_sig(call.params)})" if call.params else ""
        results = f"(result {_sig(call.results)})" if call.results else ""
        lines.append(f'  (import "{module}" "{name}" (func {alias} {params} {results}))')
        env_names.append((module, name, call.params, call.results))
    lines.append(imports)
    lines.append('  (memory (export "memory") 2)')
    lines.append(f"  (global $heap (mut i32) (i32.const {HEAP}))")
    # Callback names and default return values.
    name_addr = NAMES
    name_pos: dict[str, tuple[int, int]] = {}
    for name, _, _ in CALLBACKS:
        short = name.removeprefix("proxy_").encode()
        lines.append(f'  (data (i32.const {name_addr}) "{wat_string(short)}")')
        name_pos[name] = (name_addr, len(short))
        name_addr += len(short)
    assert name_addr < ACTIONS
    for name in DEFAULT_TRUE - set(false):
        lines.append(f'  (data (i32.const {RETS + 4 * INDEX[name]}) "\\01")')
    strings = _strings()
    for s in strings.values():
        lines.append(f'  (data (i32.const {s.addr}) "{wat_string(s.data)}")')

    def sv(key: str) -> str:
        s = strings[key]
        return f"(i32.const {s.addr}) (i32.const {len(s.data)})"

    v021 = abi != ABI_0_1_0
    cont_req = "(call $env.proxy_continue_stream (i32.const 0))" if v021 else "(call $env.proxy_continue_request)"
    cont_resp = "(call $env.proxy_continue_stream (i32.const 1))" if v021 else "(call $env.proxy_continue_response)"
    close_req = "(call $env.proxy_close_stream (i32.const 0))" if v021 else "(i32.const 12)"
    effective = "(drop (call $env.proxy_set_effective_context (i32.const 2)))"
    actions = {
        Act.CONTINUE_STREAM2_REQUEST: f"(block (result i32) {effective} {cont_req})",
        Act.CONTINUE_STREAM2_RESPONSE: f"(block (result i32) {effective} {cont_resp})",
        Act.LOCAL_REPLY: f"(call $env.proxy_send_local_response (i32.const 403) {sv('details')} {sv('body')} "
        f"{sv('hdrs')} (i32.const -1))",
        Act.CONTINUE_REQUEST: cont_req,
        Act.CONTINUE_RESPONSE: cont_resp,
        Act.TRAP: "(unreachable)",
        Act.HTTP_CALL: f"(call $env.proxy_http_call {sv('cluster')} {sv('call_hdrs')} {sv('ping')} "
        f"(i32.const 0) (i32.const 0) (i32.const 1000) (i32.const {TOKEN}))",
        Act.TICK_100MS: "(call $env.proxy_set_tick_period_milliseconds (i32.const 100))",
        Act.DONE: "(call $env.proxy_done)",
        Act.ADD_REQUEST_HEADER: f"(call $env.proxy_add_header_map_value (i32.const 0) {sv('k_added')} {sv('v_one')})",
        Act.CLOSE_REQUEST: close_req,
        Act.GRPC_CALL: f"(call $env.proxy_grpc_call {sv('grpc')} {sv('svc')} {sv('method')} (i32.const 0) "
        f"(i32.const 0) {sv('ping')} (i32.const 1000) (i32.const {TOKEN}))",
        Act.REGISTER_QUEUE: f"(call $env.proxy_register_shared_queue {sv('queue')} (i32.const {TOKEN}))",
        Act.ENQUEUE: f"(call $env.proxy_enqueue_shared_queue (i32.load (i32.const {TOKEN})) {sv('item')})",
        Act.REPLACE_BODY: f"(call $env.proxy_set_buffer_bytes (i32.const 0) (i32.const 0) (i32.const -1) "
        f"{sv('changed')})",
        Act.ADD_RESPONSE_HEADER: f"(call $env.proxy_add_header_map_value (i32.const 2) {sv('k_added')} {sv('v_one')})",
        Act.ADD_REQUEST_TRAILER: f"(call $env.proxy_add_header_map_value (i32.const 1) {sv('k_trailer')} "
        f"{sv('v_one')})",
    }
    lines.append("  (func $act (param $i i32) (local $a i32)")
    lines.append(
        f"    (local.set $a (i32.load (i32.add (i32.const {ACTIONS}) (i32.shl (local.get $i) (i32.const 2)))))"
    )
    for code, body in actions.items():
        store = body if code == Act.TRAP else f"(i32.store (i32.const {RESULT}) {body})"
        lines.append(f"    (if (i32.eq (local.get $a) (i32.const {code})) (then {store}))")
    lines.append("  )")
    lines.append(
        "  (func $record (param $i i32) (param i32 i32 i32 i32) (local $p i32)\n"
        f"    (local.set $p (i32.add (i32.const {ARGS}) (i32.shl (local.get $i) (i32.const 4))))\n"
        "    (i32.store (local.get $p) (local.get 1))\n"
        "    (i32.store offset=4 (local.get $p) (local.get 2))\n"
        "    (i32.store offset=8 (local.get $p) (local.get 3))\n"
        "    (i32.store offset=12 (local.get $p) (local.get 4)))"
    )
    for name, nargs, returns in CALLBACKS:
        idx = INDEX[name]
        params = " ".join(["i32"] * nargs)
        args = [f"(local.get {i})" if i < nargs else "(i32.const 0)" for i in range(4)]
        naddr, nlen = name_pos[name]
        body = [
            f"(call $record (i32.const {idx}) {' '.join(args)})",
            f"(drop (call $env.proxy_log (i32.const 2) (i32.const {naddr}) (i32.const {nlen})))",
            f"(call $act (i32.const {idx}))",
        ]
        if returns:
            body.append(f"(i32.load (i32.const {RETS + 4 * idx}))")
        result = "(result i32)" if returns else ""
        lines.append(f'  (func (export "{name}") (param {params}) {result} {" ".join(body)})')
    lines.append(MALLOC)
    lines.append(f'  (func (export "proxy_abi_version_{abi}"))')
    for module, name, params, results in env_names:
        alias = f"${module}.{name}"
        sig = f"(param {_sig(params)})" if params else ""
        res = f"(result {_sig(results)})" if results else ""
        args = " ".join(f"(local.get {i})" for i in range(len(params)))
        lines.append(f'  (func (export "t_{name}") {sig} {res} (call {alias} {args}))')
    lines.append(extra)
    if start:
        lines.append(start)
    lines.append(")")
    return "\n".join(lines)


_CACHE: dict[tuple[str, str, str, str, tuple[str, ...]], bytes] = {}


def probe_wasm(
    abi: str = ABI_0_2_1, *, extra: str = "", imports: str = "", start: str = "", false: tuple[str, ...] = ()
) -> bytes:
    """The probe module; ``false`` lists callbacks whose default return is 0 instead of 1."""
    key = (abi, extra, imports, start, false)
    if key not in _CACHE:
        wat = build_wat(abi, extra=extra, imports=imports, start=start, false=false)
        _CACHE[key] = bytes(wasmtime.wat2wasm(wat))
    return _CACHE[key]


def u32(data: bytes) -> int:
    return int(struct.unpack("<I", data)[0])

"""The ``env`` host functions Envoy 1.40 links into a proxy-wasm module, as adapters: read the
guest's arguments from linear memory, call :class:`~proxywasm_host.emulator.host_functions.HostFunctions`,
write the results back (memory faults become ``INVALID_MEMORY_ACCESS``, as in cpp-host).

Each adapter receives the :class:`~proxywasm_host.wasm.guest.WasmGuest` first, then the guest's
arguments (i32 values unsigned). The table also says which ABI versions link each function, the
way cpp-host registers them per ABI version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from proxywasm.abi import Status, decode_map, encode_map

from ..errors import hide_host_frames

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

if TYPE_CHECKING:
    from .guest import WasmGuest

Impl = Callable[..., Any]
F = TypeVar("F", bound=Impl)

ABI_0_1_0 = "0_1_0"
ABI_0_2_0 = "0_2_0"
ABI_0_2_1 = "0_2_1"
ALL_ABIS = frozenset({ABI_0_1_0, ABI_0_2_0, ABI_0_2_1})
V02 = frozenset({ABI_0_2_0, ABI_0_2_1})
V01 = frozenset({ABI_0_1_0})
WASI_MODULES = ("wasi_snapshot_preview1", "wasi_unstable")

OK = int(Status.OK)
BAD = int(Status.INVALID_MEMORY_ACCESS)


@dataclass(frozen=True)
class Import:
    module: str
    name: str
    params: str  # one char per parameter: "i" i32, "I" i64
    results: str
    impl: Impl
    abis: frozenset[str]


REGISTRY: dict[tuple[str, str], Import] = {}


def host_function(
    name: str, params: str, results: str = "i", *, module: str = "env", abis: frozenset[str] = ALL_ABIS
) -> Callable[[F], F]:
    def register(impl: F) -> F:
        for mod in WASI_MODULES if module == "wasi" else (module,):
            REGISTRY[(mod, name)] = Import(mod, name, params, results, impl, abis)
        return impl

    return register


def _registry() -> dict[tuple[str, str], Import]:
    from . import wasi  # noqa: F401 - registers the WASI functions

    return REGISTRY


def lookup(abi: str, module: str, name: str) -> Import | None:
    """The host function Envoy links for ``module.name`` under ABI ``abi``, if any."""
    found = _registry().get((module, name))
    if found is None or abi not in found.abis:
        return None
    return found


def import_table(abi: str) -> list[Import]:
    """Every function Envoy 1.40 offers a module of ABI ``abi`` (``"0_2_1"``...), WASI included:
    what a module may import."""
    return [imp for imp in _registry().values() if abi in imp.abis]


def to_pairs(raw: bytes) -> list[tuple[bytes, bytes]]:
    """Pairs from the wire format; like cpp-host's ``PairsUtil::toPairs``, malformed input gives none."""
    try:
        return decode_map(raw)
    except ValueError:
        return []


def _out(g: WasmGuest, data: bytes, ptr_ptr: int, size_ptr: int) -> int:
    return OK if g.mem.copy_to_pointer_size(data, ptr_ptr, size_ptr) else BAD


# -- logging, time, lifecycle ----------------------------------------------------------------------------
@host_function("proxy_log", "iii")
def proxy_log(g: WasmGuest, level: int, ptr: int, size: int) -> int:
    message = g.mem.read(ptr, size)
    if message is None:
        return BAD
    return g.functions.proxy_log(level, message)


@host_function("proxy_get_log_level", "i", abis=frozenset({ABI_0_2_1}))
def proxy_get_log_level(g: WasmGuest, result_ptr: int) -> int:
    status, level = g.functions.proxy_get_log_level()
    return status if g.mem.write_u32(result_ptr, level) else BAD


@host_function("proxy_get_current_time_nanoseconds", "i")
def proxy_get_current_time_nanoseconds(g: WasmGuest, result_ptr: int) -> int:
    status, now = g.functions.proxy_get_current_time_nanoseconds()
    return status if g.mem.write_u64(result_ptr, now) else BAD


@host_function("proxy_set_tick_period_milliseconds", "i")
def proxy_set_tick_period_milliseconds(g: WasmGuest, period_ms: int) -> int:
    return g.functions.proxy_set_tick_period_milliseconds(period_ms)


@host_function("proxy_set_effective_context", "i")
def proxy_set_effective_context(g: WasmGuest, context_id: int) -> int:
    return g.functions.proxy_set_effective_context(context_id)


@host_function("proxy_done", "")
def proxy_done(g: WasmGuest) -> int:
    return g.functions.proxy_done()


@host_function("proxy_get_status", "iii")
def proxy_get_status(g: WasmGuest, code_ptr: int, msg_ptr_ptr: int, msg_size_ptr: int) -> int:
    status, code, message = g.functions.proxy_get_status()
    if not g.mem.write_u32(code_ptr, code):
        return BAD
    return status if _out(g, message, msg_ptr_ptr, msg_size_ptr) == OK else BAD


@host_function("proxy_get_configuration", "ii", abis=V01)
def proxy_get_configuration(g: WasmGuest, ptr_ptr: int, size_ptr: int) -> int:
    status, value = g.functions.proxy_get_configuration()
    return status if _out(g, value, ptr_ptr, size_ptr) == OK else BAD


@host_function("proxy_call_foreign_function", "iiiiii")
def proxy_call_foreign_function(g: WasmGuest, name_ptr: int, name_size: int, args_ptr: int, args_size: int,
                                results_ptr: int, results_size_ptr: int) -> int:  # fmt: skip
    name, args = g.mem.read(name_ptr, name_size), g.mem.read(args_ptr, args_size)
    if name is None or args is None:
        return BAD
    status, data = g.functions.proxy_call_foreign_function(name, args)
    if status == int(Status.NOT_FOUND):
        return status
    address = 0
    if results_ptr != 0:
        # Envoy allocates the result in the guest even when it is empty.
        got = g.mem.alloc(max(1, len(data)))
        if got is None:
            return BAD
        address = got
        g.mem.write(address, data)
        if not g.mem.write_u32(results_ptr, address):
            return BAD
    if results_size_ptr != 0 and not g.mem.write_u32(results_size_ptr, len(data)):
        return BAD
    return status


# -- buffers ---------------------------------------------------------------------------------------------
@host_function("proxy_get_buffer_bytes", "iiiii")
def proxy_get_buffer_bytes(g: WasmGuest, buf_type: int, start: int, length: int, ptr_ptr: int, size_ptr: int) -> int:
    status, data = g.functions.proxy_get_buffer_bytes(buf_type, start, length)
    if status != OK:
        return status
    if not data:
        return OK if (g.mem.write_u32(ptr_ptr, 0) and g.mem.write_u32(size_ptr, 0)) else BAD
    return _out(g, data, ptr_ptr, size_ptr)


@host_function("proxy_get_buffer_status", "iii")
def proxy_get_buffer_status(g: WasmGuest, buf_type: int, length_ptr: int, flags_ptr: int) -> int:
    status, length, flags = g.functions.proxy_get_buffer_status(buf_type)
    if status != OK:
        return status
    return OK if (g.mem.write_u32(length_ptr, length) and g.mem.write_u32(flags_ptr, flags)) else BAD


@host_function("proxy_set_buffer_bytes", "iiiii")
def proxy_set_buffer_bytes(g: WasmGuest, buf_type: int, start: int, length: int, data_ptr: int, data_size: int) -> int:
    data = g.mem.read(data_ptr, data_size)
    if data is None:
        status, _, _ = g.functions.proxy_get_buffer_status(buf_type)
        return status if status != OK else BAD
    return g.functions.proxy_set_buffer_bytes(buf_type, start, length, data)


# -- header maps -----------------------------------------------------------------------------------------
@host_function("proxy_get_header_map_value", "iiiii")
def proxy_get_header_map_value(g: WasmGuest, map_type: int, kp: int, ks: int, ptr_ptr: int, size_ptr: int) -> int:
    key = g.mem.read(kp, ks)
    if key is None:
        return BAD
    status, value = g.functions.proxy_get_header_map_value(map_type, key)
    if status != OK:
        return status
    return _out(g, value, ptr_ptr, size_ptr)


@host_function("proxy_get_header_map_pairs", "iii")
def proxy_get_header_map_pairs(g: WasmGuest, map_type: int, ptr_ptr: int, size_ptr: int) -> int:
    status, pairs = g.functions.proxy_get_header_map_pairs(map_type)
    if status != OK:
        return status
    return _out(g, encode_map(pairs) if pairs else b"", ptr_ptr, size_ptr)


@host_function("proxy_set_header_map_pairs", "iii")
def proxy_set_header_map_pairs(g: WasmGuest, map_type: int, ptr: int, size: int) -> int:
    raw = g.mem.read(ptr, size)
    if raw is None:
        return BAD
    return g.functions.proxy_set_header_map_pairs(map_type, to_pairs(raw))


@host_function("proxy_get_header_map_size", "ii")
def proxy_get_header_map_size(g: WasmGuest, map_type: int, result_ptr: int) -> int:
    status, size = g.functions.proxy_get_header_map_size(map_type)
    if status != OK:
        return status
    return OK if g.mem.write_u32(result_ptr, size) else BAD


@host_function("proxy_add_header_map_value", "iiiii")
def proxy_add_header_map_value(g: WasmGuest, map_type: int, kp: int, ks: int, vp: int, vs: int) -> int:
    key, value = g.mem.read(kp, ks), g.mem.read(vp, vs)
    if key is None or value is None:
        return BAD
    return g.functions.proxy_add_header_map_value(map_type, key, value)


@host_function("proxy_replace_header_map_value", "iiiii")
def proxy_replace_header_map_value(g: WasmGuest, map_type: int, kp: int, ks: int, vp: int, vs: int) -> int:
    key, value = g.mem.read(kp, ks), g.mem.read(vp, vs)
    if key is None or value is None:
        return BAD
    return g.functions.proxy_replace_header_map_value(map_type, key, value)


@host_function("proxy_remove_header_map_value", "iii")
def proxy_remove_header_map_value(g: WasmGuest, map_type: int, kp: int, ks: int) -> int:
    key = g.mem.read(kp, ks)
    if key is None:
        return BAD
    return g.functions.proxy_remove_header_map_value(map_type, key)


# -- stream control --------------------------------------------------------------------------------------
@host_function("proxy_continue_stream", "i", abis=V02)
def proxy_continue_stream(g: WasmGuest, stream_type: int) -> int:
    return g.functions.proxy_continue_stream(stream_type)


@host_function("proxy_close_stream", "i", abis=V02)
def proxy_close_stream(g: WasmGuest, stream_type: int) -> int:
    return g.functions.proxy_close_stream(stream_type)


@host_function("proxy_continue_request", "", abis=V01)
def proxy_continue_request(g: WasmGuest) -> int:
    return g.functions.proxy_continue_stream(0)


@host_function("proxy_continue_response", "", abis=V01)
def proxy_continue_response(g: WasmGuest) -> int:
    return g.functions.proxy_continue_stream(1)


@host_function("proxy_clear_route_cache", "", abis=V01)
def proxy_clear_route_cache(g: WasmGuest) -> int:
    return OK


@host_function("proxy_send_local_response", "iiiiiiii")
def proxy_send_local_response(g: WasmGuest, code: int, dp: int, ds: int, bp: int, bs: int, hp: int, hs: int,
                              grpc_status: int) -> int:  # fmt: skip
    details, body, raw_headers = g.mem.read(dp, ds), g.mem.read(bp, bs), g.mem.read(hp, hs)
    if details is None or body is None or raw_headers is None:
        return BAD
    signed = grpc_status - (1 << 32) if grpc_status >= 1 << 31 else grpc_status
    return g.functions.proxy_send_local_response(code, details, body, to_pairs(raw_headers), signed)


# -- callouts --------------------------------------------------------------------------------------------
@host_function("proxy_http_call", "iiiiiiiiii")
def proxy_http_call(g: WasmGuest, up: int, us: int, hp: int, hs: int, bp: int, bs: int, tp: int, ts: int,
                    timeout: int, token_ptr: int) -> int:  # fmt: skip
    cluster, body = g.mem.read(up, us), g.mem.read(bp, bs)
    raw_headers, raw_trailers = g.mem.read(hp, hs), g.mem.read(tp, ts)
    if cluster is None or body is None or raw_headers is None or raw_trailers is None:
        return BAD
    # Envoy writes the token slot first so a bad pointer fails before anything is sent.
    if not g.mem.write_u32(token_ptr, 0):
        return BAD
    status, token = g.functions.proxy_http_call(cluster, to_pairs(raw_headers), body, to_pairs(raw_trailers), timeout)
    if status == OK:
        g.mem.write_u32(token_ptr, token)
    return status


@host_function("proxy_grpc_call", "iiiiiiiiiiii")
def proxy_grpc_call(g: WasmGuest, sp: int, ss: int, np_: int, ns: int, mp: int, ms: int, hp: int, hs: int,
                    rp: int, rs: int, timeout: int, token_ptr: int) -> int:  # fmt: skip
    mem = g.mem
    service, name, method = mem.read(sp, ss), mem.read(np_, ns), mem.read(mp, ms)
    metadata, request = mem.read(hp, hs), mem.read(rp, rs)
    if service is None or name is None or method is None or metadata is None or request is None:
        return BAD
    status, token = g.functions.proxy_grpc_call(service, name, method, to_pairs(metadata), request, timeout)
    if status != OK:
        return status
    return OK if mem.write_u32(token_ptr, token) else BAD


@host_function("proxy_grpc_stream", "iiiiiiiii")
def proxy_grpc_stream(g: WasmGuest, sp: int, ss: int, np_: int, ns: int, mp: int, ms: int, hp: int, hs: int,
                      token_ptr: int) -> int:  # fmt: skip
    mem = g.mem
    service, name, method, metadata = mem.read(sp, ss), mem.read(np_, ns), mem.read(mp, ms), mem.read(hp, hs)
    if service is None or name is None or method is None or metadata is None:
        return BAD
    status, token = g.functions.proxy_grpc_stream(service, name, method, to_pairs(metadata))
    if status != OK:
        return status
    return OK if mem.write_u32(token_ptr, token) else BAD


@host_function("proxy_grpc_send", "iiii")
def proxy_grpc_send(g: WasmGuest, token: int, mp: int, ms: int, end_stream: int) -> int:
    message = g.mem.read(mp, ms)
    if message is None:
        return BAD
    return g.functions.proxy_grpc_send(token, message, end_stream != 0)


@host_function("proxy_grpc_cancel", "i")
def proxy_grpc_cancel(g: WasmGuest, token: int) -> int:
    return g.functions.proxy_grpc_cancel(token)


@host_function("proxy_grpc_close", "i")
def proxy_grpc_close(g: WasmGuest, token: int) -> int:
    return g.functions.proxy_grpc_close(token)


# -- shared data and queues ------------------------------------------------------------------------------
@host_function("proxy_get_shared_data", "iiiii")
def proxy_get_shared_data(g: WasmGuest, kp: int, ks: int, ptr_ptr: int, size_ptr: int, cas_ptr: int) -> int:
    key = g.mem.read(kp, ks)
    if key is None:
        return BAD
    status, value, cas = g.functions.proxy_get_shared_data(key)
    if status != OK:
        return status
    if _out(g, value, ptr_ptr, size_ptr) != OK or not g.mem.write_u32(cas_ptr, cas):
        return BAD
    return OK


@host_function("proxy_set_shared_data", "iiiii")
def proxy_set_shared_data(g: WasmGuest, kp: int, ks: int, vp: int, vs: int, cas: int) -> int:
    key, value = g.mem.read(kp, ks), g.mem.read(vp, vs)
    if key is None or value is None:
        return BAD
    return g.functions.proxy_set_shared_data(key, value, cas)


@host_function("proxy_register_shared_queue", "iii")
def proxy_register_shared_queue(g: WasmGuest, np_: int, ns: int, token_ptr: int) -> int:
    name = g.mem.read(np_, ns)
    if name is None:
        return BAD
    status, token = g.functions.proxy_register_shared_queue(name)
    return status if g.mem.write_u32(token_ptr, token) else BAD


@host_function("proxy_resolve_shared_queue", "iiiii")
def proxy_resolve_shared_queue(g: WasmGuest, vp: int, vs: int, np_: int, ns: int, token_ptr: int) -> int:
    vm_id, name = g.mem.read(vp, vs), g.mem.read(np_, ns)
    if vm_id is None or name is None:
        return BAD
    status, token = g.functions.proxy_resolve_shared_queue(vm_id, name)
    if status != OK:
        return status
    return OK if g.mem.write_u32(token_ptr, token) else BAD


@host_function("proxy_enqueue_shared_queue", "iii")
def proxy_enqueue_shared_queue(g: WasmGuest, token: int, dp: int, ds: int) -> int:
    data = g.mem.read(dp, ds)
    if data is None:
        return BAD
    return g.functions.proxy_enqueue_shared_queue(token, data)


@host_function("proxy_dequeue_shared_queue", "iii")
def proxy_dequeue_shared_queue(g: WasmGuest, token: int, ptr_ptr: int, size_ptr: int) -> int:
    status, data = g.functions.proxy_dequeue_shared_queue(token)
    if status != OK:
        return status
    return _out(g, data, ptr_ptr, size_ptr)


# -- metrics ---------------------------------------------------------------------------------------------
@host_function("proxy_define_metric", "iiii")
def proxy_define_metric(g: WasmGuest, kind: int, np_: int, ns: int, id_ptr: int) -> int:
    name = g.mem.read(np_, ns)
    if name is None:
        return BAD
    status, metric_id = g.functions.proxy_define_metric(kind, name)
    if status != OK:
        return status
    return OK if g.mem.write_u32(id_ptr, metric_id) else BAD


@host_function("proxy_increment_metric", "iI")
def proxy_increment_metric(g: WasmGuest, metric_id: int, offset: int) -> int:
    return g.functions.proxy_increment_metric(metric_id, offset)


@host_function("proxy_record_metric", "iI")
def proxy_record_metric(g: WasmGuest, metric_id: int, value: int) -> int:
    return g.functions.proxy_record_metric(metric_id, value)


@host_function("proxy_get_metric", "ii")
def proxy_get_metric(g: WasmGuest, metric_id: int, result_ptr: int) -> int:
    status, value = g.functions.proxy_get_metric(metric_id)
    if status != OK:
        return status
    return OK if g.mem.write_u64(result_ptr, value) else BAD


# -- properties ------------------------------------------------------------------------------------------
@host_function("proxy_get_property", "iiii")
def proxy_get_property(g: WasmGuest, pp: int, ps: int, ptr_ptr: int, size_ptr: int) -> int:
    path = g.mem.read(pp, ps)
    if path is None:
        return BAD
    status, value = g.functions.proxy_get_property(path)
    if status != OK:
        return status
    return _out(g, value, ptr_ptr, size_ptr)


@host_function("proxy_set_property", "iiii")
def proxy_set_property(g: WasmGuest, pp: int, ps: int, vp: int, vs: int) -> int:
    path, value = g.mem.read(pp, ps), g.mem.read(vp, vs)
    if path is None or value is None:
        return BAD
    return g.functions.proxy_set_property(path, value)


# -- Emscripten-era helpers Envoy still links under "env" ------------------------------------------------
@host_function("pthread_equal", "ii")
def pthread_equal(g: WasmGuest, left: int, right: int) -> int:
    return int(left == right)


@host_function("emscripten_notify_memory_growth", "i", "")
def emscripten_notify_memory_growth(g: WasmGuest, index: int) -> None:
    return None

"""Stream control: continue, close, local replies, route cache (Envoy ``Context`` HTTP/L4 control)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxywasm.abi import Status, StreamType, decode_map

from . import ABI_0_1_0, ABI_0_2_0, ABI_0_2_1, hostcall

if TYPE_CHECKING:
    from ..vm import Vm

_V02 = frozenset({ABI_0_2_0, ABI_0_2_1})
_V01 = frozenset({ABI_0_1_0})


def _continue(vm: Vm, stream_type: int) -> int:
    if stream_type > StreamType.UPSTREAM:
        return Status.BAD_ARGUMENT
    ctx = vm.ctx()
    if stream_type == StreamType.UPSTREAM:
        return Status.UNIMPLEMENTED
    stream = ctx.stream
    if stream is not None:
        # Deferred: Envoy resumes the filter chain after the VM call returns.
        vm.after_call(lambda: stream.resume(StreamType(stream_type)))
    return Status.OK


@hostcall("proxy_continue_stream", "i", abis=_V02)
def continue_stream(vm: Vm, stream_type: int) -> int:
    return _continue(vm, stream_type)


@hostcall("proxy_close_stream", "i", abis=_V02)
def close_stream(vm: Vm, stream_type: int) -> int:
    if stream_type > StreamType.UPSTREAM:
        return Status.BAD_ARGUMENT
    stream = vm.ctx().stream
    if stream is not None:
        vm.after_call(lambda: stream.close(StreamType(stream_type)))
    return Status.OK


@hostcall("proxy_continue_request", "", abis=_V01)
def continue_request(vm: Vm) -> int:
    return _continue(vm, StreamType.REQUEST)


@hostcall("proxy_continue_response", "", abis=_V01)
def continue_response(vm: Vm) -> int:
    return _continue(vm, StreamType.RESPONSE)


@hostcall("proxy_clear_route_cache", "", abis=_V01)
def clear_route_cache(vm: Vm) -> int:
    return Status.OK


@hostcall("proxy_send_local_response", "iiiiiiii")
def send_local_response(
    vm: Vm, code: int, dp: int, ds: int, bp: int, bs: int, hp: int, hs: int, grpc_status: int
) -> int:
    details, body, raw_headers = vm.mem.read(dp, ds), vm.mem.read(bp, bs), vm.mem.read(hp, hs)
    if details is None or body is None or raw_headers is None:
        return Status.INVALID_MEMORY_ACCESS
    try:
        headers = decode_map(raw_headers)
    except ValueError:
        headers = []
    stream = vm.ctx().stream
    if stream is not None and hasattr(stream, "send_local_reply"):
        # Envoy replaces whitespace in details with underscores and sends after the call returns.
        clean = b"_".join(details.split()) if details.strip() else details
        vm.after_call(
            lambda: stream.send_local_reply(code, body, headers, grpc_status, clean.decode("utf-8", "replace"))
        )
    vm.stop_next_iteration = True
    return Status.OK

"""Header/trailer/metadata maps (Envoy ``Context::getMap``/``getConstMap``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxywasm.abi import MapType, Status, encode_map

from . import ABI_0_1_0, hostcall
from .http_calls import to_pairs

if TYPE_CHECKING:
    from ..context import HeaderMap
    from ..vm import Vm

_MAX_TYPE = MapType.HTTP_CALL_RESPONSE_TRAILERS


def _mutable(vm: Vm, map_type: int) -> HeaderMap | None:
    return vm.mutable_map(vm.ctx(), map_type)


def _write(vm: Vm, map_type: int, kp: int, ks: int, vp: int, vs: int, replace: bool) -> int:
    if map_type > _MAX_TYPE:
        return Status.BAD_ARGUMENT
    key, value = vm.mem.read(kp, ks), vm.mem.read(vp, vs)
    if key is None or value is None:
        return Status.INVALID_MEMORY_ACCESS
    hmap = _mutable(vm, map_type)
    if hmap is None:
        return Status.BAD_ARGUMENT
    if replace:
        hmap.replace(key, value)
    else:
        hmap.add(key, value)
    return Status.OK


@hostcall("proxy_add_header_map_value", "iiiii")
def add_value(vm: Vm, map_type: int, kp: int, ks: int, vp: int, vs: int) -> int:
    return _write(vm, map_type, kp, ks, vp, vs, replace=False)


@hostcall("proxy_get_header_map_value", "iiiii")
def get_value(vm: Vm, map_type: int, kp: int, ks: int, ptr_ptr: int, size_ptr: int) -> int:
    if map_type > _MAX_TYPE:
        return Status.BAD_ARGUMENT
    key = vm.mem.read(kp, ks)
    if key is None:
        return Status.INVALID_MEMORY_ACCESS
    ctx = vm.ctx()
    hmap = vm.const_map(ctx, map_type)
    legacy = vm.abi == ABI_0_1_0
    if hmap is None:
        if ctx.stream is not None and getattr(ctx.stream, "access_log_phase", False):
            if legacy:
                return (
                    Status.OK if vm.mem.copy_to_pointer_size(b"", ptr_ptr, size_ptr) else Status.INVALID_MEMORY_ACCESS
                )
            return Status.NOT_FOUND
        return Status.BAD_ARGUMENT
    value = hmap.get(key)
    if value is None:
        if not legacy:
            return Status.NOT_FOUND
        value = b""
    if not vm.mem.copy_to_pointer_size(value, ptr_ptr, size_ptr):
        return Status.INVALID_MEMORY_ACCESS
    return Status.OK


@hostcall("proxy_replace_header_map_value", "iiiii")
def replace_value(vm: Vm, map_type: int, kp: int, ks: int, vp: int, vs: int) -> int:
    return _write(vm, map_type, kp, ks, vp, vs, replace=True)


@hostcall("proxy_remove_header_map_value", "iii")
def remove_value(vm: Vm, map_type: int, kp: int, ks: int) -> int:
    if map_type > _MAX_TYPE:
        return Status.BAD_ARGUMENT
    key = vm.mem.read(kp, ks)
    if key is None:
        return Status.INVALID_MEMORY_ACCESS
    hmap = _mutable(vm, map_type)
    if hmap is None:
        return Status.BAD_ARGUMENT
    hmap.remove(key)
    return Status.OK


@hostcall("proxy_get_header_map_pairs", "iii")
def get_pairs(vm: Vm, map_type: int, ptr_ptr: int, size_ptr: int) -> int:
    if map_type > _MAX_TYPE:
        return Status.BAD_ARGUMENT
    hmap = vm.const_map(vm.ctx(), map_type)
    pairs = hmap.pairs() if hmap is not None else []
    data = encode_map(pairs) if pairs else b""
    if not vm.mem.copy_to_pointer_size(data, ptr_ptr, size_ptr):
        return Status.INVALID_MEMORY_ACCESS
    return Status.OK


@hostcall("proxy_set_header_map_pairs", "iii")
def set_pairs(vm: Vm, map_type: int, ptr: int, size: int) -> int:
    if map_type > _MAX_TYPE:
        return Status.BAD_ARGUMENT
    raw = vm.mem.read(ptr, size)
    if raw is None:
        return Status.INVALID_MEMORY_ACCESS
    hmap = _mutable(vm, map_type)
    if hmap is None:
        return Status.BAD_ARGUMENT
    hmap.set_pairs(to_pairs(raw))
    return Status.OK


@hostcall("proxy_get_header_map_size", "ii")
def get_size(vm: Vm, map_type: int, result_ptr: int) -> int:
    if map_type > _MAX_TYPE:
        return Status.BAD_ARGUMENT
    # Envoy uses the mutable lookup here, so callout/gRPC maps report BAD_ARGUMENT.
    hmap = _mutable(vm, map_type)
    if hmap is None:
        return Status.BAD_ARGUMENT
    if not vm.mem.write_u32(result_ptr, hmap.byte_size()):
        return Status.INVALID_MEMORY_ACCESS
    return Status.OK

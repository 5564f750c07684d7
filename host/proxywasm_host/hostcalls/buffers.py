"""Buffers: bodies, L4 data, callout responses, configurations (Envoy ``Context::getBuffer``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxywasm.abi import BufferType, Status

from . import hostcall

if TYPE_CHECKING:
    from ..vm import Vm

_MAX_TYPE = BufferType.CALL_DATA


@hostcall("proxy_get_buffer_bytes", "iiiii")
def get_buffer_bytes(vm: Vm, buf_type: int, start: int, length: int, ptr_ptr: int, size_ptr: int) -> int:
    if buf_type > _MAX_TYPE:
        return Status.BAD_ARGUMENT
    data = vm.buffer(vm.ctx(), buf_type)
    if data is None:
        return Status.NOT_FOUND
    size = len(data)
    if start > size:
        length = 0
    elif start + length > size:
        length = size - start
    if length == 0:
        if not (vm.mem.write_u32(ptr_ptr, 0) and vm.mem.write_u32(size_ptr, 0)):
            return Status.INVALID_MEMORY_ACCESS
        return Status.OK
    if not vm.mem.copy_to_pointer_size(bytes(data[start : start + length]), ptr_ptr, size_ptr):
        return Status.INVALID_MEMORY_ACCESS
    return Status.OK


@hostcall("proxy_get_buffer_status", "iii")
def get_buffer_status(vm: Vm, buf_type: int, length_ptr: int, flags_ptr: int) -> int:
    if buf_type > _MAX_TYPE:
        return Status.BAD_ARGUMENT
    data = vm.buffer(vm.ctx(), buf_type)
    if data is None:
        return Status.NOT_FOUND
    if not vm.mem.write_u32(length_ptr, len(data)):
        return Status.INVALID_MEMORY_ACCESS
    if not vm.mem.write_u32(flags_ptr, 0):
        return Status.INVALID_MEMORY_ACCESS
    return Status.OK


@hostcall("proxy_set_buffer_bytes", "iiiii")
def set_buffer_bytes(vm: Vm, buf_type: int, start: int, length: int, data_ptr: int, data_size: int) -> int:
    if buf_type > _MAX_TYPE:
        return Status.BAD_ARGUMENT
    ctx = vm.ctx()
    current = vm.buffer(ctx, buf_type)
    if current is None:
        return Status.NOT_FOUND
    data = vm.mem.read(data_ptr, data_size)
    if data is None:
        return Status.INVALID_MEMORY_ACCESS
    target = vm.mutable_buffer(ctx, buf_type)
    if target is None:
        return Status.BAD_ARGUMENT  # configurations and callout responses are read-only
    # Envoy's Buffer::copyFrom: replace a prefix, append at/after the end, nothing in between.
    if start == 0:
        del target[: min(length, len(target))]
        target[0:0] = data
        return Status.OK
    if start >= len(target):
        target += data
        return Status.OK
    return Status.BAD_ARGUMENT

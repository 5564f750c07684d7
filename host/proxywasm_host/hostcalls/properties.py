"""``proxy_get_property``/``proxy_set_property`` over the attribute tree built by ``properties.py``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxywasm.abi import Status

from . import hostcall

if TYPE_CHECKING:
    from ..vm import Vm


@hostcall("proxy_get_property", "iiii")
def get_property(vm: Vm, pp: int, ps: int, ptr_ptr: int, size_ptr: int) -> int:
    path = vm.mem.read(pp, ps)
    if path is None:
        return Status.INVALID_MEMORY_ACCESS
    status, value = vm.get_property(vm.ctx(), path)
    if status != Status.OK:
        return status
    if not vm.mem.copy_to_pointer_size(value, ptr_ptr, size_ptr):
        return Status.INVALID_MEMORY_ACCESS
    return Status.OK


@hostcall("proxy_set_property", "iiii")
def set_property(vm: Vm, pp: int, ps: int, vp: int, vs: int) -> int:
    path, value = vm.mem.read(pp, ps), vm.mem.read(vp, vs)
    if path is None or value is None:
        return Status.INVALID_MEMORY_ACCESS
    ctx = vm.ctx()
    if ctx.stream is None:
        return Status.NOT_FOUND  # no stream info outside a stream
    ctx.filter_state[path] = value
    return Status.OK

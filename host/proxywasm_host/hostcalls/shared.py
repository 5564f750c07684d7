"""Shared data (with CAS) and shared queues, scoped by ``vm_id`` across the whole Envoy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxywasm.abi import Status

from . import hostcall

if TYPE_CHECKING:
    from ..vm import Vm


@hostcall("proxy_get_shared_data", "iiiii")
def get_shared_data(vm: Vm, kp: int, ks: int, ptr_ptr: int, size_ptr: int, cas_ptr: int) -> int:
    key = vm.mem.read(kp, ks)
    if key is None:
        return Status.INVALID_MEMORY_ACCESS
    entry = vm.envoy.get_shared(vm.vm_id, key)
    if entry is None:
        return Status.NOT_FOUND
    if not vm.mem.copy_to_pointer_size(entry[0], ptr_ptr, size_ptr):
        return Status.INVALID_MEMORY_ACCESS
    if not vm.mem.write_u32(cas_ptr, entry[1]):
        return Status.INVALID_MEMORY_ACCESS
    return Status.OK


@hostcall("proxy_set_shared_data", "iiiii")
def set_shared_data(vm: Vm, kp: int, ks: int, vp: int, vs: int, cas: int) -> int:
    key, value = vm.mem.read(kp, ks), vm.mem.read(vp, vs)
    if key is None or value is None:
        return Status.INVALID_MEMORY_ACCESS
    return vm.envoy.set_shared(vm.vm_id, key, value, cas)


@hostcall("proxy_register_shared_queue", "iii")
def register_shared_queue(vm: Vm, np_: int, ns: int, token_ptr: int) -> int:
    name = vm.mem.read(np_, ns)
    if name is None:
        return Status.INVALID_MEMORY_ACCESS
    # proxy_on_queue_ready goes to the root context even when a stream registers.
    token = vm.envoy.register_queue(vm, name, vm.root_of(vm.ctx()).id)
    if not vm.mem.write_u32(token_ptr, token):
        return Status.INVALID_MEMORY_ACCESS
    return Status.OK


@hostcall("proxy_resolve_shared_queue", "iiiii")
def resolve_shared_queue(vm: Vm, vp: int, vs: int, np_: int, ns: int, token_ptr: int) -> int:
    vm_id, name = vm.mem.read(vp, vs), vm.mem.read(np_, ns)
    if vm_id is None or name is None:
        return Status.INVALID_MEMORY_ACCESS
    token = vm.envoy.resolve_queue(vm_id.decode("utf-8", "replace") or vm.vm_id, name)
    if token == 0:
        return Status.NOT_FOUND
    if not vm.mem.write_u32(token_ptr, token):
        return Status.INVALID_MEMORY_ACCESS
    return Status.OK


@hostcall("proxy_dequeue_shared_queue", "iii")
def dequeue_shared_queue(vm: Vm, token: int, ptr_ptr: int, size_ptr: int) -> int:
    status, data = vm.envoy.dequeue(token)
    if status != Status.OK:
        return status
    if not vm.mem.copy_to_pointer_size(data, ptr_ptr, size_ptr):
        return Status.INVALID_MEMORY_ACCESS
    return Status.OK


@hostcall("proxy_enqueue_shared_queue", "iii")
def enqueue_shared_queue(vm: Vm, token: int, dp: int, ds: int) -> int:
    data = vm.mem.read(dp, ds)
    if data is None:
        return Status.INVALID_MEMORY_ACCESS
    return vm.envoy.enqueue(token, data)

"""Logging, time, ticks, effective context, done, status and foreign functions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxywasm.abi import LogLevel, Status

from . import ABI_0_1_0, ABI_0_2_1, hostcall

if TYPE_CHECKING:
    from ..vm import Vm


@hostcall("proxy_log", "iii")
def proxy_log(vm: Vm, level: int, ptr: int, size: int) -> int:
    if level > LogLevel.CRITICAL:
        return Status.BAD_ARGUMENT
    message = vm.mem.read(ptr, size)
    if message is None:
        return Status.INVALID_MEMORY_ACCESS
    vm.log(level, message.decode("utf-8", "replace"))
    return Status.OK


@hostcall("proxy_get_log_level", "i", abis=frozenset({ABI_0_2_1}))
def proxy_get_log_level(vm: Vm, result_ptr: int) -> int:
    if not vm.mem.write_u32(result_ptr, vm.envoy.log_level):
        return Status.INVALID_MEMORY_ACCESS
    return Status.OK


@hostcall("proxy_get_current_time_nanoseconds", "i")
def proxy_get_current_time_nanoseconds(vm: Vm, result_ptr: int) -> int:
    if not vm.mem.write_u64(result_ptr, vm.envoy.time_ns):
        return Status.INVALID_MEMORY_ACCESS
    return Status.OK


@hostcall("proxy_set_tick_period_milliseconds", "i")
def proxy_set_tick_period_milliseconds(vm: Vm, period_ms: int) -> int:
    # Envoy keys the timer by the root context of the caller; 0 disables it.
    root = vm.root_of(vm.ctx())
    root.tick_period_ms = period_ms
    root.next_tick_ns = vm.envoy.monotonic_ns + period_ms * 1_000_000
    return Status.OK


@hostcall("proxy_set_effective_context", "i")
def proxy_set_effective_context(vm: Vm, context_id: int) -> int:
    if context_id not in vm.contexts:
        return Status.BAD_ARGUMENT
    vm.effective_id = context_id
    return Status.OK


@hostcall("proxy_done", "")
def proxy_done(vm: Vm) -> int:
    return vm.done(vm.ctx())


@hostcall("proxy_get_status", "iii")
def proxy_get_status(vm: Vm, code_ptr: int, msg_ptr_ptr: int, msg_size_ptr: int) -> int:
    root = vm.root_of(vm.ctx())
    if not vm.mem.write_u32(code_ptr, root.status_code):
        return Status.INVALID_MEMORY_ACCESS
    if not vm.mem.copy_to_pointer_size(root.status_message, msg_ptr_ptr, msg_size_ptr):
        return Status.INVALID_MEMORY_ACCESS
    return Status.OK


@hostcall("proxy_get_configuration", "ii", abis=frozenset({ABI_0_1_0}))
def proxy_get_configuration(vm: Vm, ptr_ptr: int, size_ptr: int) -> int:
    value = vm.configuration_in_scope()
    if not vm.mem.copy_to_pointer_size(value, ptr_ptr, size_ptr):
        return Status.INVALID_MEMORY_ACCESS
    return Status.OK


@hostcall("proxy_call_foreign_function", "iiiiii")
def proxy_call_foreign_function(
    vm: Vm, name_ptr: int, name_size: int, args_ptr: int, args_size: int, results_ptr: int, results_size_ptr: int
) -> int:
    name = vm.mem.read(name_ptr, name_size)
    if name is None:
        return Status.INVALID_MEMORY_ACCESS
    args = vm.mem.read(args_ptr, args_size)
    if args is None:
        return Status.INVALID_MEMORY_ACCESS
    func = vm.envoy.foreign_functions.get(name.decode("utf-8", "replace"))
    if func is None:
        return Status.NOT_FOUND
    out = func(args)
    status, data = (int(out[0]), bytes(out[1])) if isinstance(out, tuple) else (int(Status.OK), bytes(out))
    address = 0
    if results_ptr != 0:
        # Envoy allocates the result in the guest even when it is empty.
        got = vm.mem.alloc(max(1, len(data)))
        if got is None:
            return Status.INVALID_MEMORY_ACCESS
        address = got
        vm.mem.write(address, data)
        if not vm.mem.write_u32(results_ptr, address):
            return Status.INVALID_MEMORY_ACCESS
    if results_size_ptr != 0 and not vm.mem.write_u32(results_size_ptr, len(data)):
        return Status.INVALID_MEMORY_ACCESS
    return status


# Emscripten-era helpers Envoy still links under "env".
@hostcall("pthread_equal", "ii")
def pthread_equal(vm: Vm, left: int, right: int) -> int:
    return int(left == right)


@hostcall("emscripten_notify_memory_growth", "i", "")
def emscripten_notify_memory_growth(vm: Vm, index: int) -> None:
    return None

"""Stats: counters, gauges, histograms. Ids carry the type in the low two bits, as in cpp-host."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxywasm.abi import MetricType, Status

from . import hostcall

if TYPE_CHECKING:
    from ..vm import Vm

_TYPE_MASK = 0x3
_I64_MASK = (1 << 64) - 1


@hostcall("proxy_define_metric", "iiii")
def define_metric(vm: Vm, kind: int, np_: int, ns: int, id_ptr: int) -> int:
    name = vm.mem.read(np_, ns)
    if name is None:
        return Status.INVALID_MEMORY_ACCESS
    if kind > MetricType.HISTOGRAM:
        return Status.BAD_ARGUMENT
    metric_id = vm.define_metric(MetricType(kind), name.decode("utf-8", "replace"))
    if not vm.mem.write_u32(id_ptr, metric_id):
        return Status.INVALID_MEMORY_ACCESS
    return Status.OK


@hostcall("proxy_increment_metric", "iI")
def increment_metric(vm: Vm, metric_id: int, offset: int) -> int:
    kind = metric_id & _TYPE_MASK
    name = vm.metric_names.get(metric_id)
    if kind == MetricType.COUNTER:
        if name is None:
            return Status.NOT_FOUND
        if offset <= 0:
            return Status.BAD_ARGUMENT
        vm.envoy.counters[name] = (vm.envoy.counters[name] + offset) & _I64_MASK
        return Status.OK
    if kind == MetricType.GAUGE:
        if name is None:
            return Status.NOT_FOUND
        vm.envoy.gauges[name] = (vm.envoy.gauges[name] + offset) & _I64_MASK
        return Status.OK
    return Status.BAD_ARGUMENT


@hostcall("proxy_record_metric", "iI")
def record_metric(vm: Vm, metric_id: int, value: int) -> int:
    kind = metric_id & _TYPE_MASK
    name = vm.metric_names.get(metric_id)
    if name is None:
        return Status.NOT_FOUND
    value &= _I64_MASK  # the ABI passes an unsigned 64-bit value
    if kind == MetricType.COUNTER:
        vm.envoy.counters[name] = (vm.envoy.counters[name] + value) & _I64_MASK
    elif kind == MetricType.GAUGE:
        vm.envoy.gauges[name] = value
    else:
        vm.envoy.histograms[name].append(value)
    return Status.OK


@hostcall("proxy_get_metric", "ii")
def get_metric(vm: Vm, metric_id: int, result_ptr: int) -> int:
    kind = metric_id & _TYPE_MASK
    if kind == MetricType.HISTOGRAM or kind == 3:
        return Status.BAD_ARGUMENT
    name = vm.metric_names.get(metric_id)
    if name is None:
        return Status.NOT_FOUND
    value = vm.envoy.counters[name] if kind == MetricType.COUNTER else vm.envoy.gauges[name]
    if not vm.mem.write_u64(result_ptr, value):
        return Status.INVALID_MEMORY_ACCESS
    return Status.OK

"""gRPC callouts and streams (Envoy ``Context::grpcCall``/``grpcStream``/``grpcSend``/...)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxywasm.abi import Status

from . import hostcall
from .http_calls import to_pairs

if TYPE_CHECKING:
    from ..vm import Vm


@hostcall("proxy_grpc_call", "iiiiiiiiiiii")
def grpc_call(
    vm: Vm, sp: int, ss: int, np_: int, ns: int, mp: int, ms: int, hp: int, hs: int, rp: int, rs: int,
    timeout: int, token_ptr: int,
) -> int:  # fmt: skip
    service, svc_name, method = vm.mem.read(sp, ss), vm.mem.read(np_, ns), vm.mem.read(mp, ms)
    metadata, request = vm.mem.read(hp, hs), vm.mem.read(rp, rs)
    if service is None or svc_name is None or method is None or metadata is None or request is None:
        return Status.INVALID_MEMORY_ACCESS
    cluster = service.decode("utf-8", "replace")
    if cluster not in vm.clusters:
        # Envoy: not a GrpcService proto and not a cluster name.
        return Status.PARSE_FAILURE
    token = vm.start_grpc(cluster, svc_name, method, to_pairs(metadata), request, stream=False)
    if not vm.mem.write_u32(token_ptr, token):
        return Status.INVALID_MEMORY_ACCESS
    return Status.OK


@hostcall("proxy_grpc_stream", "iiiiiiiii")
def grpc_stream(vm: Vm, sp: int, ss: int, np_: int, ns: int, mp: int, ms: int, hp: int, hs: int, token_ptr: int) -> int:
    service, svc_name, method = vm.mem.read(sp, ss), vm.mem.read(np_, ns), vm.mem.read(mp, ms)
    metadata = vm.mem.read(hp, hs)
    if service is None or svc_name is None or method is None or metadata is None:
        return Status.INVALID_MEMORY_ACCESS
    cluster = service.decode("utf-8", "replace")
    if cluster not in vm.clusters:
        return Status.PARSE_FAILURE
    token = vm.start_grpc(cluster, svc_name, method, to_pairs(metadata), None, stream=True)
    if not vm.mem.write_u32(token_ptr, token):
        return Status.INVALID_MEMORY_ACCESS
    return Status.OK


@hostcall("proxy_grpc_send", "iiii")
def grpc_send(vm: Vm, token: int, mp: int, ms: int, end_stream: int) -> int:
    message = vm.mem.read(mp, ms)
    if message is None:
        return Status.INVALID_MEMORY_ACCESS
    return vm.grpc_send(token, message, end_stream != 0)


@hostcall("proxy_grpc_cancel", "i")
def grpc_cancel(vm: Vm, token: int) -> int:
    return vm.grpc_finish(token, cancel=True)


@hostcall("proxy_grpc_close", "i")
def grpc_close(vm: Vm, token: int) -> int:
    return vm.grpc_finish(token, cancel=False)

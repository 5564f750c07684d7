"""``proxy_http_call``: callouts to named clusters (Envoy ``Context::httpCall``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxywasm.abi import Status, decode_map

from . import hostcall

if TYPE_CHECKING:
    from ..vm import Vm


def to_pairs(raw: bytes) -> list[tuple[bytes, bytes]]:
    """Pairs from the wire format; like cpp-host's PairsUtil::toPairs, malformed input gives none."""
    try:
        return decode_map(raw)
    except ValueError:
        return []


@hostcall("proxy_http_call", "iiiiiiiiii")
def http_call(
    vm: Vm, up: int, us: int, hp: int, hs: int, bp: int, bs: int, tp: int, ts: int, timeout: int, token_ptr: int
) -> int:
    cluster, body = vm.mem.read(up, us), vm.mem.read(bp, bs)
    raw_headers, raw_trailers = vm.mem.read(hp, hs), vm.mem.read(tp, ts)
    if cluster is None or body is None or raw_headers is None or raw_trailers is None:
        return Status.INVALID_MEMORY_ACCESS
    headers, trailers = to_pairs(raw_headers), to_pairs(raw_trailers)
    # Envoy writes the token slot first so a bad pointer fails before anything is sent.
    if not vm.mem.write_u32(token_ptr, 0):
        return Status.INVALID_MEMORY_ACCESS
    if timeout >= 1 << 31:  # Envoy takes the timeout as a signed int
        return Status.BAD_ARGUMENT
    name = cluster.decode("utf-8", "replace")
    if name not in vm.clusters:
        return Status.BAD_ARGUMENT
    lowered = {k.lower() for k, _ in headers}
    if not {b":path", b":method", b":authority"} <= lowered and not {b":path", b":method", b"host"} <= lowered:
        return Status.BAD_ARGUMENT
    token = vm.start_http_call(name, headers, body, trailers, timeout)
    vm.mem.write_u32(token_ptr, token)
    return Status.OK

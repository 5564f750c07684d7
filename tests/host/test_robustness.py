"""Random calls with random pointers/lengths into every host function: never a crash, only status codes."""

from __future__ import annotations

import random

import pytest
from guest import probe_wasm
from host_support import Probe

from proxywasm.abi import MapType, Status
from proxywasm_host import Action, Host
from proxywasm_host.wasm.imports import import_table

WASI_ERRNOS = {0, 8, 20, 21, 28, 44, 52, 58}
STATUSES = {int(s) for s in Status}
OOB = 0xFFFF_FF00


def _env_calls() -> list[tuple[str, str, str, str]]:
    return sorted(
        {(c.module, c.name, c.params, c.results) for c in import_table("0_2_1") if c.module != "wasi_unstable"}
    )


def _args(rng: random.Random, kinds: str, mem_size: int) -> list[int]:
    pool32 = [0, 1, 2, 7, 8, 4096, mem_size - 1, mem_size, mem_size + 1, 0x7FFF_FFFF, 0xFFFF_FFFF, OOB]
    out = []
    for kind in kinds:
        if kind == "I":
            out.append(rng.choice([0, 1, -1, 2**63 - 1, -(2**63), rng.getrandbits(64) - 2**63]))
        elif rng.random() < 0.5:
            out.append(rng.choice(pool32))
        else:
            out.append(rng.randrange(0, mem_size + 64))
    return out


@pytest.mark.parametrize("seed", range(3))
def test_random_calls_never_crash(seed: int) -> None:
    rng = random.Random(seed)
    host = Host.load(probe_wasm(), vm_config=b"vm-config", clusters={"cluster": None, "grpc": None})
    p = Probe(host)
    p.ret("proxy_on_request_headers", 1)
    stream = host.http_stream()
    stream.request_headers([(":path", "/"), ("a", "b")])
    # Random bytes in the scratch area, so "data" pointers often point at garbage maps.
    host.raw.memory.write(4096, rng.randbytes(60000))
    calls = _env_calls()
    seen: dict[str, set[int]] = {}
    for _ in range(4000):
        module, name, kinds, results = rng.choice(calls)
        if stream.ended:  # the fuzz ended it (a reset, a local reply): go on with a new one
            stream = host.http_stream()
            stream.request_headers([(":path", "/"), ("a", "b")])
        on = stream if rng.random() < 0.6 and not stream.ended else None
        if name in ("proc_exit",):
            continue
        mem_size = host.raw.memory.size()
        result = host.raw.call("t_" + name, *_args(rng, kinds, mem_size), on=on)
        assert result is not None, f"{name} failed the VM: {host.fail_reason}"
        assert not host.failed
        if results:
            allowed = WASI_ERRNOS if module == "wasi_snapshot_preview1" else STATUSES | {0, 1}
            assert result in allowed, f"{name} returned {result}"
        seen.setdefault(name, set()).add(result)
        host.pump()
    # Every host function was exercised, and the VM still serves traffic.
    assert {n for _, n, _, _ in calls} - {"proc_exit"} <= set(seen)
    p.ret("proxy_on_request_headers", 0)
    for callback in ("proxy_on_request_body", "proxy_on_response_headers", "proxy_on_response_body"):
        p.ret(callback, 0)
    # The fuzz may have scribbled over the probe's action table; clear it.
    host.raw.memory.write(1024, b"\0" * 256)
    assert host.request("GET", "/after").status in (200, 403)


# (function, arguments with "P" for an out-of-bounds pointer, needs a stream context)
OOB_CASES: list[tuple[str, tuple[object, ...], bool]] = [
    ("proxy_log", (2, "P", 5), False),
    ("proxy_get_log_level", ("P",), False),
    ("proxy_get_current_time_nanoseconds", ("P",), False),
    ("proxy_get_status", ("P", "S", "S"), False),
    ("proxy_get_header_map_value", (0, "P", 3, "S", "S"), True),
    ("proxy_get_header_map_value", (0, "K", 1, "P", "S"), True),
    ("proxy_add_header_map_value", (0, "P", 1, "K", 1), True),
    ("proxy_replace_header_map_value", (0, "K", 1, "P", 1), True),
    ("proxy_remove_header_map_value", (0, "P", 1), True),
    ("proxy_get_header_map_pairs", (0, "P", "S"), True),
    ("proxy_set_header_map_pairs", (0, "P", 12), True),
    ("proxy_get_header_map_size", (0, "P"), True),
    ("proxy_get_buffer_bytes", (6, 0, 4, "P", "S"), False),
    ("proxy_get_buffer_status", (6, "P", "S"), False),
    ("proxy_set_buffer_bytes", (0, 0, 0, "P", 4), True),
    ("proxy_get_property", ("P", 4, "S", "S"), True),
    ("proxy_set_property", ("P", 4, "K", 1), True),
    ("proxy_get_shared_data", ("P", 3, "S", "S", "S"), False),
    ("proxy_set_shared_data", ("K", 1, "P", 3, 0), False),
    ("proxy_register_shared_queue", ("P", 1, "S"), False),
    ("proxy_register_shared_queue", ("K", 1, "P"), False),
    ("proxy_resolve_shared_queue", ("P", 1, "K", 1, "S"), False),
    ("proxy_enqueue_shared_queue", (1, "P", 3), False),
    ("proxy_define_metric", (0, "P", 3, "S"), False),
    ("proxy_define_metric", (0, "K", 1, "P"), False),
    ("proxy_http_call", ("P", 7, 0, 0, 0, 0, 0, 0, 100, "S"), False),
    ("proxy_http_call", ("K", 1, 0, 0, 0, 0, 0, 0, 100, "P"), False),
    ("proxy_grpc_call", ("P", 4, "K", 1, "K", 1, 0, 0, 0, 0, 100, "S"), False),
    ("proxy_grpc_stream", ("K", 1, "P", 1, "K", 1, 0, 0, "S"), False),
    ("proxy_grpc_send", (2, "P", 3, 0), False),
    ("proxy_send_local_response", (403, "P", 3, 0, 0, 0, 0, 0), True),
    ("proxy_call_foreign_function", ("P", 3, 0, 0, "S", "S"), False),
    ("proxy_set_effective_context", (OOB,), False),
]


@pytest.mark.parametrize(("name", "template", "in_stream"), OOB_CASES)
def test_out_of_bounds_pointer_is_invalid_memory_access(
    name: str, template: tuple[object, ...], in_stream: bool
) -> None:
    host = Host.load(probe_wasm(), vm_config=b"vm-config")
    p = Probe(host)
    stream = None
    if in_stream:
        p.ret("proxy_on_request_headers", 1)
        p.ret("proxy_on_request_body", 1)
        stream = host.http_stream()
        assert stream.request_headers([(":path", "/"), ("k", "v")]) != Action.CONTINUE
        stream.request_body(b"body", end_of_stream=True)
    key = p.put("k")[0]
    args = [OOB if a == "P" else key if a == "K" else p.slot() if a == "S" else a for a in template]
    result = host.raw.call("t_" + name, *args, on=stream)
    expected = Status.BAD_ARGUMENT if name == "proxy_set_effective_context" else Status.INVALID_MEMORY_ACCESS
    assert result == expected
    assert not host.failed


def test_map_type_checked_before_memory(probe: Probe) -> None:
    # Envoy validates the map type first: a bad type with a bad pointer is BAD_ARGUMENT.
    assert probe.call("proxy_get_header_map_pairs", MapType.HTTP_CALL_RESPONSE_TRAILERS + 1, OOB, OOB) == (
        Status.BAD_ARGUMENT
    )


def test_property_copy_out_to_bad_pointer(probe: Probe) -> None:
    path = probe.put("plugin_vm_id")
    assert probe.call("proxy_get_property", *path, OOB, probe.slot()) == Status.INVALID_MEMORY_ACCESS
    assert probe.call("proxy_get_property", *path, probe.slot(), probe.slot()) == Status.OK

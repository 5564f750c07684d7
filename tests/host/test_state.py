"""Shared data, shared queues, metrics, time/ticks, foreign functions, log level, status."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

from guest import Act, probe_wasm
from host_support import Probe

from proxywasm.abi import LogLevel, MetricType, Status
from proxywasm_host import Envoy, Host, HttpStream


def _set(p: Probe, key: str, value: str, cas: int = 0) -> int:
    return p.call("proxy_set_shared_data", *p.put(key), *p.put(value), cas)


def _get(p: Probe, key: str) -> tuple[int, bytes, int]:
    pp, sp, cas = p.slot(), p.slot(), p.slot()
    status = p.call("proxy_get_shared_data", *p.put(key), pp, sp, cas)
    if status != Status.OK:
        return status, b"", 0
    return status, p.bytes_at(pp, sp), p.u32_at(cas)


def test_shared_data_cas(probe: Probe) -> None:
    assert _get(probe, "k")[0] == Status.NOT_FOUND
    assert _set(probe, "k", "v1") == Status.OK
    status, value, cas = _get(probe, "k")
    assert (status, value) == (Status.OK, b"v1") and cas != 0
    assert _set(probe, "k", "v2", cas + 1) == Status.CAS_MISMATCH
    assert _set(probe, "k", "v2", cas) == Status.OK
    assert _set(probe, "k", "v3", cas) == Status.CAS_MISMATCH  # the CAS moved on
    assert probe.host.shared_data == {b"k": b"v2"}


def test_shared_data_across_vms_and_vm_id_scope() -> None:
    envoy = Envoy()
    a = Probe(Host.load(probe_wasm(), envoy=envoy, vm_id="one"))
    b = Probe(Host.load(probe_wasm(), envoy=envoy, vm_id="one"))
    c = Probe(Host.load(probe_wasm(), envoy=envoy, vm_id="two"))
    assert _set(a, "k", "from-a") == Status.OK
    assert _get(b, "k")[1] == b"from-a"
    assert _get(c, "k")[0] == Status.NOT_FOUND


def test_shared_queue_notifies_registering_root(probe: Probe) -> None:
    probe.act("proxy_on_tick", Act.REGISTER_QUEUE)
    probe.call("proxy_set_tick_period_milliseconds", 5)
    probe.host.tick()
    token = probe.token
    assert token != 0
    slot = probe.slot()
    assert probe.call("proxy_resolve_shared_queue", *probe.put(""), *probe.put("q"), slot) == Status.OK
    assert probe.u32_at(slot) == token
    assert probe.call("proxy_resolve_shared_queue", *probe.put(""), *probe.put("nope"), slot) == Status.NOT_FOUND
    assert probe.call_out("proxy_dequeue_shared_queue", token)[0] == Status.EMPTY
    assert probe.call("proxy_enqueue_shared_queue", token, *probe.put("item")) == Status.OK
    # Notification is posted to the event loop, not delivered re-entrantly.
    probe.host.pump()
    assert probe.args("proxy_on_queue_ready")[:2] == (1, token)
    assert probe.call_out("proxy_dequeue_shared_queue", token) == (Status.OK, b"item")
    assert probe.call_out("proxy_dequeue_shared_queue", 999)[0] == Status.NOT_FOUND


def test_metrics(probe: Probe) -> None:
    slot = probe.slot()
    assert probe.call("proxy_define_metric", MetricType.COUNTER, *probe.put("reqs"), slot) == Status.OK
    counter = probe.u32_at(slot)
    assert probe.call("proxy_define_metric", MetricType.GAUGE, *probe.put("g"), slot) == Status.OK
    gauge = probe.u32_at(slot)
    assert probe.call("proxy_define_metric", MetricType.HISTOGRAM, *probe.put("h"), slot) == Status.OK
    hist = probe.u32_at(slot)
    assert (counter & 3, gauge & 3, hist & 3) == (0, 1, 2)
    assert probe.call("proxy_increment_metric", counter, 3) == Status.OK
    assert probe.call("proxy_increment_metric", counter, -1) == Status.BAD_ARGUMENT  # counters only grow
    assert probe.call("proxy_increment_metric", gauge, -2) == Status.OK
    assert probe.call("proxy_record_metric", hist, 7) == Status.OK
    assert probe.call("proxy_increment_metric", hist, 1) == Status.BAD_ARGUMENT
    assert probe.call("proxy_get_metric", counter, slot) == Status.OK
    assert struct.unpack("<Q", probe.mem.read(slot, 8) or b"")[0] == 3
    assert probe.call("proxy_get_metric", hist, slot) == Status.BAD_ARGUMENT
    assert probe.call("proxy_get_metric", 4000, slot) == Status.NOT_FOUND
    assert probe.call("proxy_define_metric", 3, *probe.put("x"), slot) == Status.BAD_ARGUMENT
    assert probe.host.metric("reqs") == 3
    assert probe.host.metric("wasmcustom.reqs") == 3
    assert probe.host.metric("g") == (-2) & (2**64 - 1)
    assert probe.host.metric("h") == [7]


def test_time_and_ticks(probe: Probe) -> None:
    slot = probe.slot()
    assert probe.call("proxy_get_current_time_nanoseconds", slot) == Status.OK
    t0 = struct.unpack("<Q", probe.mem.read(slot, 8) or b"")[0]
    probe.act("proxy_on_vm_start", Act.NONE)
    assert probe.call("proxy_set_tick_period_milliseconds", 100) == Status.OK
    probe.host.clear_logs()
    assert probe.host.advance_time(250) == 2
    assert probe.callbacks() == ["on_tick", "on_tick"]
    probe.call("proxy_get_current_time_nanoseconds", slot)
    # the guest's clock is Envoy's plus the CPU time it burnt meanwhile (a few microseconds of fuel)
    assert 250_000_000 <= struct.unpack("<Q", probe.mem.read(slot, 8) or b"")[0] - t0 < 251_000_000
    assert probe.host.advance_time(49) == 0
    assert probe.host.advance_time(1) == 1
    probe.call("proxy_set_tick_period_milliseconds", 0)
    assert probe.host.advance_time(1000) == 0


def test_log_levels(load_probe: Callable[..., Probe]) -> None:
    p = load_probe(log_level=LogLevel.WARN)
    slot = p.slot()
    assert p.call("proxy_get_log_level", slot) == Status.OK
    assert p.u32_at(slot) == LogLevel.WARN
    assert p.call("proxy_log", 6, *p.put("x")) == Status.BAD_ARGUMENT
    assert p.call("proxy_log", LogLevel.ERROR, *p.put("boom")) == Status.OK
    assert p.host.logs[-1] == (LogLevel.ERROR, "boom")


def test_foreign_functions(probe: Probe) -> None:
    probe.host.register_foreign_function("rev", lambda data: data[::-1])
    pp, sp = probe.slot(), probe.slot()
    assert probe.call("proxy_call_foreign_function", *probe.put("rev"), *probe.put("abc"), pp, sp) == Status.OK
    assert probe.bytes_at(pp, sp) == b"cba"
    assert probe.call("proxy_call_foreign_function", *probe.put("nope"), *probe.put(""), pp, sp) == Status.NOT_FOUND
    probe.host.register_foreign_function("bad", lambda data: (Status.BAD_ARGUMENT, b""))
    assert probe.call("proxy_call_foreign_function", *probe.put("bad"), *probe.put(""), pp, sp) == Status.BAD_ARGUMENT


def test_envoy_s_own_foreign_functions_are_registered(probe: Probe) -> None:
    """compress/uncompress as Envoy 1.40's foreign.cc (zlib; the foreign_call_on_tick example's
    real-Envoy test checks compress's bytes)."""
    pp, sp = probe.slot(), probe.slot()
    assert probe.call("proxy_call_foreign_function", *probe.put("compress"), *probe.put("hello"), pp, sp) == Status.OK
    packed = probe.bytes_at(pp, sp)
    assert packed == zlib.compress(b"hello")
    assert probe.call("proxy_call_foreign_function", *probe.put("uncompress"), *probe.put(packed), pp, sp) == Status.OK
    assert probe.bytes_at(pp, sp) == b"hello"
    status = probe.call("proxy_call_foreign_function", *probe.put("uncompress"), *probe.put("junk"), pp, sp)
    assert status == Status.SERIALIZATION_FAILURE


def test_effective_context(probe: Probe) -> None:
    assert probe.call("proxy_set_effective_context", 77) == Status.BAD_ARGUMENT
    assert probe.call("proxy_set_effective_context", 1) == Status.OK
    assert probe.call("proxy_set_effective_context", 0) == Status.OK  # the VM context exists too


def test_properties(load_probe: Callable[..., Probe]) -> None:
    p = load_probe(root_id="my_root", properties={"node.id": "n1", ("custom", "x"): 5})
    p.ret("proxy_on_request_headers", 1)
    stream = p.host.http_stream()
    stream.request_headers([(":authority", "h"), (":path", "/a?b=1"), (":method", "PUT"), ("x-y", "z")])

    def prop(*path: str) -> tuple[int, bytes]:
        return p.call_out("proxy_get_property", *p.put("\0".join(path)), on=stream)

    assert prop("request", "path") == (Status.OK, b"/a?b=1")
    assert prop("request", "url_path") == (Status.OK, b"/a")
    assert prop("request", "method") == (Status.OK, b"PUT")
    assert prop("request", "headers", "x-y") == (Status.OK, b"z")
    assert prop("plugin_root_id") == (Status.OK, b"my_root")
    assert prop("node", "id") == (Status.OK, b"n1")
    assert prop("custom", "x") == (Status.OK, struct.pack("<q", 5))
    assert prop("source", "port")[1] == struct.pack("<q", 54321)
    assert prop("nope")[0] == Status.NOT_FOUND
    # set_property lands in filter state; readable by the same stream, not without a stream.
    assert p.call("proxy_set_property", *p.put("mine"), *p.put("val"), on=stream) == Status.OK
    assert prop("mine") == (Status.OK, b"val")
    assert p.call("proxy_set_property", *p.put("mine"), *p.put("val")) == Status.NOT_FOUND


def test_request_attributes_follow_header_visibility(probe: Probe) -> None:
    # Envoy reads request.* from the request headers it holds: while the filter holds them they are
    # there; once it continued, only stream-info attributes remain (the access-log phase, where they
    # come back, is covered by the differential suite).
    held = probe.host.http_stream()
    probe.ret("proxy_on_request_headers", 1)
    held.request_headers([(":path", "/a"), (":method", "GET")])
    probe.ret("proxy_on_request_headers", 0)
    passed = probe.host.http_stream()
    passed.request_headers([(":path", "/b"), (":method", "GET")])

    def prop(stream: HttpStream, *path: str) -> tuple[int, bytes]:
        return probe.call_out("proxy_get_property", *probe.put("\0".join(path)), on=stream)

    assert prop(held, "request", "path") == (Status.OK, b"/a")
    assert prop(passed, "request", "path")[0] == Status.NOT_FOUND
    assert prop(passed, "request", "protocol") == (Status.OK, b"HTTP/1.1")  # from stream info, always there


def test_each_connection_comes_from_its_own_client_port(probe: Probe) -> None:
    # As a real client's ephemeral ports: a filter keyed on source.address sees one client per
    # connection (the fresh-user trial's per-IP limiter passed in the host and not in Envoy).
    ports = []
    for _ in range(2):
        stream = probe.host.http_stream()
        stream.request_headers([(":path", "/")])
        ports.append(probe.call_out("proxy_get_property", *probe.put("source\0port"), on=stream)[1])
    ports.append(struct.pack("<q", int(probe.host.connection().source.rsplit(":", 1)[1])))
    assert ports == [struct.pack("<q", p) for p in (54321, 54322, 54323)]
    chosen = probe.host.http_stream(source="10.0.0.1:4000")
    chosen.request_headers([(":path", "/")])
    assert probe.call_out("proxy_get_property", *probe.put("source\0address"), on=chosen)[1] == b"10.0.0.1:4000"

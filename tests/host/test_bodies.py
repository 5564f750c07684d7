"""Body buffering, buffer host functions and configuration buffers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from guest import Act
from host_support import Probe

from proxywasm.abi import BufferType, Status
from proxywasm_host import Action, BodyOverrun, StreamStalled


def test_buffered_body_accumulates(probe: Probe) -> None:
    probe.ret("proxy_on_request_body", 1)  # StopIterationAndBuffer
    stream = probe.host.http_stream()
    stream.request_headers([(":path", "/")])
    assert stream.request_body(b"ab") == Action.PAUSE
    assert probe.args("proxy_on_request_body")[:3] == (2, 2, 0)
    assert stream.request_body(b"cd") == Action.PAUSE
    assert probe.args("proxy_on_request_body")[:3] == (2, 4, 0)
    status, data = probe.call_out("proxy_get_buffer_bytes", BufferType.HTTP_REQUEST_BODY, 0, 100, on=stream)
    assert (status, data) == (Status.OK, b"abcd")
    probe.ret("proxy_on_request_body", 0)
    assert stream.request_body(b"ef", end_of_stream=True) == Action.CONTINUE
    assert probe.args("proxy_on_request_body")[:3] == (2, 6, 1)
    assert stream.upstream_request is not None and stream.upstream_request.body == b"abcdef"


def test_unbuffered_chunks_are_seen_one_by_one(probe: Probe) -> None:
    stream = probe.host.http_stream()
    stream.request_headers([(":path", "/")])
    stream.request_body(b"ab")
    stream.request_body(b"cde", end_of_stream=True)
    assert probe.args("proxy_on_request_body")[:3] == (2, 3, 1)
    assert stream.upstream_request is not None and stream.upstream_request.body == b"abcde"


def test_request_level_buffering_gives_whole_body_at_end(load_probe: Callable[..., Probe]) -> None:
    probe = load_probe(clusters={"cluster": lambda req: (200, [], b"")})
    probe.ret("proxy_on_request_body", 1)
    probe.act("proxy_on_request_body", Act.HTTP_CALL)
    probe.act("proxy_on_http_call_response", Act.CONTINUE_STREAM2_REQUEST)
    resp = probe.host.request("POST", "/", body=[b"one", b"two", b"three"])
    assert resp.upstream_request is not None and resp.upstream_request.body == b"onetwothree"
    assert probe.args("proxy_on_request_body")[:3] == (2, 11, 1)  # the whole body at end of stream


def test_pause_without_resume_is_reported(probe: Probe) -> None:
    probe.ret("proxy_on_request_headers", 1)
    try:
        probe.host.request("GET", "/")
    except StreamStalled as exc:
        assert "paused the request" in str(exc)
    else:
        raise AssertionError("expected StreamStalled")


def test_set_buffer_bytes_semantics(probe: Probe) -> None:
    probe.ret("proxy_on_request_body", 1)
    stream = probe.host.http_stream()
    stream.request_headers([(":path", "/")])
    stream.request_body(b"hello world", end_of_stream=True)
    # start 0: replace `length` bytes with the data
    assert probe.call("proxy_set_buffer_bytes", 0, 0, 5, *probe.put("HOWDY"), on=stream) == Status.OK
    assert probe.call_out("proxy_get_buffer_bytes", 0, 0, 100, on=stream)[1] == b"HOWDY world"
    # start at/after the end: append
    assert probe.call("proxy_set_buffer_bytes", 0, 11, 0, *probe.put("!"), on=stream) == Status.OK
    # start in the middle: Envoy refuses
    assert probe.call("proxy_set_buffer_bytes", 0, 3, 1, *probe.put("x"), on=stream) == Status.BAD_ARGUMENT
    assert probe.call_out("proxy_get_buffer_bytes", 0, 0, 100, on=stream)[1] == b"HOWDY world!"
    # windows are clamped to the buffer
    assert probe.call_out("proxy_get_buffer_bytes", 0, 6, 100, on=stream)[1] == b"world!"
    pp, sp = probe.slot(), probe.slot()
    assert probe.call("proxy_get_buffer_bytes", 0, 50, 10, pp, sp, on=stream) == Status.OK
    assert (probe.u32_at(pp), probe.u32_at(sp)) == (0, 0)
    length, flags = probe.slot(), probe.slot()
    assert probe.call("proxy_get_buffer_status", 0, length, flags, on=stream) == Status.OK
    assert probe.u32_at(length) == 12


def test_http1_framing_and_stale_content_length(load_probe: Callable[..., Probe]) -> None:
    # HTTP/1: body frame (eos=0), then an empty eos=1 frame; the filter's action runs on both, and the
    # unchanged content-length (8) cuts what the upstream reads, as with real Envoy (which sends the
    # rest too: the upstream takes it as its next request). By default the host raises BodyOverrun.
    probe = load_probe()
    probe.act("proxy_on_request_body", Act.REPLACE_BODY)
    with pytest.raises(BodyOverrun):
        probe.host.request("POST", "/", body=b"original")
    probe = load_probe(raise_on_mistake=False)
    probe.act("proxy_on_request_body", Act.REPLACE_BODY)
    resp = probe.host.request("POST", "/", body=b"original")
    assert probe.args("proxy_on_request_body")[:3] == (2, 0, 1)
    assert resp.upstream_request is not None and resp.upstream_request.body == b"changedc"


def test_configuration_buffers(load_probe: Callable[..., Probe]) -> None:
    p = load_probe(vm_config=b"VMCFG", plugin_config=b"PLUGIN")
    assert p.call_out("proxy_get_buffer_bytes", BufferType.VM_CONFIGURATION, 0, 100) == (Status.OK, b"VMCFG")
    # The plugin configuration is only available while configuring.
    assert p.call_out("proxy_get_buffer_bytes", BufferType.PLUGIN_CONFIGURATION, 0, 100)[0] == Status.NOT_FOUND
    assert p.call("proxy_set_buffer_bytes", BufferType.VM_CONFIGURATION, 0, 0, *p.put("x")) == Status.BAD_ARGUMENT
    assert p.call_out("proxy_get_buffer_bytes", 9, 0, 1)[0] == Status.BAD_ARGUMENT


def test_trailers_added_from_body_at_end_of_stream(probe: Probe) -> None:
    probe.act("proxy_on_request_body", Act.ADD_REQUEST_TRAILER)
    resp = probe.host.request("POST", "/", body=b"x")
    assert probe.result == Status.OK
    assert resp.upstream_request is not None and resp.upstream_request.trailers == [("x-trailer", "1")]


def test_continue_inside_the_pausing_callback_takes_effect_at_the_next_frame(probe: Probe) -> None:
    # Envoy runs the deferred continue before its filter manager records the pause of that frame, so
    # it does nothing then; at the end-of-stream frame the stream is stopped, and the continue
    # releases it (real Envoy: the differential suite's "continue inside the pausing callback").
    probe.ret("proxy_on_request_body", 1)
    probe.act("proxy_on_request_body", Act.CONTINUE_REQUEST)
    resp = probe.host.request("POST", "/", body=b"x")
    assert resp.status == 200 and resp.upstream_request is not None and resp.upstream_request.body == b"x"
    assert probe.callbacks().count("on_request_body") == 2


def test_response_body_buffering(load_probe: Callable[..., Probe]) -> None:
    probe = load_probe(clusters={"cluster": lambda req: (200, [], b"")})
    probe.ret("proxy_on_response_body", 1)
    probe.act("proxy_on_response_body", Act.HTTP_CALL)
    probe.act("proxy_on_http_call_response", Act.CONTINUE_STREAM2_RESPONSE)
    resp = probe.host.request("POST", "/", body=b"abc")
    assert resp.body == b"abc"
    assert probe.args("proxy_on_response_body")[:3] == (2, 3, 1)

"""Host unit tests for the Envoy rules the differential suite checks against real Envoy
(tests/differential/test_differential_envoy_rules.py): the same rules, driven with the probe guest,
without an Envoy."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from guest import Act
from host_support import Probe

from proxywasm.abi import Status, encode_map
from proxywasm_host import CUT_OFF, RESET, SLOW, UNREACHABLE, Request, StreamStalled, echo_upstream

GRPC = ("content-type", "application/grpc")


# -- HEAD and bodiless responses -------------------------------------------------------------------------
def test_head_response_ends_on_its_headers(probe: Probe) -> None:
    resp = probe.host.request("HEAD", "/", upstream=lambda _req: (200, [("content-length", "241")], b"x" * 241))
    assert probe.args("proxy_on_response_headers")[2] == 1  # end_of_stream
    assert "on_response_body" not in probe.callbacks()
    assert resp.header("content-length") == "241" and resp.body == b""


def test_local_reply_to_head_keeps_its_length_and_sends_no_body(probe: Probe) -> None:
    probe.act("proxy_on_request_headers", Act.LOCAL_REPLY)
    resp = probe.host.request("HEAD", "/")
    assert resp.status == 403 and resp.header("content-length") == "7" and resp.body == b""


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_statuses_get_no_content_length(probe: Probe, status: int) -> None:
    resp = probe.host.request("GET", "/", upstream=lambda _req: (status, [("etag", "v")], b""))
    assert resp.status == status and resp.header("content-length") is None


def test_empty_200_gets_content_length_zero(probe: Probe) -> None:
    assert probe.host.request("GET", "/", upstream=lambda _req: (200, [], b"")).header("content-length") == "0"


# -- local replies to gRPC requests ------------------------------------------------------------------------
def test_local_reply_to_grpc_request_is_trailers_only(probe: Probe) -> None:
    probe.act("proxy_on_request_headers", Act.LOCAL_REPLY)  # 403 "denied\n", no gRPC status given
    resp = probe.host.request("POST", "/pkg.Svc/Do", headers=[GRPC], body=b"\0\0\0\0\0")
    assert resp.status == 200 and resp.body == b""
    assert resp.header("content-type") == "application/grpc"
    assert resp.header("grpc-status") == "7"  # PERMISSION_DENIED, from HTTP 403
    assert resp.header("grpc-message") == "denied%0A"
    assert resp.header("content-length") == "0"


# -- HTTP/1 framing --------------------------------------------------------------------------------------
def test_chunked_upload_hides_transfer_encoding(probe: Probe) -> None:
    stream = probe.host.http_stream()
    resp = stream.run("POST", "/", [("transfer-encoding", "chunked")], b"abc", None, echo_upstream)
    assert stream.request_headers_map is not None and stream.request_headers_map.get("transfer-encoding") is None
    assert resp.upstream_request is not None
    assert resp.upstream_request.header("transfer-encoding") == "chunked"  # the router frames it again


def test_filter_sees_upstream_transfer_encoding_client_gets_codec_framing(load_probe: Callable[..., Probe]) -> None:
    probe = load_probe()
    probe.act("proxy_on_response_headers", Act.ADD_RESPONSE_HEADER)
    resp = probe.host.request("GET", "/", upstream=lambda _req: (200, [("transfer-encoding", "chunked")], b"chunk"))
    names = [k for k, _ in resp.headers]
    assert names[-1] == "transfer-encoding" and names.index("x-added") < names.index("transfer-encoding")


def test_request_trailers_dropped_by_default(probe: Probe) -> None:
    resp = probe.host.request("POST", "/", body=b"abc", trailers=[("x-sum", "1")])
    assert "on_request_trailers" not in probe.callbacks()
    assert probe.args("proxy_on_request_body")[2] == 1  # the body still ends with end_of_stream
    assert resp.upstream_request is not None and resp.upstream_request.trailers == []


def test_request_trailers_reach_the_filter_when_enabled(load_probe: Callable[..., Probe]) -> None:
    probe = load_probe(request_trailers=True)
    resp = probe.host.request("POST", "/", body=b"abc", trailers=[("x-sum", "1")])
    assert "on_request_trailers" in probe.callbacks()
    assert resp.upstream_request is not None and resp.upstream_request.trailers == [("x-sum", "1")]


def test_body_behind_paused_headers_comes_in_one_callback(load_probe: Callable[..., Probe]) -> None:
    probe = load_probe(clusters={"cluster": lambda req: (200, [], b"")})
    probe.ret("proxy_on_request_headers", 1)
    probe.act("proxy_on_request_headers", Act.HTTP_CALL)
    probe.act("proxy_on_http_call_response", Act.CONTINUE_STREAM2_REQUEST)
    probe.host.request("POST", "/", body=b"held body")
    assert probe.callbacks().count("on_request_body") == 1
    assert probe.args("proxy_on_request_body")[1:3] == (9, 1)


def test_shrunk_body_with_stale_content_length_is_an_error(probe: Probe) -> None:
    # "changed" replaces the body frame, then is prepended to the empty end frame: 14 of 20 bytes.
    probe.act("proxy_on_request_body", Act.REPLACE_BODY)
    with pytest.raises(StreamStalled, match="content-length: 20 but the filter left 14 bytes"):
        probe.host.request("POST", "/", body=b"x" * 20)


# -- buffer limits ---------------------------------------------------------------------------------------
def test_request_over_the_buffer_limit_gets_413(load_probe: Callable[..., Probe]) -> None:
    probe = load_probe(buffer_limit=100)
    probe.ret("proxy_on_request_body", 1)  # StopIterationAndBuffer
    resp = probe.host.request("POST", "/", body=b"a" * 300)
    assert (resp.status, resp.body, resp.local_reply) == (413, b"Payload Too Large", True)
    # The headers callback let the headers go, but the 413 came in the same event-loop turn: the
    # upstream connection was not ready yet, so the upstream saw nothing (as in Envoy).
    assert resp.upstream_request is None and resp.details == "request_payload_too_large"
    assert probe.args("proxy_on_request_body")[2] == 0  # the filter never saw end_of_stream


def test_watermark_buffering_has_no_limit(load_probe: Callable[..., Probe]) -> None:
    probe = load_probe(buffer_limit=100, clusters={"cluster": lambda req: (200, [], b"")})
    probe.ret("proxy_on_request_headers", 1)  # StopAllIterationAndWatermark: flow control only
    probe.act("proxy_on_request_headers", Act.HTTP_CALL)
    probe.act("proxy_on_http_call_response", Act.CONTINUE_STREAM2_REQUEST)
    resp = probe.host.request("POST", "/", body=b"a" * 300)
    assert resp.status == 200 and resp.upstream_request is not None and len(resp.upstream_request.body) == 300


def test_response_over_the_buffer_limit(load_probe: Callable[..., Probe]) -> None:
    probe = load_probe(buffer_limit=100)
    probe.ret("proxy_on_response_body", 1)
    big = lambda _req: (200, [], b"b" * 300)  # noqa: E731
    assert probe.host.request("GET", "/", upstream=big).status == 0  # headers went out: reset
    probe.ret("proxy_on_response_headers", 3)  # StopAllIterationAndBuffer: the headers are held
    resp = probe.host.request("GET", "/", upstream=big)
    assert (resp.status, resp.body) == (500, b"Internal Server Error")


# -- allow_on_headers_stop_iteration ---------------------------------------------------------------------
@pytest.mark.parametrize("allow", [False, True])
def test_allow_on_headers_stop_iteration(load_probe: Callable[..., Probe], allow: bool) -> None:
    probe = load_probe(allow_on_headers_stop_iteration=allow)
    probe.ret("proxy_on_request_headers", 1)
    stream = probe.host.http_stream()
    stream.request_headers([(":method", "POST"), (":path", "/")])
    stream.request_body(b"abc")
    assert ("on_request_body" in probe.callbacks()) == allow


# -- callouts --------------------------------------------------------------------------------------------
def test_slow_cluster_times_out_with_504(load_probe: Callable[..., Probe]) -> None:
    probe = load_probe(clusters={"cluster": lambda req: SLOW})
    probe.act("proxy_on_request_headers", Act.HTTP_CALL)
    probe.ret("proxy_on_request_headers", 1)
    probe.act("proxy_on_http_call_response", Act.CONTINUE_STREAM2_REQUEST)
    before = probe.host.envoy.monotonic_ns
    probe.host.request("GET", "/")
    assert probe.host.envoy.monotonic_ns - before == 1_000_000_000  # the clock ran to the timeout
    _, _, headers, body = probe.args("proxy_on_http_call_response")
    assert (headers, body) == (3, len(b"upstream request timeout"))


@pytest.mark.parametrize(
    ("answer", "headers", "body"),
    [
        (UNREACHABLE, 3, b"remote connection failure"),
        (RESET, 3, b"connection termination"),
        (CUT_OFF, 0, b""),
    ],
)
def test_unreachable_reset_and_cut_off_callouts(
    load_probe: Callable[..., Probe], answer: object, headers: int, body: bytes
) -> None:
    probe = load_probe(clusters={"cluster": lambda req: answer})
    probe.act("proxy_on_request_headers", Act.HTTP_CALL)
    probe.ret("proxy_on_request_headers", 1)
    probe.act("proxy_on_http_call_response", Act.CONTINUE_STREAM2_REQUEST)
    probe.host.request("GET", "/")
    args = probe.args("proxy_on_http_call_response")
    assert args[2] == headers
    assert (args[3] > 0) == bool(body)


def test_advancing_the_clock_times_a_pending_callout_out(probe: Probe) -> None:
    probe.host.add_cluster("cluster")  # no handler: the call stays pending
    probe.act("proxy_on_tick", Act.HTTP_CALL)
    probe.call("proxy_set_tick_period_milliseconds", 1)
    probe.host.tick()
    probe.call("proxy_set_tick_period_milliseconds", 0)
    (call,) = probe.host.pending_http_calls
    assert probe.host.advance_time(999) == 0 and probe.host.pending_http_calls == [call]
    assert probe.host.advance_time(1) == 1 and probe.host.pending_http_calls == []
    assert probe.args("proxy_on_http_call_response")[2] == 3  # :status 504, content-length, content-type


def test_callout_answer_carries_content_length(load_probe: Callable[..., Probe]) -> None:
    probe = load_probe(clusters={"cluster": lambda req: (200, [], b"pong")})
    probe.act("proxy_on_tick", Act.HTTP_CALL)
    probe.call("proxy_set_tick_period_milliseconds", 1)
    probe.host.tick()
    probe.host.pump()
    # :status, the content-length of the upstream's framing, x-envoy-upstream-service-time; 4 bytes.
    assert probe.args("proxy_on_http_call_response")[2:4] == (3, 4)


def test_callout_drops_pseudo_headers_http1_cannot_carry(load_probe: Callable[..., Probe]) -> None:
    seen: list[Request] = []
    probe = load_probe(clusters={"c": lambda req: seen.append(req) or 200})
    hdrs = encode_map([(b":method", b"GET"), (b":path", b"/"), (b":authority", b"c"), (b":scheme", b"https"),
                       (b":foo", b"bar"), (b"x-k", b"v")])  # fmt: skip
    slot = probe.slot()
    assert probe.call("proxy_http_call", *probe.put("c"), *probe.put(hdrs), 0, 0, 0, 0, 100, slot) == Status.OK
    probe.host.pump()
    names = [k for k, _ in seen[0].headers]
    assert ":foo" not in names and ":scheme" in names and "x-k" in names


# -- FAIL_RELOAD, ticks, attributes ----------------------------------------------------------------------
def test_fail_reload_counts_the_backoff_from_the_last_load(load_probe: Callable[..., Probe]) -> None:
    probe = load_probe(raise_on_trap=False, fail_reload=True, reload_backoff_ms=300)
    probe.host.advance_time(1000)
    probe.act("proxy_on_request_headers", Act.TRAP)
    assert probe.host.request("GET", "/").status == 503
    # The next stream gets a new VM at once: the old one was loaded long ago.
    assert probe.host.request("GET", "/").status == 200 and probe.host.reloads == 1
    Probe(probe.host).act("proxy_on_request_headers", Act.TRAP)
    assert probe.host.request("GET", "/").status == 503  # the new VM fails soon after its load
    assert probe.host.request("GET", "/").status == 503 and probe.host.reloads == 1  # back-off not over
    probe.host.advance_time(300)
    assert probe.host.request("GET", "/").status == 200 and probe.host.reloads == 2


def test_workers_each_tick(load_probe: Callable[..., Probe]) -> None:
    probe = load_probe(workers=2)
    assert probe.host.vm_count == 3  # the main thread's VM and two workers'
    for vm in range(3):
        probe.host.raw.call("t_proxy_set_tick_period_milliseconds", 100, vm=vm)
    probe.host.clear_logs()
    probe.host.advance_time(100)
    assert probe.callbacks().count("on_tick") == 3


def test_attributes(probe: Probe) -> None:
    probe.ret("proxy_on_request_headers", 1)
    stream = probe.host.http_stream()
    stream.request_headers([(":method", "GET"), (":path", "/a")])

    def prop(*path: str) -> tuple[int, bytes]:
        return probe.call_out("proxy_get_property", *probe.put("\0".join(path)), on=stream)

    assert prop("node")[0] == Status.NOT_FOUND and prop("node", "id")[0] == Status.NOT_FOUND
    assert prop("xds", "node", "id") == (Status.OK, b"proxywasm-host")
    assert prop("xds", "cluster_name") == (Status.OK, b"upstream")
    assert prop("connection", "requested_server_name") == (Status.OK, b"")
    assert probe.call("proxy_set_property", *probe.put("k"), *probe.put("v1"), on=stream) == Status.OK
    assert prop("k") == (Status.OK, b"v1")
    assert prop("filter_state", "wasm.k") == (Status.OK, b"v1")
    assert prop("never", "set")[0] == Status.NOT_FOUND

"""http_call and gRPC callouts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from guest import Act
from host_support import Probe

from proxywasm.abi import BufferType, MapType, Status, encode_map
from proxywasm_host import RESET, GrpcReply, Request
from proxywasm_host.emulator.callouts import grpc_status_message
from proxywasm_host.emulator.http1 import refused_details


def test_unknown_cluster_is_bad_argument(probe: Probe) -> None:
    probe.host.add_cluster("auth")
    probe.act("proxy_on_request_headers", Act.HTTP_CALL)
    probe.host.request("GET", "/")
    assert probe.result == Status.BAD_ARGUMENT
    # Envoy says nothing; the host names the cluster and the ones it knows.
    assert (3, "http_call to unknown cluster 'cluster'; clusters known: auth") in probe.host.envoy_logs


def test_missing_required_headers_is_bad_argument(probe: Probe) -> None:
    probe.host.add_cluster("c")
    hdrs = encode_map([(b":method", b"GET"), (b":path", b"/")])  # no :authority
    slot = probe.slot()
    status = probe.call("proxy_http_call", *probe.put("c"), *probe.put(hdrs), 0, 0, 0, 0, 100, slot)
    assert status == Status.BAD_ARGUMENT


def test_callout_resumes_paused_request(load_probe: Callable[..., Probe]) -> None:
    seen: list[Request] = []

    def svc(req: Request) -> tuple[int, list[tuple[str, str]], bytes]:
        seen.append(req)
        return 201, [("x-r", "1")], b"pong"

    p = load_probe(clusters={"cluster": svc})
    p.act("proxy_on_request_headers", Act.HTTP_CALL)
    p.ret("proxy_on_request_headers", 1)
    p.act("proxy_on_http_call_response", Act.CONTINUE_STREAM2_REQUEST)
    resp = p.host.request("GET", "/")
    assert resp.status == 200 and resp.upstream_request is not None
    assert seen[0].path == "/c" and seen[0].body == b"ping"
    assert seen[0].header("x-envoy-internal") == "true"
    assert seen[0].header("x-envoy-expected-rq-timeout-ms") == "1000"
    # Delivered to the root context with header count, body size and trailer count; the headers are
    # :status, x-r, the content-length of the HTTP/1 upstream's framing and the
    # x-envoy-upstream-service-time Envoy's router adds (differential suite).
    assert p.args("proxy_on_http_call_response") == (1, p.token, 4, 4)


def test_manual_response_and_callout_buffers(probe: Probe) -> None:
    probe.host.add_cluster("cluster")
    probe.act("proxy_on_tick", Act.HTTP_CALL)
    probe.call("proxy_set_tick_period_milliseconds", 1)
    probe.host.tick()
    (call,) = probe.host.pending_http_calls
    assert call.token == probe.token and call.cluster == "cluster"
    probe.act("proxy_on_http_call_response", Act.NONE)
    call.respond(200, [("a", "b")], b"body")
    assert probe.host.pending_http_calls == []
    # After delivery the response is gone again.
    assert probe.call_out("proxy_get_buffer_bytes", BufferType.HTTP_CALL_RESPONSE_BODY, 0, 9)[0] == Status.NOT_FOUND
    k = probe.put("a")
    assert probe.call_out("proxy_get_header_map_value", MapType.HTTP_CALL_RESPONSE_HEADERS, *k)[0] == (
        Status.BAD_ARGUMENT
    )


def test_failed_call_delivers_zeros_and_status(probe: Probe) -> None:
    probe.host.add_cluster("cluster")
    probe.act("proxy_on_tick", Act.HTTP_CALL)
    probe.call("proxy_set_tick_period_milliseconds", 1)
    probe.host.tick()
    (call,) = probe.host.pending_http_calls
    call.cut_off()
    assert probe.args("proxy_on_http_call_response") == (1, call.token, 0, 0)


def test_unreachable_cluster_gets_synthetic_503(load_probe: Callable[..., Probe]) -> None:
    def dead(req: Request) -> None:
        raise ConnectionError("down")

    p = load_probe(clusters={"cluster": dead})
    p.act("proxy_on_request_headers", Act.HTTP_CALL)
    p.ret("proxy_on_request_headers", 1)
    p.act("proxy_on_http_call_response", Act.CONTINUE_STREAM2_REQUEST)
    p.host.request("GET", "/")
    body = b"upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
    assert p.args("proxy_on_http_call_response")[2:] == (3, len(body))


def test_grpc_call_and_reply(load_probe: Callable[..., Probe]) -> None:
    p = load_probe(clusters={"grpc": lambda call: GrpcReply(b"reply")})
    p.act("proxy_on_request_headers", Act.GRPC_CALL)
    p.ret("proxy_on_request_headers", 1)
    p.act("proxy_on_grpc_receive", Act.CONTINUE_STREAM2_REQUEST)
    resp = p.host.request("GET", "/")
    assert resp.status == 200
    assert p.token & 3 == 1  # gRPC call tokens carry type 1 in the low bits
    assert p.args("proxy_on_grpc_receive")[:3] == (1, p.token, 5)


def test_grpc_failure_goes_to_close_with_status(probe: Probe) -> None:
    probe.host.add_cluster("grpc")
    probe.act("proxy_on_tick", Act.GRPC_CALL)
    probe.call("proxy_set_tick_period_milliseconds", 1)
    probe.host.tick()
    (call,) = probe.host.pending_grpc_calls
    assert call.service == "pkg.Svc" and call.method == "Do" and call.request == b"ping"
    call.respond(None, status=14, status_message="unavailable")
    assert probe.args("proxy_on_grpc_close")[:3] == (1, call.token, 14)


def test_grpc_unknown_cluster_is_parse_failure(probe: Probe) -> None:
    probe.act("proxy_on_tick", Act.GRPC_CALL)
    probe.call("proxy_set_tick_period_milliseconds", 1)
    probe.host.tick()
    assert probe.result == Status.PARSE_FAILURE


def test_grpc_cancel_and_close_tokens(probe: Probe) -> None:
    assert probe.call("proxy_grpc_cancel", 4) == Status.BAD_ARGUMENT  # an http-call token
    assert probe.call("proxy_grpc_close", 5) == Status.NOT_FOUND


def test_grpc_metadata_envoy_cannot_send(probe: Probe) -> None:
    # Seen in Envoy 1.40 (a probe, before the SDK refused such metadata itself): a value with a
    # control character, or a name that is not a token, is refused by the codec. On the cluster's
    # first call the connection is not up yet: the call starts and ends UNAVAILABLE, saying why;
    # once the HTTP/2 connection is up, proxy_grpc_call itself answers INTERNAL_FAILURE. A "-bin"
    # value is any bytes (Envoy base64-encodes it).
    seen: list[list[tuple[str, str]]] = []
    probe.host.add_cluster("grpc", lambda call: (seen.append(call.metadata), GrpcReply(b"ok"))[1])

    def call(metadata: list[tuple[bytes, bytes]]) -> int:
        args = [*probe.put("grpc"), *probe.put("pkg.Svc"), *probe.put("Do"), *probe.put(encode_map(metadata))]
        return probe.call("proxy_grpc_call", *args, *probe.put("ping"), 1000, probe.slot())

    assert call([(b"x-m", b"a\r\nx-evil: 1")]) == Status.OK  # cold: accepted, then refused
    (refused,) = probe.host.pending_grpc_calls
    assert refused.refused == "invalid header value for: x-m"
    probe.host.pump()
    assert probe.args("proxy_on_grpc_close")[2] == 14 and seen == []  # the server saw nothing
    assert call([(b"x-ok", b"1")]) == Status.OK
    probe.host.pump()
    assert call([(b"x-m", b"a\x01b")]) == Status.INTERNAL_FAILURE  # the connection is up now
    assert call([(b"bad name", b"1")]) == Status.INTERNAL_FAILURE
    assert call([(b"x-m-bin", b"\r\n\x00\xff")]) == Status.OK
    probe.host.pump()
    assert seen[-1] == [("x-m-bin", "\r\n\x00\xff")]


def test_grpc_status_message_as_envoy_builds_it() -> None:
    # Envoy 1.40's enhancedGrpcMessage, with messages seen there.
    assert grpc_status_message("nope", "via_upstream") == "nope{via_upstream}"
    assert grpc_status_message("", "via_upstream") == "via_upstream"
    refused = "invalid header value for: x-m"
    assert grpc_status_message(refused, refused_details(refused)) == (
        "invalid header value for: x-m{filter_removed_required_request_headers{invalid_header_value_for:_x-m}}"
    )


def test_grpc_cluster_answering_an_http_only_outcome_is_named(probe: Probe) -> None:
    probe.host.add_cluster("grpc", RESET)
    args = [*probe.put("grpc"), *probe.put("pkg.Svc"), *probe.put("Do"), *probe.put(encode_map([]))]
    assert probe.call("proxy_grpc_call", *args, *probe.put("ping"), 1000, probe.slot()) == Status.OK
    with pytest.raises(TypeError, match="answered a gRPC call with RESET, which only HTTP callouts take"):
        while probe.host.pump():
            pass

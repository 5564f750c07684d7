"""send_local_response: deferred until the callback returns, then through the response callbacks."""

from __future__ import annotations

from guest import Act
from host_support import AS_DIR, Probe

from proxywasm.abi import Status
from proxywasm_host import Host


def test_local_reply_from_request_headers(probe: Probe) -> None:
    probe.act("proxy_on_request_headers", Act.LOCAL_REPLY)
    probe.host.clear_logs()
    resp = probe.host.request("GET", "/secret")
    assert probe.result == Status.OK
    assert resp.status == 403 and resp.local_reply
    assert resp.body == b"denied\n"
    assert resp.upstream_request is None
    assert resp.details == "denied_by_probe"
    # The reply ran through this filter's response callbacks, as Envoy's filter chain does.
    assert "on_response_headers" in probe.callbacks()
    names = [k for k, _ in resp.headers]
    assert names == ["x-deny", "content-length", "content-type", "date", "server"]
    assert resp.header("content-length") == "7"


def test_local_reply_response_hook_sees_status(probe: Probe) -> None:
    probe.act("proxy_on_request_headers", Act.LOCAL_REPLY)
    probe.act("proxy_on_response_headers", Act.ADD_RESPONSE_HEADER)
    resp = probe.host.request("GET", "/")
    assert resp.header("x-added") == "1"


def test_local_reply_from_response_headers_replaces_response(probe: Probe) -> None:
    probe.act("proxy_on_response_headers", Act.LOCAL_REPLY)
    resp = probe.host.request("GET", "/late")
    assert resp.upstream_request is not None  # the upstream was asked
    assert resp.status == 403 and resp.body == b"denied\n"
    assert resp.header("x-upstream") is None
    assert resp.header("x-envoy-upstream-service-time") is None


def test_local_reply_is_deferred(probe: Probe) -> None:
    probe.act("proxy_on_request_headers", Act.LOCAL_REPLY)
    stream = probe.host.http_stream()
    stream.request_headers([(":path", "/")])
    # The reply exists only after the callback returned, and the stream stopped.
    assert stream.local_reply is not None and stream.local_reply.status == 403


def test_close_stream_resets(probe: Probe) -> None:
    probe.act("proxy_on_request_headers", Act.CLOSE_REQUEST)
    resp = probe.host.request("GET", "/")
    assert resp.status == 0 and resp.details == "reset"
    assert resp.upstream_request is None


def test_unreachable_upstream_is_a_503_through_the_filter(probe: Probe) -> None:
    def down(req: object) -> None:
        raise ConnectionRefusedError

    probe.host.clear_logs()
    resp = probe.host.request("GET", "/", upstream=down)
    assert resp.status == 503 and resp.local_reply
    assert resp.body.startswith(b"upstream connect error")
    assert "on_response_headers" in probe.callbacks()


def test_reply_before_request_complete_closes_http1_connection(probe: Probe) -> None:
    # Real Envoy (differential suite): a reply while the request body is still unread announces
    # connection: close; a body-less request is complete with its headers.
    probe.act("proxy_on_request_headers", Act.LOCAL_REPLY)
    assert probe.host.request("POST", "/", body=b"unread").header("connection") == "close"
    assert probe.host.request("GET", "/").header("connection") is None


def test_reply_from_first_body_chunk_closes_http1_connection(probe: Probe) -> None:
    # HTTP/1 hands over the body with end_of_stream false, then an empty end-of-stream frame.
    probe.act("proxy_on_request_body", Act.LOCAL_REPLY)
    resp = probe.host.request("POST", "/", body=b"abc")
    assert resp.status == 403 and resp.header("connection") == "close"


def test_local_reply_after_response_headers_went_out_resets(probe: Probe) -> None:
    # Envoy cannot replace a response whose headers the client already has: it resets the stream.
    # The reply comes from the callback of the body frame, which never reaches the client: the
    # response is cut short (a reply at the empty end-of-stream frame, after the body went out, is
    # in the differential suite: there the client has read everything).
    probe.act("proxy_on_response_body", Act.LOCAL_REPLY)
    cut = probe.host.request("POST", "/", body=b"abc")
    assert cut.status == 0 and cut.details == "reset"


def test_400_local_reply_closes_http1_connection() -> None:
    # Real Envoy (differential suite): after a 400 local reply it never keeps the connection, even
    # for a complete request; an upstream's 400 leaves it open.
    host = Host.load(AS_DIR / "deny.wasm", root_id="deny")
    assert host.request("GET", "/", headers=[("x-local-status", "400")]).header("connection") == "close"
    assert host.request("GET", "/", headers=[("x-local-status", "401")]).header("connection") is None

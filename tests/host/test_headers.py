"""Header-map host functions against Envoy's semantics."""

from __future__ import annotations

from host_support import Probe

from proxywasm.abi import MapType, Status, decode_map, encode_map
from proxywasm_host import Action


def _paused_stream(probe: Probe, headers: list[tuple[str, str]]) -> object:
    probe.ret("proxy_on_request_headers", 1)
    stream = probe.host.http_stream()
    assert stream.request_headers(headers) == Action.PAUSE
    return stream


def test_get_returns_first_value_and_lowercases(probe: Probe) -> None:
    stream = _paused_stream(probe, [(":path", "/"), ("X-Multi", "a"), ("x-multi", "b")])
    k = probe.put("X-MULTI")
    status, value = probe.call_out("proxy_get_header_map_value", MapType.HTTP_REQUEST_HEADERS, *k, on=stream)
    assert (status, value) == (Status.OK, b"a")
    status, raw = probe.call_out("proxy_get_header_map_pairs", MapType.HTTP_REQUEST_HEADERS, on=stream)
    assert decode_map(raw) == [(b":path", b"/"), (b"x-multi", b"a"), (b"x-multi", b"b")]


def test_missing_header_is_not_found(probe: Probe) -> None:
    stream = _paused_stream(probe, [(":path", "/")])
    k = probe.put("nope")
    status, _ = probe.call_out("proxy_get_header_map_value", 0, *k, on=stream)
    assert status == Status.NOT_FOUND


def test_add_replace_remove(probe: Probe) -> None:
    stream = _paused_stream(probe, [(":path", "/"), ("a", "1"), ("a", "2"), ("b", "x")])
    assert probe.call("proxy_add_header_map_value", 0, *probe.put("C"), *probe.put("3"), on=stream) == Status.OK
    assert probe.call("proxy_replace_header_map_value", 0, *probe.put("a"), *probe.put("9"), on=stream) == Status.OK
    assert probe.call("proxy_remove_header_map_value", 0, *probe.put("b"), on=stream) == Status.OK
    # replace drops every old value and appends the new one, as Envoy's setCopy does.
    assert stream.request_headers_map.items() == [(":path", "/"), ("c", "3"), ("a", "9")]


def test_pseudo_headers_stay_in_front(probe: Probe) -> None:
    stream = _paused_stream(probe, [(":path", "/"), ("a", "1")])
    probe.call("proxy_add_header_map_value", 0, *probe.put(":x"), *probe.put("y"), on=stream)
    assert [k for k, _ in stream.request_headers_map.items()] == [":path", ":x", "a"]


def test_set_pairs_and_size(probe: Probe) -> None:
    stream = _paused_stream(probe, [(":path", "/"), ("a", "1")])
    data = encode_map([(b"K", b"v"), (b"k2", b"vv")])
    assert probe.call("proxy_set_header_map_pairs", 0, *probe.put(data), on=stream) == Status.OK
    assert stream.request_headers_map.items() == [("k", "v"), ("k2", "vv")]
    slot = probe.slot()
    assert probe.call("proxy_get_header_map_size", 0, slot, on=stream) == Status.OK
    assert probe.u32_at(slot) == len("kvk2vv")  # Envoy's byteSize: keys + values


def test_bad_map_type(probe: Probe) -> None:
    stream = _paused_stream(probe, [(":path", "/")])
    k = probe.put("a")
    assert probe.call("proxy_add_header_map_value", 8, *k, *k, on=stream) == Status.BAD_ARGUMENT
    assert probe.call_out("proxy_get_header_map_pairs", 99, on=stream)[0] == Status.BAD_ARGUMENT


def test_maps_unavailable_after_continue(probe: Probe) -> None:
    stream = probe.host.http_stream()
    assert stream.request_headers([(":path", "/")]) == Action.CONTINUE
    k = probe.put("x")
    # Envoy drops its pointer to the request headers once the filter continued.
    assert probe.call("proxy_add_header_map_value", 0, *k, *k, on=stream) == Status.BAD_ARGUMENT
    status, raw = probe.call_out("proxy_get_header_map_pairs", 0, on=stream)
    assert (status, raw) == (Status.OK, b"")


def test_response_map_absent_during_request(probe: Probe) -> None:
    stream = _paused_stream(probe, [(":path", "/")])
    k = probe.put("x")
    assert probe.call("proxy_add_header_map_value", 2, *k, *k, on=stream) == Status.BAD_ARGUMENT


def test_callout_maps_are_read_only(probe: Probe) -> None:
    # get_header_map_size uses Envoy's mutable lookup: callout maps answer BAD_ARGUMENT.
    slot = probe.slot()
    assert probe.call("proxy_get_header_map_size", MapType.HTTP_CALL_RESPONSE_HEADERS, slot) == Status.BAD_ARGUMENT


def test_filter_modifications_reach_upstream(probe: Probe) -> None:
    from guest import Act

    probe.act("proxy_on_request_headers", Act.ADD_REQUEST_HEADER)
    resp = probe.host.request("GET", "/p", headers=[("x-a", "1")])
    assert probe.result == Status.OK
    assert resp.upstream_request is not None
    assert resp.upstream_request.header("x-added") == "1"


def test_request_header_order_like_envoy(probe: Probe) -> None:
    resp = probe.host.request("POST", "/p", headers=[("x-echo", "A")], body=b"abc")
    assert resp.upstream_request is not None
    names = [k for k, _ in resp.upstream_request.headers]
    assert names[:4] == [":authority", ":path", ":method", ":scheme"]
    assert names[4:] == [
        "x-echo",
        "content-length",
        "x-forwarded-proto",
        "x-request-id",
        "x-envoy-expected-rq-timeout-ms",
    ]

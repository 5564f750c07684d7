"""AssemblyScript (proxy-runtime 0.1.8, ABI 0.2.0) fixture modules through the local host.

The expectations mirror what tests/envoy observed from a real Envoy 1.40 with the same modules.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from host_support import AS_DIR

from proxywasm_host import SLOW, Host, PeerType, Request, Response, WasmTrap

pytestmark = pytest.mark.skipif(not (AS_DIR / "headers.wasm").exists(), reason="AS modules not built")


def _load(name: str, **options: object) -> Host:
    return Host.load(AS_DIR / f"{name}.wasm", root_id=name, plugin_name=f"p_{name}", **options)


def json_upstream(req: Request) -> tuple[int, list[tuple[str, str]], bytes]:
    body = json.dumps({"path": req.path, "body": req.body.decode()}).encode()
    return 200, [("content-type", "application/json"), ("content-length", str(len(body)))], body


def test_headers_seen_in_envoy_order() -> None:
    host = _load("headers")
    reply = host.request("POST", "/p?q=1", body=b"abc", headers=[("x-echo", "A")])
    assert reply.status == 200
    seen = reply.header("x-seen-request-headers") or ""
    assert seen.split(",")[:4] == [":authority", ":path", ":method", ":scheme"]
    # The client's headers (in the client's order), then what the connection manager adds.
    assert seen.split(",")[4:] == ["x-echo", "content-length", "x-forwarded-proto", "x-request-id"]
    assert reply.header("x-echo-back") == "A"
    assert reply.header("server") == "envoy"
    upstream = reply.upstream_request
    assert upstream is not None
    assert upstream.header("x-as-request") == "added-by-as"
    names = [k for k, _ in upstream.headers]
    assert names.index("x-as-request") < names.index("x-envoy-expected-rq-timeout-ms")


def test_local_reply_shape_matches_envoy() -> None:
    host = _load("deny")
    reply = host.request("GET", "/secret")
    assert reply.status == 403 and reply.local_reply
    assert reply.body == b"denied by as\n"
    assert reply.upstream_request is None
    assert [k for k, _ in reply.headers] == [
        "x-deny-reason",
        "content-type",
        "content-length",
        "x-deny-response-hook",
        "date",
        "server",
    ]
    late = host.request("GET", "/late", headers=[("x-token", "t"), ("x-deny-on-response", "1")])
    assert late.status == 502 and late.body == b"response denied by as\n"
    assert late.upstream_request is not None
    assert late.header("x-deny-response-hook") is None


def test_body_rewrite_and_http1_framing() -> None:
    host = _load("body")
    reply = host.request("POST", "/b", body=b"hello body", upstream=json_upstream)
    assert reply.upstream_request is not None
    assert reply.upstream_request.body == b"request:HELLO BODY"
    assert reply.upstream_request.header("transfer-encoding") == "chunked"
    assert json.loads(reply.body[2:-2])["body"] == "request:HELLO BODY"
    assert reply.header("transfer-encoding") == "chunked"
    chunks = [m for _, m in host.logs if m.startswith("request body chunk")]
    assert chunks == ["request body chunk size=10 eos=0", "request body chunk size=10 eos=1"]


def test_body_rewrite_with_stale_content_length() -> None:
    # By default the host raises BodyOverrun (tests/host/test_body_overrun.py); like Envoy, this
    # host only logs it and shows what the peers read of each message.
    host = _load("body", plugin_config="keep-content-length", raise_on_mistake=False)
    reply = host.request("POST", "/b", body=b"hello body", upstream=json_upstream)
    assert reply.upstream_request is not None
    assert reply.upstream_request.body == b"request:HE"
    assert len(reply.body) == int(reply.header("content-length") or -1)
    assert any("the request says content-length: 10 but the filter left" in m for _, m in host.envoy_logs)


def test_config_reaches_filter() -> None:
    host = _load("config", plugin_config='{"a": 1}')
    assert host.request().header("x-plugin-config") == '{"a": 1}'
    assert any(m == 'on_configure: config={"a": 1}' for _, m in host.logs)


def test_callout_paths() -> None:
    calls: list[Request] = []

    def callout(req: Request) -> tuple[int, list[tuple[str, str]], bytes]:
        calls.append(req)
        return 201, [("x-callout-reply", "pong")], b"callout-ok"

    def dead(req: Request) -> None:
        raise ConnectionError

    host = _load("callout", clusters={"callout": callout, "dead": dead})
    reply = host.request("GET", "/c")
    assert reply.status == 200 and calls[0].path == "/callout?from=as"
    assert calls[0].header("x-envoy-internal") == "true"
    upstream = reply.upstream_request
    assert upstream is not None
    assert upstream.header("x-callout-status") == "201"
    assert upstream.header("x-callout-body") == "callout-ok"
    unknown = host.request("GET", "/c", headers=[("x-callout-cluster", "nope")])
    assert unknown.status == 500 and unknown.body == b"http_call failed: 2\n"
    unreachable = host.request("GET", "/c", headers=[("x-callout-cluster", "dead")])
    assert unreachable.upstream_request is not None
    assert unreachable.upstream_request.header("x-callout-status") == "503"


def test_metrics_by_name() -> None:
    host = _load("metrics")
    for _ in range(3):
        host.request("GET", "/m")
    host.request("GET", "/abcdef", headers=[("x-count", "5")])
    assert host.metric("as_requests_total") == 4
    assert host.metric("wasmcustom.as_units_total") == 5
    assert host.metric("as_last_path_len") == len("/abcdef")


def test_shared_data_across_two_vms() -> None:
    first = _load("shared")
    second = _load("shared", envoy=first.envoy)
    assert first.request().header("x-shared-hits") == "1"
    assert second.request().header("x-shared-hits") == "2"
    assert second.request().header("x-vm-hits") == "2"
    missing = first.request(headers=[("x-shared-get", "nope")])
    assert missing.header("x-shared-get-status") == "1"


def test_network_filter_order() -> None:
    host = _load("network")
    conn = host.connection()
    conn.new_connection()
    conn.downstream_data(b"GET /tcp HTTP/1.1\r\n\r\n")
    conn.upstream_data(b"HTTP/1.1 200 OK\r\n\r\n", end_of_stream=True)
    conn.close_downstream(PeerType.REMOTE)
    messages = [m for _, m in host.logs]
    assert "tcp new connection" in messages
    assert "tcp upstream close peer=0" in messages
    ends = [m.rsplit(": ", 1)[1] for m in messages if m.startswith("context id: 2: on")]
    assert ends == ["onDone()", "onLog()", "onDelete()"]
    assert host.metric("as_tcp_connections") == 1


def test_trap_fails_closed() -> None:
    host = _load("trap")
    assert host.request().header("x-vm-requests") == "1"
    with pytest.raises(WasmTrap, match="Uncaught RuntimeError: unreachable"):
        host.request(headers=[("x-trap", "abort")])
    later = host.request()
    assert later.status == 503 and later.body == b""
    assert [k for k, _ in later.headers] == ["date", "server", "content-length"]


def test_logging_levels() -> None:
    host = _load("logging")
    host.request("GET", "/p")
    assert (3, "log-test level=warn path=/p") in host.logs


def test_load_speed_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROXYWASM_CACHE_DIR", str(tmp_path))
    _load("headers")
    assert list((tmp_path / "host").glob("*.cwasm"))


def test_no_body_on_a_204_local_reply() -> None:
    # Real Envoy (differential suite): the filter's body and content-length stay in the headers,
    # but an HTTP/1 client reads no body after a 204.
    reply = _load("deny").request("GET", "/", headers=[("x-local-status", "204")])
    assert reply.status == 204 and reply.body == b""


def test_a_callout_connection_is_reused_only_after_a_whole_answer_that_keeps_it() -> None:
    """Envoy's HTTP/1 pool, as the differential suite measured it: a callout whose headers Envoy's
    codec refuses fails inside http_call (INTERNAL_FAILURE: the AS filter answers 500) when an idle
    connection was ready, and is answered 503 later on a new one. A timed-out call closed its
    connection; an answer with ``connection: close`` did not give it back."""
    answers = iter([200, SLOW, 200, 200, (200, [("connection", "close")], b"")])

    def svc(req: Request) -> object:
        return next(answers)

    host = _load("callout", clusters={"callout": svc})
    bad = [("x-callout-inject-chars", "d,a")]

    def status_seen(reply: Response) -> str | None:
        return reply.upstream_request.header("x-callout-status") if reply.upstream_request else None

    assert status_seen(host.request("GET", "/ok")) == "200"  # a new connection, kept: now idle
    assert status_seen(host.request("GET", "/slow")) == "504"  # took the idle one; the timeout closed it
    refused = host.request("GET", "/bad", headers=bad)
    assert status_seen(refused) == "503" and refused.upstream_request is not None  # no idle connection: a new one
    assert status_seen(host.request("GET", "/ok")) == "200"  # kept: idle again
    assert host.request("GET", "/bad", headers=bad).status == 500  # refused at once: INTERNAL_FAILURE
    assert status_seen(host.request("GET", "/ok")) == "200"
    assert status_seen(host.request("GET", "/close")) == "200"  # took the idle one; connection: close
    assert status_seen(host.request("GET", "/bad", headers=bad)) == "503"


def test_a_reloaded_vm_keeps_its_workers_connection_pool() -> None:
    host = _load("callout", clusters={"callout": lambda req: 200})
    host.request("GET", "/ok")
    host.reload()
    assert host.request("GET", "/bad", headers=[("x-callout-inject-chars", "d,a")]).status == 500

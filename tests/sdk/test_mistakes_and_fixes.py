"""Author mistakes caught at run time, and the header/text fixes, in the local host and in real
Envoy 1.40 (one filter, filters.MISTAKES)."""

from __future__ import annotations

import http.client
import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pytest
from filters import CONFIGURE_NONE, MISTAKES
from wire import WireServer, respond

from proxywasm.abi import AUTHOR_MISTAKE_PREFIX
from proxywasm_build.envoy import Cluster, Envoy, EnvoyError, WasmPlugin, http_bootstrap
from proxywasm_host import AuthorMistake, ConfigureError, Host, Request

MISTAKE = AUTHOR_MISTAKE_PREFIX
Mode = Literal["native", "wasm"]


@pytest.fixture(scope="module")
def wasm(build_filter: Callable[[str], Path]) -> Path:
    return build_filter(MISTAKES)


def built_or_source(wasm: Path, mode: Mode) -> Path:
    """What Host.load takes to run the MISTAKES filter in ``mode``: the module, or the source
    build_filter built it from."""
    return wasm.parent / wasm.stem / "filter.py" if mode == "native" else wasm


def svc(request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
    return 200, [("x-svc", "caf\xe9")], f"{request.method} {request.path}".encode()


# ---- local host ----


def test_host_forgotten_pause_is_logged(wasm: Path) -> None:
    # By default the host fails the test where Envoy would only log the line.
    with pytest.raises(AuthorMistake, match=r"^Stream.on_request_headers started a callout"):
        Host.load(wasm, clusters={"svc": svc}).request("GET", "/forgot-pause")
    host = Host.load(wasm, clusters={"svc": svc}, raise_on_mistake=False)
    host.request("GET", "/forgot-pause")
    (line,) = [m for m in host.log_messages() if m.startswith(MISTAKE)]
    assert line == (
        f"{MISTAKE}Stream.on_request_headers started a callout (http_call to cluster 'svc') and returned CONTINUE: "
        "Envoy forwarded the request without waiting for the answer (resuming the stream from the callout's "
        "callback then fails). Return Action.PAUSE and resume from the callback, or await the callout in an async "
        "def callback; for a callout the stream should not wait for, pass detach=True"
    )
    host.clear_logs()
    # Without a callback, http_call returns something to await; this filter has no async def.
    assert host.request("GET", "/unawaited").status == 500
    assert any(
        m.startswith(MISTAKE + "exception in Stream.on_request_headers")
        and "http_call to cluster 'svc' without a callback returns something to await" in m
        for m in host.log_messages()
    )
    host.clear_logs()
    assert host.request("GET", "/detached").status == 200
    assert not [m for m in host.log_messages() if m.startswith(MISTAKE)]


FORGOT_RESUME = (
    "Stream.on_request_headers paused the request for a callout (http_call to cluster 'svc'), and the callout's "
    "callback returned without resuming it: call self.resume_request() (or answer with self.send_response(...)) in "
    "the callback, or Envoy holds the request until a timeout"
)


def test_host_a_callout_callback_that_neither_resumes_nor_answers_is_named(wasm: Path) -> None:
    with pytest.raises(AuthorMistake, match="^" + re.escape(FORGOT_RESUME)):
        Host.load(wasm, clusters={"svc": svc}).request("GET", "/forgot-resume")
    # The usual callback resumes (or answers): nothing to say.
    host = Host.load(wasm, clusters={"svc": svc})
    assert host.request("GET", "/pseudo").status == 200
    assert not [m for m in host.log_messages() if m.startswith(MISTAKE)]


BAD_RESULTS = [
    ("/returns-true", "returned True (a bool: Envoy would read True as PAUSE)"),
    ("/returns-str", "returned 'continue'"),
    ("/returns-200", "returned 200"),
]
NOT_AN_ACTION = (
    ": a stream callback returns an Action (Action.CONTINUE, Action.PAUSE, ...) or None for CONTINUE; the plugin's "
    "failure policy applies"
)


@pytest.mark.parametrize("mode", ["native", "wasm"])
def test_host_a_result_that_is_not_an_action_is_named_and_fails_closed(wasm: Path, mode: Mode) -> None:
    source = built_or_source(wasm, mode)
    for path, what in BAD_RESULTS:
        with pytest.raises(AuthorMistake, match="^" + re.escape(f"Stream.on_request_headers {what}")) as raised:
            Host.load(source, mode=mode).request("GET", path)
        # Raised from the request headers' call, not from the failure reply's on_response_headers
        # that ran after it (the traceback a test shows ends where the mistake was made).
        frames = [frame.name for frame in raised.traceback]
        assert "decode_headers" in frames and "encode_headers" not in frames, frames
        host = Host.load(source, mode=mode, raise_on_mistake=False)
        response = host.request("GET", path)
        assert (response.status, response.upstream_request) == (500, None)  # the default policy: FAIL_CLOSED
        assert [m for m in host.log_messages() if m.startswith(MISTAKE)] == [
            f"{MISTAKE}Stream.on_request_headers {what}{NOT_AN_ACTION}"
        ]
    host.clear_logs()
    response = host.request("GET", "/reply-then-true")
    assert (response.status, response.body, response.upstream_request) == (403, b"no tenant\n", None)
    assert [m for m in host.log_messages() if m.startswith(MISTAKE)] == [REPLY_STANDS]


REPLY_STANDS = (
    f"{MISTAKE}Stream.on_request_headers returned True (a bool: Envoy would read True as PAUSE): a stream callback "
    "returns an Action (Action.CONTINUE, Action.PAUSE, ...) or None for CONTINUE; the local reply it sent stands"
)


CONTROL = (
    "contains a control character (CR, LF, NUL, ... any below 0x20 but HT, or DEL): Envoy refuses to send it on a "
    "request (503 invalid header value) and writes it to the client as it is on a response (header injection); "
    "remove or encode them"
)
BAD_HEADERS = [
    ("/header-injection", f"ValueError: the value of header 'x-a' {CONTROL}"),
    ("/control-character", f"ValueError: the value of header 'x-b' {CONTROL}"),
    ("/reply-header-injection", f"ValueError: the value of header 'x-reason' {CONTROL}"),
    ("/path-with-space", "ValueError: the value of ':path' contains a space or a tab: Envoy writes it into the "
     "request line as it is, and the upstream reads a broken request (400); percent-encode it (%20)"),
    ("/path-with-space-and-cr", f"ValueError: the value of header ':path' {CONTROL}"),
    ("/callout-header-injection", f"ValueError: the value of header 'x-c' {CONTROL}"),
    ("/bad-header-name", "ValueError: 'x upper case' is not a valid header name: an HTTP token (letters, digits and "
     "!#$%&'*+-.^_`|~) that Envoy can send"),
]  # fmt: skip


@pytest.mark.parametrize("mode", ["native", "wasm"])
def test_host_a_header_envoy_cannot_send_is_refused_at_the_write(wasm: Path, mode: Mode) -> None:
    source = built_or_source(wasm, mode)
    host = Host.load(source, mode=mode, clusters={"svc": svc}, raise_on_mistake=False)
    for path, error in BAD_HEADERS:
        host.clear_logs()
        response = host.request("GET", path)
        assert (response.status, response.upstream_request) == (500, None)
        (line,) = [m for m in host.log_messages() if "exception in Stream.on_request_headers" in m]
        assert error in line, line
        # The traceback starts at the filter's line (the dispatcher's frames are left out); the
        # SDK's frame that raised stays below it.
        traceback = line.split("\n")
        assert traceback[1] == "Traceback (most recent call last):" and "filter.py" in traceback[2], line


@pytest.mark.parametrize("mode", ["native", "wasm"])
def test_host_an_unawaited_callout_in_a_filter_without_async_def_is_named(wasm: Path, mode: Mode) -> None:
    # Natively the SDK's coroutine driver is not loaded either (the build saw no async def): the same
    # message, not a compile error from importing it at run time.
    source = built_or_source(wasm, mode)
    host = Host.load(source, mode=mode, clusters={"svc": svc}, raise_on_mistake=False)
    assert host.request("GET", "/unawaited").status == 500
    (line,) = [m for m in host.log_messages() if m.startswith(MISTAKE + "exception in Stream.on_request_headers")]
    assert "UsageError: http_call to cluster 'svc' without a callback returns something to await" in line, line


def test_host_unknown_cluster_is_named(wasm: Path) -> None:
    host = Host.load(wasm, clusters={"svc": svc})
    assert host.request("GET", "/no-cluster").status == 500  # the exception meets FAIL_CLOSED
    assert "HostCallError: proxy_http_call failed: BAD_ARGUMENT: cluster 'nope': Envoy has no cluster" in "\n".join(
        host.log_messages()
    )


def test_host_second_local_reply_is_refused(wasm: Path) -> None:
    with pytest.raises(AuthorMistake, match="LocalReplyAlreadySent"):
        Host.load(wasm).request("GET", "/two-replies-uncaught")
    host = Host.load(wasm, raise_on_mistake=False)
    response = host.request("GET", "/two-replies")
    assert (response.status, response.body) == (403, b"first")
    assert any(m.startswith("refused: Stream.send_response(500): this stream already has") for m in host.log_messages())
    host.clear_logs()
    response = host.request("GET", "/two-replies-uncaught")
    assert (response.status, response.body) == (403, b"first")
    assert any(m.startswith(MISTAKE + "exception in Stream.on_response_headers") and "LocalReplyAlreadySent" in m
               for m in host.log_messages())  # fmt: skip


def test_host_headers_read_after_they_went_on(wasm: Path) -> None:
    host = Host.load(wasm)
    host.request("POST", "/late-read", body=b"data")
    (line,) = [m for m in host.log_messages() if m.startswith("unavailable")]
    assert line.startswith(
        "unavailable: proxy_get_header_map_value failed: BAD_ARGUMENT: the request headers are not available in "
        "on_request_body: Envoy holds them only during on_request_headers"
    )


def test_host_len_counts_pairs(wasm: Path) -> None:
    host = Host.load(wasm)
    response = host.request("GET", "/count", headers=[("a", "1")])
    assert response.upstream_request is not None
    names = [k for k, _ in response.upstream_request.headers if k != "x-envoy-expected-rq-timeout-ms"]
    assert response.upstream_request.header("x-count") == str(len(names) - 1)  # all but x-count itself


def test_host_held_stream_headers_from_on_tick(wasm: Path) -> None:
    host = Host.load(wasm)
    stream = host.http_stream()
    stream.request_headers([(":path", "/hold"), (":method", "GET")])
    host.advance_time(150)
    assert stream.request_headers_map.get("x-from-tick") == b"/hold"


def test_host_callout_headers_and_explicit_pseudo_headers(wasm: Path) -> None:
    seen: list[Request] = []
    host = Host.load(wasm, clusters={"svc": lambda r: (seen.append(r), svc(r))[1]})
    response = host.request("GET", "/pseudo")
    assert (seen[0].method, seen[0].path) == ("PUT", "/explicit")
    assert response.body == b"PUT /explicit"
    assert response.header("x-svc-type") == "HeaderPairs"
    assert response.header("x-svc-bytes") == "b'caf\\xc3\\xa9'"


def test_host_on_configure_none(build_filter: Callable[[str], Path]) -> None:
    wasm = build_filter(CONFIGURE_NONE)
    with pytest.raises(AuthorMistake, match=r"on_configure returned None \(return True to accept\)"):
        Host.load(wasm)
    with pytest.raises(ConfigureError):  # what Envoy does: reject the configuration
        Host.load(wasm, raise_on_mistake=False)


# ---- real Envoy ----


@pytest.fixture(scope="module")
def envoy(wasm: Path) -> Iterator[tuple[Envoy, WireServer, WireServer]]:
    def answer(seen):  # type: ignore[no-untyped-def]
        return respond(200, f"{seen.head.split()[0].decode()} {seen.path}".encode(), (("x-svc", "caf\xe9"),))

    with WireServer() as upstream, WireServer(answer) as service:
        config = http_bootstrap(upstream_port=upstream.port, plugins=[WasmPlugin(wasm, name="mistakes")],
                                clusters=[Cluster("svc", service.port)])  # fmt: skip
        with Envoy(config) as running:
            yield running, upstream, service


def get(
    envoy: Envoy, path: str, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", envoy.port(), timeout=15)
    try:
        conn.request("POST" if body is not None else "GET", path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def wasm_lines(envoy: Envoy, offset: int) -> list[str]:
    from proxywasm_build.envoy import parse_log

    return [ln.message.split(": ", 1)[1] for ln in parse_log(envoy.log_since(offset)) if ln.logger == "wasm"]


def test_envoy_forgotten_pause_is_logged(envoy: tuple[Envoy, WireServer, WireServer]) -> None:
    proxy, _, _ = envoy
    offset = len(proxy.logs())
    assert get(proxy, "/forgot-pause")[0] == 200
    proxy.wait_for_log("author mistake: Stream.on_request_headers started a callout")
    assert get(proxy, "/detached")[0] == 200
    assert get(proxy, "/sync-after")[0] == 200
    lines = [m for m in wasm_lines(proxy, offset) if m.startswith(MISTAKE)]
    assert len(lines) == 1 and "(http_call to cluster 'svc') and returned CONTINUE" in lines[0]


def test_envoy_a_result_that_is_not_an_action_is_named_and_fails_closed(
    envoy: tuple[Envoy, WireServer, WireServer],
) -> None:
    proxy, _, _ = envoy
    for path, what in BAD_RESULTS:
        offset = len(proxy.logs())
        assert get(proxy, path)[0] == 500  # not held (True would read as PAUSE), not let through
        proxy.wait_for_log(re.escape(f"author mistake: Stream.on_request_headers {what}"))
        assert [m for m in wasm_lines(proxy, offset) if m.startswith(MISTAKE)] == [
            f"{MISTAKE}Stream.on_request_headers {what}{NOT_AN_ACTION}"
        ]
    offset = len(proxy.logs())
    status, _, body = get(proxy, "/reply-then-true")
    assert (status, body) == (403, b"no tenant\n")
    proxy.wait_for_log(re.escape("the local reply it sent stands"))
    assert [m for m in wasm_lines(proxy, offset) if m.startswith(MISTAKE)] == [REPLY_STANDS]


def test_envoy_a_header_envoy_cannot_send_is_refused_at_the_write(
    envoy: tuple[Envoy, WireServer, WireServer],
) -> None:
    proxy, upstream, _ = envoy
    for path, error in BAD_HEADERS:
        offset = len(proxy.logs())
        assert get(proxy, path)[0] == 500
        proxy.wait_for_log(re.escape(error))
        assert not [s for s in upstream.seen if s.path == path]  # nothing reached the upstream
        assert any("exception in Stream.on_request_headers" in m for m in wasm_lines(proxy, offset))


def test_envoy_a_callout_callback_that_neither_resumes_nor_answers_is_named(
    envoy: tuple[Envoy, WireServer, WireServer],
) -> None:
    proxy, _, _ = envoy
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port(), timeout=15)
    try:
        conn.request("GET", "/forgot-resume")  # held: Envoy answers nothing until a timeout
        proxy.wait_for_log(re.escape(f"{MISTAKE}{FORGOT_RESUME}"))
    finally:
        conn.close()


def test_envoy_second_local_reply_is_refused(envoy: tuple[Envoy, WireServer, WireServer]) -> None:
    proxy, _, _ = envoy
    assert get(proxy, "/two-replies")[::2] == (403, b"first")
    status, _, body = get(proxy, "/two-replies-uncaught")
    assert (status, body) == (403, b"first")
    proxy.wait_for_log("LocalReplyAlreadySent")
    assert proxy.running  # a second reply would have crashed Envoy 1.40 (SIGSEGV)
    assert get(proxy, "/after")[0] == 200


def test_envoy_headers_read_after_they_went_on(envoy: tuple[Envoy, WireServer, WireServer]) -> None:
    proxy, _, _ = envoy
    assert get(proxy, "/late-read", body=b"data")[0] == 200
    match = proxy.wait_for_log("unavailable: .*")
    assert match.group(0).startswith(
        "unavailable: proxy_get_header_map_value failed: BAD_ARGUMENT: the request headers are not available in "
        "on_request_body: Envoy holds them only during on_request_headers"
    )


def test_envoy_len_counts_pairs(envoy: tuple[Envoy, WireServer, WireServer]) -> None:
    proxy, upstream, _ = envoy
    assert get(proxy, "/count", {"a": "1"})[0] == 200
    seen = upstream.wait_for(lambda all: next((s for s in all if s.path == "/count"), None))
    # What the filter saw: every header Envoy handed it (the router adds x-envoy-expected-rq-timeout-ms
    # later), minus x-count itself, counted as pairs (x-twice twice).
    names = [line.split(b":")[0] for line in seen.head.split(b"\r\n")[1:]]
    assert names.count(b"x-twice") == 2
    assert int(seen.header("x-count") or 0) == len(names) - 2 + 3  # + :authority :path :method, - host


def test_envoy_non_utf8_header_round_trips(envoy: tuple[Envoy, WireServer, WireServer]) -> None:
    proxy, upstream, _ = envoy
    with socket.create_connection(("127.0.0.1", proxy.port()), timeout=10) as sock:
        sock.sendall(b"GET /raw HTTP/1.1\r\nhost: x\r\nx-raw: caf\xe9 \xff\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
    seen = upstream.wait_for(lambda all: next((s for s in all if s.path == "/raw"), None))
    line = next(ln for ln in seen.head.split(b"\r\n") if ln.startswith(b"x-copy:"))
    assert line == b"x-copy: caf\xe9 \xff"
    proxy.wait_for_log(r"raw value caf\\xe9 \\xff")  # logged with escapes, not an exception


def test_envoy_held_stream_headers_from_on_tick(envoy: tuple[Envoy, WireServer, WireServer]) -> None:
    proxy, upstream, _ = envoy
    assert get(proxy, "/hold")[0] == 200
    seen = upstream.wait_for(lambda all: next((s for s in all if s.path == "/hold"), None))
    assert seen.header("x-from-tick") == "/hold"


def test_envoy_callout_headers_and_explicit_pseudo_headers(envoy: tuple[Envoy, WireServer, WireServer]) -> None:
    proxy, _, service = envoy
    status, headers, body = get(proxy, "/pseudo")
    assert (status, body) == (200, b"PUT /explicit")
    assert headers["x-svc-type"] == "HeaderPairs"
    assert headers["x-svc-bytes"] == "b'caf\\xc3\\xa9'"  # the service sent UTF-8


def test_envoy_unknown_cluster_is_named(envoy: tuple[Envoy, WireServer, WireServer]) -> None:
    proxy = envoy[0]
    assert get(proxy, "/no-cluster")[0] == 500
    proxy.wait_for_log(r"HostCallError: proxy_http_call failed: BAD_ARGUMENT: cluster 'nope': Envoy has no cluster")


def test_envoy_on_configure_none(build_filter: Callable[[str], Path]) -> None:
    with WireServer() as upstream:
        config = http_bootstrap(upstream_port=upstream.port, plugins=[WasmPlugin(build_filter(CONFIGURE_NONE))])
        with pytest.raises(EnvoyError) as info:
            Envoy(config).start()
    assert "author mistake: Forgetful.on_configure returned None (return True to accept)" in str(info.value)

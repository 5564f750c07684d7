"""AssemblyScript modules (proxy-runtime 0.1.8, built by tests/assemblyscript/build.sh): real Envoy vs host."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from differential import Call, EnvoyDriver, HostDriver, Plugin, Reply, check, drivers

Pair = tuple[EnvoyDriver, HostDriver]


def _pair(as_modules: dict[str, Path], name: str, raise_on_trap: bool = True, **options: object) -> Iterator[Pair]:
    plugin = Plugin(as_modules[name], root_id=name, name=f"p_{name}", vm_id=f"vm_{name}", **options)  # type: ignore[arg-type]
    with drivers(plugin, raise_on_trap=raise_on_trap) as pair:
        yield pair


@pytest.fixture(scope="module")
def headers(as_modules: dict[str, Path]) -> Iterator[Pair]:
    yield from _pair(as_modules, "headers")


def test_headers_added_replaced_removed(headers: Pair) -> None:
    check(
        headers,
        Call(
            "GET",
            "/hello",
            (("x-echo", "abc"), ("x-a", "1"), ("x-replace-me", "old"), ("x-remove-me", "x"), ("x-b", "2")),
        ),  # fmt: skip
        Call("GET", "/"),
    )


def test_headers_with_body_and_repeated_names(headers: Pair) -> None:
    check(
        headers,
        Call("POST", "/p?q=1", (("x-echo", "A"), ("x-dup", "1"), ("x-dup", "2")), b"abc"),
        Call("PUT", "/put", (("content-type", "application/json"),), b"{}",
             Reply(201, (("content-type", "application/json"), ("x-up", "1"), ("x-up", "2")), b'{"ok":1}')),
    )  # fmt: skip


def _inject(how: str, chars: str = "", name: str = "") -> Call:
    """A request after which the headers module writes a header of our choosing (headers.ts injectInto)."""
    headers = (("x-inject", how),) + ((("x-inject-chars", chars),) if chars else ()) + (
        (("x-inject-name", name),) if name else ())  # fmt: skip
    return Call("GET", "/inject", headers)


# Code points (hex) put into a value between "a" and "b": control characters Envoy refuses to send
# upstream, then HT, a space and a non-ASCII letter, which it sends.
_CHARS = ("0", "1", "8", "b", "d", "a", "1f", "7f", "9", "20", "e9")


def test_request_header_envoy_cannot_send(headers: Pair) -> None:
    """A request header with a control character in its value, or a name that is not a token: the
    router's codec refuses to encode it and Envoy answers 503 naming the header (the upstream sees
    nothing); the response still passes through the filter. HT, spaces and non-ASCII go through."""
    check(
        headers,
        *(_inject(f"request-{write}", chars=c) for write in ("add", "replace") for c in _CHARS),
        *(_inject("request-add", name=n) for n in ("x(y", "x@y", "x y", 'x"y', "x\\y", "X-Upper", "x_u", "x~y")),
        # A pseudo header's name is ":" and a token (else 503); one HTTP/1 has no place for is not sent.
        *(_inject("request-add", name=n) for n in (":foo", ":Foo", ":", "::", ":x y")),
        _inject("request-add", name=":foo", chars="d,a"),
        *(_inject("response-add", name=n) for n in (":foo", ":x y")),
        # Pseudo headers: those on the wire are checked too (:path "/a" + chars + "b"), :scheme is not.
        *(_inject("request-replace", chars=c, name=n) for n in (":path", ":method", ":authority", ":scheme")
          for c in ("d,a", "0", "7f")),
        _inject("request-replace", chars="20", name=":authority"),
    )  # fmt: skip


def test_request_header_refused_at_once_on_a_pooled_connection(headers: Pair) -> None:
    """When the route's cluster has an idle connection (the last exchange kept it), the codec
    refuses inside decodeHeaders: a POST's body is not read yet, so Envoy also closes the client's
    connection. The refusal closes the upstream connection, so the next refusal waits for a new one
    (after the whole request: no close)."""
    bad = (("x-inject", "request-add"), ("x-inject-chars", "d,a"))
    check(
        headers,
        Call("GET", "/warm"),
        Call("POST", "/p", bad, b"body"),
        Call("POST", "/p", bad, b"body"),
        Call("POST", "/warm", (), b"body"),
        Call("GET", "/g", bad),
        Call("POST", "/p", bad, b"body"),
    )


def test_response_header_written_as_it_is(headers: Pair) -> None:
    """Envoy writes a response header as it stands: a CR LF in a value starts a new header at the
    client (header injection: the client sees x-evil), a name that is not a token reaches it too."""
    check(
        headers,
        *(_inject(f"response-{write}", chars=c) for write in ("add", "replace") for c in (*_CHARS, "d,a,78,3a,31")),
        *(_inject("response-add", name=n) for n in ("x(y", "x@y", "X-Upper", "x_u")),
        # A name with a space: the client's parser stops reading headers at that line.
        _inject("response-add", name="x y"),
    )


def test_response_status_envoy_cannot_read(headers: Pair) -> None:
    """The filter sets :status. Envoy reads it as an unsigned number (spaces around and a leading +
    allowed); anything else gets a 502 'missing required header: :status' straight to the client,
    past the filter, for GET, HEAD and a chunked upstream response alike."""

    def status(value: str, method: str = "GET", upstream: Reply | None = None) -> Call:
        return Call(method, "/s", (("x-inject", "response-replace"), ("x-inject-name", ":status"),
                                   ("x-inject-value", value)), upstream=upstream or Reply())  # fmt: skip

    chunked = Reply(chunked=True, trailers=(("x-t", "1"),))
    check(
        headers,
        *(status(v) for v in ("200 OK", "abc", "-200", "2e2", "2_00", "18446744073709551616", "+200", "0200", "204")),
        status("abc", "HEAD"),
        status("abc", upstream=chunked),
        status("404", "HEAD"),
        status("503", upstream=chunked),
    )


def test_header_value_whitespace_is_not_part_of_it(headers: Pair) -> None:
    """Envoy's HTTP/1 codec drops the spaces and tabs around a header value, the client's and the
    upstream's; those inside stay."""
    check(
        headers,
        Call("GET", "/ws", (("x-echo", "  a  b\t"),), upstream=Reply(200, (("x-up", "\t1 2  "),))),
    )


@pytest.fixture(scope="module")
def deny(as_modules: dict[str, Path]) -> Iterator[Pair]:
    yield from _pair(as_modules, "deny")


def test_local_reply_from_request_headers(deny: Pair) -> None:
    check(
        deny,
        Call("GET", "/secret"),
        Call("GET", "/secret", (("x-local-status", "401"),)),
        Call("GET", "/secret", (("x-local-status", "204"),)),  # a body on a 204
        Call("POST", "/secret", (("content-type", "text/plain"),), b"payload"),
        Call("GET", "/secret", (("x-deny-reason-crlf", "1"),)),  # the reply's CR LF: a header of its own
    )


def test_local_reply_from_response_headers(deny: Pair) -> None:
    check(
        deny,
        Call("GET", "/ok", (("x-token", "t"),)),
        Call("GET", "/late", (("x-token", "t"), ("x-deny-on-response", "1"))),
        Call("POST", "/late", (("x-token", "t"), ("x-deny-on-response", "1")), b"body"),
    )


@pytest.fixture(scope="module")
def body(as_modules: dict[str, Path]) -> Iterator[Pair]:
    yield from _pair(as_modules, "body")


def test_body_rewrite(body: Pair) -> None:
    check(
        body,
        Call("POST", "/b", (("content-type", "text/plain"),), b"hello world"),
        Call("GET", "/nobody"),
        Call("POST", "/b", (), b"x", Reply(200, (), b"")),
    )


@pytest.fixture(scope="module")
def body_keep_length(as_modules: dict[str, Path]) -> Iterator[Pair]:
    yield from _pair(as_modules, "body", config="keep-content-length")


def test_body_rewrite_keeping_content_length(body_keep_length: Pair) -> None:
    # The stale content-length cuts the longer rewritten bodies on both sides of the proxy. The POST
    # goes last: the upstream connection keeps the cut-off bytes (a real hazard of such a filter).
    check(body_keep_length, Call("GET", "/g"), Call("POST", "/b", (), b"hello"))


@pytest.fixture(scope="module")
def metrics(as_modules: dict[str, Path]) -> Iterator[Pair]:
    yield from _pair(as_modules, "metrics")


def test_metrics(metrics: Pair) -> None:
    check(metrics, Call("GET", "/m"), Call("GET", "/abcdef", (("x-count", "5"),)), Call("GET", "/"))
    check(metrics, Call("GET", "/again", (("x-count", "2"),)))


@pytest.fixture(scope="module")
def shared(as_modules: dict[str, Path]) -> Iterator[Pair]:
    yield from _pair(as_modules, "shared")


def test_shared_data(shared: Pair) -> None:
    check(
        shared,
        Call("GET", "/1"),
        Call("GET", "/2", (("x-shared-set", "color=blue"),)),
        Call("GET", "/3", (("x-shared-get", "color"),)),
        Call("GET", "/4", (("x-shared-get", "missing"),)),
    )


# The spaces around "pong" are not part of the value the filter reads (Envoy's codec drops them).
CALLOUT = Reply(200, (("x-callout-reply", " pong\t "), ("content-type", "text/plain")), b"callout-body")


@pytest.fixture(scope="module")
def callout(as_modules: dict[str, Path]) -> Iterator[Pair]:
    yield from _pair(as_modules, "callout", clusters={"callout": CALLOUT, "slow": Reply(delay_s=2.5)})


def test_callout_to_second_cluster(callout: Pair) -> None:
    check(callout, Call("GET", "/c"), Call("POST", "/c", (), b"data"))


def test_callout_header_envoy_cannot_send(callout: Pair) -> None:
    """A callout header with a control character in its value: on a new connection Envoy
    dispatches the call and its router answers it with a local 503 naming the header (the cluster
    sees nothing); when the cluster has an idle pooled connection (a call answered before), the
    refusal happens inside http_call, which fails with INTERNAL_FAILURE. Either way the connection
    is closed, so the next refusal gets the 503."""
    check(
        callout,
        *(Call("GET", "/c", (("x-callout-inject-chars", c),) if c else ())
          for c in ("", "d,a", "d,a", "0", "", "1", "7f", "9", "d,a")),
    )  # fmt: skip


def test_callout_connection_closed_by_a_timeout_is_not_reused(callout: Pair) -> None:
    """A call that timed out (callout.ts: 2 s) closed its connection: the next refused call gets
    a new connection, so the 503, not INTERNAL_FAILURE. One to a cluster, one to another: each
    cluster has its own pool."""
    bad = ("x-callout-inject-chars", "d,a")
    check(
        callout,
        Call("GET", "/warm"),
        Call("GET", "/slow", (("x-callout-cluster", "slow"),)),
        Call("GET", "/bad", (bad, ("x-callout-cluster", "slow"))),
        Call("GET", "/bad", (bad,)),
    )


def test_callout_to_unknown_cluster(callout: Pair) -> None:
    check(callout, Call("GET", "/c", (("x-callout-cluster", "nope"),)))


@pytest.fixture(scope="module")
def logging_info(as_modules: dict[str, Path]) -> Iterator[Pair]:
    yield from _pair(as_modules, "logging")


def test_logging_at_info(logging_info: Pair) -> None:
    check(logging_info, Call("GET", "/l?q=1"), Call("GET", "/two"))


@pytest.fixture(scope="module")
def logging_trace(as_modules: dict[str, Path]) -> Iterator[Pair]:
    yield from _pair(as_modules, "logging", log_level="trace")


def test_logging_at_trace(logging_trace: Pair) -> None:
    check(logging_trace, Call("GET", "/l?q=1"))


@pytest.fixture(scope="module")
def config(as_modules: dict[str, Path]) -> Iterator[Pair]:
    yield from _pair(as_modules, "config", config="hello-config")


def test_plugin_configuration(config: Pair) -> None:
    check(config, Call("GET", "/"))


@pytest.fixture(scope="module")
def trap(as_modules: dict[str, Path]) -> Iterator[Pair]:
    # Not raise_on_trap (the host's default for tests): Envoy answers, so compare the answers.
    yield from _pair(as_modules, "trap", raise_on_trap=False)


def test_trap_fails_closed_and_stays_failed(trap: Pair) -> None:
    check(trap, Call("GET", "/ok"), Call("GET", "/t", (("x-trap", "unreachable"),)), Call("GET", "/after"))

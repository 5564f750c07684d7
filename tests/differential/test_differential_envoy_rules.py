"""The kinds of Envoy behaviour a filter author meets at the edges, real Envoy vs the host: HEAD and
bodiless responses, local replies to gRPC requests, HTTP/1 framing (chunked bodies, trailers, bodies
held behind paused headers), buffer limits, allow_on_headers_stop_iteration, callout timeouts and
failures, FAIL_RELOAD, attributes, pseudo headers in callouts, and what Envoy does when a filter
continues or replies at awkward moments. Each kind is driven by a Python filter (RULES) and, where the
AssemblyScript fixtures can express it, by a module of that SDK too."""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from differential import Call, EnvoyDriver, HostDriver, Plugin, Reply, assert_same, check, drivers, raw_request

from proxywasm_host import Route

Pair = tuple[EnvoyDriver, HostDriver]
Build = Callable[[str], Path]

RULES = """
import json

import proxywasm
from proxywasm import Action, HostCallError, HttpContext, log, properties


def probe(fn):
    try:
        return repr(fn())
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


@proxywasm.register
class Rules(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        self.mode = headers.get("x-mode", "")
        names = ",".join(k for k, _ in headers.pairs())
        log.info(f"request headers eos={end_of_stream} names={names}")
        if self.mode == "reply":
            grpc = headers.get("x-grpc-status")
            self.send_response(int(headers.get("x-code", "403")), headers.get("x-reply-body", "denied\\n"),
                               [(k[8:], v) for k, v in headers.pairs() if k.startswith("x-reply-")
                                and k != "x-reply-body"],
                               grpc_status=int(grpc) if grpc else None)
            return Action.PAUSE
        if self.mode in ("callout", "hold"):
            cluster = headers.get("x-cluster", "svc")
            extra = [tuple(h.split("=", 1)) for h in headers.get("x-callout-headers", "").split(";") if h]
            try:
                self.http_call(cluster, self.answered, path="/auth", headers=extra,
                               timeout_ms=int(headers.get("x-timeout", "3000")))
            except HostCallError as exc:
                log.warn(f"http_call refused: {exc.status!r}")
                self.send_response(500, "no call\\n")
            return Action.PAUSE
        if self.mode == "props":
            for path in (("node",), ("node", "id"), ("xds", "node", "id"), ("xds", "node", "cluster"),
                         ("xds", "cluster_name"), ("xds", "route_name"), ("cluster_name",), ("route_name",),
                         ("connection", "requested_server_name"), ("connection", "mtls"),
                         ("request", "path"), ("request", "method"), ("request", "headers", "x-mode"),
                         ("plugin_name",), ("plugin_root_id",), ("plugin_vm_id",),
                         ("xds", "route_metadata", "filter_metadata"),
                         ("xds", "route_metadata", "filter_metadata", "limits"),
                         ("xds", "route_metadata", "filter_metadata", "limits", "mode"),
                         ("xds", "route_metadata", "filter_metadata", "limits", "limit"),
                         ("xds", "route_metadata", "filter_metadata", "limits", "on"),
                         ("xds", "route_metadata", "filter_metadata", "limits", "tags"),
                         ("xds", "route_metadata", "filter_metadata", "limits", "nested"),
                         ("xds", "route_metadata", "filter_metadata", "limits", "nested", "x"),
                         ("xds", "route_metadata", "filter_metadata", "limits", "missing"),
                         ("xds", "route_metadata", "filter_metadata", "nobody")):
                log.info(f"prop {'.'.join(path)} = {probe(lambda: properties.get(*path))}")
            # The SDK's helpers over them: an unnamed route's "" is None (tests/sdk/test_hot_paths.py
            # checks that the pre-xds paths above are read only when Envoy does not serve the xds ones).
            log.info(f"prop route_name() = {properties.route_name()!r}, cluster_name() = {properties.cluster_name()!r}")
            # The Metadata message whole: protobuf maps have no order, so compare it decoded.
            decoded = properties._filter_metadata(properties.get("xds", "route_metadata") or b"")
            log.info(f"prop xds.route_metadata decoded = {json.dumps(decoded, sort_keys=True)}")
            properties.set("k", value="v1")
            log.info(f"prop k after set = {probe(lambda: properties.get('k'))}")
            log.info(f"prop filter_state.wasm.k = {probe(lambda: properties.get('filter_state', 'wasm.k'))}")
            log.info(f"prop never.set = {probe(lambda: properties.get('never', 'set'))}")
            log.info(f"prop never = {probe(lambda: properties.get('never'))}")
        if self.mode == "hold-only":
            return Action.PAUSE

    def answered(self, response):
        log.info(f"callout status={response.status} failed={response.failed} body={response.body!r}")
        log.info("callout headers: " + ",".join(k.decode() for k, _ in response.headers))
        self.resume_request()

    def on_request_body(self, body, end_of_stream):
        log.info(f"request body size={len(body.read())} eos={end_of_stream}")
        if self.mode == "buffer-request" or self.mode == "hold-only":
            return Action.CONTINUE if end_of_stream else Action.PAUSE
        if self.mode == "continue-inside-pause":
            self.resume_request()
            return Action.PAUSE

    def on_request_trailers(self, trailers):
        log.info("request trailers " + ",".join(f"{k}={v}" for k, v in trailers.pairs()))

    def on_response_headers(self, headers, end_of_stream):
        names = ",".join(k for k, _ in headers.pairs())
        log.info(f"response headers eos={end_of_stream} names={names}")
        headers.add("x-rules", "1")
        if self.mode == "buffer-response-stop-all":
            return Action.STOP_ALL_ITERATION_AND_BUFFER
        if self.mode == "reply-on-response-body":
            return Action.CONTINUE

    def on_response_body(self, body, end_of_stream):
        log.info(f"response body size={len(body.read())} eos={end_of_stream}")
        if self.mode in ("buffer-response", "buffer-response-stop-all"):
            return Action.CONTINUE if end_of_stream else Action.PAUSE
        if self.mode == "reply-on-response-body" and not end_of_stream:
            self.send_response(502, "late\\n")
            return Action.PAUSE

    def on_response_trailers(self, trailers):
        log.info("response trailers " + ",".join(f"{k}={v}" for k, v in trailers.pairs()))
"""

SVC = Reply(200, (("content-type", "text/plain"), ("x-svc", "1")), b"yes")


def _rules(build_filter: Build, **options: object) -> Iterator[Pair]:
    plugin = Plugin(build_filter(RULES), clusters={"svc": SVC}, **options)  # type: ignore[arg-type]
    with drivers(plugin) as pair:
        yield pair


@pytest.fixture(scope="module")
def rules(build_filter: Build) -> Iterator[Pair]:
    yield from _rules(build_filter)


# -- HEAD and bodiless responses --------------------------------------------------------------------------
def test_head_response_ends_on_its_headers(rules: Pair) -> None:
    # The upstream answers HEAD with content-length: 241 and no body: the response headers callback
    # gets end_of_stream=true, no body callback runs, the client gets no body.
    check(rules, Call("HEAD", "/", upstream=Reply(200, (("content-type", "text/html"),), b"x" * 241)))


def test_local_reply_to_head_keeps_its_length(rules: Pair) -> None:
    check(rules, Call("HEAD", "/", (("x-mode", "reply"),)))


def test_bodiless_statuses(rules: Pair) -> None:
    # 304 and 204 get no content-length: 0 added; 304 keeps the validator headers.
    check(
        rules,
        Call("GET", "/", upstream=Reply(304, (("etag", '"v1"'),), b"")),
        Call("GET", "/", upstream=Reply(204, (), b"")),
        Call("GET", "/", upstream=Reply(200, (), b"")),
    )


# -- local replies to gRPC requests -----------------------------------------------------------------------
GRPC = ("content-type", "application/grpc")


def test_local_reply_to_grpc_request_is_trailers_only(rules: Pair) -> None:
    check(
        rules,
        Call("POST", "/pkg.Svc/Do", (GRPC, ("x-mode", "reply")), b"\0\0\0\0\0"),
        Call("POST", "/pkg.Svc/Do", (GRPC, ("x-mode", "reply"), ("x-code", "401"))),
        Call("POST", "/pkg.Svc/Do", (GRPC, ("x-mode", "reply"), ("x-code", "404"))),
        Call("POST", "/pkg.Svc/Do", (GRPC, ("x-mode", "reply"), ("x-code", "429"))),
        Call("POST", "/pkg.Svc/Do", (GRPC, ("x-mode", "reply"), ("x-code", "500"), ("x-reply-body", "a b%c"))),
        Call("POST", "/pkg.Svc/Do", (GRPC, ("x-mode", "reply"), ("x-code", "503"), ("x-grpc-status", "3"))),
    )


def test_local_reply_headers_and_empty_body(rules: Pair) -> None:
    # The filter's own headers, its content-type with an empty body, a content-length it set.
    check(
        rules,
        Call("GET", "/", (("x-mode", "reply"), ("x-reply-content-type", "application/json"), ("x-reply-body", ""))),
        Call("GET", "/", (("x-mode", "reply"), ("x-reply-x-a", "1"), ("x-reply-x-b", "2"))),
    )


# -- HTTP/1 framing -------------------------------------------------------------------------------------
def test_chunked_upload_hides_transfer_encoding(rules: Pair) -> None:
    check(rules, Call("POST", "/up", (("content-type", "text/plain"),), b"chunked body", chunked=True))


def test_a_method_the_codec_does_not_know_is_refused_before_the_filter(rules: Pair) -> None:
    # Envoy's HTTP/1 codec answers 400 itself (no stream, no filter callback, no upstream); the
    # next request on a new connection goes through as usual. (Methods it knows beyond the usual ones,
    # WebDAV's and MSEARCH, reach the filter: the harness's upstream serves only the usual ones.)
    check(rules, Call("BREW"), Call("get"), Call("M-SEARCH"), Call("GET"))


def test_chunked_upstream_answer(rules: Pair) -> None:
    # transfer-encoding is stripped from what the filter sees and written back after its headers.
    check(rules, Call("GET", "/", upstream=Reply(200, (("content-type", "text/plain"),), b"chunks", chunked=True)))


def test_request_trailers_are_dropped_by_default(rules: Pair) -> None:
    check(rules, Call("POST", "/", (), b"abc", chunked=True, trailers=(("x-checksum", "42"),)))


@pytest.fixture(scope="module")
def rules_with_trailers(build_filter: Build) -> Iterator[Pair]:
    yield from _rules(build_filter, request_trailers=True)


def test_request_trailers_reach_the_filter_when_enabled(rules_with_trailers: Pair) -> None:
    check(rules_with_trailers, Call("POST", "/", (), b"abc", chunked=True, trailers=(("x-checksum", "42"),)))


def test_body_behind_paused_headers_arrives_in_one_callback(rules: Pair) -> None:
    # The headers callback pauses for a callout; the body that arrived meanwhile comes in ONE body
    # callback with end_of_stream=true once the request is resumed.
    check(rules, Call("POST", "/", (("x-mode", "callout"),), b"held body"))


def test_continue_inside_the_pausing_callback(rules: Pair) -> None:
    check(rules, Call("POST", "/", (("x-mode", "continue-inside-pause"),), b"x"))


# -- buffer limits -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rules_small_buffer(build_filter: Build) -> Iterator[Pair]:
    yield from _rules(build_filter, buffer_limit=1024)


def test_request_over_the_buffer_limit_gets_413(rules_small_buffer: Pair) -> None:
    check(rules_small_buffer, Call("POST", "/", (("x-mode", "buffer-request"),), b"a" * 3000))


def test_request_within_the_buffer_limit(rules_small_buffer: Pair) -> None:
    check(rules_small_buffer, Call("POST", "/", (("x-mode", "buffer-request"),), b"a" * 1000))


def test_response_over_the_buffer_limit_after_headers_resets(rules_small_buffer: Pair) -> None:
    check(rules_small_buffer, Call("GET", "/", (("x-mode", "buffer-response"),), upstream=Reply(200, (), b"b" * 3000)))


def test_response_over_the_buffer_limit_before_headers_is_500(rules_small_buffer: Pair) -> None:
    check(
        rules_small_buffer,
        Call("GET", "/", (("x-mode", "buffer-response-stop-all"),), upstream=Reply(200, (), b"b" * 3000)),
    )


# -- allow_on_headers_stop_iteration ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def rules_stop_iteration(build_filter: Build) -> Iterator[Pair]:
    yield from _rules(build_filter, allow_on_headers_stop_iteration=True)


def test_pause_from_headers_holds_everything_by_default(rules: Pair) -> None:
    check(rules, Call("POST", "/", (("x-mode", "hold"),), b"body while held"))


def test_allow_on_headers_stop_iteration_lets_body_callbacks_run(rules_stop_iteration: Pair) -> None:
    # PAUSE stops only the headers: the body callbacks run and may buffer; a CONTINUE from one of them
    # sends the held headers on with the body.
    check(rules_stop_iteration, Call("POST", "/", (("x-mode", "hold-only"),), b"buffered by the filter"))


# -- callouts: timeouts, failures, pseudo headers ---------------------------------------------------------
@pytest.fixture(scope="module")
def callouts(build_filter: Build) -> Iterator[Pair]:
    clusters = {"svc": SVC, "slow": Reply(200, (), b"late", delay_s=1.5), "reset": Reply(reset=True)}
    plugin = Plugin(build_filter(RULES), clusters=clusters, unreachable=("dead",))
    with drivers(plugin) as pair:
        yield pair


def test_callout_timeout_is_a_504(callouts: Pair) -> None:
    check(callouts, Call("GET", "/", (("x-mode", "callout"), ("x-cluster", "slow"), ("x-timeout", "300"))))


def test_callout_to_unreachable_cluster_is_a_503(callouts: Pair) -> None:
    check(callouts, Call("GET", "/", (("x-mode", "callout"), ("x-cluster", "dead"))))


def test_callout_reset_by_the_cluster(callouts: Pair) -> None:
    check(callouts, Call("GET", "/", (("x-mode", "callout"), ("x-cluster", "reset"))))


def test_callout_answer_carries_its_framing(callouts: Pair) -> None:
    check(callouts, Call("GET", "/", (("x-mode", "callout"),)))


def test_callout_pseudo_headers(callouts: Pair) -> None:
    # Only :method, :path, :authority and :scheme travel; other pseudo headers are dropped.
    check(callouts, Call("GET", "/", (("x-mode", "callout"), ("x-callout-headers", ":scheme=https;:foo=bar;x-k=v"))))


# -- attributes ------------------------------------------------------------------------------------------
def test_attributes(rules: Pair) -> None:
    check(rules, Call("GET", "/attrs?q=1", (("x-mode", "props"),)))


@pytest.fixture(scope="module")
def rules_with_routes(build_filter: Build) -> Iterator[Pair]:
    # Structs of one field each where the order of a map could show (Envoy's protobuf maps have none).
    limits = {"mode": "strict", "limit": 2, "on": True, "tags": ["a", 1.5], "nested": {"x": None}}
    routes = (Route("/meta", "meta-route", {"limits": limits}), Route("/plain", "plain-route"))
    yield from _rules(build_filter, routes=routes)


def test_route_name_and_metadata(rules_with_routes: Pair) -> None:
    props = (("x-mode", "props"),)
    check(rules_with_routes, Call("GET", "/meta/x", props), Call("GET", "/plain", props), Call("GET", "/other", props))


# -- replies at awkward moments --------------------------------------------------------------------------
def test_local_reply_on_a_response_body_frame_resets(rules: Pair) -> None:
    # The headers went out, the frame's data never does: the client sees a cut response. The SDK
    # names the mistake (it asks Envoy whether the response headers are still held) in both.
    calls = (Call("GET", "/", (("x-mode", "reply-on-response-body"),)),)
    envoy, host = rules
    outcome = envoy.run(calls)
    assert_same(outcome, host.run(calls))
    (mistake,) = [msg for level, msg in outcome.logs if "author mistake" in msg]
    assert "Rules.on_response_body: send_response(502) after Envoy sent the response headers" in mistake


# -- what Envoy cannot survive, and what hangs it ---------------------------------------------------------
TWO_REPLIES = """
import proxywasm
from proxywasm import Action, HttpContext, hostcalls, log


def second_reply(status):
    # Straight to the host: the SDK itself refuses a second reply (LocalReplyAlreadySent), and this
    # shows what Envoy does when a module of any SDK asks for one.
    hostcalls.send_local_response(status, "", b"two\\n", [], -1)


@proxywasm.register
class TwoReplies(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        self.mode = headers.get("x-mode", "")
        if self.mode in ("two-request", "request-then-response"):
            self.send_response(403, "one\\n")
            if self.mode == "two-request":
                second_reply(401)
            return Action.PAUSE

    def on_response_headers(self, headers, end_of_stream):
        log.info(f"response headers {headers.get(':status')}")
        if self.mode in ("two-response", "request-then-response"):
            if self.mode == "two-response":
                self.send_response(502, "one\\n")
                second_reply(503)
            else:
                second_reply(502)  # the stream's reply already went: the SDK would refuse this one
            return Action.PAUSE

    def on_log(self):
        log.info("on_log")
"""


def test_two_local_replies_in_the_request_path_keep_the_first(build_filter: Build) -> None:
    # A second reply asked for in the same callback is dropped; one asked for by the response callback
    # that the first reply runs through goes straight to the client.
    with drivers(Plugin(build_filter(TWO_REPLIES))) as pair:
        check(
            pair,
            Call("GET", "/", (("x-mode", "two-request"),)),
            Call("GET", "/", (("x-mode", "request-then-response"),)),
        )


def test_two_local_replies_in_the_response_path_crash_envoy(build_filter: Build) -> None:
    from proxywasm_host import EnvoyCrash

    call = Call("GET", "/", (("x-mode", "two-response"),))
    with drivers(Plugin(build_filter(TWO_REPLIES))) as (envoy, host):
        assert envoy._one(call).status == 0  # the connection dies with Envoy
        deadline = time.monotonic() + 10
        while envoy.envoy.running and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not envoy.envoy.running, "Envoy 1.40 survived two local replies in the response path"
        with pytest.raises(EnvoyCrash, match="SIGSEGV"):
            host.run([call])


SHRINK = """
import proxywasm
from proxywasm import Action, HttpContext

@proxywasm.register
class Shrink(HttpContext):
    def on_response_body(self, body, end_of_stream):
        if not end_of_stream:
            return Action.PAUSE
        body.replace(b"short")   # content-length still says the upstream's length
"""


def test_body_shorter_than_its_content_length_hangs_the_client(build_filter: Build) -> None:
    from proxywasm_host import StreamStalled

    call = Call("GET", "/", upstream=Reply(200, (), b"twenty bytes of body"))
    with drivers(Plugin(build_filter(SHRINK))) as (envoy, host):
        with socket.create_connection(("127.0.0.1", envoy.envoy.port()), timeout=2) as sock:
            sock.sendall(raw_request(call))
            response = http.client.HTTPResponse(sock, method="GET")
            response.begin()
            assert response.getheader("content-length") == "20"
            with pytest.raises(TimeoutError):
                response.read()  # Envoy sent 5 bytes of the 20 announced: the client waits
        with pytest.raises(StreamStalled, match="content-length: 20 but the filter left 5 bytes"):
            host.run([call])


# -- FAIL_RELOAD -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reload(as_modules: dict[str, Path]) -> Iterator[Pair]:
    plugin = Plugin(as_modules["trap"], root_id="trap", name="p_trap", vm_id="vm_trap",
                    failure_policy="FAIL_RELOAD", reload_backoff_ms=300)  # fmt: skip
    with drivers(plugin, raise_on_trap=False) as pair:
        yield pair


def test_fail_reload_counts_the_backoff_from_the_last_load(reload: Pair) -> None:
    # x-vm-requests counts the requests this VM saw: a new VM starts again at 1. A VM loaded longer
    # ago than the back-off is replaced for the first request after it failed; one that failed soon
    # after its load is replaced only once the back-off has passed.
    trap = (("x-trap", "unreachable"),)
    check(
        reload,
        Call("GET", "/ok"),
        Call("GET", "/trap", trap, wait_ms=1000),
        Call("GET", "/first-after"),
        Call("GET", "/trap-again", trap),
        Call("GET", "/too-soon"),
        Call("GET", "/later", wait_ms=1000),
    )


# -- ticks: every VM of the plugin ticks ------------------------------------------------------------------
TICKS = """
import proxywasm
from proxywasm import HttpContext, PluginContext, shared_data


class Count(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        headers["x-vms-ticked"] = str(shared_data.get_value("vms", 0)[0])


@proxywasm.register
class Ticks(PluginContext):
    http_context = Count

    def on_configure(self, configuration):
        self.ticked = False
        self.set_tick_period(100)
        return True

    def on_tick(self):
        if not self.ticked:
            self.ticked = True
            shared_data.update("vms", lambda n: n + 1, default=0)
"""


def test_every_vm_ticks(build_filter: Build) -> None:
    # Envoy runs the main thread's VM and one per worker, and ticks each: 3 VMs with 2 workers.
    with drivers(Plugin(build_filter(TICKS), workers=2)) as pair:
        check(pair, Call("GET", "/", wait_ms=1000))


# -- the same kinds with modules of another SDK (AssemblyScript) -------------------------------------------
@pytest.fixture(scope="module")
def as_deny(as_modules: dict[str, Path]) -> Iterator[Pair]:
    with drivers(Plugin(as_modules["deny"], root_id="deny", name="p_deny", vm_id="vm_deny")) as pair:
        yield pair


def test_as_local_replies_to_head_and_grpc(as_deny: Pair) -> None:
    check(
        as_deny,
        Call("HEAD", "/"),
        Call("POST", "/pkg.Svc/Do", (GRPC,), b"\0\0\0\0\0"),
        Call("POST", "/pkg.Svc/Do", (GRPC, ("x-local-status", "401"))),
        Call("HEAD", "/", (("x-token", "t"),), upstream=Reply(200, (), b"x" * 241)),
    )


@pytest.fixture(scope="module")
def as_body_small_buffer(as_modules: dict[str, Path]) -> Iterator[Pair]:
    plugin = Plugin(as_modules["body"], root_id="body", name="p_body", vm_id="vm_body", buffer_limit=1024)
    with drivers(plugin) as pair:
        yield pair


def test_as_buffer_limit(as_body_small_buffer: Pair) -> None:
    check(
        as_body_small_buffer,
        Call("POST", "/", (), b"a" * 3000),
        Call("POST", "/", (), b"a" * 1000),
        Call("POST", "/", (), b"a", upstream=Reply(200, (), b"b" * 3000)),
    )

"""Python filters built from source in the test (proxywasm build): real Envoy vs host."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from differential import Call, EnvoyDriver, HostDriver, Plugin, Reply, assert_same, check, drivers

Pair = tuple[EnvoyDriver, HostDriver]
Build = Callable[[str], Path]

# Each probe runs a host call and reports its result or error as text, so a different status
# (BAD_ARGUMENT, NOT_FOUND) shows in the diff instead of failing the stream.
PROBE = """
def probe(fn):
    try:
        return repr(fn())
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
"""

HEADERS = """
import proxywasm
from proxywasm import HttpContext, log, properties

@proxywasm.register
class Headers(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        headers["x-replace-me"] = "replaced"      # replace in place, or append when absent
        headers["x-new"] = "set"
        headers.add("x-dup", "3")
        del headers["x-remove-me"]
        headers[":path"] = headers[":path"] + "&seen=1" if "?" in headers[":path"] else headers[":path"]
        log.info("request: " + ",".join(f"{k}={v}" for k, v in headers.pairs()))

    def on_response_headers(self, headers, end_of_stream):
        # The request was continued long ago: what can the response phase still read of it?
        headers["x-req-header"] = probe(lambda: self.request_headers.get("x-echo"))
        headers["x-req-count"] = probe(lambda: len(self.request_headers.pairs()))
        headers["x-req-path"] = probe(lambda: properties.get_str("request", "path"))
        headers["x-req-method"] = probe(lambda: properties.get_str("request", "method"))
        headers["x-req-host"] = probe(lambda: properties.get_str("request", "host"))
        headers["x-req-prop-header"] = probe(lambda: properties.get_str("request", "headers", "x-echo"))
        headers["x-resp-code"] = probe(lambda: properties.get_int("response", "code"))
        headers["x-server"] = probe(lambda: headers["server"])
        headers["content-type"] = "text/x-replaced"
        log.info("response: " + ",".join(k for k, _ in headers.pairs()))

    def on_log(self):
        log.info("on_log path=" + probe(lambda: self.request_headers.get(":path")))
        log.info("on_log status=" + probe(lambda: self.response_headers.get(":status")))
        log.info("on_log prop path=" + probe(lambda: properties.get_str("request", "path")))
"""


@pytest.fixture(scope="module")
def headers(build_filter: Build) -> Iterator[Pair]:
    with drivers(Plugin(build_filter(PROBE + HEADERS))) as pair:
        yield pair


def test_headers(headers: Pair) -> None:
    check(
        headers,
        Call(
            "GET",
            "/h?a=1",
            (
                ("x-echo", "e"),
                ("x-a", "1"),
                ("x-replace-me", "old"),
                ("x-dup", "1"),
                ("x-remove-me", "r"),
                ("x-dup", "2"),
                ("x-b", "2"),
            ),
        ),  # fmt: skip
        Call("POST", "/h", (("content-type", "application/json"),), b"{}"),
    )


LOCAL = """
import proxywasm
from proxywasm import Action, HttpContext, log

@proxywasm.register
class Local(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        self.mode = headers.get("x-mode", "")
        if self.mode == "deny":
            self.send_response(403, "forbidden\\n", [("x-why", "denied"), ("X-Upper", "v")], details="py_deny")
            return Action.PAUSE
        if self.mode == "json":
            self.send_response(418, '{"tea": true}', [("content-type", "application/json")])
            return Action.PAUSE
        if self.mode == "empty":
            self.send_response(204)
            return Action.PAUSE
        if self.mode == "bad-request":
            self.send_response(400, "bad request\\n")
            return Action.PAUSE
        if self.mode == "big-status":
            self.send_response(503, b"", [("retry-after", "5")])
            return Action.PAUSE

    def on_request_body(self, body, end_of_stream):
        if self.mode == "body" and end_of_stream:
            self.send_response(400, "bad body: " + body.text())
            return Action.PAUSE
        if self.mode == "body-early":
            self.send_response(413, "too early")
            return Action.PAUSE
        return Action.PAUSE if self.mode == "body" else Action.CONTINUE

    def on_response_headers(self, headers, end_of_stream):
        log.info(f"response headers status={headers.get(':status')} eos={end_of_stream} mode={self.mode}")
        headers.add("x-seen-by-filter", "1")
        if self.mode in ("late", "late400"):
            status = 400 if self.mode == "late400" else 502
            self.mode = "done"
            self.send_response(status, "late reply\\n", [("x-late", "1")])
            return Action.PAUSE

    def on_response_body(self, body, end_of_stream):
        log.info(f"response body size={len(body.read())} eos={end_of_stream}")
        if self.mode == "late-body" and end_of_stream:
            self.mode = "done"
            self.send_response(500, "late body reply")
            return Action.PAUSE
"""


@pytest.fixture(scope="module")
def local(build_filter: Build) -> Iterator[Pair]:
    with drivers(Plugin(build_filter(LOCAL))) as pair:
        yield pair


def test_local_reply_from_request_headers(local: Pair) -> None:
    check(
        local,
        Call("GET", "/", (("x-mode", "deny"),)),
        Call("GET", "/", (("x-mode", "json"),)),
        Call("GET", "/", (("x-mode", "empty"),)),
        Call("GET", "/", (("x-mode", "big-status"),)),
        Call("GET", "/", (("x-mode", "bad-request"),)),  # Envoy closes HTTP/1 connections after a 400
        Call("POST", "/", (("x-mode", "deny"),), b"unread body"),
    )


@pytest.fixture
def local_fresh(build_filter: Build) -> Iterator[Pair]:
    with drivers(Plugin(build_filter(LOCAL))) as pair:
        yield pair


# A reply from a body callback comes after the router started the upstream request: with an idle
# pooled upstream connection Envoy has already sent it the headers, without one the upstream sees
# nothing. A fresh Envoy per test keeps it the second way, which is what the host does.
def test_local_reply_from_request_body_at_end_of_stream(local_fresh: Pair) -> None:
    check(local_fresh, Call("POST", "/", (("x-mode", "body"),), b"abc"))


def test_local_reply_from_first_body_chunk(local_fresh: Pair) -> None:
    check(local_fresh, Call("POST", "/", (("x-mode", "body-early"),), b"x"))


def test_local_reply_from_response(local: Pair) -> None:
    check(
        local,
        Call("GET", "/", (("x-mode", "late"),)),
        Call("GET", "/", (("x-mode", "late-body"),)),
        Call("GET", "/", (("x-mode", "none"),), upstream=Reply(404, (), b"")),
        Call("GET", "/", (("x-mode", "none"),), upstream=Reply(400, (), b"bad")),
        Call("GET", "/", (("x-mode", "late400"),)),
    )


BODY = """
import proxywasm
from proxywasm import Action, HttpContext, log

@proxywasm.register
class Body(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        self.mode = headers.get("x-mode", "")
        if self.mode != "keep-length":
            del headers["content-length"]
        log.info(f"request headers eos={end_of_stream}")

    def on_request_body(self, body, end_of_stream):
        log.info(f"request body size={len(body.read())} eos={end_of_stream}")
        if not end_of_stream:
            return Action.PAUSE                        # buffer until the whole body is here
        if self.mode == "append":
            body.append(b"+appended")
        elif self.mode == "prepend":
            body.prepend(b"prepended+")
        else:
            body.replace(body.read().upper())

    def on_response_headers(self, headers, end_of_stream):
        if self.mode != "keep-length":
            del headers["content-length"]
        log.info(f"response headers eos={end_of_stream}")

    def on_response_body(self, body, end_of_stream):
        log.info(f"response body size={len(body.read())} eos={end_of_stream}")
        if not end_of_stream:
            return Action.PAUSE
        body.replace(b"[" + body.read() + b"]")
"""


@pytest.fixture(scope="module")
def body(build_filter: Build) -> Iterator[Pair]:
    with drivers(Plugin(build_filter(BODY))) as pair:
        yield pair


def test_body_buffering_and_replacement(body: Pair) -> None:
    check(
        body,
        Call("POST", "/", (("x-mode", "upper"),), b"hello body"),
        Call("POST", "/", (("x-mode", "append"),), b"abc", Reply(200, (("content-type", "text/plain"),), b"")),
        Call("PUT", "/", (("x-mode", "prepend"),), b"x" * 3000, Reply(201, (), b"y" * 5000)),
        Call("GET", "/", (("x-mode", "upper"),)),
    )


def test_body_with_stale_content_length(body: Pair) -> None:
    # Only one request: the upstream connection keeps the cut-off bytes (a real Envoy hazard).
    check(body, Call("POST", "/", (("x-mode", "keep-length"),), b"abc"))


CALLOUT = """
import proxywasm
from proxywasm import Action, HostCallError, HttpContext, log

@proxywasm.register
class Callout(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        cluster = headers.get("x-cluster", "svc")
        try:
            self.http_call(cluster, self.done, method="POST", path="/auth?x=1",
                           headers=[("x-from", "py"), ("content-type", "text/plain")], body=b"question",
                           timeout_ms=3000)
        except HostCallError as exc:
            log.warn(f"http_call failed: {exc.status!r}")
            self.send_response(500, "no call\\n")
            return Action.PAUSE
        return Action.PAUSE

    def done(self, response):
        log.info(f"callout failed={response.failed} status={response.status} body={response.body!r}")
        log.info("callout headers: " + ",".join(f"{k}={v}" for k, v in response.headers.pairs()))
        log.info(f"callout trailers={response.trailers!r}")
        if response.status != 200:
            self.send_response(403, "callout said no\\n", [("x-callout-status", str(response.status))])
            return
        self.request_headers["x-callout-answer"] = response.body.decode()
        self.resume_request()
"""


@pytest.fixture(scope="module")
def callout(build_filter: Build) -> Iterator[Pair]:
    clusters = {
        "svc": Reply(200, (("content-type", "text/plain"), ("x-svc", "1")), b"yes"),
        "deny": Reply(401, (), b"nope"),
    }
    with drivers(Plugin(build_filter(CALLOUT), clusters=clusters)) as pair:
        yield pair


def test_http_call(callout: Pair) -> None:
    check(callout, Call("GET", "/c"), Call("POST", "/c", (), b"request body"))


def test_http_call_refused_and_unknown_cluster(callout: Pair) -> None:
    check(callout, Call("GET", "/c", (("x-cluster", "deny"),)), Call("GET", "/c", (("x-cluster", "nope"),)))


METRICS = """
import proxywasm
from proxywasm import Counter, Gauge, Histogram, HttpContext

requests = Counter("py_requests")
bytes_in = Counter("py.bytes_in")
inflight = Gauge("py_inflight")
last = Gauge("py_last_status")
sizes = Histogram("py_sizes")

@proxywasm.register
class Metrics(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        requests.increment()
        inflight.add(1)
        bytes_in.increment(int(headers.get("content-length", "0")))
        sizes.record(len(headers[":path"]))

    def on_response_headers(self, headers, end_of_stream):
        last.set(int(headers[":status"]))
        headers["x-requests"] = str(requests.value)

    def on_done(self):
        inflight.add(-1)
        return True
"""


@pytest.fixture(scope="module")
def metrics(build_filter: Build) -> Iterator[Pair]:
    with drivers(Plugin(build_filter(METRICS))) as pair:
        yield pair


def test_metrics(metrics: Pair) -> None:
    check(metrics, Call("GET", "/"), Call("POST", "/x", (), b"12345"), Call("GET", "/", upstream=Reply(503)))
    check(metrics, Call("GET", "/again"))


LOGS = """
import logging
import sys
import proxywasm
from proxywasm import HttpContext, PluginContext, log

logger = logging.getLogger("diff")

class Logs(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        for emit in (log.trace, log.debug, log.info, log.warn, log.error, log.critical):
            emit(f"{emit.__name__} {headers[':path']}")
        print("printed", headers[":path"])
        print("to stderr", file=sys.stderr)
        logger.warning("logging module %s", headers[":path"])
        log.info("multi\\nline")
        log.info(f"level={int(log.level())}")

@proxywasm.register
class LogsPlugin(PluginContext):
    http_context = Logs

    def validate_configuration(self, configuration):
        log.info(f"validate_configuration {configuration!r}")
        return True

    def on_configure(self, configuration):
        log.info(f"on_configure {configuration!r}")
        return True
"""


@pytest.fixture(scope="module")
def logs(build_filter: Build) -> Iterator[Pair]:
    with drivers(Plugin(build_filter(LOGS), config="cfg")) as pair:
        yield pair


def test_log_lines(logs: Pair) -> None:
    check(logs, Call("GET", "/log"))


@pytest.fixture(scope="module")
def logs_debug(build_filter: Build) -> Iterator[Pair]:
    with drivers(Plugin(build_filter(LOGS), log_level="debug")) as pair:
        yield pair


def test_log_lines_at_debug(logs_debug: Pair) -> None:
    check(logs_debug, Call("GET", "/debug"))


FAIL = """
import proxywasm
from proxywasm import FailurePolicy, HttpContext, PluginContext, log

class Fail(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        self.where = headers.get("x-fail", "")
        if self.where == "request":
            raise ValueError("boom in request")

    def on_request_body(self, body, end_of_stream):
        if self.where == "body":
            raise KeyError("boom in body")

    def on_response_headers(self, headers, end_of_stream):
        headers["x-response-hook"] = "ran"
        if self.where == "response":
            raise RuntimeError("boom in response")

    def on_log(self):
        log.info(f"on_log where={self.where}")

@proxywasm.register
class FailPlugin(PluginContext):
    http_context = Fail
    failure_policy = FailurePolicy.{policy}
"""


@pytest.fixture(scope="module")
def fail_closed(build_filter: Build) -> Iterator[Pair]:
    with drivers(Plugin(build_filter(FAIL.replace("{policy}", "FAIL_CLOSED")))) as pair:
        yield pair


def test_exceptions_fail_closed(fail_closed: Pair) -> None:
    check(
        fail_closed,
        Call("GET", "/", (("x-fail", "request"),)),
        Call("POST", "/", (("x-fail", "body"),), b"data"),
        Call("GET", "/", (("x-fail", "response"),)),
        Call("GET", "/", (("x-fail", "no"),)),
    )


@pytest.fixture(scope="module")
def fail_open(build_filter: Build) -> Iterator[Pair]:
    with drivers(Plugin(build_filter(FAIL.replace("{policy}", "FAIL_OPEN")))) as pair:
        yield pair


def test_exceptions_fail_open(fail_open: Pair) -> None:
    check(
        fail_open,
        Call("GET", "/", (("x-fail", "request"),)),
        Call("POST", "/", (("x-fail", "body"),), b"data"),
        Call("GET", "/", (("x-fail", "response"),)),
    )


LATE_IMPORTS = (
    PROBE
    + """
import importlib
import math

import proxywasm
from proxywasm import HttpContext

@proxywasm.register
class LateImports(HttpContext):
    def on_response_headers(self, headers, end_of_stream):
        # math was initialised at build time; _pickle and cmath were not: the served module left
        # their code out, and their import fails with the build-time rule's message.
        for name in ("math", "_pickle", "cmath", "no_such_module"):
            headers["x-import-" + name.strip("_")] = probe(lambda: importlib.import_module(name).__name__)
"""
)


@pytest.fixture(scope="module")
def late_imports(build_filter: Build) -> Iterator[Pair]:
    with drivers(Plugin(build_filter(LATE_IMPORTS))) as pair:
        yield pair


def test_late_imports_of_builtin_modules(late_imports: Pair) -> None:
    envoy, host = late_imports
    calls = [Call("GET", "/")]
    outcome = envoy.run(calls)
    assert_same(outcome, host.run(calls))
    answered = dict(outcome.exchanges[0].headers)
    assert answered["x-import-math"] == "'math'"
    for name in ("pickle", "cmath"):  # linked, not initialised at build time: the build-time rule
        assert answered[f"x-import-{name}"].startswith("ModuleNotFoundError: No module named"), answered
        assert "was not imported while the filter was built" in answered[f"x-import-{name}"]


SHARED = """
import proxywasm
from proxywasm import CasMismatch, HttpContext, shared_data

@proxywasm.register
class Shared(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        hits = shared_data.update("hits", lambda n: n + 1, default=0)
        headers["x-hits"] = str(hits)
        key = headers.get("x-key")
        if key:
            shared_data.set(key, headers.get("x-value", ""))
            found = shared_data.get(key)
            headers["x-read-back"] = repr(found[0]) if found else "none"
            try:
                shared_data.set(key, "stale", cas=12345)
                headers["x-stale"] = "written"
            except CasMismatch:
                headers["x-stale"] = "cas-mismatch"
        missing = shared_data.get("never-set")
        headers["x-missing"] = repr(missing)
"""


@pytest.fixture(scope="module")
def shared(build_filter: Build) -> Iterator[Pair]:
    with drivers(Plugin(build_filter(SHARED))) as pair:
        yield pair


def test_shared_data(shared: Pair) -> None:
    check(shared, Call("GET", "/"), Call("GET", "/", (("x-key", "k"), ("x-value", "v1"))), Call("GET", "/"))


def test_startup_log_lines(logs: Pair) -> None:
    envoy, host = logs
    # Envoy configures the plugin in the main thread's VM and again in each worker's (one here):
    # the same lines twice. The host has one VM, so compare the distinct lines in order.
    assert list(dict.fromkeys(envoy.startup_logs)) == host.startup_logs

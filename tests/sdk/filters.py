"""Filters shared by the SDK feature tests: each runs in the local host and in real Envoy."""

AWAIT = """
import proxywasm
from proxywasm import Action, CalloutFailed, HttpContext, PluginContext, gather, log


class Auth(HttpContext):
    async def on_request_headers(self, headers, end_of_stream):
        path = headers[":path"]
        log.info(f"start {path}")
        try:
            if path.startswith("/gather"):
                a, b = await gather(self.http_call("auth", path="/a" + path), self.http_call("auth", path="/b" + path))
                headers["x-a"] = a.body.decode()
                headers["x-b"] = b.body.decode()
                return None
            if path.startswith("/body"):
                body = await self.request_body(max_bytes=64)
                answer = await self.http_call("auth", method="POST", path="/check", body=body)
                if answer.status != 200:
                    self.send_response(403, b"denied: " + body)
                    return
                return Action.CONTINUE
            if path.startswith("/sync"):
                return None  # never waits: the callback's result is the coroutine's
            if path.startswith("/forget"):
                self.http_call("auth", path="/auth/forgotten")  # never awaited: an author mistake
                return None
            cluster = "broken" if path.startswith("/reset") else "auth"
            try:
                user = headers.get("x-user", "")
                answer = await self.http_call(cluster, path="/auth" + path, headers=[("x-user", user)], timeout_ms=5000)
            except CalloutFailed as err:
                self.send_response(502, f"auth failed: {err}")
                return
            if path.startswith("/boom"):
                raise RuntimeError("after the callout")
            if answer.status != 200:
                self.send_response(403, f"denied by auth ({answer.status}): {answer.body.decode()}")
                return
            self.request_headers["x-auth"] = answer.headers.get("x-auth-user", "?")
        finally:
            log.info(f"finally {path}")


@proxywasm.register
class Plugin(PluginContext):
    http_context = Auth
"""

MISTAKES = """
import proxywasm
from proxywasm import Action, HeadersUnavailable, HttpContext, LocalReplyAlreadySent, PluginContext, log

HELD = []


class Stream(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        path = self.path = headers[":path"]
        if path == "/forgot-pause":
            self.http_call("svc", self.on_answer, path="/svc")
        elif path == "/detached":
            self.http_call("svc", path="/svc", detach=True)
        elif path == "/no-cluster":
            self.http_call("nope", self.on_answer, path="/svc")
            return Action.PAUSE
        elif path == "/unawaited":
            self.http_call("svc", path="/svc")
        elif path.startswith("/two-replies"):
            self.send_response(403, "first")
            return Action.PAUSE
        elif path == "/hold":
            HELD.append(self)
            return Action.PAUSE
        elif path == "/forgot-resume":
            self.http_call("svc", self.on_answer, path="/svc")  # on_answer neither resumes nor answers
            return Action.PAUSE
        elif path == "/returns-true":
            return True  # what on_configure returns; Envoy would read it as PAUSE and hold the request
        elif path == "/reply-then-true":
            self.send_response(403, "no tenant\\n")
            return True  # after a local reply: the reply stands
        elif path == "/returns-str":
            return "continue"
        elif path == "/returns-200":
            return 200
        elif path == "/header-injection":
            headers["x-a"] = "foo\\r\\nx-injected: 1"  # e.g. copied from a query parameter
        elif path == "/bad-header-name":
            headers.add("X Upper Case", "v")
        elif path == "/control-character":
            headers.add("x-b", "a\\x01b")  # not only CR/LF/NUL: Envoy refuses any control character but HT
        elif path == "/path-with-space":
            headers[":path"] = "/a b"  # e.g. an unencoded query value
        elif path == "/path-with-space-and-cr":
            headers[":path"] = "/a b\\rc"  # both refusals apply: the same one wins in Envoy and natively
        elif path == "/reply-header-injection":
            self.send_response(403, "no", headers=[("x-reason", "bad\\r\\nset-cookie: a=b")])
            return Action.PAUSE
        elif path == "/callout-header-injection":
            self.http_call("svc", self.on_answer, path="/svc", headers=[("x-c", "a\\nb")])
            return Action.PAUSE
        elif path == "/count":
            headers.add("x-twice", "1")
            headers.add("x-twice", "2")
            headers["x-count"] = str(len(headers))
        elif path == "/raw":
            value = headers["x-raw"]
            headers["x-copy"] = value
            headers["x-upper"] = value.upper()
            log.info(f"raw value {value}")
        elif path == "/pseudo":
            return self.forward_pseudo(headers)
        return None

    def forward_pseudo(self, headers):
        self.http_call("svc", self.on_pseudo, path="/explicit", method="PUT", headers=headers.pairs())
        return Action.PAUSE

    def on_pseudo(self, response):
        self.send_response(200, response.body, [("x-svc-type", str(type(response.headers).__name__)),
                                               ("x-svc-header", response.headers["x-svc"]),
                                               ("x-svc-bytes", repr(response.headers.get_bytes("x-svc")))])

    def on_answer(self, response):
        pass

    def on_request_body(self, body, end_of_stream):
        if self.path == "/late-read" and end_of_stream:
            try:
                self.request_headers[":path"]
            except HeadersUnavailable as err:
                log.info(f"unavailable: {err}")
        return None

    def on_response_headers(self, headers, end_of_stream):
        if self.path == "/two-replies":
            try:
                self.send_response(500, "second")
            except LocalReplyAlreadySent as err:
                log.info(f"refused: {err}")
        elif self.path == "/two-replies-uncaught":
            self.send_response(500, "second")
        return None


@proxywasm.register
class Plugin(PluginContext):
    http_context = Stream

    def on_configure(self, configuration):
        self.set_tick_period(100)
        return True

    def on_tick(self):
        while HELD:
            held = HELD.pop()
            held.request_headers["x-from-tick"] = held.request_headers[":path"]
            held.resume_request()
"""

CONFIGURE_NONE = """
import proxywasm
from proxywasm import PluginContext


@proxywasm.register
class Forgetful(PluginContext):
    def on_configure(self, configuration):
        self.ready = True
"""

METRICS = """
import proxywasm
from proxywasm import Counter, Gauge, Histogram, HttpContext, PluginContext

requests = Counter("requests_total", labels=("route", "code"))
inflight = Gauge("inflight_requests", labels=("route",))
upstream_ms = Histogram("upstream_ms", labels=("route",))
plain = Counter("plain_total")
unused = Counter("unused_total")


class Stream(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        self.route = headers[":path"].split("/")[1].split("?")[0]
        inflight.labels(self.route).add(1)
        plain.increment(0)

    def on_response_headers(self, headers, end_of_stream):
        requests.labels(route=self.route, code=headers[":status"]).increment()
        inflight.labels(route=self.route).add(-1)
        upstream_ms.labels(self.route).record(7)
        if self.route == "odd":
            requests.labels(route='a;b"c', code="x\\ny").increment()


@proxywasm.register
class Plugin(PluginContext):
    http_context = Stream

    def on_configure(self, configuration):
        requests.labels(route="declared", code="200")  # defined now: shows 0 before any request
        return True
"""

ROUTE_CONFIG = """
import json
import proxywasm
from proxywasm import Action, HttpContext


@proxywasm.register
class Limits(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        config = self.route_config
        headers["x-route-config"] = json.dumps(config, sort_keys=True)
        headers["x-route-metadata"] = (proxywasm.properties.get("xds", "route_metadata") or b"").hex()
        if config.get("mode") == "strict" and "x-token" not in headers:
            self.send_response(401, "this route needs a token")
            return Action.PAUSE
        return None
"""

EXTRAS = """
import proxywasm
from proxywasm import Action, BodyTooLarge, HttpContext, PluginContext, gather, log

TICKS = []


class Stream(HttpContext):
    async def on_request_headers(self, headers, end_of_stream):
        path = self.path = headers[":path"]
        if path.startswith("/grpc/"):
            reply = await self.grpc_call("grpc", "test.Echo", path.split("/")[2], path.encode(), timeout_ms=5000)
            self.send_response(200 if reply.ok else 502, f"{int(reply.status)}|{reply.data.decode()}|{reply.message}")
            return
        if path == "/gather-fails":
            try:
                await gather(self.http_call("svc", path="/ok"), self.http_call("broken", path="/x"))
            except Exception as err:
                self.send_response(502, f"{type(err).__name__}")
            return
        if path == "/gather-exceptions":
            ok, failed = await gather(self.http_call("svc", path="/ok"), self.http_call("broken", path="/x"),
                                      return_exceptions=True)
            self.send_response(200, f"{ok.status}|{type(failed).__name__}")
            return
        if path == "/gather-coroutines":
            first, second = await gather(self.fetch("/one"), self.fetch("/two"))
            headers["x-fetched"] = f"{first}+{second}"
            return
        if path == "/gather-abandon":
            try:
                await gather(self.slow(), self.http_call("broken", path="/x"))
            except Exception as err:
                log.info(f"gather gave up: {type(err).__name__}")
            return None  # the request goes on; the slow coroutine is closed
        if path == "/tick":
            TICKS.append(self)
            return Action.PAUSE  # the plugin's async on_tick resumes it
        return None

    async def slow(self):
        try:
            await self.http_call("svc", path="/slow")
            log.info("slow child finished")
        finally:
            log.info("slow child closed")

    async def fetch(self, where):
        answer = await self.http_call("svc", path=where)
        return answer.body.decode()

    async def on_response_headers(self, headers, end_of_stream):
        if self.path.startswith("/inspect"):
            try:
                body = await self.response_body(max_bytes=40)
            except BodyTooLarge:
                log.info("response too large")
                raise
            log.info(f"response body {len(body)} bytes")
            if b"secret" in body:
                self.send_response(502, "the upstream leaked a secret")
        return None


@proxywasm.register
class Plugin(PluginContext):
    http_context = Stream
    allow = False

    def on_configure(self, configuration):
        self.set_tick_period(50)
        return True

    async def on_tick(self):
        while TICKS:
            held = TICKS.pop()
            answer = await self.http_call("svc", path="/from-tick")
            held.request_headers["x-tick"] = answer.body.decode()
            held.resume_request()
"""

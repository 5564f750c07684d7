"""Bench workload 4 (callback style): ask an authorisation service (an http_call to the
``upstream`` cluster) before each request goes on; its twin callout_await.py does the same with
``await``. The service answers 403 for /auth-deny, which the filter turns into a 403."""

import proxywasm
from proxywasm import Action, HttpContext


@proxywasm.register
class Callout(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        path = "/auth-deny" if headers[":path"].startswith("/deny") else "/auth"
        self.http_call("upstream", self.on_answer, path=path, headers=[("x-api-key", headers.get("x-api-key", ""))],
                       timeout_ms=5000)  # fmt: skip
        return Action.PAUSE

    def on_answer(self, response):
        if response.status != 200:
            self.send_response(403, "denied\n")
            return
        self.request_headers["x-auth"] = "ok"
        self.resume_request()

"""Bench workload 4 (await style): callout.py's twin, with the callout awaited in one coroutine."""

import proxywasm
from proxywasm import HttpContext


@proxywasm.register
class CalloutAwait(HttpContext):
    async def on_request_headers(self, headers, end_of_stream):
        path = "/auth-deny" if headers[":path"].startswith("/deny") else "/auth"
        answer = await self.http_call("upstream", path=path, headers=[("x-api-key", headers.get("x-api-key", ""))],
                                      timeout_ms=5000)  # fmt: skip
        if answer.status != 200:
            self.send_response(403, "denied\n")
            return
        headers["x-auth"] = "ok"

"""http_auth_await: asks the ``auth`` cluster about every request and lets it through, or answers
with the auth service's refusal, written as one ``async def`` callback.

``await self.http_call(...)`` holds the request while the callout is in flight (the SDK answers
Envoy PAUSE and resumes the request when the coroutine returns); no callback, no state kept
between callbacks. Routes can opt out with their metadata (``self.route_config``).
"""

import proxywasm
from proxywasm import CalloutFailed, HttpContext, log

AUTH_CLUSTER = "auth"


@proxywasm.register
class AwaitAuth(HttpContext):
    async def on_request_headers(self, headers, end_of_stream):
        if self.route_config.get("public"):
            return None  # a public route (metadata.filter_metadata.http_auth_await.public: true)
        token = headers.get("authorization")
        if token is None:
            self.send_response(401, "missing credentials\n", [("www-authenticate", "Bearer")])
            return None
        try:
            answer = await self.http_call(
                AUTH_CLUSTER,
                path="/check",
                headers=[("authorization", token), ("x-original-path", headers[":path"])],
                timeout_ms=1000,
            )
        except CalloutFailed as err:  # Envoy got no response at all (reset mid-answer)
            log.warn(f"auth callout failed: {err}")
            self.send_response(503, "authorization service unavailable\n")
            return None
        if answer.status == 200:
            # The request is still held: its headers can be changed before the upstream sees them.
            headers["x-auth-user"] = answer.headers.get("x-auth-user", "")
            return None  # None (CONTINUE): the SDK resumes the request
        if answer.status in (401, 403):
            self.send_response(answer.status, answer.body or b"denied\n")
        else:  # 503 (auth unreachable) or 504 (timeout), as Envoy answers them, or an auth error
            log.warn(f"auth answered {answer.status}: {answer.text()}")
            self.send_response(503, "authorization service unavailable\n")
        return None

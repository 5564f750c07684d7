"""multiple_dispatches: when a response's headers arrive, makes ten calls to the ``httpbin``
cluster at once and holds the response until all ten have answered, then adds
``total-dispatched: 10`` to it.

Port of the proxy-wasm Go SDK's ``examples/multiple_dispatches``.
"""

import proxywasm
from proxywasm import Action, HttpContext, log

CLUSTER = "httpbin"
TOTAL = 10


@proxywasm.register
class FanOut(HttpContext):
    pending = 0

    def on_response_headers(self, headers, end_of_stream):
        for _ in range(TOTAL):
            self.http_call(CLUSTER, self.on_reply, path="/", timeout_ms=50000)
            self.pending += 1
        return Action.PAUSE

    def on_reply(self, response):
        self.pending -= 1
        if self.pending:
            log.info(f"pending dispatched requests: {self.pending}")
            return
        self.response_headers.add("total-dispatched", str(TOTAL))
        self.resume_response()
        log.info(f"response resumed after processed {TOTAL} dispatched request")

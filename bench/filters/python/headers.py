"""Bench workload 1: check an API key header, add a request and a response header."""

import proxywasm
from proxywasm import Action, HttpContext


@proxywasm.register
class Headers(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        if "x-api-key" not in headers:
            self.send_response(401, "missing x-api-key\n")
            return Action.PAUSE
        headers["x-bench"] = "1"
        return Action.CONTINUE

    def on_response_headers(self, headers, end_of_stream):
        headers["x-filtered"] = "python"
        return Action.CONTINUE

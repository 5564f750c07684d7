"""Soak workload: the header filter's work plus a JSON round trip and a shared-data counter per
request, reporting the VM's linear memory so growth can be watched from outside."""

import json

import proxywasm
from proxywasm import Action, Counter, HttpContext, shared_data

requests = Counter("soak_requests")


@proxywasm.register
class Soak(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        if "x-api-key" not in headers:
            self.send_response(401, "missing x-api-key\n")
            return Action.PAUSE
        headers["x-soak"] = json.dumps({"path": headers[":path"], "n": len(headers)})
        shared_data.update("soak:count", lambda n: n + 1, default=0)
        requests.increment()
        return Action.CONTINUE

    def on_response_headers(self, headers, end_of_stream):
        headers["x-vm-memory"] = str(proxywasm.vm.memory_bytes())
        return Action.CONTINUE

"""http_auth_random: holds each request while it asks the ``httpbin`` cluster, then lets it
through or answers 403 depending on a hash of the answer (a stand-in for a real authorisation
service).

Port of the proxy-wasm Go SDK's ``examples/http_auth_random``.
"""

import proxywasm
from proxywasm import Action, HttpContext, log

CLUSTER = "httpbin"


def fnv1a_32(data):
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


@proxywasm.register
class RandomAuth(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        pairs = headers.pairs()
        for name, value in pairs:
            log.info(f"request header: {name}: {value}")
        self.http_call(CLUSTER, self.on_auth_response, headers=pairs, timeout_ms=50000)
        log.info(f"http call dispatched to {CLUSTER}")
        return Action.PAUSE

    def on_auth_response(self, response):
        if response.failed:
            log.critical(f"the call to {CLUSTER} failed")
            self.send_response(503, "authorization service unavailable")
            return
        for name, value in response.headers.pairs():
            log.info(f"response header from {CLUSTER}: {name}: {value}")
        if fnv1a_32(response.body) % 2 == 0:
            log.info("access granted")
            self.resume_request()
            return
        log.info("access forbidden")
        self.send_response(403, "access forbidden", [("powered-by", "proxy-wasm-python")])

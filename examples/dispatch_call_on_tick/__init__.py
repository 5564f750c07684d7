"""dispatch_call_on_tick: every 100 ms, each plugin calls the ``web_service`` cluster (``/ok`` or
``/fail`` at random) from its tick and logs the answer's headers and trailers.

Port of the proxy-wasm Go SDK's ``examples/dispatch_call_on_tick``.
"""

import os

import proxywasm
from proxywasm import HostCallError, HttpContext, PluginContext, log

TICK_MS = 100


@proxywasm.register
class CallOnTick(PluginContext):
    http_context = HttpContext  # streams pass untouched
    calls = 0

    def on_configure(self, configuration):
        self.set_tick_period(TICK_MS)
        log.info(f"set tick period milliseconds: {TICK_MS}")
        return True

    def on_tick(self):
        path = "/ok" if os.urandom(1)[0] % 2 == 0 else "/fail"
        try:
            self.http_call(
                "web_service", self.on_response, path=path, authority="some_authority", headers=[("accept", "*/*")]
            )
        except HostCallError as err:
            log.critical(f"dispatch httpcall failed: {err}")

    def on_response(self, response):
        self.calls += 1
        log.info(f"called {self.calls} for context_id={self.context_id}")
        for name, value in response.headers.pairs():
            log.info(f"response header for the dispatched call: {name}: {value}")
        for name, value in response.trailers.pairs():
            log.info(f"response trailer for the dispatched call: {name}: {value}")

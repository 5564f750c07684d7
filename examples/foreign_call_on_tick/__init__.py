"""foreign_call_on_tick: on every tick (1 ms), calls Envoy's ``compress`` foreign function
(zlib) and logs the result.

Port of the proxy-wasm Go SDK's ``examples/foreign_call_on_tick``.
"""

import proxywasm
from proxywasm import HostCallError, HttpContext, PluginContext, call_foreign_function, log

TICK_MS = 1


@proxywasm.register
class ForeignCallOnTick(PluginContext):
    http_context = HttpContext  # streams pass untouched
    calls = 0

    def on_configure(self, configuration):
        self.set_tick_period(TICK_MS)
        log.info(f"set tick period milliseconds: {TICK_MS}")
        return True

    def on_tick(self):
        self.calls += 1
        try:
            result = call_foreign_function("compress", b"hello world!")
        except HostCallError as err:
            log.critical(f"foreign function (compress) failed: {err}")
            return
        log.info(f"foreign function (compress) called: {self.calls}, result: {result.hex()}")

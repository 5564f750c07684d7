"""postpone_requests: holds every request when its headers arrive and lets the held requests go
on the next tick (once a second).

Port of the proxy-wasm Go SDK's ``examples/postpone_requests``.
"""

import proxywasm
from proxywasm import Action, HttpContext, PluginContext, log

TICK_MS = 1000


class Postponed(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        log.info(f"postpone request with context_id={self.context_id}")
        self.plugin.postponed.append(self)
        return Action.PAUSE


@proxywasm.register
class PostponePlugin(PluginContext):
    http_context = Postponed

    def __init__(self):
        self.postponed = []

    def on_configure(self, configuration):
        self.set_tick_period(TICK_MS)
        return True

    def on_tick(self):
        while self.postponed:
            stream = self.postponed.pop(0)
            log.info(f"resume request with context_id={stream.context_id}")
            stream.resume_request()

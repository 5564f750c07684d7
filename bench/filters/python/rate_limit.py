"""Bench workload 3: a fixed-window rate limit per client, counted in shared data with CAS.

The plugin configuration, if any, is the limit per window (a decimal number): the bench's
rejection check sets a small one; timed runs leave it empty.
"""

import proxywasm
from proxywasm import Action, CasMismatch, HttpContext, PluginContext, shared_data

LIMIT = 1_000_000_000  # per one-second window; high so the bench measures the bookkeeping
WINDOW_NS = 1_000_000_000


class RateLimit(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        key = "rl:" + headers.get("x-client", "anonymous")
        window = proxywasm.now_ns() // WINDOW_NS
        for _ in range(8):
            found = shared_data.get(key)
            count, cas = 0, 0
            if found is not None:
                stored_window, _, stored_count = found[0].partition(b":")
                cas = found[1]
                if int(stored_window) == window:
                    count = int(stored_count)
            if count >= LIMIT:
                self.send_response(429, "rate limited\n")
                return Action.PAUSE
            try:
                shared_data.set(key, b"%d:%d" % (window, count + 1), cas)
                return Action.CONTINUE
            except CasMismatch:
                continue
        return Action.CONTINUE


@proxywasm.register
class RateLimitPlugin(PluginContext):
    http_context = RateLimit

    def on_configure(self, configuration):
        global LIMIT
        if configuration:
            LIMIT = int(configuration)  # not a number: ValueError, and Envoy rejects the configuration
        return LIMIT > 0

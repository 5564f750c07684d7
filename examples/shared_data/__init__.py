"""shared_data: a request counter shared by every VM (every worker thread) of the Envoy process,
incremented with compare-and-swap so that no increment is lost.

Port of the proxy-wasm Go SDK's ``examples/shared_data``.
"""

import proxywasm
from proxywasm import HttpContext, log, shared_data

KEY = "shared_data_key"


@proxywasm.register
class CountRequests(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        # update() reads, changes and writes back, retrying when another worker wrote in between.
        value = shared_data.update(KEY, lambda count: count + 1, default=0)
        log.info(f"shared value: {value}")

"""shared_data: a request counter shared by every VM (every worker thread) of the Envoy process,
incremented with compare-and-swap so that no increment is lost. The key is created when the VM
starts (the main thread's VM starts before the workers serve): a write to a key that does not exist
yet cannot be compare-and-swapped.

Port of the proxy-wasm Go SDK's ``examples/shared_data``.
"""

import proxywasm
from proxywasm import HttpContext, PluginContext, log, shared_data

KEY = "shared_data_key"


class CountRequests(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        # update() reads, changes and writes back, retrying when another worker wrote in between.
        value = shared_data.update(KEY, lambda count: count + 1, default=0)
        log.info(f"shared value: {value}")


@proxywasm.register
class SharedCounter(PluginContext):
    http_context = CountRequests

    def on_vm_start(self, vm_configuration):
        shared_data.setdefault(KEY, 0)
        return True

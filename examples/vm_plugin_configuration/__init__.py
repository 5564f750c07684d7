"""vm_plugin_configuration: logs the VM configuration (once per VM) and the plugin configuration.

Port of the proxy-wasm Go SDK's ``examples/vm_plugin_configuration``.
"""

import proxywasm
from proxywasm import HttpContext, PluginContext, log


@proxywasm.register
class ShowConfiguration(PluginContext):
    http_context = HttpContext  # streams pass untouched

    def on_vm_start(self, vm_configuration):
        log.info(f"vm config: {vm_configuration.decode()}")
        return True

    def on_configure(self, configuration):
        log.info(f"plugin config: {configuration.decode()}")
        return True

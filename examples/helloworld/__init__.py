"""helloworld: logs when the plugin starts, then every second from a tick.

Port of the proxy-wasm Go SDK's ``examples/helloworld``.
"""

import os

import proxywasm
from proxywasm import HttpContext, PluginContext, log

TICK_MS = 1000


class PassThrough(HttpContext):
    """Streams pass untouched: this example only shows the plugin's lifecycle."""


@proxywasm.register
class HelloWorld(PluginContext):
    http_context = PassThrough

    def on_configure(self, configuration: bytes) -> bool:
        log.info("on_configure from Python!")
        self.set_tick_period(TICK_MS)
        return True

    def on_tick(self) -> None:
        value = int.from_bytes(os.urandom(8), "little")
        log.info(f"It's {proxywasm.now_ns()}: random value: {value}")
        log.info("on_tick called")

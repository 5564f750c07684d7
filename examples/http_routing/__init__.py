"""http_routing: sends about half of the requests to the canary cluster by adding ``-canary``
to their ``:authority`` (the route config matches ``*-canary``).

A non-empty plugin configuration fixes the dice: its first byte is used instead of a random number.
Port of the proxy-wasm Go SDK's ``examples/http_routing``.
"""

import os

import proxywasm
from proxywasm import HttpContext, PluginContext, log


def dice():
    return int.from_bytes(os.urandom(4), "little")


class Router(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        value = self.plugin.dice_override or dice()
        log.info(f"value: {value}")
        if value % 2 == 0:
            headers[":authority"] = headers[":authority"] + "-canary"


@proxywasm.register
class RoutingPlugin(PluginContext):
    http_context = Router
    dice_override = 0

    def on_configure(self, configuration):
        self.dice_override = configuration[0] if configuration else 0
        return True

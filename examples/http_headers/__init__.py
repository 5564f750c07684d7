"""http_headers: sets a request header, adds response headers (one fixed, one from the plugin
configuration) and logs every header it sees.

Port of the proxy-wasm Go SDK's ``examples/http_headers``.
"""

import json

import proxywasm
from proxywasm import HttpContext, PluginContext, log

USAGE = 'invalid configuration format; expected {"header": "<header name>", "value": "<header value>"}'


class Headers(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        headers["test"] = "best"
        for name, value in headers.pairs():
            log.info(f"request header --> {name}: {value}")

    def on_response_headers(self, headers, end_of_stream):
        plugin = self.plugin
        log.info(f"adding header: {plugin.header_name}={plugin.header_value}")
        headers.add("x-proxy-wasm-python-example", "http_headers")
        if plugin.header_name:
            headers.add(plugin.header_name, plugin.header_value)
        for name, value in headers.pairs():
            log.info(f"response header <-- {name}: {value}")

    def on_done(self):
        log.info(f"{self.context_id} finished")
        return True


@proxywasm.register
class HeadersPlugin(PluginContext):
    http_context = Headers
    header_name = ""
    header_value = ""

    def on_configure(self, configuration):
        log.debug("loading plugin config")
        if not configuration:
            return True
        try:
            config = json.loads(configuration)
            name = str(config.get("header", "")).strip()
            value = str(config.get("value", "")).strip()
        except (ValueError, AttributeError):
            name = value = ""
        if not name or not value:
            log.critical(USAGE)
            return False
        self.header_name, self.header_value = name, value
        log.info(f"header from config: {name} = {value}")
        return True

"""json_validation: lets a request through only if it is ``application/json`` and its body is a
JSON object with every key the plugin configuration requires; otherwise answers 403.

Configuration: ``{"requiredKeys": ["id", "token"]}``.
Port of the proxy-wasm Go SDK's ``examples/json_validation``.
"""

import json

import proxywasm
from proxywasm import Action, HttpContext, PluginContext, log


class Validator(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        if headers.get("content-type") != "application/json":
            self.send_response(403, "content-type must be provided")
            return Action.PAUSE
        return Action.CONTINUE

    def on_request_body(self, body, end_of_stream):
        if not end_of_stream:
            return Action.PAUSE  # wait for the whole body
        if not self.valid(body.read()):
            self.send_response(403, "invalid payload")
            return Action.PAUSE
        return Action.CONTINUE

    def valid(self, data):
        try:
            payload = json.loads(data)
        except ValueError:
            log.error(f"body is not a valid json: {data!r}")
            return False
        for key in self.plugin.required_keys:
            if not isinstance(payload, dict) or key not in payload:
                log.error(f"required key ({key}) is missing: {data.decode(errors='replace')}")
                return False
        return True


@proxywasm.register
class ValidationPlugin(PluginContext):
    http_context = Validator
    required_keys = ()

    def on_configure(self, configuration):
        if not configuration:
            return True
        try:
            config = json.loads(configuration)
            keys = config.get("requiredKeys", [])
        except (ValueError, AttributeError):
            log.critical(f"the plugin configuration is not a valid json: {configuration!r}")
            return False
        self.required_keys = tuple(str(key) for key in keys)
        return True

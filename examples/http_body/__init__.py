"""http_body: appends to, prepends to or replaces a request or response body; configured with
``echo``, answers each request with its own body instead.

Request headers choose what happens: ``buffer-replace-at: response`` works on the response
(otherwise the request), ``buffer-operation: append|prepend|replace`` (default replace).
Port of the proxy-wasm Go SDK's ``examples/http_body``.
"""

import proxywasm
from proxywasm import Action, HttpContext, PluginContext, log

OPERATIONS = ("append", "prepend", "replace")


def apply(operation, body):
    if operation == "append":
        body.append(b"[this is appended body]")
    elif operation == "prepend":
        body.prepend(b"[this is prepended body]")
    else:
        body.replace(b"[this is replaced body]")


class SetBody(HttpContext):
    modify_response = False
    operation = "replace"

    def on_request_headers(self, headers, end_of_stream):
        self.modify_response = headers.get("buffer-replace-at") == "response"
        if "content-length" not in headers:
            self.send_response(400, "content must be provided")
            return Action.PAUSE
        # The body changes size: let Envoy frame it again rather than send a wrong length.
        del headers["content-length"]
        operation = headers.get("buffer-operation")
        self.operation = operation if operation in OPERATIONS else "replace"
        return Action.CONTINUE

    def on_request_body(self, body, end_of_stream):
        if self.modify_response:
            return Action.CONTINUE
        if not end_of_stream:
            return Action.PAUSE  # buffer until the whole body is here
        log.info(f"original request body: {body.read().decode(errors='replace')}")
        apply(self.operation, body)
        return Action.CONTINUE

    def on_response_headers(self, headers, end_of_stream):
        if self.modify_response:
            del headers["content-length"]
        return Action.CONTINUE

    def on_response_body(self, body, end_of_stream):
        if not self.modify_response:
            return Action.CONTINUE
        if not end_of_stream:
            return Action.PAUSE
        log.info(f"original response body: {body.read().decode(errors='replace')}")
        apply(self.operation, body)
        return Action.CONTINUE


class EchoBody(HttpContext):
    def on_request_body(self, body, end_of_stream):
        if not end_of_stream:
            return Action.PAUSE
        self.send_response(200, body.read())
        return Action.PAUSE


@proxywasm.register
class BodyPlugin(PluginContext):
    echo = False

    def on_configure(self, configuration):
        self.echo = configuration == b"echo"
        return True

    def new_http_context(self):
        return EchoBody() if self.echo else SetBody()

"""Bench workload 2: buffer a JSON request body and reject it unless it names a user."""

import json

import proxywasm
from proxywasm import Action, HttpContext


@proxywasm.register
class JsonBody(HttpContext):
    def on_request_body(self, body, end_of_stream):
        if not end_of_stream:
            return Action.PAUSE
        try:
            document = json.loads(body.read())
        except ValueError:
            document = None
        if not isinstance(document, dict) or "user" not in document:
            self.send_response(400, "a JSON object with a user is required\n")
            return Action.PAUSE
        return Action.CONTINUE

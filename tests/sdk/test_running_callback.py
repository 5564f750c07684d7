"""The callback the SDK names in its messages and checks before a late local reply
(``proxywasm.headers.running_callback``): what the runtime's C entry points record (callbacks.c's
current_callback), and the same natively."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from proxywasm_host import Host

FILTER = """
import proxywasm
from proxywasm import Action, HttpContext, PluginContext
from proxywasm.headers import running_callback

SEEN = []


class Stream(HttpContext):
    def __init__(self):
        SEEN.append(("init", running_callback()))

    def on_request_headers(self, headers, end_of_stream):
        SEEN.append(("request_headers", running_callback()))
        self.http_call("svc", self.on_answer, path="/")
        return Action.PAUSE

    def on_answer(self, response):
        SEEN.append(("answer", running_callback()))
        self.resume_request()

    def on_response_body(self, body, end_of_stream):
        if end_of_stream:
            SEEN.append(("response_body", running_callback()))
        return Action.CONTINUE

    def on_log(self):
        SEEN.append(("log", running_callback()))

    def __del__(self):  # no on_delete here: the runtime drops the context without entering the dispatcher
        SEEN.append(("del", running_callback()))
        proxywasm.log.info(repr(SEEN))
        SEEN.clear()


@proxywasm.register
class Plugin(PluginContext):
    http_context = Stream

    def on_configure(self, configuration):
        SEEN.append(("configure", running_callback()))
        return True
"""

EXPECTED = [
    ("configure", "on_configure"),
    ("init", "on_context_create"),
    ("request_headers", "on_request_headers"),
    ("answer", "on_http_call_response"),
    ("response_body", "on_response_body"),
    ("log", "on_log"),
    ("del", "on_delete"),
]


@pytest.mark.parametrize("mode", ["wasm", "native"])
def test_each_callback_is_named(tmp_path: Path, mode: str) -> None:
    source = tmp_path / "filter.py"
    source.write_text(textwrap.dedent(FILTER))
    host = Host.load(source, mode=mode, clusters={"svc": lambda request: (200, [], "ok")})
    assert host.request("POST", "/", body=b"echoed").status == 200  # the echo upstream answers with a body
    (line,) = [m for m in host.log_messages() if m.startswith("[")]
    assert line == repr(EXPECTED)

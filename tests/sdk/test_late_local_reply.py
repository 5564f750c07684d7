"""A local reply from the response body after the client got the response headers: Envoy resets
the stream (the differential suite shows it in Envoy 1.40, and that the SDK's message appears
there too); the SDK names the mistake, the local host raises it in tests. A reply from a body whose
headers are still held replaces the response and is no mistake."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from proxywasm.abi import AUTHOR_MISTAKE_PREFIX
from proxywasm_host import AuthorMistake, Host

FILTER = """
import proxywasm
from proxywasm import Action, HttpContext


@proxywasm.register
class Dlp(HttpContext):
    allow_on_headers_stop_iteration = True  # the held case needs it in Envoy (Host.load below too)

    def on_request_headers(self, headers, end_of_stream):
        self.hold = headers.get("x-hold") == "1"

    def on_response_headers(self, headers, end_of_stream):
        return Action.PAUSE if self.hold else Action.CONTINUE

    def on_response_body(self, body, end_of_stream):
        if not end_of_stream:
            return Action.PAUSE
        if b"secret" in body.read():
            self.send_response(451, "withheld\\n")
            return Action.PAUSE
        if self.hold:
            self.resume_response()
"""


def upstream(request: object) -> tuple[int, list[tuple[str, str]], bytes]:
    return 200, [("content-type", "text/plain")], b"the secret"


@pytest.mark.parametrize("mode", ["wasm", "native"])
def test_reply_after_the_headers_went_out_is_a_mistake(load_filter: Callable[..., Host], mode: str) -> None:
    with pytest.raises(AuthorMistake, match=r"^Dlp.on_response_body: send_response\(451\) after Envoy sent the resp"):
        load_filter(FILTER, mode, allow_on_headers_stop_iteration=True).request("GET", "/", upstream=upstream)

    host = load_filter(FILTER, mode, allow_on_headers_stop_iteration=True, raise_on_mistake=False)
    response = host.request("GET", "/", upstream=upstream)
    assert (response.status, response.details) == (0, "reset")  # a cut response (status 0 here), never the 451
    (line,) = [m for m in host.log_messages() if m.startswith(AUTHOR_MISTAKE_PREFIX)]
    assert "to cut the response on purpose, call self.reset()" in line


@pytest.mark.parametrize("mode", ["wasm", "native"])
def test_reply_while_the_headers_are_held_replaces_the_response(load_filter: Callable[..., Host], mode: str) -> None:
    host = load_filter(FILTER, mode, allow_on_headers_stop_iteration=True)
    response = host.request("GET", "/", headers=[("x-hold", "1")], upstream=upstream)
    assert (response.status, response.body) == (451, b"withheld\n")
    assert not [m for m in host.log_messages() if m.startswith(AUTHOR_MISTAKE_PREFIX)]

"""A filter that grows a body past its content-length: Envoy 1.40 sends every byte and the peer
reads the rest as the next message (request smuggling upstream). The host raises BodyOverrun
instead of showing the cut body; with content-length removed first, the body goes through whole."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from proxywasm_host import BodyOverrun, Host

GROW = """
import proxywasm
from proxywasm import Action, HttpContext


@proxywasm.register
class Grow(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        self.drop = "x-drop-length" in headers
        self.grow_response = self.drop or "x-grow-response" in headers
        if self.drop:
            del headers["content-length"]
        return Action.CONTINUE

    def on_request_body(self, body, end_of_stream):
        if end_of_stream:
            body.replace(bytes(body) + b"-EXTRA")
        return Action.CONTINUE

    def on_response_headers(self, headers, end_of_stream):
        if self.drop:
            del headers["content-length"]
        return Action.CONTINUE

    def on_response_body(self, body, end_of_stream):
        if end_of_stream and self.grow_response:
            body.replace(bytes(body) + b"-MORE")
        return Action.CONTINUE
"""


@pytest.mark.parametrize("mode", ["native", "wasm"])
def test_a_body_grown_past_its_content_length_is_refused(load_filter: Callable[..., Host], mode: str) -> None:
    host = load_filter(GROW, mode)
    with pytest.raises(BodyOverrun, match="content-length: 5 but the filter left 11 bytes"):
        host.request("POST", "/", body=b"hello")
    # content-length removed: Envoy frames the body itself (chunked), nothing is cut
    response = host.request("POST", "/", body=b"hello", headers=[("x-drop-length", "1")])
    assert response.upstream_request is not None and response.upstream_request.body == b"hello-EXTRA"
    assert response.body.endswith(b"-MORE")


def test_a_response_body_grown_past_its_content_length_is_refused(load_filter: Callable[..., Host]) -> None:
    host = load_filter(GROW, "native")
    upstream = lambda request: (200, [("content-length", "2")], b"ok")  # noqa: E731
    with pytest.raises(BodyOverrun, match="the response says content-length: 2 but the filter left 7 bytes"):
        host.request("GET", "/", headers=[("x-grow-response", "1")], upstream=upstream)

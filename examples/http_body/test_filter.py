"""http_body's test: the filter appends to, prepends to or replaces the request or the response
body, refuses a request without ``content-length``, and configured ``echo`` answers with the body.

The default upstream of ``host.request`` echoes the request body back, so the response shows what
the upstream received.
"""

from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_host import Host

HERE = Path(__file__).parent
ORIGINAL = b"[original body]"


@pytest.fixture
def host(proxywasm_host: Callable[..., Host], proxywasm_mode: str) -> Host:
    return proxywasm_host(HERE, mode=proxywasm_mode, plugin_config="body-set")


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        ("append", b"[original body][this is appended body]"),
        ("prepend", b"[this is prepended body][original body]"),
        ("replace", b"[this is replaced body]"),
        ("unknown", b"[this is replaced body]"),  # anything else means replace
    ],
)
def test_changes_the_request_body(host: Host, operation: str, expected: bytes) -> None:
    response = host.request("PUT", "/", headers=[("buffer-operation", operation)], body=ORIGINAL)
    assert response.upstream_request is not None
    assert response.upstream_request.body == expected
    assert (response.status, response.body) == (200, expected)
    assert "original request body: [original body]" in host.log_messages()


def test_changes_the_response_body(host: Host) -> None:
    headers = [("buffer-replace-at", "response"), ("buffer-operation", "prepend")]
    response = host.request("PUT", "/", headers=headers, body=ORIGINAL)
    assert response.upstream_request is not None
    assert response.upstream_request.body == ORIGINAL  # the request went up untouched
    assert (response.status, response.body) == (200, b"[this is prepended body][original body]")


def test_refuses_a_body_without_content_length(host: Host) -> None:
    response = host.request("PUT", "/", headers=[("transfer-encoding", "chunked")], body=ORIGINAL)
    assert (response.status, response.body) == (400, b"content must be provided")
    assert response.local_reply
    assert response.upstream_request is None


def test_echo_answers_with_the_request_body(proxywasm_host: Callable[..., Host], proxywasm_mode: str) -> None:
    echo = proxywasm_host(HERE, mode=proxywasm_mode, plugin_config="echo")
    response = echo.request("POST", "/", body=b"hello")
    assert (response.status, response.body) == (200, b"hello")
    assert response.local_reply and response.upstream_request is None

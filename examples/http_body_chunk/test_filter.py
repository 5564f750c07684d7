"""http_body_chunk's test: the request body is scanned chunk by chunk as it arrives.

``host.request`` sends a whole body at once; a stream driven step by step (``host.http_stream()``)
delivers it in the chunks a test chooses, as Envoy's codec would, and shows what the filter holds.
"""

from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_host import Action, Host

HEADERS = [(":method", "POST"), (":path", "/upload"), (":authority", "example.com")]


@pytest.fixture
def host(proxywasm_host: Callable[..., Host], proxywasm_mode: str) -> Host:
    return proxywasm_host(Path(__file__).parent, mode=proxywasm_mode)


def test_rejects_the_chunk_with_the_pattern(host: Host) -> None:
    stream = host.http_stream()
    assert stream.request_headers(HEADERS) == Action.CONTINUE  # the headers go upstream at once
    assert stream.request_body(b"a" * 1000) == Action.PAUSE  # clean so far: buffered, read on
    stream.request_body(b"b" * 1000 + b" pattern ")
    reply = stream.local_reply
    assert reply is not None
    assert (reply.status, reply.body) == (403, b"pattern found in chunk: 2")
    assert reply.header("powered-by") == "proxy-wasm-python"
    # The upstream saw the headers, but no byte of the body.
    assert stream.upstream_request is not None and stream.upstream_request.body == b""
    assert "local 403 response sent" in host.log_messages()


def test_reads_each_chunk_once(host: Host) -> None:
    stream = host.http_stream()
    stream.request_headers(HEADERS)
    for chunk in (b"a" * 300, b"b" * 200):
        assert stream.request_body(chunk) == Action.PAUSE
    assert stream.request_body(b"c" * 100, end_of_stream=True) == Action.CONTINUE
    assert stream.upstream_request is not None
    assert stream.upstream_request.body == b"a" * 300 + b"b" * 200 + b"c" * 100
    sizes = [m for m in host.log_messages() if m.startswith("read chunk size: ")]
    assert sizes == ["read chunk size: 300", "read chunk size: 200", "read chunk size: 100"]
    assert "pattern not found" in host.log_messages()


def test_clean_body_reaches_the_upstream(host: Host) -> None:
    response = host.request("POST", "/upload", body=b"a clean body")
    assert (response.status, response.body) == (200, b"a clean body")  # the default upstream echoes

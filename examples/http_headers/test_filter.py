"""http_headers' test: request and response headers changed by the filter, and a configuration
the filter rejects (Envoy would refuse the plugin: the host raises ``ConfigureError``)."""

from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_host import ConfigureError, Host

HERE = Path(__file__).parent
CONFIG = {"header": "x-wasm-header", "value": "demo-wasm"}  # what envoy.yaml configures


@pytest.fixture
def host(proxywasm_host: Callable[..., Host], proxywasm_mode: str) -> Host:
    return proxywasm_host(HERE, mode=proxywasm_mode, plugin_config=CONFIG)


def test_changes_headers_both_ways(host: Host) -> None:
    response = host.request("GET", "/uuid", headers=[("test", "worst"), ("this-is-key", "this-is-value")])
    assert response.status == 200
    # The upstream got the request header the filter replaced...
    assert response.upstream_request is not None
    assert response.upstream_request.header("test") == "best"
    assert response.upstream_request.header("this-is-key") == "this-is-value"
    # ...and the client the two response headers it added.
    assert response.header("x-proxy-wasm-python-example") == "http_headers"
    assert response.header("x-wasm-header") == "demo-wasm"


def test_logs_every_header(host: Host) -> None:
    host.request("GET", "/", headers=[("test", "worst")])
    messages = host.log_messages()
    assert "header from config: x-wasm-header = demo-wasm" in messages
    assert "request header --> test: best" in messages
    assert "request header --> test: worst" not in messages
    assert "response header <-- x-wasm-header: demo-wasm" in messages
    assert messages[-1].endswith(" finished")  # on_done, once the stream is over


def test_rejects_a_configuration_without_value(proxywasm_host: Callable[..., Host], proxywasm_mode: str) -> None:
    with pytest.raises(ConfigureError) as rejected:
        proxywasm_host(HERE, mode=proxywasm_mode, plugin_config={"header": "x-wasm-header"})
    assert "invalid configuration format" in str(rejected.value)  # the filter's critical log line

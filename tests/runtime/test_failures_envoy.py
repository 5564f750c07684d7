"""In real Envoy: an exception in a callback never kills the VM or hangs a request, and a bad
plugin configuration is rejected with a log line that says why."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from proxywasm_build.envoy import Envoy, EnvoyError, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer

RAISING = """
import json
import proxywasm
from proxywasm import FailurePolicy, HttpContext, PluginContext


class Filter(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        if headers[":path"] == "/boom":
            raise ValueError("the filter blew up")
        headers["x-filter"] = self.plugin.greeting


@proxywasm.register
class Plugin(PluginContext):
    http_context = Filter
    failure_policy = FailurePolicy.FAIL_CLOSED

    def on_configure(self, configuration):
        config = json.loads(configuration or b"{}")
        if config.get("policy") == "open":
            self.failure_policy = FailurePolicy.FAIL_OPEN
        self.greeting = config["greeting"]
        return True
"""


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


@pytest.fixture(scope="module")
def raising_wasm(build_filter: Callable[[str], Path]) -> Path:
    return build_filter(RAISING)


def start(wasm: Path, upstream: UpstreamServer, configuration: str) -> Envoy:
    plugin = WasmPlugin(wasm, name="raising", configuration=configuration)
    return Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[plugin]))


def test_exception_fails_closed_with_500_and_the_vm_keeps_serving(raising_wasm: Path, upstream: UpstreamServer) -> None:
    with start(raising_wasm, upstream, json.dumps({"greeting": "hi"})) as envoy:
        upstream.clear()
        status, _, body = get(envoy.url + "/boom")
        assert status == 500
        assert body == b"Internal Server Error\n"
        assert all(r.path != "/boom" for r in upstream.requests)
        envoy.wait_for_log(r"exception in Filter\.on_request_headers")
        logs = envoy.logs()
        assert "ValueError: the filter blew up" in logs
        assert 'File "filter.py", line 10, in on_request_headers' in logs
        # The same VM goes on serving, and the failure repeats rather than sticking.
        for _ in range(3):
            upstream.clear()
            assert get(envoy.url + "/fine")[0] == 200
            assert [(r.path, r.header("x-filter")) for r in upstream.requests] == [("/fine", "hi")]
            assert get(envoy.url + "/boom")[0] == 500


def test_exception_fails_open_when_the_plugin_says_so(raising_wasm: Path, upstream: UpstreamServer) -> None:
    with start(raising_wasm, upstream, json.dumps({"greeting": "hi", "policy": "open"})) as envoy:
        upstream.clear()
        status, _, _ = get(envoy.url + "/boom")
        assert status == 200
        assert [r.path for r in upstream.requests] == ["/boom"]
        envoy.wait_for_log("ValueError: the filter blew up")


def test_bad_plugin_configuration_is_rejected_with_the_reason(raising_wasm: Path, upstream: UpstreamServer) -> None:
    with pytest.raises(EnvoyError) as info:
        with start(raising_wasm, upstream, json.dumps({"no_greeting": True})):
            pass
    message = str(info.value)
    assert "Plugin.on_configure (the configuration is rejected)" in message
    assert "KeyError: 'greeting'" in message

"""The VM's environment variables (Envoy's ``vm_config.environment_variables``, Istio's
``vmConfig.env``) reach the filter as ``os.environ`` from the VM's start on (``on_vm_start``,
``on_configure``, every callback), also through ``from os import environ`` at module level. At
module level itself there is none: that code runs at build time. Natively, the filter sees the
VM's environment (``Host.load(env=...)``), never the test process's. Before, ``os.environ`` was
empty in Envoy whatever the configuration said, and natively it was the test process's."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer
from proxywasm_host import Host

FILTER = """
import os
from os import environ

import proxywasm
from proxywasm import HttpContext, PluginContext

AT_BUILD = dict(os.environ)  # module level: build time, no environment


class Stream(HttpContext):
    def on_response_headers(self, headers, end_of_stream):
        headers["x-region"] = os.getenv("REGION", "unset")
        headers["x-bound"] = environ.get("TIER", "unset")
        headers["x-at-build"] = str(len(AT_BUILD))
        headers["x-configured"] = self.plugin.seen
        headers["x-home"] = os.environ.get("HOME", "unset")  # the test process's: never
        headers["x-bytes"] = (os.getenvb(b"REGION") or b"unset").decode()


@proxywasm.register
class Plugin(PluginContext):
    http_context = Stream

    def on_configure(self, configuration):
        self.seen = os.environ.get("REGION", "unset")
        return True
"""

ENV = {"REGION": "eu-1", "TIER": "gold"}
EXPECTED = {
    "x-region": "eu-1", "x-bound": "gold", "x-at-build": "0", "x-configured": "eu-1", "x-home": "unset",
    "x-bytes": "eu-1",
}  # fmt: skip


def _seen(headers: list[tuple[str, str]]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers if k.lower() in EXPECTED}


@pytest.mark.parametrize("mode", ["wasm", "native"])
def test_in_the_host(load_filter: Callable[..., Host], mode: str) -> None:
    assert _seen(load_filter(FILTER, mode, env=ENV).request("GET", "/").headers) == EXPECTED
    unset = {**EXPECTED, "x-region": "unset", "x-bound": "unset", "x-configured": "unset", "x-bytes": "unset"}
    assert _seen(load_filter(FILTER, mode).request("GET", "/").headers) == unset


def test_in_envoy(build_filter: Callable[[str], Path]) -> None:
    plugin = WasmPlugin(build_filter(FILTER), name="env", environment_variables=ENV)
    with UpstreamServer() as upstream, Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[plugin])) as envoy:
        with urllib.request.urlopen(envoy.url + "/", timeout=10) as response:
            assert _seen(list(response.headers.items())) == EXPECTED

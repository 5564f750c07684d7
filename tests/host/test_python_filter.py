"""A Python (CPython-in-wasm) filter built by proxywasm_build, run through the local host."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_host import Host, WasmTrap

FILTER = """
import json
import proxywasm
from proxywasm import HttpContext, PluginContext


class Filter(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        if headers[":path"] == "/boom":
            raise ValueError("the filter blew up")
        headers["x-filter"] = self.plugin.greeting


@proxywasm.register
class Plugin(PluginContext):
    http_context = Filter

    def on_configure(self, configuration):
        self.greeting = json.loads(configuration or b"{}")["greeting"]
        return True
"""


@pytest.fixture(scope="module")
def python_filter(build_filter: Callable[[str], Path]) -> Path:
    return build_filter(FILTER)


def test_python_filter_adds_header(python_filter: Path) -> None:
    host = Host.load(python_filter, plugin_config={"greeting": "hi"})
    resp = host.request("GET", "/x")
    assert resp.status == 200
    assert resp.upstream_request is not None and resp.upstream_request.header("x-filter") == "hi"


def test_python_filter_exception_does_not_kill_vm(python_filter: Path) -> None:
    host = Host.load(python_filter, plugin_config={"greeting": "hi"})
    try:
        boom = host.request("GET", "/boom")
    except WasmTrap:
        pytest.fail("a Python exception must not trap the VM")
    assert boom.status >= 500
    assert any("the filter blew up" in m for _, m in host.logs)
    assert host.request("GET", "/ok").status == 200

"""In real Envoy: a filter's sys.exit() meets the failure policy (500, VM keeps serving), and a
C-stack overflow traps the VM cleanly (Envoy answers 503 and keeps running) instead of
corrupting memory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from runtime_support import status_of

from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer

FILTER = """
import json
import sys
import proxywasm
from proxywasm import HttpContext

sys.setrecursionlimit(200000)


@proxywasm.register
class Fragile(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        path = headers[":path"]
        if path == "/exit":
            sys.exit(3)
        if path == "/deep":
            value = []
            for _ in range(100000):
                value = [value]
            json.dumps(value)
"""


@pytest.fixture(scope="module")
def envoy(build_filter: Callable[[str], Path]) -> Iterator[Envoy]:
    with UpstreamServer() as upstream:
        plugin = WasmPlugin(build_filter(FILTER), name="fragile")
        with Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[plugin])) as running:
            yield running


def test_sys_exit_fails_closed_and_the_vm_keeps_serving(envoy: Envoy) -> None:
    assert status_of(envoy.url + "/exit") == 500
    envoy.wait_for_log("SystemExit: 3")
    assert status_of(envoy.url + "/fine") == 200


def test_stack_overflow_traps_and_envoy_survives(envoy: Envoy) -> None:
    assert status_of(envoy.url + "/deep") == 503
    envoy.wait_for_log("Function: proxy_on_request_headers failed")
    assert envoy.running
    assert envoy.admin_get("/ready")[0] == 200

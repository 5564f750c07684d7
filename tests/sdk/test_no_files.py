"""A filter has no files once built: ``open`` raises PermissionError saying so (and what to do) in
Envoy and in both local host modes. Before, Envoy said "Capabilities insufficient" and native
mode read the test machine's files, so a filter reading a file passed its native tests."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm.vm import NO_FILES
from proxywasm_build.bundle import BuildError
from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer
from proxywasm_host import Host

FILTER = """
import proxywasm
from proxywasm import HttpContext


@proxywasm.register
class ReadsAFile(HttpContext):
    def on_response_headers(self, headers, end_of_stream):
        try:
            with open("/etc/hostname") as f:
                headers["x-read"] = f.read().strip()
        except PermissionError as err:
            headers["x-refused"] = str(err)
"""

EXPECTED = f"open('/etc/hostname'): {NO_FILES}"


@pytest.mark.parametrize("mode", ["wasm", "native"])
def test_in_the_host(load_filter: Callable[..., Host], mode: str) -> None:
    response = load_filter(FILTER, mode).request("GET", "/")
    assert (response.header("x-refused"), response.header("x-read")) == (EXPECTED, None)


def test_in_envoy(build_filter: Callable[[str], Path]) -> None:
    plugin = WasmPlugin(build_filter(FILTER), name="files")
    with UpstreamServer() as upstream, Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[plugin])) as envoy:
        with urllib.request.urlopen(envoy.url + "/", timeout=10) as response:
            assert (response.headers["x-refused"], response.headers["x-read"]) == (EXPECTED, None)


AT_MODULE_LEVEL = """
import proxywasm
from proxywasm import HttpContext

RULES = open("/etc/hostname").read()


@proxywasm.register
class Rules(HttpContext):
    pass
"""

KEPT = """
import proxywasm
from proxywasm import HttpContext

OPEN = open  # the open of build time, called later


@proxywasm.register
class Kept(HttpContext):
    def on_response_headers(self, headers, end_of_stream):
        try:
            OPEN("/etc/hostname")
        except PermissionError as err:
            headers["x-refused"] = str(err)
"""


def test_at_build_time_and_through_a_kept_reference(
    build_filter: Callable[[str], Path], load_filter: Callable[..., Host]
) -> None:
    with pytest.raises(BuildError, match=re.escape(f"PermissionError: {EXPECTED}")):
        build_filter(AT_MODULE_LEVEL)
    for mode in ("wasm", "native"):
        assert load_filter(KEPT, mode).request("GET", "/").header("x-refused") == EXPECTED

"""Imports that cannot work inside Envoy say why: a stdlib module the runtime does not link (listing
the C modules it does link), a stdlib module not imported while the filter was built, and any other
module; at build time too. Checked in the local host and in real Envoy with the same module."""

from __future__ import annotations

import http.client
from collections.abc import Callable
from pathlib import Path

import pytest

from proxywasm_build.build import build
from proxywasm_build.bundle import BuildError
from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer
from proxywasm_host import Host

IMPORTER = """
import json  # imported while the filter is built: usable inside Envoy

import proxywasm
from proxywasm import Action, HttpContext


@proxywasm.register
class Importer(HttpContext):
    def on_request_headers(self, headers, end_of_stream):
        name = headers.get("x-import")
        try:
            __import__(name)
        except ImportError as err:
            self.send_response(500, str(err))
        else:
            self.send_response(200, "imported " + name)
        return Action.PAUSE
"""

NOT_LINKED = (
    "the stdlib module '{}' is not part of the proxywasm runtime (its C part is not linked, or it was left out)"
)
CASES = {
    "json": (200, "imported json"),
    "asyncio": (500, NOT_LINKED.format("asyncio")),
    "_ssl": (500, NOT_LINKED.format("_ssl")),
    "ctypes.util": (500, NOT_LINKED.format("ctypes")),
    "runpy": (500, "the stdlib module was not imported while the filter was built, and Envoy gives the module no "
              "files. Add `import runpy` at module level."),
    "yaml": (500, "No module named 'yaml' in this filter: only modules imported while the filter was built"),
}  # fmt: skip


def check(status: int, body: str, name: str) -> None:
    expected_status, expected = CASES[name]
    assert status == expected_status, body
    assert expected in body
    if name in ("asyncio", "_ssl", "ctypes.util"):
        linked = body.split("C modules linked: ", 1)[1].split(", ")
        assert {"_json", "_proxywasm", "posix", "_sre"} <= set(linked), linked
        assert "_ssl" not in linked


@pytest.fixture(scope="module")
def importer(build_filter: Callable[[str], Path]) -> Path:
    return build_filter(IMPORTER)


@pytest.mark.parametrize("name", sorted(CASES))
def test_in_the_host(importer: Path, name: str) -> None:
    host = Host.load(importer)
    response = host.request("GET", "/", headers=[("x-import", name)])
    check(response.status, response.body.decode(), name)


def test_in_envoy(importer: Path) -> None:
    with UpstreamServer() as upstream:
        config = http_bootstrap(upstream_port=upstream.port, plugins=[WasmPlugin(importer, name="importer")])
        with Envoy(config) as envoy:
            for name in sorted(CASES):
                conn = http.client.HTTPConnection("127.0.0.1", envoy.port(), timeout=15)
                conn.request("GET", "/", headers={"x-import": name})
                response = conn.getresponse()
                check(response.status, response.read().decode(), name)
                conn.close()


def test_at_build_time(tmp_path: Path) -> None:
    source = tmp_path / "uses_asyncio.py"
    source.write_text("import asyncio\n\nimport proxywasm\n")
    with pytest.raises(BuildError) as err:
        build(source)
    message = str(err.value)
    assert message.startswith(f"{source}:1: importing the filter failed: ModuleNotFoundError: No module named")
    assert NOT_LINKED.format("asyncio") in message

"""A Python (CPython-in-wasm) filter built by proxywasm_build, run through the local host."""

from __future__ import annotations

import hashlib
import textwrap
import time
from pathlib import Path

import pytest

from proxywasm_host import Host, WasmTrap

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "test-builds"

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


def _build(source: str) -> Path:
    try:
        from proxywasm_build.build import RUNTIME_DIR, build
    except Exception as exc:  # the runtime is another engineer's moving target
        pytest.skip(f"proxywasm_build unavailable: {exc}")
    runtime = RUNTIME_DIR / "python.wasm"
    if not runtime.exists():
        pytest.skip("CPython runtime not built")
    inputs = [runtime, *sorted((ROOT / "sdk" / "proxywasm").glob("*.py"))]
    key = hashlib.sha256(b"".join(p.read_bytes() for p in inputs) + source.encode()).hexdigest()[:16]
    out = CACHE / f"host-{key}.wasm"
    if not out.exists():
        src = CACHE / f"host-{key}" / "filter.py"
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_text(textwrap.dedent(source))
        out.write_bytes(build(src).module)
    return out


@pytest.fixture(scope="module")
def python_filter() -> Path:
    return _build(FILTER)


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


def test_python_filter_cached_load_and_request_speed(python_filter: Path) -> None:
    Host.load(python_filter, plugin_config={"greeting": "hi"})  # warm the compiled-module cache
    start = time.perf_counter()
    host = Host.load(python_filter, plugin_config={"greeting": "hi"})
    load_s = time.perf_counter() - start
    host.request("GET", "/warm")
    n = 50
    start = time.perf_counter()
    for _ in range(n):
        host.request("GET", "/x")
    per_request_s = (time.perf_counter() - start) / n
    print(f"cached load {load_s * 1000:.1f} ms, request {per_request_s * 1e6:.0f} us")
    assert load_s < 1.0
    assert per_request_s < 0.01

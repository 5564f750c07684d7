"""In real Envoy: code compiled at import time runs, and compiling Python source at run time (the
served module has no compiler, see test_source_compilation.py) raises a RuntimeError that names
the filter's line; the failure policy applies and the VM goes on serving."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from runtime_support import status_of

from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer

FILTER = Path(__file__).with_name("compile_filter.py")
MESSAGE = (
    "RuntimeError: compiling Python source at run time is not available in the served module: do it at import time"
)


def test_run_time_compilation_fails_closed_with_the_filter_line(build_filter: Callable[[str], Path]) -> None:
    wasm = build_filter(FILTER.read_text())
    lines = FILTER.read_text().splitlines()
    with UpstreamServer() as upstream:
        plugin = WasmPlugin(wasm, name="compiling")
        with Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[plugin])) as envoy:
            assert status_of(envoy.url + "/bytecode") == 200
            assert [r.header("x-answer") for r in upstream.requests] == ["42 Point(x=1, y=2) Settings(limit=3)"]
            for path, call in [("/eval", 'eval("1'), ("/namedtuple", 'namedtuple("Late"'), ("/ast", "ast.parse(")]:
                upstream.clear()
                assert status_of(envoy.url + path) == 500
                assert upstream.requests == []
                line = next(i for i, text in enumerate(lines, 1) if call in text)
                envoy.wait_for_log(f"{MESSAGE} \\(filter\\.py:{line}\\)")
            assert status_of(envoy.url + "/bytecode") == 200


def test_a_filter_that_keeps_the_compiler_compiles_at_run_time(build_filter: Callable[[str], Path]) -> None:
    source = FILTER.read_text().replace("import proxywasm\n", "import proxywasm\n\nproxywasm.vm.keep_compiler()\n", 1)
    with UpstreamServer() as upstream:
        plugin = WasmPlugin(build_filter(source), name="compiling")
        with Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[plugin])) as envoy:
            for path in ("/eval", "/namedtuple", "/ast"):
                assert status_of(envoy.url + path) == 200
            assert upstream.requests[0].header("x-answer") == "2"

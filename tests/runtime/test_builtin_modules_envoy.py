"""In real Envoy: builtin C modules imported at build time run; one the filter did not import
(its code left out of the served module, see test_builtin_modules.py) fails to import with the
build-time rule's message, the failure policy applies and the VM goes on serving."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from runtime_support import status_of

from proxywasm_build.envoy import Envoy, WasmPlugin, http_bootstrap
from proxywasm_build.upstream import UpstreamServer

FILTER = Path(__file__).with_name("builtin_modules_filter.py")


def test_imported_modules_run_and_one_not_imported_fails_closed(build_filter: Callable[[str], Path]) -> None:
    with UpstreamServer() as upstream:
        plugin = WasmPlugin(build_filter(FILTER.read_text()), name="builtins")
        with Envoy(http_bootstrap(upstream_port=upstream.port, plugins=[plugin])) as envoy:
            assert status_of(envoy.url + "/") == 200
            assert [r.header("x-day") for r in upstream.requests] == ["2026-12-05"]
            upstream.clear()
            assert status_of(envoy.url + "/late") == 500
            assert upstream.requests == []
            envoy.wait_for_log("ModuleNotFoundError: No module named '_pickle' in this filter: the stdlib module")
            assert status_of(envoy.url + "/") == 200

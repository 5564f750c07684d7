"""The served module keeps only the builtin C modules the filter initialised at build time: the
others cannot be imported inside Envoy (their table entries are gone, sdk/runtime/inittab.c), and
the code only they reach is left out (sdk/runtime/build_only_code.py). In the local host; Envoy:
test_builtin_modules_envoy.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from test_source_compilation import _bodies, replaced, served_memory

from proxywasm_build import wasm
from proxywasm_build.build import RUNTIME_DIR
from proxywasm_host import Host

FILTER = Path(__file__).with_name("builtin_modules_filter.py")
NOT_IMPORTED = "ModuleNotFoundError: No module named '_pickle'"


def _code_bytes(module: bytes) -> int:
    return sum(len(s.payload) for s in wasm.parse_sections(module) if s.id == wasm.CODE)


def test_the_served_module_leaves_out_the_code_of_modules_not_imported(build_filter: Callable[[str], Path]) -> None:
    module = build_filter(FILTER.read_text()).read_bytes()
    listed, functions = replaced(module)
    kept = listed.builtin_modules(served_memory(module))
    assert {"_datetime", "math", "_proxywasm", "posix"} <= set(kept)
    assert not {"_pickle", "cmath", "_csv", "array"} & set(kept)
    _, names = _bodies(module)
    stubbed = {name for name, i in names.items() if i in functions}
    assert {"_pickle_loads", "cmath_exp", "array_array_append"} <= stubbed  # modules not imported
    assert not stubbed & {"date_new", "math_sqrt", "delta_add"}  # modules imported
    runtime = (RUNTIME_DIR / "python.wasm").read_bytes()
    runtime_bodies, _ = _bodies(runtime)
    build_only = listed.replaced(list(listed.modules))
    assert _code_bytes(module) < _code_bytes(runtime) - sum(len(runtime_bodies[i]) for i in build_only) * 1.1


def test_imported_modules_run_and_one_not_imported_fails_with_the_build_time_rule(
    build_filter: Callable[[str], Path],
) -> None:
    host = Host.load(build_filter(FILTER.read_text()))
    response = host.request("GET", "/")
    assert response.upstream_request is not None and response.upstream_request.header("x-day") == "2026-12-05"
    response = host.request("GET", "/late")
    assert response.status == 500 and response.upstream_request is None  # the failure policy: fail closed
    why = "not imported while the filter was built"
    assert any(NOT_IMPORTED in message and why in message for _, message in host.logs), host.logs
    assert host.request("GET", "/").status == 200  # the VM goes on serving

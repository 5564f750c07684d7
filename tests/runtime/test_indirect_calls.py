"""The runtime's calls that filters do not run per request go through the function table, so V8
does not inline them when Envoy compiles the module (sdk/runtime/indirect_calls.py); the functions
hot_functions.txt names keep theirs. The rewrite on a small module, and on the runtime as built."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import wasmtime

from proxywasm_build import served_code, wasm
from proxywasm_build.build import RUNTIME_DIR

RUNTIME_SOURCES = Path(__file__).resolve().parents[2] / "sdk" / "runtime"
sys.path.insert(0, str(RUNTIME_SOURCES))
import indirect_calls  # noqa: E402

NOPS = " ".join(["nop"] * indirect_calls.MIN_CALLEE)
WAT = f"""
(module
  (type $ii (func (param i32) (result i32)))
  (table 2 2 funcref)
  (elem (i32.const 1) $tabled)
  (func $big (param i32) (result i32) {NOPS} local.get 0 i32.const 100 i32.add)
  (func $tabled (param i32) (result i32) {NOPS} local.get 0 i32.const 1000 i32.mul)
  (func $small (param i32) (result i32) local.get 0 i32.const 1 i32.add)
  (func $cold (export "cold") (param i32) (result i32)
    local.get 0 call $big call $small call $tabled)
  (func $hot (export "hot") (param i32) (result i32)
    local.get 0 call $big call $small call $tabled)
  (func $indirect (export "indirect") (param i32) (result i32)
    local.get 0 i32.const 1 call_indirect (type $ii))
)
"""


def _run(module: bytes, export: str, arg: int) -> int:
    store = wasmtime.Store()
    instance = wasmtime.Instance(store, wasmtime.Module(store.engine, module), [])
    function = instance.exports(store)[export]
    assert isinstance(function, wasmtime.Func)
    result = function(store, arg)
    assert isinstance(result, int)
    return result


def _bodies(module: bytes) -> dict[str, bytes]:
    sections = wasm.parse_sections(module)
    names = wasm.function_names(sections)
    bodies = served_code.code_bodies(next(s for s in sections if s.id == wasm.CODE).payload)
    return {names[i]: body for i, body in enumerate(bodies)}  # no imports: positions are indices


def _ops(body: bytes) -> list[int]:
    return [op for _, op, _ in wasm.instructions(body)]


def test_cold_calls_to_larger_callees_go_through_the_table_and_compute_the_same() -> None:
    before = bytes(wasmtime.wat2wasm(WAT))
    after, report = indirect_calls.rewrite(before, ["hot"])
    old, new = _bodies(before), _bodies(after)
    assert _ops(new["cold"]).count(wasm.CALL_INDIRECT) == 2  # $big and $tabled; $small stays direct
    assert _ops(new["cold"]).count(wasm.CALL) == 1
    assert new["hot"] == old["hot"] and new["big"] == old["big"]
    slots = wasm.element_slots(next(s for s in wasm.parse_sections(after) if s.id == wasm.ELEMENT).payload)
    assert slots == {1: 1, 2: 0}  # $tabled keeps slot 1; $big gets slot 2, the table grows by one
    assert "table 2 -> 3 slots" in report
    for export in ("cold", "hot", "indirect"):
        assert _run(after, export, 5) == _run(before, export, 5)
    assert _run(after, "cold", 5) == (5 + 100 + 1) * 1000


def test_a_hot_function_the_runtime_lacks_stops_the_build() -> None:
    with pytest.raises(SystemExit, match="no_such_function"):
        indirect_calls.rewrite(bytes(wasmtime.wat2wasm(WAT)), ["hot", "no_such_function"])


def test_the_runtime_calls_larger_callees_directly_only_from_hot_functions() -> None:
    runtime = (RUNTIME_DIR / "python.wasm").read_bytes()
    sections = wasm.parse_sections(runtime)
    imported = wasm.imported_count(next(s for s in sections if s.id == wasm.IMPORT).payload, wasm.FUNC_KIND)
    names = wasm.function_names(sections)
    bodies = served_code.code_bodies(next(s for s in sections if s.id == wasm.CODE).payload)
    hot = set(indirect_calls.hot_names((RUNTIME_SOURCES / "hot_functions.txt").read_text()))
    assert {"_PyEval_EvalFrameDefault", "proxy_on_request_headers"} <= hot
    large = {imported + i for i, body in enumerate(bodies) if len(body) >= indirect_calls.MIN_CALLEE}
    direct_large = {"hot": 0, "cold": 0}
    for i, body in enumerate(bodies):
        kind = "hot" if names[imported + i] in hot else "cold"
        for at, op, _ in wasm.instructions(body):
            if op == wasm.CALL and wasm.Reader(body, at + 1).uleb() in large:
                direct_large[kind] += 1
    assert direct_large["cold"] == 0
    assert direct_large["hot"] > 1000  # the hot functions' calls are left for V8 to inline

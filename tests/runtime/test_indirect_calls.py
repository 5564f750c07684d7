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
import build_only_code  # noqa: E402
import indirect_calls  # noqa: E402

NOPS = " ".join(["nop"] * indirect_calls.MIN_CALLEE)
FILLER = "\n".join(f"(func $filler{i})" for i in range(70))  # puts the appended slots past 64: two-byte constants
WAT = f"""
(module
  (import "env" "twice" (func $twice (param i32) (result i32)))
  (type $ii (func (param i32) (result i32)))
  (table 70 70 funcref)
  (elem (i32.const 69) $tabled)
  {FILLER}
  (func $big (param i32) (result i32) {NOPS} local.get 0 i32.const 100 i32.add)
  (func $tabled (param i32) (result i32) {NOPS} local.get 0 i32.const 1000 i32.mul)
  (func $wide (param i64 f64) (result f64) {NOPS} local.get 1 local.get 0 f64.convert_i64_s f64.add)
  (func $small (param i32) (result i32) local.get 0 i32.const 1 i32.add)
  (func $cold (export "cold") (param i32) (result i32)
    local.get 0 call $big call $small call $tabled call $twice
    i64.extend_i32_s f64.const 0.5 call $wide i32.trunc_f64_s)
  (func $hot (export "hot") (param i32) (result i32)
    local.get 0 call $big call $small call $tabled call $twice
    i64.extend_i32_s f64.const 0.5 call $wide i32.trunc_f64_s)
  (func $indirect (export "indirect") (param i32) (result i32)
    local.get 0 i32.const 69 call_indirect (type $ii))
)
"""


def _instantiate(module: bytes) -> tuple[wasmtime.Store, wasmtime.Instance]:
    store = wasmtime.Store()
    twice = wasmtime.Func(store, wasmtime.FuncType([wasmtime.ValType.i32()], [wasmtime.ValType.i32()]), lambda x: 2 * x)
    return store, wasmtime.Instance(store, wasmtime.Module(store.engine, module), [twice])


def _run(module: bytes, export: str, arg: int) -> int:
    store, instance = _instantiate(module)
    function = instance.exports(store)[export]
    assert isinstance(function, wasmtime.Func)
    result = function(store, arg)
    assert isinstance(result, int)
    return result


def _bodies(module: bytes) -> dict[str, bytes]:
    sections = wasm.parse_sections(module)
    names = wasm.function_names(sections)
    bodies = served_code.code_bodies(next(s for s in sections if s.id == wasm.CODE).payload)
    return {names[f]: body for f, body in enumerate(bodies, len(names) - len(bodies))}


def _indirect_calls(sections: list[wasm.Section]) -> list[tuple[str, int, int, int]]:
    """(caller, callee, call_indirect's type, the callee's type) of each ``i32.const SLOT;
    call_indirect`` pair."""
    names = wasm.function_names(sections)
    types = wasm.function_type_indices(sections)
    slots = wasm.element_slots(next(s for s in sections if s.id == wasm.ELEMENT).payload)
    bodies = served_code.code_bodies(next(s for s in sections if s.id == wasm.CODE).payload)
    found = []
    for f, body in enumerate(bodies, min(types)):
        previous = None
        for at, op, end in wasm.instructions(body):
            if op == wasm.CALL_INDIRECT and previous is not None and previous[1] == wasm.I32_CONST:
                callee = slots[wasm.Reader(body, previous[0] + 1).sleb()]
                found.append((names[f], callee, wasm.Reader(body, at + 1).uleb(), types[callee]))
            previous = (at, op, end)
    return found


def test_cold_calls_to_larger_callees_go_through_the_table_and_compute_the_same() -> None:
    before = bytes(wasmtime.wat2wasm(WAT))
    after, report = indirect_calls.rewrite(before, ["hot"])
    old, new = _bodies(before), _bodies(after)
    sections = wasm.parse_sections(after)
    names = wasm.function_names(sections)
    pairs = [(caller, names[callee]) for caller, callee, _, _ in _indirect_calls(sections)]
    assert sorted(pairs) == [("cold", "big"), ("cold", "tabled"), ("cold", "wide"), ("indirect", "tabled")]
    assert all(used == declared for _, _, used, declared in _indirect_calls(sections))  # each callee's own type
    assert [op for _, op, _ in wasm.instructions(new["cold"])].count(wasm.CALL) == 2  # $small and the import
    assert new["hot"] == old["hot"]
    slots = wasm.element_slots(next(s for s in sections if s.id == wasm.ELEMENT).payload)
    assert slots[69] == {v: k for k, v in names.items()}["tabled"]  # its slot stays; $big and $wide get 70, 71
    assert {names[slots[70]], names[slots[71]]} == {"big", "wide"}
    assert "table 70 -> 72 slots" in report
    for export in ("cold", "hot", "indirect"):
        assert _run(after, export, 5) == _run(before, export, 5)
    assert _run(after, "cold", 5) == 2 * (5 + 100 + 1) * 1000  # $wide adds 0.5, truncated away


def test_a_hot_function_the_runtime_lacks_stops_the_build() -> None:
    with pytest.raises(SystemExit, match="no_such_function"):
        indirect_calls.rewrite(bytes(wasmtime.wat2wasm(WAT)), ["hot", "no_such_function"])


def test_the_runtime_calls_larger_callees_directly_only_from_hot_functions() -> None:
    runtime = (RUNTIME_DIR / "python.wasm").read_bytes()
    sections = wasm.parse_sections(runtime)
    names = wasm.function_names(sections)
    types = wasm.function_type_indices(sections)
    bodies = served_code.code_bodies(next(s for s in sections if s.id == wasm.CODE).payload)
    listed = served_code.BuildOnlyCode.parse(
        wasm.custom_body(next(s for s in sections if wasm.custom_name(s) == served_code.SECTION))
    )
    never_served = {min(types) + i for i in listed.replaced(list(listed.modules))}
    hot = set(indirect_calls.hot_names((RUNTIME_SOURCES / "hot_functions.txt").read_text()))
    assert {"_PyEval_EvalFrameDefault", "proxy_on_request_headers"} <= hot
    large = {f for f, body in enumerate(bodies, min(types)) if len(body) >= indirect_calls.MIN_CALLEE}
    direct_large = {"hot": 0, "cold": 0}
    for f, body in enumerate(bodies, min(types)):
        if f in never_served:
            continue
        kind = "hot" if names[f] in hot else "cold"
        for at, op, _ in wasm.instructions(body):
            if op == wasm.CALL and wasm.Reader(body, at + 1).uleb() in large - never_served:
                direct_large[kind] += 1
    assert direct_large["cold"] == 0
    assert direct_large["hot"] > 1000  # the hot functions' calls are left for V8 to inline
    made = _indirect_calls(sections)
    assert len(made) > 10_000
    assert all(used == declared for _, _, used, declared in made)  # every call_indirect names its callee's type


def test_the_build_only_analysis_refuses_a_rewritten_module() -> None:
    runtime = (RUNTIME_DIR / "python.wasm").read_bytes()
    with pytest.raises(SystemExit, match="made indirect"):
        build_only_code.analyse(runtime, "", "")

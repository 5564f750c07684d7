"""Makes V8 inline less when Envoy starts: calls that filters do not run per request, to callees of
``MIN_CALLEE`` bytes or more, become ``call_indirect`` (run by build.sh, after build_only_code.py).

``indirect_calls.py MODULE HOT_FUNCTIONS``. Envoy compiles the whole module with TurboFan before
it is ready (no Liftoff, so no call feedback), and V8 then inlines any direct call whose callee is
smaller than what is left of the caller's budget (twice the caller's own size; V8's
src/wasm/turboshaft-graph-interface.cc ``should_inline``, src/wasm/inlining-tree.h
``NoLiftoffBudget``): 22,000 inlinings, most of the start-up compile (bench/README.md, "Start-up:
V8's inlining"). V8 never inlines ``call_indirect`` without feedback. Most of CPython's code does
not run while a filter serves requests: there the inlining is compile time spent for nothing.

HOT_FUNCTIONS (hot_functions.txt, beside this file) names the functions the bench's workloads run
per request (the interpreter's core, the SDK's host functions, what JSON, JWT and shared data
use); bench/hot_functions.py measures it and tests/runtime/test_indirect_calls.py checks it
still covers them. Their calls stay direct, so V8 inlines into them as before. In every other
function a call to a defined function whose body is at least ``MIN_CALLEE`` bytes becomes
``i32.const SLOT; call_indirect TYPE 0`` through the function table: the callee's existing slot,
or one appended to the table. Calls to smaller callees stay direct (cheap to inline, and most of
what inlining gains). The constant is encoded in as few bytes as it needs, so
build_only_code.scan (which takes a padded ``i32.const`` for a relocated function address) does
not read these slots as addresses taken.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxywasm_build import served_code, wasm

# Bytes of body. The build-only stubs are padded to 50 (served_code.V8_SMALL_FUNCTION) and stay
# below. Measured on the header filter in node 26 (bench/v8_start.py, compile CPU): every direct
# call 2.20 s; cold calls indirect from 30 bytes 1.48 s, from 60 1.53 s, from 100 about 1.85 s.
MIN_CALLEE = 60
TABLE = 0  # wasm-ld's function table, the only one


def hot_names(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def function_types(sections: list[wasm.Section], imported: int) -> dict[int, int]:
    """Type index of each defined function, by function index."""
    r = wasm.Reader(next(s for s in sections if s.id == wasm.FUNCTION).payload)
    return {imported + i: r.uleb() for i in range(r.uleb())}


def rewrite_body(body: bytes, slots: dict[int, int], types: dict[int, int]) -> tuple[bytes, int]:
    """``body`` with each direct call to a function in ``slots`` made through the table; and how
    many calls it changed."""
    out = bytearray()
    last = changed = 0
    for at, op, end in wasm.instructions(body):
        if op != wasm.CALL:
            continue
        callee = wasm.Reader(body, at + 1).uleb()
        if callee in slots:
            out += body[last:at] + bytes([wasm.I32_CONST]) + wasm.sleb(slots[callee])
            out += bytes([wasm.CALL_INDIRECT]) + wasm.uleb(types[callee]) + wasm.uleb(TABLE)
            last = end
            changed += 1
    return bytes(out + body[last:]), changed


def rewrite(module: bytes, hot: list[str]) -> tuple[bytes, str]:
    """The module with its cold calls to callees of ``MIN_CALLEE`` bytes or more made indirect,
    and a one-line report."""
    sections = wasm.parse_sections(module)
    by_id = {s.id: s for s in sections}
    imported = wasm.imported_count(by_id[wasm.IMPORT].payload, wasm.FUNC_KIND) if wasm.IMPORT in by_id else 0
    names = wasm.function_names(sections)
    wanted = set(hot)
    missing = sorted(wanted - set(names.values()))
    if missing:
        raise SystemExit(f"indirect_calls: hot_functions.txt names functions the runtime lacks: {', '.join(missing)}")
    # Static functions of different files can share a name (46 names in CPython): all are hot.
    hot_set = {i for i, name in names.items() if name in wanted}
    types = function_types(sections, imported)
    bodies = served_code.code_bodies(by_id[wasm.CODE].payload)

    table_size, rest = _table(by_id[wasm.TABLE].payload)
    slots = {f: slot for slot, f in wasm.element_slots(by_id[wasm.ELEMENT].payload).items()}
    callees = [imported + i for i, body in enumerate(bodies) if len(body) >= MIN_CALLEE]
    appended = [f for f in callees if f not in slots]
    slots.update({f: table_size + k for k, f in enumerate(appended)})
    targets = {f: slots[f] for f in callees}

    changed = cold = 0
    for i, body in enumerate(bodies):
        if imported + i not in hot_set:
            bodies[i], n = rewrite_body(body, targets, types)
            changed += n
            cold += n > 0
    grown = table_size + len(appended)
    out = []
    for s in sections:
        if s.id == wasm.TABLE:
            s = wasm.Section(s.id, wasm.uleb(1) + rest + wasm.uleb(grown) + wasm.uleb(grown))
        elif s.id == wasm.ELEMENT:
            r = wasm.Reader(s.payload)
            count = r.uleb()
            segment = wasm.uleb(0) + wasm.const_expr(wasm.I32, table_size) + wasm.vec([wasm.uleb(f) for f in appended])
            s = wasm.Section(s.id, wasm.uleb(count + 1) + s.payload[r.pos :] + segment)
        elif s.id == wasm.CODE:
            s = wasm.Section(s.id, served_code.encode_code(bodies))
        out.append(s)
    report = (
        f"runtime: {changed} calls in {cold} functions not run per request made indirect "
        f"({len(hot_set)} hot functions keep theirs; table {table_size} -> {grown} slots)"
    )
    return wasm.build_module(out), report


def _table(payload: bytes) -> tuple[int, bytes]:
    """(size, reference type) of the module's one funcref table, whose minimum and maximum are equal."""
    r = wasm.Reader(payload)
    if r.uleb() != 1:
        raise SystemExit("indirect_calls: the runtime must have one table")
    reftype, flags = r.byte(), r.byte()
    minimum = r.uleb()
    if reftype != 0x70 or flags != 1 or r.uleb() != minimum:
        raise SystemExit("indirect_calls: the function table is not a fixed-size funcref table")
    return minimum, bytes([reftype, flags])


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit(__doc__)
    path = Path(argv[0])
    module, report = rewrite(path.read_bytes(), hot_names(Path(argv[1]).read_text()))
    path.write_bytes(module)
    print(report)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Makes V8 inline less when Envoy starts: calls that filters do not run per request, to callees of
``MIN_CALLEE`` bytes or more, become ``call_indirect`` (run by build.sh, after build_only_code.py).

``indirect_calls.py MODULE HOT_FUNCTIONS``. Envoy compiles the whole module with TurboFan before
it is ready (no Liftoff, so no call feedback), and V8 then inlines any direct call whose callee is
smaller than what is left of the caller's budget (twice the caller's own size; V8's
src/wasm/turboshaft-graph-interface.cc ``should_inline``, src/wasm/inlining-tree.h
``NoLiftoffBudget``): 22,000 inlinings, most of the start-up compile (bench/README.md, "Start-up:
V8's inlining"). V8 never inlines ``call_indirect`` without feedback. Most of CPython's code does
not run while a filter serves requests: there the inlining is compile time spent for nothing.

HOT_FUNCTIONS (hot_functions.txt, beside this file) names the functions the bench's workloads and
the production filters run per request (the interpreter's core, the SDK's host functions, what
JSON, JWT, shared data, metrics and properties use); bench/hot_functions.py measures it and
tests/bench_anchors/test_hot_functions.py checks it still covers the main workloads and filters.
Their calls stay direct, so V8 inlines into them as before. In every other function the served
module keeps, a call to a function whose body is at least ``MIN_CALLEE`` bytes becomes
``i32.const SLOT; call_indirect TYPE 0`` through the function table: the callee's existing slot,
or one appended to the table. Calls to smaller callees stay direct
(cheap to inline, and most of what inlining gains). Neither side counts the code every served
module replaces (build_only_code.py's list, without the builtin modules' code): the snapshot runs
it on wasmtime, where calls are never inlined. The constant is encoded in as few bytes as it
needs, so build_only_code.scan (which takes a padded ``i32.const`` for a relocated function
address) does not read these slots as addresses taken; and since its call_indirects hide call
edges, build_only_code.py refuses a module this step has rewritten.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxywasm_build import served_code, wasm

# Bytes of body, in the linked runtime. Measured on the header filter in node 26 (bench/v8_start.py,
# compile CPU): every call direct 2.20 s; cold calls indirect from 30 bytes 1.48 s, from 60 1.53 s,
# from 100 about 1.85 s.
MIN_CALLEE = 60
TABLE_INDEX = 0  # wasm-ld's function table, the only one


def hot_names(text: str) -> list[str]:
    """The names a hot-function list holds (one a line; ``#`` starts a comment line)."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


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
            out += bytes([wasm.CALL_INDIRECT]) + wasm.uleb(types[callee]) + wasm.uleb(TABLE_INDEX)
            last = end
            changed += 1
    return bytes(out + body[last:]), changed


def rewrite(module: bytes, hot: list[str]) -> tuple[bytes, str]:
    """The module with its cold calls to callees of ``MIN_CALLEE`` bytes or more made indirect,
    and a one-line report."""
    sections = wasm.parse_sections(module)
    by_id = {s.id: s for s in sections}
    imported = wasm.imported_functions(sections)
    names = wasm.function_names(sections)
    wanted = set(hot)
    missing = sorted(wanted - set(names.values()))
    if missing:
        raise SystemExit(f"indirect_calls: hot_functions.txt names functions the runtime lacks: {', '.join(missing)}")
    # Static functions of different files can share a name (46 names in CPython): all are hot.
    hot_set = {i for i, name in names.items() if name in wanted}
    types = wasm.function_type_indices(sections)
    bodies = served_code.code_bodies(by_id[wasm.CODE].payload)
    listed = [wasm.custom_body(s) for s in sections if wasm.custom_name(s) == served_code.SECTION]
    build_only = served_code.BuildOnlyCode.parse(listed[0]) if listed else None
    never_served = {imported + i for i in build_only.replaced(list(build_only.modules))} if build_only else set()

    table_size, reftype_and_flags = _table(by_id[wasm.TABLE].payload)
    slots = {f: slot for slot, f in wasm.element_slots(by_id[wasm.ELEMENT].payload).items()}
    callees = [f for f, body in enumerate(bodies, imported) if len(body) >= MIN_CALLEE and f not in never_served]
    appended = [f for f in callees if f not in slots]
    slots.update({f: table_size + k for k, f in enumerate(appended)})
    targets = {f: slots[f] for f in callees}

    changed = cold = 0
    for i, body in enumerate(bodies):
        if imported + i not in hot_set and imported + i not in never_served:
            bodies[i], n = rewrite_body(body, targets, types)
            changed += n
            cold += n > 0
    grown = table_size + len(appended)
    out = []
    for s in sections:
        if s.id == wasm.TABLE:
            s = wasm.Section(s.id, wasm.uleb(1) + reftype_and_flags + wasm.uleb(grown) + wasm.uleb(grown))
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
        f"({len(hot_set)} hot functions keep theirs, {len(never_served)} no served module keeps are left as they are; "
        f"table {table_size} -> {grown} slots)"
    )
    return wasm.build_module(out), report


def _table(payload: bytes) -> tuple[int, bytes]:
    """(size, its reference type and limits flag bytes) of the module's one funcref table, whose
    minimum and maximum are equal."""
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

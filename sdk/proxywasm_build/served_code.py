"""The code the served module leaves out: functions only the build-time snapshot runs.

Envoy's V8 compiles every function of a module with TurboFan before the first request (Liftoff
is off), at a cost roughly proportional to the code's size. CPython's parser, AST and compiler,
and its configuration reading, run while the snapshot is taken but never again in Envoy, where
filters run bytecode. The runtime's build (sdk/runtime/build_only_code.py) finds them from the
module's call graph and lists them in a custom section; the snapshotter replaces their bodies:

- ``UNREACHABLE``: functions nothing in the served module can call any more; the body traps.
- ``UNAVAILABLE``: the compiler's entry points (``_PyParser_ASTFromString``, ``_PyAST_Compile``,
  ...), reachable from ``exec``/``eval``/``compile``/``ast.parse``; the body calls the runtime's
  ``proxywasm_source_compilation_unavailable``, which sets a RuntimeError naming the filter's
  line and returns 0, the failure value those functions' callers check.
- ``NOTHING``: finalisation-only functions that free memory when the interpreter is torn down,
  which Envoy never does; the body returns at once.

Builtin C modules (``_pickle``, ``_datetime``, ``math``...) are code a filter may never run: the
snapshot keeps in the builtin-module table only the modules initialised at build time
(sdk/runtime/inittab.c), so no other can be imported inside Envoy, and the served module leaves
out the code only the others could reach. ``UNREACHABLE`` above lists it too; ``modules`` says
which of it each builtin module needs, and ``strip`` keeps that of the modules left in the table.

Function indices, the table and the data stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import wasm

SECTION = "proxywasm.build-only-code"
UNREACHABLE, UNAVAILABLE, NOTHING = range(3)
_UNREACHABLE_BODY = b"\x00\x00\x0b"  # no locals; unreachable; end
_NOTHING_BODY = b"\x00\x0b"  # no locals; end
_CALL = 0x10
_NOP = 0x01
# V8 sizes its inlining by the share of a module's function bodies under 50 bytes
# (WasmModule::num_small_functions; InliningTree::BudgetScaleFactor and NoLiftoffBudget in V8's
# src/wasm/inlining-tree.h): at 25% or less a function may inline callees up to twice its own size,
# at 50% or more up to five times. Without Liftoff (Envoy) V8 compiles every function with TurboFan
# before Envoy is ready, and inlining is most of that work. Stubs are tiny, so they are padded with
# nops to this size and do not count (bench/README.md, "Start-up: V8's inlining").
V8_SMALL_FUNCTION = 50


@dataclass
class BuildOnlyCode:
    unavailable: int  # function index of proxywasm_source_compilation_unavailable
    functions: dict[int, int]  # position in the code section -> UNREACHABLE / UNAVAILABLE / NOTHING
    inittab: int = 0  # address of the builtin-module table (struct _inittab[], 8 bytes an entry)
    modules: dict[str, list[int]] = field(default_factory=dict)  # builtin module -> positions only it reaches

    def encode(self) -> bytes:
        items = sorted(self.functions.items())
        modules = [wasm.name(m) + wasm.vec([wasm.uleb(i) for i in positions]) for m, positions in self.modules.items()]
        return (
            wasm.uleb(self.unavailable)
            + wasm.vec([wasm.uleb(i) + bytes([kind]) for i, kind in items])
            + wasm.uleb(self.inittab)
            + wasm.vec(modules)
        )

    @classmethod
    def parse(cls, body: bytes) -> BuildOnlyCode:
        r = wasm.Reader(body)
        unavailable = r.uleb()
        functions = {}
        for _ in range(r.uleb()):
            index = r.uleb()
            functions[index] = r.byte()
        inittab = r.uleb()
        modules = {}
        for _ in range(r.uleb()):
            module = r.name()
            modules[module] = [r.uleb() for _ in range(r.uleb())]
        return cls(unavailable, functions, inittab, modules)

    def replaced(self, builtin_modules: list[str]) -> dict[int, int]:
        """Position -> stub kind of the bodies the served module replaces when the snapshot's
        table keeps ``builtin_modules`` (all of ``modules``: the build-only code alone)."""
        needed = {i for m in builtin_modules for i in self.modules.get(m, ())}
        return {i: kind for i, kind in self.functions.items() if i not in needed}

    def builtin_modules(self, memory: bytes | bytearray) -> list[str]:
        """The builtin modules left in the snapshot's table (``memory``: its linear memory)."""
        return [name for name, _ in inittab_entries(memory, self.inittab)]

    def stub(self, kind: int) -> bytes:
        if kind == UNREACHABLE:
            body = _UNREACHABLE_BODY
        elif kind == UNAVAILABLE:
            body = b"\x00" + bytes([_CALL]) + wasm.uleb(self.unavailable) + bytes([wasm.END])
        elif kind == NOTHING:
            body = _NOTHING_BODY
        else:
            raise wasm.WasmFormatError(f"{SECTION}: unknown stub kind {kind}")
        return body[:-1] + bytes([_NOP]) * (V8_SMALL_FUNCTION - len(body)) + body[-1:]


INITTAB_ENTRY = 8  # struct _inittab on wasm32: const char *name; PyObject *(*initfunc)(void)


def inittab_entries(memory: bytes | bytearray, address: int) -> list[tuple[str, int]]:
    """(name, init function's table slot or 0) of each entry of the builtin-module table at
    ``address`` in ``memory``, up to its terminator (a NULL name)."""
    entries: list[tuple[str, int]] = []
    for at in range(address, len(memory), INITTAB_ENTRY):
        name = int.from_bytes(memory[at : at + 4], "little")
        if not name:
            return entries
        init = int.from_bytes(memory[at + 4 : at + 8], "little")
        entries.append((bytes(memory[name : memory.index(0, name)]).decode(), init))
    raise wasm.WasmFormatError(f"{SECTION}: the builtin-module table at {address:#x} has no end")


def v8_small_share(bodies: list[bytes]) -> float:
    """The share of ``bodies`` V8 counts as small (under ``V8_SMALL_FUNCTION`` bytes)."""
    return sum(len(body) < V8_SMALL_FUNCTION for body in bodies) / len(bodies)


def code_bodies(payload: bytes) -> list[bytes]:
    """The function bodies of a code section, in order (each: locals and expression)."""
    r = wasm.Reader(payload)
    return [r.take(r.uleb()) for _ in range(r.uleb())]


def encode_code(bodies: list[bytes]) -> bytes:
    return wasm.vec([wasm.uleb(len(body)) + body for body in bodies])


def strip(code: wasm.Section, build_only: BuildOnlyCode, builtin_modules: list[str]) -> wasm.Section:
    """The code section with the build-only functions' bodies replaced by their stubs, but for the
    code ``builtin_modules`` (those in the snapshot's table) need."""
    bodies = code_bodies(code.payload)
    for index, kind in build_only.replaced(builtin_modules).items():
        if index >= len(bodies):
            raise wasm.WasmFormatError(f"{SECTION}: function {index} is not in the code section")
        bodies[index] = build_only.stub(kind)
    return wasm.Section(wasm.CODE, encode_code(bodies))

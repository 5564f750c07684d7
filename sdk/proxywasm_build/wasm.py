"""Just enough of the WebAssembly binary format to rewrite a module after a snapshot:
split it into sections, and read or write the globals, memories, exports and data."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

MAGIC = b"\0asm\x01\0\0\0"

# Section ids
CUSTOM, TYPE, IMPORT, FUNCTION, TABLE, MEMORY, GLOBAL, EXPORT, START, ELEMENT, CODE, DATA, DATA_COUNT = range(13)
# Export / import kinds
FUNC_KIND, TABLE_KIND, MEMORY_KIND, GLOBAL_KIND = range(4)
# Value types and constant opcodes
I32, I64, F32, F64 = 0x7F, 0x7E, 0x7D, 0x7C
_CONST_OPCODE = {I32: 0x41, I64: 0x42, F32: 0x43, F64: 0x44}
END = 0x0B
# Opcodes rewritten or read by name
CALL, CALL_INDIRECT, I32_CONST = 0x10, 0x11, 0x41
# Subsections of the "name" custom section
NAME_FUNCTIONS, NAME_GLOBALS, NAME_DATA_SEGMENTS = 1, 7, 9


class WasmFormatError(ValueError):
    """The bytes are not a module this rewriter understands."""


@dataclass
class Section:
    id: int
    payload: bytes


@dataclass
class Global:
    valtype: int
    mutable: bool
    init: bytes  # constant expression, including the trailing END


@dataclass
class Export:
    name: str
    kind: int
    index: int


class Reader:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise WasmFormatError("unexpected end of data")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uleb(self) -> int:
        return self._leb(signed=False)

    def sleb(self) -> int:
        return self._leb(signed=True)

    def _leb(self, signed: bool) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result - (1 << shift) if signed and b & 0x40 else result

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise WasmFormatError("unexpected end of data")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def name(self) -> str:
        return self.take(self.uleb()).decode()

    def const_expr(self) -> bytes:
        start = self.pos
        while True:
            op = self.byte()
            if op == END:
                return self.data[start : self.pos]
            if op in (0x41, 0x42, 0x23):  # i32.const, i64.const (signed LEB), global.get
                self.uleb()
            elif op == 0x43:
                self.take(4)
            elif op == 0x44:
                self.take(8)
            else:
                raise WasmFormatError(f"unsupported opcode 0x{op:02x} in a constant expression")

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)


# Immediates of the MVP opcodes CPython's compiler emits (clang 14, wasm32-wasi, no SIMD, no
# bulk memory): what `instructions` needs to step over each one.
_NO_IMMEDIATE = {0x00, 0x01, 0x05, 0x0B, 0x0F, 0x1A, 0x1B, 0xD1, *range(0x45, 0xC5)}
_MEMARG = set(range(0x28, 0x3F))
_ONE_ULEB = {0x0C, 0x0D, CALL, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0xD2}
_VALTYPES = {0x7F, 0x7E, 0x7D, 0x7C, 0x7B, 0x70, 0x6F}


def body_locals_end(body: bytes) -> int:
    """Where a function body's expression starts (after its local declarations)."""
    r = Reader(body)
    for _ in range(r.uleb()):
        r.uleb()
        r.byte()
    return r.pos


def instructions(body: bytes) -> Iterator[tuple[int, int, int]]:
    """(position, opcode, end of its immediates) of each instruction of a function body."""
    r = Reader(body, body_locals_end(body))
    while not r.done:
        at = r.pos
        op = r.byte()
        if op in _NO_IMMEDIATE:
            pass
        elif op in _ONE_ULEB or op in (I32_CONST, 0x42):
            r.uleb()  # LEB128's length is the same read signed or not
        elif op in _MEMARG or op == CALL_INDIRECT:
            r.uleb()
            r.uleb()
        elif op in (0x02, 0x03, 0x04):  # block, loop, if: a block type (empty, a value type or a type index)
            if r.byte() not in _VALTYPES | {0x40}:
                r.pos -= 1
                r.sleb()
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
            raise WasmFormatError(f"opcode 0x{op:02x} at {at} is not supported")
        yield at, op, r.pos


def uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def sleb(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if (value == 0 and not b & 0x40) or (value == -1 and b & 0x40):
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def vec(items: list[bytes]) -> bytes:
    return uleb(len(items)) + b"".join(items)


def name(text: str) -> bytes:
    raw = text.encode()
    return uleb(len(raw)) + raw


def parse_sections(module: bytes) -> list[Section]:
    if module[:8] != MAGIC:
        raise WasmFormatError("not a WebAssembly 1.0 module (bad magic or version)")
    r = Reader(module, 8)
    sections = []
    while not r.done:
        sid = r.byte()
        sections.append(Section(sid, r.take(r.uleb())))
    return sections


def encode_section(section: Section) -> bytes:
    return bytes([section.id]) + uleb(len(section.payload)) + section.payload


def build_module(sections: list[Section]) -> bytes:
    return MAGIC + b"".join(encode_section(s) for s in sections)


def imported_count(payload: bytes, kind: int) -> int:
    r = Reader(payload)
    count = 0
    for _ in range(r.uleb()):
        r.name()
        r.name()
        k = r.byte()
        if k == FUNC_KIND:
            r.uleb()
        elif k == TABLE_KIND:
            r.byte()
            _limits(r)
        elif k == MEMORY_KIND:
            _limits(r)
        elif k == GLOBAL_KIND:
            r.take(2)
        else:
            raise WasmFormatError(f"unknown import kind {k}")
        count += k == kind
    return count


def _limits(r: Reader) -> tuple[int, int | None]:
    flags = r.byte()
    minimum = r.uleb()
    return minimum, (r.uleb() if flags & 1 else None)


def parse_globals(payload: bytes) -> list[Global]:
    r = Reader(payload)
    return [Global(r.byte(), bool(r.byte()), r.const_expr()) for _ in range(r.uleb())]


def encode_globals(globals_: list[Global]) -> bytes:
    return vec([bytes([g.valtype, int(g.mutable)]) + g.init for g in globals_])


def const_expr(valtype: int, value: int | float) -> bytes:
    if valtype == I32:
        v = int(value)
        return bytes([_CONST_OPCODE[I32]]) + sleb(v - (1 << 32) if v >= 1 << 31 else v) + bytes([END])
    if valtype == I64:
        v = int(value)
        return bytes([_CONST_OPCODE[I64]]) + sleb(v - (1 << 64) if v >= 1 << 63 else v) + bytes([END])
    if valtype == F32:
        return bytes([_CONST_OPCODE[F32]]) + struct.pack("<f", value) + bytes([END])
    if valtype == F64:
        return bytes([_CONST_OPCODE[F64]]) + struct.pack("<d", value) + bytes([END])
    raise WasmFormatError(f"cannot snapshot a global of type 0x{valtype:02x}")


def parse_exports(payload: bytes) -> list[Export]:
    r = Reader(payload)
    return [Export(r.name(), r.byte(), r.uleb()) for _ in range(r.uleb())]


def encode_exports(exports: list[Export]) -> bytes:
    return vec([name(e.name) + bytes([e.kind]) + uleb(e.index) for e in exports])


def parse_memories(payload: bytes) -> list[tuple[int, int | None]]:
    r = Reader(payload)
    return [_limits(r) for _ in range(r.uleb())]


def encode_memories(memories: list[tuple[int, int | None]]) -> bytes:
    items = []
    for minimum, maximum in memories:
        if maximum is None:
            items.append(b"\0" + uleb(minimum))
        else:
            items.append(b"\1" + uleb(minimum) + uleb(maximum))
    return vec(items)


def encode_data(segments: list[tuple[int, bytes]]) -> bytes:
    """Active segments for memory 0, each placed at an i32 constant offset."""
    return vec([b"\0" + const_expr(I32, offset) + uleb(len(data)) + data for offset, data in segments])


def parse_data(payload: bytes) -> list[tuple[int, bytes]]:
    """Active segments for memory 0 at i32 constant offsets (what wasm-ld and the snapshot write)."""
    r = Reader(payload)
    segments = []
    for _ in range(r.uleb()):
        if r.uleb() != 0:
            raise WasmFormatError("only active data segments for memory 0 are supported")
        expr = Reader(r.const_expr())
        if expr.byte() != _CONST_OPCODE[I32]:
            raise WasmFormatError("a data segment's offset is not an i32 constant")
        offset = expr.sleb() & 0xFFFFFFFF
        if expr.pos != len(expr.data) - 1:
            raise WasmFormatError("a data segment's offset is more than an i32 constant")
        segments.append((offset, r.take(r.uleb())))
    if not r.done:
        raise WasmFormatError("bytes after the last data segment")
    return segments


def initial_memory(segments: list[tuple[int, bytes]]) -> bytearray:
    """Linear memory as ``segments`` (``parse_data``) fill it, up to the end of the last one."""
    memory = bytearray(max((offset + len(data) for offset, data in segments), default=0))
    for offset, data in segments:
        memory[offset : offset + len(data)] = data
    return memory


def imported_functions(sections: list[Section]) -> int:
    """How many functions the module imports: its own functions' indices start there."""
    imports = next((s for s in sections if s.id == IMPORT), None)
    return imported_count(imports.payload, FUNC_KIND) if imports is not None else 0


def function_type_indices(sections: list[Section]) -> dict[int, int]:
    """Function index -> type index of each function the module defines."""
    imported = imported_functions(sections)
    r = Reader(next(s for s in sections if s.id == FUNCTION).payload)
    return {imported + i: r.uleb() for i in range(r.uleb())}


def element_slots(payload: bytes) -> dict[int, int]:
    """Table slot -> function index, from an element section of plain active segments for table 0
    (what wasm-ld writes: flags 0, an i32.const offset, function indices)."""
    r = Reader(payload)
    slots = {}
    for _ in range(r.uleb()):
        if r.uleb() != 0:
            raise WasmFormatError("only plain active element segments are supported")
        offset = Reader(r.const_expr())
        if offset.byte() != I32_CONST:
            raise WasmFormatError("an element segment's offset is not an i32 constant")
        base = offset.sleb()
        for k in range(r.uleb()):
            slots[base + k] = r.uleb()
    return slots


def custom_name(section: Section) -> str | None:
    """The name of a custom section (``None`` for other sections)."""
    return Reader(section.payload).name() if section.id == CUSTOM else None


def custom_body(section: Section) -> bytes:
    """A custom section's payload after its name."""
    r = Reader(section.payload)
    r.name()
    return section.payload[r.pos :]


def custom_section(section_name: str, body: bytes) -> Section:
    return Section(CUSTOM, name(section_name) + body)


def subsections(data: bytes) -> list[tuple[int, bytes]]:
    """(kind, body) pairs as the "name" and "linking" custom sections lay them out."""
    r = Reader(data)
    found = []
    while not r.done:
        kind = r.byte()
        found.append((kind, r.take(r.uleb())))
    return found


def encode_subsections(items: list[tuple[int, bytes]]) -> bytes:
    return b"".join(bytes([kind]) + uleb(len(body)) + body for kind, body in items)


def without_name_subsection(section: Section, kind: int) -> Section:
    kept = [(k, body) for k, body in subsections(custom_body(section)) if k != kind]
    return custom_section("name", encode_subsections(kept))


def _name_map(sections: list[Section], kind: int) -> dict[int, str]:
    """Index -> name, from the name section's subsection ``kind`` (empty without one)."""
    section = next((s for s in sections if custom_name(s) == "name"), None)
    for k, body in subsections(custom_body(section)) if section else []:
        if k == kind:
            r = Reader(body)
            names = {}
            for _ in range(r.uleb()):
                index = r.uleb()
                names[index] = r.name()
            return names
    return {}


def _names(sections: list[Section], kind: int) -> dict[str, int]:
    return {name: index for index, name in _name_map(sections, kind).items()}


def function_names(sections: list[Section]) -> dict[int, str]:
    """Function name by function index (imports included; static functions may share a name)."""
    return _name_map(sections, NAME_FUNCTIONS)


def global_names(sections: list[Section]) -> dict[str, int]:
    """Global index by name (wasm-ld writes global names into the name section)."""
    return _names(sections, NAME_GLOBALS)


def data_segment_names(sections: list[Section]) -> dict[str, int]:
    """Data segment index by name (wasm-ld names its output segments: .rodata, .data, ...)."""
    return _names(sections, NAME_DATA_SEGMENTS)

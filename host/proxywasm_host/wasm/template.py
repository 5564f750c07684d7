"""One compiled artefact for many modules: what a module's code does not depend on is left out of
what wasmtime compiles, and written into each instance instead.

Every filter ``proxywasm build`` makes from one runtime has the same code. Its builds differ in
their data segments (the snapshot of the filter's heap), their memory's initial size and the
initial values of their mutable globals (the stack pointer). Compiled whole, each new build costs
Cranelift a second or more and a cache artefact of about 11 MB. Compiled as a *template* (the
module without those three), builds that share their code share one artefact, deserialised in
milliseconds.

Instantiating a template and then growing the memory to the module's initial size, writing its
data segments and setting its globals leaves the instance as instantiating the module would have,
before any of its code runs. That needs a module with exports, no start function (instantiation
would run it before the data is in place), one memory of its own, and only active segments at
constant offsets that fit in the initial memory (one that does not is left for wasmtime to refuse,
with its message) and lie close enough together to be written as one image. Any other module is
compiled as it is.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import wasmtime

from proxywasm_build import wasm

#: Prefix of the exports a template adds so the host can reach the memory and globals it fills in.
#: The guest never sees exports; :func:`public_exports` hides these from the host's own views.
PRIVATE_EXPORT = "proxywasm-host:"
_MEMORY_EXPORT = PRIVATE_EXPORT + "memory"
_PAGE = 65536


@dataclass(frozen=True)
class Fill:
    """What instantiating the module writes that its template leaves out."""

    pages: int  # the memory's initial size, in 64 KiB pages
    offset: int  # where the data segments begin
    image: bytes  # the memory from ``offset`` to the end of the last segment, as the segments leave it
    globals: tuple[tuple[str, int], ...]  # (private export, initial value) of each normalised global

    def apply(self, store: wasmtime.Store, instance: wasmtime.Instance) -> None:
        """Make a new instance of the template what an instance of the module would be."""
        exports = instance.exports(store)
        memory = exports[_MEMORY_EXPORT]
        assert isinstance(memory, wasmtime.Memory)
        memory.grow(store, self.pages - memory.size(store))
        if self.image:  # one copy: the new memory is zeros, as between the segments
            ctypes.memmove(ctypes.addressof(memory.data_ptr(store).contents) + self.offset, self.image, len(self.image))
        for name, value in self.globals:
            item = exports[name]
            assert isinstance(item, wasmtime.Global)
            item.set_value(store, value)


def public_exports(exports: list[wasmtime.ExportType]) -> list[wasmtime.ExportType]:
    return [e for e in exports if not (e.name or "").startswith(PRIVATE_EXPORT)]


def split(code: bytes) -> tuple[bytes, Fill | None]:
    """``code`` as a template and what fills an instance of it, or ``(code, None)`` for a module
    that must be compiled as it is (see the module docstring)."""
    try:
        return _split(code)
    except (wasm.WasmFormatError, UnicodeDecodeError):
        return code, None  # wasmtime reads it, or reports what is wrong with it


def _split(code: bytes) -> tuple[bytes, Fill | None]:
    sections = wasm.parse_sections(code)
    ids = [s.id for s in sections]
    if wasm.START in ids or wasm.DATA_COUNT in ids or ids.count(wasm.MEMORY) != 1 or ids.count(wasm.DATA) != 1:
        return code, None
    by_id = {s.id: s for s in sections}
    if wasm.EXPORT not in by_id or (
        wasm.IMPORT in by_id and wasm.imported_count(by_id[wasm.IMPORT].payload, wasm.MEMORY_KIND)
    ):
        return code, None
    memory = by_id[wasm.MEMORY].payload
    if memory[:1] != b"\x01" or memory[1] not in (0, 1):  # one memory, 32-bit, not shared
        return code, None
    ((pages, maximum),) = wasm.parse_memories(memory)
    segments = wasm.parse_data(by_id[wasm.DATA].payload)
    if any(offset + len(data) > pages * _PAGE for offset, data in segments):
        return code, None
    exports = wasm.parse_exports(by_id[wasm.EXPORT].payload)
    if any(e.name.startswith(PRIVATE_EXPORT) for e in exports):
        return code, None
    imported_globals = wasm.imported_count(by_id[wasm.IMPORT].payload, wasm.GLOBAL_KIND) if wasm.IMPORT in by_id else 0
    globals_ = wasm.parse_globals(by_id[wasm.GLOBAL].payload) if wasm.GLOBAL in by_id else []
    filled: list[tuple[str, int]] = []
    for i, g in enumerate(globals_):
        value = wasm.integer_const(g.init) if g.mutable else None
        if value is not None:
            name = f"{PRIVATE_EXPORT}global{i}"
            filled.append((name, value))
            exports.append(wasm.Export(name, wasm.GLOBAL_KIND, imported_globals + i))
            g.init = wasm.const_expr(g.valtype, 0)
    exports.append(wasm.Export(_MEMORY_EXPORT, wasm.MEMORY_KIND, 0))
    template: list[wasm.Section] = []
    for s in sections:
        if s.id == wasm.DATA:
            continue
        if s.id == wasm.CUSTOM and wasm.custom_name(s) != "name":
            continue  # wasmtime reads only the names (for traps' backtraces)
        if s.id == wasm.MEMORY:
            s = wasm.Section(s.id, wasm.encode_memories([(0, maximum)]))
        elif s.id == wasm.GLOBAL:
            s = wasm.Section(s.id, wasm.encode_globals(globals_))
        elif s.id == wasm.EXPORT:
            s = wasm.Section(s.id, wasm.encode_exports(exports))
        template.append(s)
    offset = min((offset for offset, data in segments if data), default=0)
    span = max((at + len(data) for at, data in segments if data), default=0) - offset
    if span > 4 * sum(len(data) for _, data in segments) + _PAGE:
        return code, None  # data far apart: one image of it all would be mostly zeros
    image = wasm.initial_memory([(at - offset, data) for at, data in segments if data])
    return wasm.build_module(template), Fill(pages, offset, bytes(image), tuple(filled))

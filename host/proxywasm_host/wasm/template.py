"""One compiled artefact for many modules: what a module's code does not depend on is left out of
what wasmtime compiles, and written into each instance instead.

The filters ``proxywasm build`` makes from one runtime differ in their data segments (the snapshot
of the filter's heap) and their memory's initial size; their code differs only by which builtin C
modules the snapshot kept (a handful of variants: 6 among this repository's 39 filters and tests'
builds). Compiled whole, each new build costs Cranelift a second or more and a cache artefact of
about 11 MB. Compiled as a *template* (the module without its data, its memory's minimum set to
0 and the custom sections after its code left out), builds with the same code share one artefact,
deserialised in milliseconds.

Instantiating a template, then growing the memory to the module's initial size and writing its data
segments, leaves the instance as instantiating the module would have, before any of its code runs.
That needs a module with no start function (instantiation would run it before the data is in
place), one memory of its own, and only active segments at constant offsets that fit in the
initial memory (one that does not is left for wasmtime to refuse, with its message) and lie close
enough together to be written as one image. Any other module is compiled as it is. When the
module exports its memory, the template keeps every byte before the data section where it was (the
memory's minimum is written in as many bytes as before), so offsets in traps' backtraces are the
module's own.

Wasmtime validates the template when it compiles it; what the template changes or leaves out (the
memory's limits, the data section, the custom sections after the code) is checked here, and any
doubt compiles the module whole, so an invalid module is refused as wasmtime refuses it.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import wasmtime

from proxywasm_build import wasm

from ..errors import hide_host_frames

__tracebackhide__ = hide_host_frames  # pytest leaves these frames out for the filter's errors

#: The export a template adds for the memory when the module does not export it. The guest never
#: sees exports; :func:`public_exports` hides it from the host's own views.
PRIVATE_EXPORT = "proxywasm-host:memory"
_PAGE = 65536
_MAX_PAGES = 65536  # a 32-bit memory's limit


@dataclass(frozen=True)
class Fill:
    """What instantiating the module writes that its template leaves out."""

    memory: str  # the export the memory is reached by
    pages: int  # the memory's initial size, in 64 KiB pages
    offset: int  # where the data segments begin
    image: bytes  # the memory from ``offset`` to the end of the last segment, as the segments leave it

    def apply(self, store: wasmtime.Store, instance: wasmtime.Instance) -> None:
        """Make a new instance of the template what an instance of the module would be."""
        memory = instance.exports(store)[self.memory]
        assert isinstance(memory, wasmtime.Memory)
        memory.grow(store, self.pages - memory.size(store))
        if self.image:  # one copy: the new memory is zeros, as between the segments
            ctypes.memmove(ctypes.addressof(memory.data_ptr(store).contents) + self.offset, self.image, len(self.image))


def public_exports(exports: list[wasmtime.ExportType], fill: Fill | None) -> list[wasmtime.ExportType]:
    """``exports`` without the one a template adds for its memory, when it added one (``fill``)."""
    if fill is None or fill.memory != PRIVATE_EXPORT:
        return exports
    return [e for e in exports if e.name != PRIVATE_EXPORT]


def split(code: bytes) -> tuple[bytes, Fill | None]:
    """``code`` as a template and what fills an instance of it, or ``(code, None)`` for a module
    that must be compiled as it is (see the module docstring)."""
    try:
        return _split(code)
    except (wasm.WasmFormatError, UnicodeDecodeError, IndexError, ValueError):
        return code, None  # wasmtime reads it, or reports what is wrong with it


def _split(code: bytes) -> tuple[bytes, Fill | None]:
    sections = wasm.parse_sections(code)
    ids = [s.id for s in sections]
    if wasm.START in ids or wasm.DATA_COUNT in ids or ids.count(wasm.MEMORY) != 1 or ids.count(wasm.DATA) != 1:
        return code, None
    by_id = {s.id: s for s in sections}
    if wasm.IMPORT in by_id and wasm.imported_count(by_id[wasm.IMPORT].payload, wasm.MEMORY_KIND):
        return code, None
    memory = by_id[wasm.MEMORY].payload
    if memory[:1] != b"\x01" or memory[1] not in (0, 1):  # one memory, 32-bit, not shared
        return code, None
    ((pages, maximum),) = wasm.parse_memories(memory)
    if pages > _MAX_PAGES or (maximum is not None and not pages <= maximum <= _MAX_PAGES):
        return code, None  # invalid limits: wasmtime words it
    data_at = ids.index(wasm.DATA)
    if wasm.CODE not in ids[:data_at] or any(i != wasm.CUSTOM for i in ids[data_at + 1 :]):
        return code, None  # sections out of order: the module is invalid, as wasmtime will say
    minimum_end = wasm.Reader(memory, 2)
    minimum_end.uleb()
    width = minimum_end.pos - 2  # 0 in as many bytes as the minimum took (LEB128 may pad)
    template_memory = memory[:2] + b"\x80" * (width - 1) + b"\x00" + memory[minimum_end.pos :]
    segments = wasm.parse_data(by_id[wasm.DATA].payload)
    if any(offset + len(data) > pages * _PAGE for offset, data in segments):
        return code, None
    offset = min((offset for offset, data in segments if data), default=0)
    span = max((at + len(data) for at, data in segments if data), default=0) - offset
    if span > 4 * sum(len(data) for _, data in segments) + _PAGE:
        return code, None  # data far apart: one image of it all would be mostly zeros
    exports = wasm.parse_exports(by_id[wasm.EXPORT].payload) if wasm.EXPORT in by_id else []
    name = next((e.name for e in exports if e.kind == wasm.MEMORY_KIND and e.index == 0), None)
    if name is None:
        if wasm.EXPORT not in by_id or any(e.name == PRIVATE_EXPORT for e in exports):
            return code, None  # nothing to add the export to, or the name is the module's own
        name = PRIVATE_EXPORT
        exports.append(wasm.Export(name, wasm.MEMORY_KIND, 0))
    template: list[wasm.Section] = []
    after_code = False
    for s in sections:
        if s.id == wasm.DATA or (after_code and s.id == wasm.CUSTOM and wasm.custom_name(s) != "name"):
            continue  # after the code nothing moves an offset; wasmtime reads only the names there
        if s.id == wasm.MEMORY:
            s = wasm.Section(s.id, template_memory)
        elif s.id == wasm.EXPORT and name == PRIVATE_EXPORT:
            s = wasm.Section(s.id, wasm.encode_exports(exports))
        after_code = after_code or s.id == wasm.CODE
        template.append(s)
    image = wasm.initial_memory([(at - offset, data) for at, data in segments if data])
    return wasm.build_module(template), Fill(name, pages, offset, bytes(image))
